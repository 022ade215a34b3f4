#!/usr/bin/env python3
"""Workload benchmark: one workload (boutique, motion or parking) served by several data planes,
measured one plane after another in one run with the same offered loads, written up side by
side in docs/bench/<workload>.md with PNG plots in docs/bench/<workload>/.

Planes: sockmap (SPRIGHT, eBPF sk_msg routing), poll (SPRIGHT, busy-polling rings), knative
(HTTP functions behind nginx sidecars), knative-s2z (the same with scale-to-zero after 2 s),
grpc (gRPC services; boutique only).

Per plane: start it in a fresh cpuacct cgroup (so every process it spawns is accounted), wait
until its HTTP endpoint answers, warm up, run the workload's phases with wrk (in a cgroup of its
own), measure its CPU with no traffic, stop it.

Usage (as root, from anywhere):
    e2e/bench/workloads.py --workload boutique [--planes sockmap,poll,knative,grpc,knative-s2z]
        [--duration 15] [--rates 200,500,1000] [--connections 32] [--idle 10] [--profile]
        [--out docs/bench] [--quick] [--no-build]
See e2e/bench/README.md.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def _matplotlib():
    """matplotlib with the Agg backend. Debian's python3-matplotlib belongs to /usr/bin/python3:
    when another python3 comes first in PATH (pyenv, a venv), run again under Debian's."""
    try:
        import matplotlib
    except ImportError:
        system = "/usr/bin/python3"
        if (os.path.exists(system) and os.path.realpath(sys.executable) != os.path.realpath(system)
                and not os.environ.get("SPRIGHT_BENCH_REEXEC")):
            os.environ["SPRIGHT_BENCH_REEXEC"] = "1"
            os.execv(system, [system, os.path.abspath(__file__)] + sys.argv[1:])
        raise SystemExit("workloads.py: matplotlib is missing: apt-get install python3-matplotlib "
                         "(scripts/install-deps.sh installs it)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LUA = os.path.join(ROOT, "e2e", "bench", "lua")
WORKLOADS = ("boutique", "motion", "parking")
PLANE_ORDER = ("sockmap", "poll", "knative", "grpc", "knative-s2z")
SUSTAINED = 0.95          # a paced phase is sustained when achieved >= 95% of offered
SAMPLE_INTERVAL = 0.5     # CPU-over-time sampling, seconds
WRK_TIMEOUT = 30          # seconds; wrk counts a connection idle longer than this as a timeout
OTHER_CPU_WARN = 0.25     # cores used outside the plane and wrk before a phase is flagged


class BenchError(Exception):
    """Something the run cannot go on with; the message names what failed."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP, handled like Ctrl-C."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rel(path):
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# CPU accounting: one cgroup per plane and one for wrk.

class CpuGroup:
    """A cgroup whose CPU time is read: cgroup v1 cpuacct (cpuacct.usage, ns) or, where there
    is no cpuacct hierarchy, cgroup v2 (cpu.stat usage_usec)."""

    def __init__(self, path, v2):
        self.path, self.v2 = path, v2
        os.makedirs(path, exist_ok=True)

    def usage_ns(self):
        if self.v2:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    k, v = line.split()
                    if k == "usage_usec":
                        return int(v) * 1000
            raise BenchError(f"{self.path}/cpu.stat has no usage_usec")
        with open(os.path.join(self.path, "cpuacct.usage")) as f:
            return int(f.read())

    def pids(self):
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

    def wrap(self, cmd):
        """cmd run so that it joins this cgroup before it execs (children inherit it)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"',
                os.path.join(self.path, "cgroup.procs")] + list(cmd)

    def empty(self, timeout):
        """Waits up to timeout s for the group to empty, then SIGKILLs what is left (by pid:
        only processes this run started are in it). Returns the number killed."""
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.pids()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(left)

    def remove(self):
        if not os.path.isdir(self.path):
            return
        self.empty(2)
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        log(f"warning: could not remove cgroup {self.path}")


class Cgroups:
    """spright-bench/<pid>/<name> under the cpuacct hierarchy (cgroup v1) or cgroup2."""

    def __init__(self):
        v1 = "/sys/fs/cgroup/cpuacct"
        if os.path.exists(os.path.join(v1, "cpuacct.usage")):
            mount, self.v2 = v1, False
        else:
            mount, self.v2 = self._cgroup2_mount(), True
            if mount is None:
                raise BenchError("no cgroup hierarchy to account CPU: neither "
                                 "/sys/fs/cgroup/cpuacct (v1) nor a cgroup2 mount")
        self.parent = os.path.join(mount, "spright-bench")
        self._remove_stale()
        self.base = os.path.join(self.parent, str(os.getpid()))
        self.groups = {}
        try:
            os.makedirs(self.base, exist_ok=True)
        except OSError as e:
            raise BenchError(f"cannot create cgroup {self.base}: {e}")

    @staticmethod
    def _cgroup2_mount():
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if parts[2] == "cgroup2":
                    return parts[1]
        return None

    def _remove_stale(self):
        """Leftovers of runs that were killed before they could clean up."""
        if not os.path.isdir(self.parent):
            return
        for entry in os.listdir(self.parent):
            path = os.path.join(self.parent, entry)
            if not entry.isdigit() or not os.path.isdir(path) or os.path.exists(f"/proc/{entry}"):
                continue
            for sub in os.listdir(path):
                if os.path.isdir(os.path.join(path, sub)):
                    CpuGroup(os.path.join(path, sub), self.v2).remove()
            try:
                os.rmdir(path)
            except OSError:
                pass

    def group(self, name):
        if name not in self.groups:
            self.groups[name] = CpuGroup(os.path.join(self.base, name), self.v2)
        return self.groups[name]

    def remove(self, name):
        g = self.groups.pop(name, None)
        if g:
            g.remove()

    def cleanup(self):
        for name in list(self.groups):
            self.remove(name)
        for path in (self.base, self.parent):
            try:
                os.rmdir(path)
            except OSError:
                pass


def system_busy_ns():
    """CPU time all CPUs spent not idle (from /proc/stat), ns."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) * 1e9 / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Reads the plane's and wrk's cgroup CPU every SAMPLE_INTERVAL s."""

    def __init__(self, groups):
        super().__init__(daemon=True)
        self.groups = groups
        self.samples = []       # (monotonic s, {name: ns})
        self._halt = threading.Event()

    def run(self):
        nxt = time.monotonic()
        while not self._halt.is_set():
            try:
                self.samples.append((time.monotonic(),
                                     {k: g.usage_ns() for k, g in self.groups.items()}))
            except (OSError, ValueError, BenchError):
                pass
            nxt += SAMPLE_INTERVAL
            self._halt.wait(max(0.0, nxt - time.monotonic()))

    def stop(self):
        self._halt.set()
        self.join(timeout=2)


# ---------------------------------------------------------------------------------------------
# Planes.

@dataclasses.dataclass
class PlaneDef:
    name: str
    label: str
    launcher: str                 # binary in the bin dir
    args: tuple                   # after the binary; {chain} {listen} {runtime} substituted
    workloads: tuple = WORKLOADS  # the workloads it can serve
    helpers: tuple = ()           # other binaries in the bin dir the launcher runs


# The baselines host the workloads' services in a binary of their own (the workloads' binaries
# run on spright alone).
BASELINE_HOST = ("spright-baseline-host",)


PLANES = {
    "sockmap": PlaneDef("sockmap", "SPRIGHT, eBPF sk_msg routing", "spright",
                        ("up", "{chain}", "--routing", "sockmap", "--listen", "{listen}",
                         "--runtime-root", "{runtime}")),
    "poll": PlaneDef("poll", "SPRIGHT, busy-polling rings", "spright",
                     ("up", "{chain}", "--routing", "poll", "--listen", "{listen}",
                      "--runtime-root", "{runtime}")),
    "knative": PlaneDef("knative", "Knative-style: HTTP functions behind nginx sidecars",
                        "spright-baseline", ("knative", "{chain}", "--listen", "{listen}"),
                        helpers=BASELINE_HOST),
    "knative-s2z": PlaneDef("knative-s2z", "Knative-style, scale to zero after 2 s idle",
                            "spright-baseline",
                            ("knative", "{chain}", "--listen", "{listen}",
                             "--scale-to-zero", "2s"), helpers=BASELINE_HOST),
    "grpc": PlaneDef("grpc", "gRPC services", "spright-baseline",
                     ("grpc", "{chain}", "--listen", "{listen}"), workloads=("boutique",),
                     helpers=BASELINE_HOST),
}


class Plane:
    """One running plane: its launcher in its own cgroup, output in a log file."""

    def __init__(self, ctx, pdef, listen):
        self.ctx, self.pdef, self.listen = ctx, pdef, listen
        self.name = pdef.name
        self.proc = None
        self.log_path = os.path.join(ctx.workdir, f"{self.name}.log")
        self.cgroup = ctx.cgroups.group(f"plane-{self.name}")
        runtime = os.path.join(ctx.workdir, f"runtime-{self.name}")
        os.makedirs(runtime, exist_ok=True)
        self.cmd = [os.path.join(ctx.bin_dir, pdef.launcher)] + [
            a.format(chain=ctx.chain, listen=listen, runtime=runtime) for a in pdef.args]

    def start(self):
        host, port = self.listen.rsplit(":", 1)
        with socket.socket() as s:
            # as servers do: TIME_WAIT connections of an earlier plane don't make it busy
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, int(port)))
            except OSError as e:
                raise BenchError(f"{self.name}: {self.listen} is not free ({e}): is another "
                                 f"plane or run still up? (--port-base picks other ports)")
        logf = open(self.log_path, "w")
        try:
            self.proc = subprocess.Popen(self.cgroup.wrap(self.cmd), stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.ctx.child_env, cwd=ROOT,
                                         start_new_session=True)
        finally:
            logf.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def died(self, what):
        return BenchError(f"{self.name}: {rel(self.cmd[0])} exited with status "
                          f"{self.proc.returncode} {what}; last lines of {self.log_path}:\n"
                          f"{tail(self.log_path)}")

    def wait_ready(self, probe, timeout):
        """Polls the workload's probe request until it answers as expected."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.died("before it was ready")
            try:
                status, body = probe.send(self.listen, timeout=min(10.0, timeout))
                if status == 200 and probe.marker in body:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, urllib.error.URLError) as e:
                last = str(getattr(e, "reason", e))
            time.sleep(0.2)
        raise BenchError(f"{self.name}: not ready within {timeout:.0f}s at http://{self.listen} "
                         f"({probe.describe()}: {last}); last lines of {self.log_path}:\n"
                         f"{tail(self.log_path)}")

    def stop(self):
        """SIGINT, then SIGTERM, then SIGKILL; then whatever is left in the cgroup. Returns a
        list of warnings (empty when it stopped cleanly)."""
        warnings = []
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    warnings.append(f"did not exit {wait}s after {signal.Signals(sig).name}")
        killed = self.cgroup.empty(5)
        if killed:
            warnings.append(f"{killed} process(es) left in its cgroup after the launcher exited "
                            f"(killed)")
        return warnings


# ---------------------------------------------------------------------------------------------
# Workloads: a readiness probe, the wrk script and the phases.

@dataclasses.dataclass
class Probe:
    method: str
    path: str
    body: bytes
    content_type: str
    marker: bytes

    _opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def send(self, listen, timeout):
        req = urllib.request.Request(f"http://{listen}{self.path}", method=self.method,
                                     data=self.body if self.method == "POST" else None)
        if self.method == "POST":
            req.add_header("Content-Type", self.content_type)
        try:
            with self._opener.open(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def describe(self):
        return f"{self.method} {self.path}"


@dataclasses.dataclass
class Phase:
    key: str            # stable: closed, rate-<n>, bursty, periodic
    title: str
    kind: str           # closed | rate | bursty | periodic
    threads: int
    connections: int
    duration: int       # s
    script: str
    script_args: list   # "{log}" becomes the per-request log directory (or "-")
    offered: float = None   # requests/s, for paced phases
    logged: bool = False    # per-request log (one connection per thread)
    load: str = ""          # how the load is described in the report


class Workload:
    name = ""
    script = ""

    def __init__(self, args):
        self.args = args

    def prepare(self, ctx):
        pass

    def probe(self):
        raise NotImplementedError

    def phases(self):
        raise NotImplementedError

    def warmup(self):
        raise NotImplementedError

    def profile_phase(self):
        return self.phases()[0]

    def describe(self):
        return ""


class Boutique(Workload):
    name = "boutique"
    script = "boutique.lua"

    def __init__(self, args):
        super().__init__(args)
        self._tags = os.getpid() % 36 * 36 * 36

    def prepare(self, ctx):
        self.products = os.path.join(ROOT, "examples", "boutique", "data", "product_ids.txt")
        if not os.path.exists(self.products):
            raise BenchError(f"missing {rel(self.products)}")

    def _tag(self):
        """A fresh 3-character prefix of session ids for every phase run, so that no two runs
        against one plane share carts (the boutique keeps them per session; a cart holds at
        most 32 products, and session ids are at most 16 bytes)."""
        self._tags += 1
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"
        return "".join(digits[(self._tags // 36 ** i) % 36] for i in (2, 1, 0))

    def probe(self):
        return Probe("GET", "/boutique/?session=bench-ready&currency=USD", b"", "", b"<title>")

    def _phase(self, key, title, kind, duration, rate):
        a = self.args
        args = [self.products, f"{rate:g}", str(a.connections), self._tag()]
        load = (f"closed loop, {a.connections} connections" if kind == "closed" else
                f"{rate:g} requests/s over {a.connections} connections")
        return Phase(key, title, kind, 1, a.connections, duration, self.script, args,
                     offered=rate if rate else None, load=load)

    def phases(self):
        a = self.args
        out = [self._phase("closed", "Closed loop (maximum throughput)", "closed", a.duration, 0)]
        for r in a.rates:
            out.append(self._phase(f"rate-{r:g}", f"Fixed rate: {r:g} requests/s", "rate",
                                   a.duration, r))
        return out

    def warmup(self):
        return self._phase("warmup", "warm-up", "closed", self.args.warmup, 0)

    def describe(self):
        return ("The Online Boutique user mix of its Locust load generator (`e2e/bench/lua/"
                "boutique.lua`): home 1, setCurrency 2, browseProduct 10, addToCart 2 (product "
                "page, then POST to the cart), viewCart 3, checkout 1 (addToCart, then the "
                "checkout form); sessions are query parameters. Every answer must be 200 with "
                "an HTML page containing `<title>`.")


class Motion(Workload):
    name = "motion"
    script = "motion.lua"

    def probe(self):
        return Probe("POST", "/motion", b"sensor=1&room=1&motion=0&lux=100",
                     "application/x-www-form-urlencoded", b"room")

    def phases(self):
        a = self.args
        return [Phase("bursty", f"Bursts of {a.burst} requests, {a.gap:g} s apart", "bursty",
                      1, 1, a.duration, self.script,
                      [str(a.burst), str(int(a.gap * 1000)), "{log}"], logged=True,
                      load=f"bursts of {a.burst} back-to-back requests on 1 connection, "
                           f"{a.gap:g} s idle between bursts")]

    def warmup(self):
        return Phase("warmup", "warm-up", "closed", 1, 2, self.args.warmup, self.script,
                     ["1000000", "0", "-"])

    def describe(self):
        a = self.args
        return (f"Motion-sensor events (`e2e/bench/lua/motion.lua`): `POST /motion` with a "
                f"random sensor, room, motion flag and light level, in bursts of {a.burst} "
                f"requests back-to-back, then {a.gap:g} s without requests (longer than the "
                f"2 s scale-to-zero grace, so on knative-s2z each burst starts cold). Every "
                f"answer must be 200 with a text mentioning `room`.")


class Parking(Workload):
    name = "parking"
    script = "parking.lua"

    def prepare(self, ctx):
        self.images = os.path.join(ctx.workdir, "parking-images")
        gen = os.path.join(ctx.bin_dir, "spright-parking-images")
        r = subprocess.run([gen, self.images, str(self.args.images)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise BenchError(f"{rel(gen)} {self.images} {self.args.images} failed "
                             f"(exit {r.returncode}): {r.stdout}{r.stderr}")
        with open(os.path.join(self.images, "plates.txt")) as f:
            self.plates = [line.strip() for line in f if line.strip()]
        if len(self.plates) < self.args.images:
            raise BenchError(f"{self.images}/plates.txt has {len(self.plates)} plates for "
                             f"{self.args.images} images")
        with open(os.path.join(self.images, "0.pgm"), "rb") as f:
            self.image0 = f.read()

    def probe(self):
        return Probe("POST", "/parking", self.image0, "application/octet-stream",
                     self.plates[0].encode())

    def phases(self):
        a = self.args
        return [
            Phase("closed", "Closed loop (maximum throughput)", "closed", 1, a.connections,
                  a.duration, self.script, ["0", self.images, "-", "any"],
                  load=f"closed loop, {a.connections} connections"),
            Phase("periodic", f"Periodic: one image every {a.period:g} ms", "periodic", 1, 1,
                  a.duration, self.script, [f"{a.period:g}", self.images, "{log}", "exact"],
                  offered=1000.0 / a.period, logged=True,
                  load=f"one image every {a.period:g} ms on 1 connection"),
        ]

    def warmup(self):
        return Phase("warmup", "warm-up", "closed", 1, 2, self.args.warmup, self.script,
                     ["0", self.images, "-", "any"])

    def describe(self):
        a = self.args
        return (f"Parking-lot camera images (`e2e/bench/lua/parking.lua`): `POST /parking` "
                f"with one of {a.images} PGM images made by `spright-parking-images` "
                f"(cycled); every answer must be 200 and contain the plate of the image sent "
                f"(closed loop, with several connections: one of the plates).")


WORKLOAD_CLASSES = {"boutique": Boutique, "motion": Motion, "parking": Parking}


# ---------------------------------------------------------------------------------------------
# Running wrk.

class Context:
    def __init__(self, args):
        self.args = args
        self.bin_dir = os.path.abspath(args.bin_dir)
        self.chain = os.path.abspath(args.chain)
        self.workdir = tempfile.mkdtemp(prefix=f"spright-{args.workload}-")
        self.cgroups = Cgroups()
        self.wrk_group = self.cgroups.group("wrk")
        self.child_env = dict(os.environ)
        self.child_env["PATH"] = self.bin_dir + os.pathsep + os.environ.get("PATH", "")
        self.procs = []          # wrk / perf processes to kill on the way out
        self.perf_threads = {}   # tid -> "pid command line" of the profiled plane


def parse_wrk(out):
    for line in out.splitlines():
        if line.startswith("SPRIGHT-BENCH "):
            return json.loads(line[len("SPRIGHT-BENCH "):])
    return None


def read_request_logs(logdir, t0_wall):
    """Merges the per-thread logs: [[t_rel_s, latency_ms, status, first], ...] by start time."""
    rows = []
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name)) as f:
            for line in f:
                p = line.split()
                if len(p) < 3:
                    continue
                first = int(p[3]) if len(p) > 3 else 0
                rows.append([round(float(p[0]) / 1000.0 - t0_wall, 4), float(p[1]), int(p[2]),
                             first])
    rows.sort()
    return rows


def plane_threads(plane):
    """{tid: command line} for every thread of the plane's processes."""
    out = {}
    for pid in plane.cgroup.pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            cmdline = " ".join([os.path.basename(cmd[0])] + cmd[1:])[:100] if cmd else str(pid)
            for tid in os.listdir(f"/proc/{pid}/task"):
                out[int(tid)] = f"{pid} {cmdline}"
        except OSError:
            pass
    return out


def run_phase(ctx, plane, spec, origin, profile_seconds=0, on_profile=None):
    """Runs wrk for one phase against the plane; returns the phase's result."""
    logdir = "-"
    if spec.logged:
        logdir = os.path.join(ctx.workdir, f"log-{plane.name}-{spec.key}")
        os.makedirs(logdir, exist_ok=True)
    args = [logdir if a == "{log}" else a for a in spec.script_args]
    timeout = max(WRK_TIMEOUT, 3 * ctx.args.gap)
    cmd = ["wrk", f"-t{spec.threads}", f"-c{spec.connections}", f"-d{spec.duration}s",
           f"--timeout", f"{timeout:.0f}s", "-s", os.path.join(LUA, spec.script),
           f"http://{plane.listen}", "--"] + args
    out_path = os.path.join(ctx.workdir, f"wrk-{plane.name}-{spec.key}.out")
    err_path = out_path[:-4] + ".err"
    perf = None
    with open(out_path, "w") as out, open(err_path, "w") as err:
        busy0, gen0, cpu0 = system_busy_ns(), ctx.wrk_group.usage_ns(), plane.cgroup.usage_ns()
        t0, t0_wall = time.monotonic(), time.time()
        proc = subprocess.Popen(ctx.wrk_group.wrap(cmd), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, cwd=LUA, start_new_session=True)
        ctx.procs.append(proc)
        if profile_seconds:
            perf_data = os.path.join(ctx.workdir, "perf.data")
            perf_log = open(os.path.join(ctx.workdir, "perf-record.log"), "w")
            perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "999", "-o", perf_data,
                                     "--", "sleep", str(profile_seconds)],
                                    stdout=perf_log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            perf_log.close()
            ctx.procs.append(perf)
        if on_profile is not None:
            time.sleep(min(1.0, spec.duration / 2))
            on_profile()
        try:
            proc.wait(timeout=spec.duration + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"{plane.name}/{spec.key}: wrk did not finish within "
                             f"{spec.duration + 60}s (killed)")
        t1 = time.monotonic()
        cpu1, gen1, busy1 = plane.cgroup.usage_ns(), ctx.wrk_group.usage_ns(), system_busy_ns()
        ctx.procs.remove(proc)
    if perf is not None:
        try:
            perf.wait(timeout=profile_seconds + 60)
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait()
        ctx.procs.remove(perf)
    with open(out_path) as f:
        out = f.read()
    data = parse_wrk(out)
    if proc.returncode != 0 or data is None:
        raise BenchError(f"{plane.name}/{spec.key}: wrk failed (exit {proc.returncode}): "
                         f"{shlex.join(cmd)}\n{out[-1500:]}{tail(err_path)}")
    if not plane.alive():
        raise plane.died(f"during phase {spec.key}")

    wall = t1 - t0
    requests = data["requests"]
    dur = data["duration_us"] / 1e6 or wall
    cpu_s = (cpu1 - cpu0) / 1e9
    gen_s = (gen1 - gen0) / 1e9
    lat = {k: v / 1000.0 for k, v in data["latency_us"].items()}
    e = data["errors"]
    errors = {"connect": e["connect"], "read": e["read"], "write": e["write"],
              "timeout": e["timeout"], "non200": data["non200"], "bad_body": data["bad_body"]}
    achieved = requests / dur
    res = {
        "key": spec.key, "title": spec.title, "kind": spec.kind, "load": spec.load,
        "offered": spec.offered, "threads": spec.threads, "connections": spec.connections,
        "command": shlex.join(["wrk"] + cmd[1:]),
        "wall_s": wall, "requests": requests, "achieved": achieved,
        "sustained": None if spec.offered is None else achieved >= SUSTAINED * spec.offered,
        "latency_ms": lat,
        "cdf_ms": sorted([p, v / 1000.0] for p, v in data["cdf_us"]),
        "cores": cpu_s / wall,
        "cpu_per_req_ms": cpu_s * 1000.0 / requests if requests else None,
        "gen_cores": gen_s / wall,
        "other_cores": max(0.0, (busy1 - busy0) / 1e9 - cpu_s - gen_s) / wall,
        "errors": errors, "errors_total": sum(errors.values()), "sample": data["sample"],
        "t_start": t0 - origin, "t_end": t1 - origin,
        "requests_log": read_request_logs(logdir, t0_wall) if spec.logged else None,
    }
    return res


def describe_phase(r):
    s = (f"{r['achieved']:.0f} req/s, p50 {r['latency_ms']['p50']:.2f} ms, "
         f"p99 {r['latency_ms']['p99']:.2f} ms, plane {r['cores']:.2f} cores, "
         f"wrk {r['gen_cores']:.2f}")
    if r["offered"]:
        s = f"offered {r['offered']:g}: " + s + ("" if r["sustained"] else " (NOT sustained)")
    if r["errors_total"]:
        s += f", ERRORS {r['errors_total']} {r['errors']}"
    return s


def run_plane(ctx, workload, pdef, listen):
    """Starts one plane, runs the warm-up, the phases and the idle measurement, stops it."""
    a = ctx.args
    result = {"name": pdef.name, "label": pdef.label, "listen": listen, "status": "ok",
              "warnings": [], "phases": [], "idle_pct": None, "samples": [],
              "processes": 0, "startup_s": None}
    plane = Plane(ctx, pdef, listen)
    result["command"] = shlex.join([rel(plane.cmd[0])] + plane.cmd[1:])
    sampler = Sampler({"plane": plane.cgroup, "wrk": ctx.wrk_group})
    log(f"{pdef.name}: starting: {result['command']}")
    t_launch = time.monotonic()
    sampler.start()
    origin = t_launch
    try:
        plane.start()
        plane.wait_ready(workload.probe(), a.ready_timeout)
        result["startup_s"] = time.monotonic() - t_launch
        log(f"{pdef.name}: ready after {result['startup_s']:.1f}s; warm-up {a.warmup}s")
        origin = time.monotonic()
        w = run_phase(ctx, plane, workload.warmup(), origin)
        result["warmup"] = [w["t_start"], w["t_end"]]
        for spec in workload.phases():
            # Bursty traffic starts after an idle gap like the ones between its bursts, so
            # that its first burst is no warmer than the others (cold on knative-s2z).
            time.sleep(a.gap if isinstance(workload, Motion) else a.pause)
            r = run_phase(ctx, plane, spec, origin)
            result["processes"] = max(result["processes"], len(plane.cgroup.pids()))
            result["phases"].append(r)
            log(f"{pdef.name}/{spec.key}: {describe_phase(r)}")
        time.sleep(a.settle)
        i0, s0 = plane.cgroup.usage_ns(), time.monotonic()
        time.sleep(a.idle)
        i1, s1 = plane.cgroup.usage_ns(), time.monotonic()
        if not plane.alive():
            raise plane.died("during the idle measurement")
        result["idle_pct"] = (i1 - i0) / 1e9 / (s1 - s0) * 100.0
        result["idle_window"] = [s0 - origin, s1 - origin]
        log(f"{pdef.name}: idle {result['idle_pct']:.3f}% of one core over {a.idle:g}s")
        if ctx.profile_plane == pdef.name:
            spec = workload.profile_phase()
            secs = max(1, spec.duration - 1)
            log(f"{pdef.name}: profiling a repeat of {spec.key} with perf ({secs}s)")
            time.sleep(a.pause)
            r = run_phase(ctx, plane, spec, origin, profile_seconds=secs,
                          on_profile=lambda: ctx.perf_threads.update(plane_threads(plane)))
            result["profile_phase"] = {"key": spec.key, "achieved": r["achieved"],
                                       "t_start": r["t_start"], "t_end": r["t_end"]}
    except BenchError as e:
        result["status"] = "failed"
        result["error"] = str(e)
        log(f"{pdef.name}: FAILED: {e}")
    finally:
        result["warnings"] += plane.stop()
        sampler.stop()
        ctx.cgroups.remove(f"plane-{pdef.name}")
        for w in result["warnings"]:
            log(f"{pdef.name}: warning: {w}")
    # CPU over time, seconds from the start of the warm-up (start-up is negative)
    s = sampler.samples
    result["samples"] = [
        [round((t1 + t0) / 2 - origin, 3), (c1["plane"] - c0["plane"]) / 1e9 / (t1 - t0),
         (c1["wrk"] - c0["wrk"]) / 1e9 / (t1 - t0)]
        for (t0, c0), (t1, c1) in zip(s, s[1:]) if t1 > t0]
    return result


# ---------------------------------------------------------------------------------------------
# Setup checks.

def chain_programs(chain):
    """The programs the chain file's functions run (first word of each `command:`), best effort:
    flow lists (`command: [prog, arg]`), plain scalars and block lists."""
    progs = []
    with open(chain) as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*-?\s*command:\s*(.*?)\s*(#.*)?$", line)
        if not m:
            continue
        v = m.group(1)
        if v.startswith("["):
            v = v[1:].split(",")[0].rstrip("]")
        elif not v and i + 1 < len(lines):
            n = re.match(r"^\s*-\s*(\S+)", lines[i + 1])
            v = n.group(1) if n else ""
        v = v.strip().strip("'\"")
        if v:
            progs.append(v)
    return progs


def find_cargo():
    c = shutil.which("cargo")
    if c:
        return c
    for c in (os.path.expanduser("~/.cargo/bin/cargo"), "/usr/local/cargo/bin/cargo"):
        if os.access(c, os.X_OK):
            return c
    return None


def preflight(args, planes):
    """Everything that can be checked before the first plane starts."""
    if os.geteuid() != 0:
        raise BenchError("run as root: the sockmap plane loads eBPF and the CPU accounting "
                         "makes cgroups")
    if not shutil.which("wrk"):
        raise BenchError("wrk is not installed (apt-get install wrk; scripts/install-deps.sh)")
    if args.profile and not shutil.which("perf"):
        raise BenchError("--profile needs perf (apt-get install linux-perf)")
    if not args.no_build:
        cargo = find_cargo()
        if cargo is None:
            raise BenchError("cargo not found (pass --no-build to use the binaries as they are)")
        log("building: cargo build --release --workspace --bins")
        r = subprocess.run([cargo, "build", "--release", "--workspace", "--bins"], cwd=ROOT)
        if r.returncode != 0:
            raise BenchError(f"cargo build --release --workspace --bins failed "
                             f"(exit {r.returncode})")
    if not os.path.exists(args.chain):
        raise BenchError(f"chain file {rel(args.chain)} does not exist")
    bin_dir = os.path.abspath(args.bin_dir)
    needed = {}
    for p in planes:
        for b in (PLANES[p].launcher,) + PLANES[p].helpers:
            needed.setdefault(os.path.join(bin_dir, b), []).append(f"plane {p}")
    if args.workload == "parking":
        needed.setdefault(os.path.join(bin_dir, "spright-parking-images"), []).append(
            "the parking images")
    problems = [f"{rel(path)} (for {', '.join(users)})" for path, users in needed.items()
                if not os.access(path, os.X_OK)]
    # The chain's functions run with the bin dir first in PATH.
    env_path = bin_dir + os.pathsep + os.environ.get("PATH", "")
    for prog in dict.fromkeys(chain_programs(args.chain)):
        found = os.access(prog, os.X_OK) if os.sep in prog else shutil.which(prog, path=env_path)
        if not found:
            problems.append(f"{prog} (a function of {rel(args.chain)}; looked in {rel(bin_dir)} "
                            f"and PATH)")
    if problems:
        raise BenchError("missing binaries: " + "; ".join(problems) +
                         ("" if args.no_build else
                          " (cargo build did not make them: are they in the workspace yet?)"))
    for s in ("common.lua", f"{args.workload}.lua"):
        if not os.path.exists(os.path.join(LUA, s)):
            raise BenchError(f"missing {rel(os.path.join(LUA, s))}")


# ---------------------------------------------------------------------------------------------
# Report.

def fmt(v, spec=".2f", none=""):
    return none if v is None else format(v, spec)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}×"


def errors_cell(r):
    if not r["errors_total"]:
        return "0"
    parts = ", ".join(f"{k} {v}" for k, v in r["errors"].items() if v)
    return f"**⚠ {r['errors_total']}** ({parts})"


def phase_table(key, planes, ref):
    """The markdown table of one phase over the planes that ran it."""
    rows = [(p, next((r for r in p["phases"] if r["key"] == key), None)) for p in planes]
    rows = [(p, r) for p, r in rows if r is not None]
    if not rows:
        return []
    kind = rows[0][1]["kind"]
    refr = None
    if ref is not None:
        refr = next((r for r in ref["phases"] if r["key"] == key), None)
    head = ["plane", "offered req/s", "achieved req/s", "p50 ms", "p95 ms", "p99 ms",
            "plane CPU (cores)", "CPU/request (core-ms)", "idle CPU (% of a core)",
            "wrk CPU (cores)", "errors"]
    if refr is not None:
        if kind == "closed":
            head.append("throughput / sockmap")
        head += ["p99 / sockmap", "CPU per request / sockmap"]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for p, r in rows:
        lat = r["latency_ms"]
        offered = "closed loop" if r["kind"] == "closed" else (
            "bursts" if r["kind"] == "bursty" else f"{r['offered']:g}")
        achieved = f"{r['achieved']:.1f}" if r["achieved"] < 100 else f"{r['achieved']:.0f}"
        if r["sustained"] is False:
            achieved += " (**not sustained**)"
        cells = [p["name"], offered, achieved, fmt(lat["p50"]), fmt(lat["p95"]), fmt(lat["p99"]),
                 fmt(r["cores"]), fmt(r["cpu_per_req_ms"], ".3f"), fmt(p["idle_pct"], ".2f"),
                 fmt(r["gen_cores"]), errors_cell(r)]
        if refr is not None:
            if kind == "closed":
                cells.append(ratio(r["achieved"], refr["achieved"]))
            cells += [ratio(lat["p99"], refr["latency_ms"]["p99"]),
                      ratio(r["cpu_per_req_ms"], refr["cpu_per_req_ms"])]
        out.append("| " + " | ".join(cells) + " |")
    return out


def burst_table(planes):
    """Motion: first request of each burst (cold on knative-s2z) against the rest."""
    out = ["| plane | bursts | requests | first of burst: min ms | p50 ms | max ms | "
           "rest: p50 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in planes:
        r = next((r for r in p["phases"] if r["key"] == "bursty"), None)
        if not r or not r["requests_log"]:
            continue
        first = sorted(x[1] for x in r["requests_log"] if x[3])
        rest = sorted(x[1] for x in r["requests_log"] if not x[3])

        def q(v, p):
            return v[min(len(v) - 1, int(p * len(v)))] if v else None
        out.append(f"| {p['name']} | {len(first)} | {len(r['requests_log'])} | "
                   f"{fmt(first[0] if first else None)} | "
                   f"{fmt(statistics.median(first) if first else None)} | "
                   f"{fmt(first[-1] if first else None)} | "
                   f"{fmt(statistics.median(rest) if rest else None)} | {fmt(q(rest, 0.99))} |")
    return out


def common_rate(planes, rate_keys):
    """The highest rate every plane sustained (None if none did)."""
    best = None
    for key in rate_keys:
        rs = [next((r for r in p["phases"] if r["key"] == key), None) for p in planes]
        if rs and all(r is not None and r["sustained"] for r in rs):
            best = key
    return best


def plot_cdf(plt, path, planes, key, title):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = 0
    for p in planes:
        r = next((r for r in p["phases"] if r["key"] == key), None)
        if not r:
            continue
        pts = [(v, q) for q, v in r["cdf_ms"] if v > 0]
        if not pts:
            continue
        ax.plot([v for v, _ in pts], [q for _, q in pts], label=p["name"])
        drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("percentile")
    ax.set_ylim(0, 100.5)
    ax.axhline(99, color="grey", lw=0.6, ls=":")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_cpu(plt, path, planes, workload):
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ref = next((p for p in planes if p["phases"]), None)
    drawn = 0
    for p in planes:
        if not p["samples"]:
            continue
        ax.plot([s[0] for s in p["samples"]], [s[1] for s in p["samples"]], label=p["name"],
                lw=1)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    if ref is not None:
        spans = [(r["t_start"], r["t_end"], r["key"]) for r in ref["phases"]]
        if ref.get("warmup"):
            spans.insert(0, (ref["warmup"][0], ref["warmup"][1], "warm-up"))
        if ref.get("idle_window"):
            spans.append((ref["idle_window"][0], ref["idle_window"][1], "idle"))
        for p in planes:
            if p.get("profile_phase"):
                spans.append((p["profile_phase"]["t_start"], p["profile_phase"]["t_end"],
                              f"perf ({p['name']})"))
        for i, (t0, t1, key) in enumerate(spans):
            ax.axvspan(t0, t1, color="grey", alpha=0.08 if i % 2 == 0 else 0.16, lw=0)
            ax.text((t0 + t1) / 2, 1.0, key, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=7)
    ax.set_xlabel(f"seconds since the warm-up began (phases as run on {ref['name']})"
                  if ref else "seconds")
    ax.set_ylabel("CPU used by the plane (cores)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"{workload}: CPU of all the plane's processes, {SAMPLE_INTERVAL:g} s samples",
                 fontsize=10, pad=14)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_response_time(plt, path, planes, key, title):
    logs = [(p, next((r for r in p["phases"] if r["key"] == key), None)) for p in planes]
    logs = [(p, r) for p, r in logs if r and r["requests_log"]]
    if not logs:
        return False
    fig, axes = plt.subplots(len(logs), 1, figsize=(9, 1.9 * len(logs) + 0.8), sharex=True,
                             sharey=True, squeeze=False)
    for ax, (p, r) in zip(axes[:, 0], logs):
        rows = r["requests_log"]
        ok = [x for x in rows if not x[3]]
        first = [x for x in rows if x[3]]
        bad = [x for x in rows if x[2] != 200]
        ax.scatter([x[0] for x in ok], [max(x[1], 1e-3) for x in ok], s=6, label="request")
        if first:
            ax.scatter([x[0] for x in first], [max(x[1], 1e-3) for x in first], s=28,
                       marker="^", color="tab:red", label="first of a burst")
        if bad:
            ax.scatter([x[0] for x in bad], [max(x[1], 1e-3) for x in bad], s=40, marker="x",
                       color="black", label="non-200")
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(p["name"], fontsize=9, loc="left")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the phase began")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def perf_summary(ctx):
    """Per-process and top-symbol tables of the perf profile, or None."""
    data = os.path.join(ctx.workdir, "perf.data")
    if not os.path.exists(data):
        return None
    out = {}
    for name, sort in (("comm", "comm"), ("symbols", "comm,dso,sym")):
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", sort,
                            "--no-children", "-g", "none"], capture_output=True, text=True)
        lines = [l.rstrip() for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")]
        if r.returncode != 0 or not lines:
            out[name] = f"(perf report failed: {r.stderr.strip()[-300:]})"
        else:
            out[name] = "\n".join(x if len(x) <= 160 else x[:157] + "..."
                                  for x in lines[:25 if name == "symbols" else 12])
    # The plane's processes by command line (their comm is often the same binary's name),
    # threads added up; the rest of the machine in one line.
    r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "pid",
                        "--no-children", "-g", "none"], capture_output=True, text=True)
    per, rest = {}, 0.0
    for line in r.stdout.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(\d+):(.*)$", line)
        if not m:
            continue
        pct, tid = float(m.group(1)), int(m.group(2))
        if tid in ctx.perf_threads:
            per[ctx.perf_threads[tid]] = per.get(ctx.perf_threads[tid], 0.0) + pct
        else:
            rest += pct
    if per:
        rows = sorted(per.items(), key=lambda kv: -kv[1])
        out["processes"] = "\n".join(f"{pct:7.2f}%  {who}" for who, pct in rows[:20]) + \
            f"\n{rest:7.2f}%  (everything else: wrk, kernel threads, other processes)"
    return out


def git_commit():
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return c + (" (with uncommitted changes)" if dirty else "") if c else "unknown"
    except OSError:
        return "unknown"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


NOTES_MARK = "<!-- Everything below this line is kept when workloads.py rewrites the report. -->"


def kept_notes(md):
    """The hand-written text after NOTES_MARK in an earlier report, or None."""
    try:
        with open(md) as f:
            text = f.read()
    except OSError:
        return None
    if NOTES_MARK not in text:
        return None
    return text.split(NOTES_MARK, 1)[1].strip("\n") or None


def add(problems, fatal, text):
    problems.append((fatal, text))


def write_report(ctx, workload, results, skipped, command, started, perf):
    plt = _matplotlib()
    a = ctx.args
    name = workload.name
    plot_dir = os.path.join(a.out, name)
    os.makedirs(plot_dir, exist_ok=True)
    ran = [p for p in results if p["phases"]]
    ref = next((p for p in ran if p["name"] == "sockmap"), None)
    specs = workload.phases()

    # (fatal, text): fatal ones (a plane failed, answers were wrong) make the exit status 1
    problems = []
    for p in results:
        if p["status"] == "failed":
            first, _, rest = p["error"].partition("\n")
            detail = "\n".join("  " + x for x in rest.strip().splitlines())
            add(problems, True, f"**{p['name']} failed**: {first}"
                + (f"\n\n  ```\n{detail}\n  ```" if detail else ""))
        for w in p["warnings"]:
            add(problems, False, f"{p['name']}: {w}")
        for r in p["phases"]:
            where = f"{p['name']} / {r['key']}"
            if r["errors_total"]:
                kinds = ", ".join(f"{k} {v}" for k, v in r["errors"].items() if v)
                sample = f"; first bad answer: `{r['sample'][:120]}`" if r["sample"] else ""
                add(problems, True, f"{where}: {r['errors_total']} errors ({kinds}){sample}")
            if r["sustained"] is False:
                add(problems, False, f"{where}: offered {r['offered']:g} req/s, achieved "
                                     f"{r['achieved']:.1f} (below {SUSTAINED:.0%}: not sustained)")
            if r["other_cores"] > OTHER_CPU_WARN:
                add(problems, False, f"{where}: {r['other_cores']:.2f} cores used by other "
                                     f"processes during the phase (machine not idle)")

    L = [f"# Workload benchmark: {name}", ""]
    L += [f"Written by `e2e/bench/workloads.py` on {started:%Y-%m-%d %H:%M %Z}: "
          f"{os.cpu_count()} CPUs ({cpu_model()}), kernel {platform.release()}, "
          f"commit {git_commit()}.", "",
          "Command:", "", "```", command, "```", "",
          workload.describe(), "",
          f"The planes ran one after another on loopback, each started fresh: ready when its "
          f"HTTP endpoint answers, a {a.warmup} s warm-up, then the phases below "
          f"({a.duration} s each, the same offered loads for every plane), then {a.idle:g} s "
          f"without requests for the idle CPU (after {a.settle:g} s to settle). Latencies are "
          f"wrk's, from sending a request to its whole answer; CPU is the plane's cgroup "
          f"(cpuacct: every process the plane started, gateway, pool-manager, functions, "
          f"sidecars), divided by the phase's wall time; wrk's own CPU is measured apart "
          f"in its cgroup. A paced phase is *not sustained* when it achieved less than "
          f"{SUSTAINED:.0%} of the offered rate. Ratios are against the sockmap plane of this "
          f"run.", ""]

    L += ["## Planes", "",
          "| plane | what | status | start-up s | processes | idle CPU (% of a core) |",
          "|---|---|---|---:|---:|---:|"]
    for p in results:
        status = "ok" if p["status"] == "ok" else f"**{p['status']}**"
        if any(r["errors_total"] for r in p["phases"]):
            status += " (**⚠ errors**)"
        L.append(f"| {p['name']} | {p['label']} | {status} | {fmt(p['startup_s'], '.1f')} | "
                 f"{p['processes'] or ''} | {fmt(p['idle_pct'], '.2f')} |")
    for pname, why in skipped:
        L.append(f"| {pname} | {PLANES[pname].label} | skipped: {why} | | | |")
    L += ["", "Commands:", ""]
    L += [f"- {p['name']}: `{p['command']}`" for p in results]
    L.append("")

    if problems:
        L += ["## Problems in this run", ""] + [f"- {x}" for _, x in problems] + [""]

    rate_keys = [s.key for s in specs if s.kind == "rate"]
    for s in specs:
        L += [f"## {s.title}", "", f"Load: {s.load}.", ""]
        L += phase_table(s.key, ran, ref) + [""]
        if s.kind == "bursty":
            L += ["Per request (from the script's log): the first request of each burst "
                  "against the others.", ""] + burst_table(ran) + [""]

    # Ratios in words
    if ref is not None and len(ran) > 1:
        L += ["## Against sockmap", ""]
        for p in ran:
            if p is ref:
                continue
            bits = []
            for r in p["phases"]:
                rr = next((x for x in ref["phases"] if x["key"] == r["key"]), None)
                if rr is None:
                    continue
                b = (f"{r['key']}: p99 {ratio(r['latency_ms']['p99'], rr['latency_ms']['p99'])}"
                     f", CPU per request {ratio(r['cpu_per_req_ms'], rr['cpu_per_req_ms'])}")
                if r["kind"] == "closed":
                    b += f", max throughput {ratio(r['achieved'], rr['achieved'])}"
                bits.append(b)
            if ref["idle_pct"] and p["idle_pct"] is not None:
                bits.append(f"idle CPU {p['idle_pct']:.2f}% vs {ref['idle_pct']:.2f}% of a core")
            L.append(f"- {p['name']}: " + "; ".join(bits))
        L.append("")
    elif ref is None:
        L += ["No sockmap plane ran, so there are no ratios against it.", ""]

    # Plots
    L += ["## Plots", ""]
    plots = []
    if any(s.key == "closed" for s in specs):
        if plot_cdf(plt, os.path.join(plot_dir, "latency-cdf-closed.png"), ran, "closed",
                    f"{name}: latency CDF, closed loop"):
            plots.append(("Latency CDF, closed loop", "latency-cdf-closed.png"))
    if rate_keys:
        key = common_rate(ran, rate_keys)
        note = ""
        if key is None:
            key, note = rate_keys[0], " (no rate was sustained by every plane: the lowest)"
        rate = next(s.offered for s in specs if s.key == key)
        if plot_cdf(plt, os.path.join(plot_dir, "latency-cdf-rate.png"), ran, key,
                    f"{name}: latency CDF at {rate:g} requests/s{note}"):
            plots.append((f"Latency CDF at {rate:g} requests/s, the highest rate every plane "
                          f"sustained{note}", "latency-cdf-rate.png"))
    for s in specs:
        if s.kind in ("bursty", "periodic"):
            if plot_cdf(plt, os.path.join(plot_dir, f"latency-cdf-{s.key}.png"), ran, s.key,
                        f"{name}: latency CDF, {s.title.lower()}"):
                plots.append((f"Latency CDF, {s.title.lower()}", f"latency-cdf-{s.key}.png"))
            if plot_response_time(plt, os.path.join(plot_dir, "response-time.png"), ran, s.key,
                                  f"{name}: response time of each request, {s.title.lower()}"):
                plots.append((f"Response time of each request over time, {s.title.lower()} "
                              f"(log scale" + ("; red: first request of a burst)"
                                               if s.kind == "bursty" else ")"),
                              "response-time.png"))
    if plot_cpu(plt, os.path.join(plot_dir, "cpu-over-time.png"), results, name):
        plots.append(("CPU over time (all the plane's processes; start-up before 0)",
                      "cpu-over-time.png"))
    for title, f in plots:
        L += [f"{title}:", "", f"![{title}]({name}/{f})", ""]

    if perf is not None:
        pp = next((p for p in results if p["name"] == ctx.profile_plane), None)
        pph = pp.get("profile_phase") if pp else None
        L += ["## Where the time goes", "",
              f"`perf record -a -g -F 999` over a repeat of the {ctx.profile_plane} plane's "
              f"{pph['key'] if pph else ''} phase (run after its measured phases, so that perf "
              f"does not disturb the tables; " +
              (f"{pph['achieved']:.0f} requests/s under perf" if pph else "") +
              "), whole machine, wrk included.", "",
              "Per process (`perf report --sort comm --no-children`):", "", "```",
              perf["comm"], "```", ""]
        if perf.get("processes"):
            L += ["The plane's processes by pid and command line (`--sort pid`, threads added "
                  "up):", "", "```", perf["processes"], "```", ""]
        L += ["Top symbols (`perf report --sort comm,dso,sym --no-children`, top 25):", "",
              "```", perf["symbols"], "```", "", "Interpretation: see Notes.", ""]

    L += ["## Notes", "", NOTES_MARK, ""]
    md = os.path.join(a.out, f"{name}.md")
    L.append(kept_notes(md) or "(Interpretation, written by hand: kept when the report is "
                                 "regenerated.)")

    os.makedirs(a.out, exist_ok=True)
    with open(md, "w") as f:
        f.write("\n".join(L) + "\n")
    with open(os.path.join(plot_dir, "results.json"), "w") as f:
        json.dump({"workload": name, "command": command, "date": started.isoformat(),
                   "commit": git_commit(), "planes": results,
                   "skipped": [{"plane": p, "why": w} for p, w in skipped]}, f,
                  separators=(",", ":"))
    log(f"wrote {md} and {len(plots)} plots in {plot_dir}")
    return problems


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--workload", required=True, choices=WORKLOADS)
    ap.add_argument("--planes", default=",".join(PLANE_ORDER),
                    help="comma-separated, run in this order")
    ap.add_argument("--duration", type=int, default=15, help="seconds of load per phase")
    ap.add_argument("--rates", default="200,500,1000",
                    help="boutique: offered rates (requests/s) of the fixed-rate phases")
    ap.add_argument("--connections", type=int, default=32,
                    help="wrk connections of the closed-loop and fixed-rate phases")
    ap.add_argument("--idle", type=float, default=10, help="seconds of idle CPU measurement")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per plane")
    ap.add_argument("--burst", type=int, default=20, help="motion: requests per burst")
    ap.add_argument("--gap", type=float, default=4.0, help="motion: seconds between bursts")
    ap.add_argument("--period", type=float, default=100, help="parking: ms between images")
    ap.add_argument("--images", type=int, default=16, help="parking: distinct images")
    ap.add_argument("--profile", action="store_true",
                    help="perf profile of the sockmap plane under the closed-loop load")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"),
                    help="report directory: <out>/<workload>.md and <out>/<workload>/*.png")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 s phases, one rate, 1 s idle, no perf")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"),
                    help="where the launchers and function binaries are")
    ap.add_argument("--chain", help="chain file (default: examples/<workload>/chain.yaml)")
    ap.add_argument("--ready-timeout", type=float, default=60,
                    help="seconds a plane has to answer its first request")
    ap.add_argument("--port-base", type=int, default=18080,
                    help="planes listen on 127.0.0.1:<port-base + n>")
    ap.add_argument("--keep-workdir", action="store_true",
                    help="keep the temporary directory (plane logs, wrk output, request logs)")
    a = ap.parse_args(argv)
    try:
        a.rates = [float(r) for r in a.rates.split(",") if r.strip()]
    except ValueError:
        ap.error(f"--rates: not a list of numbers: {a.rates}")
    if any(r <= 0 for r in a.rates):
        ap.error("--rates must be positive")
    a.planes = [p.strip() for p in a.planes.split(",") if p.strip()]
    unknown = [p for p in a.planes if p not in PLANES]
    if unknown:
        ap.error(f"unknown plane(s) {', '.join(unknown)}; known: {', '.join(PLANE_ORDER)}")
    if len(set(a.planes)) != len(a.planes):
        ap.error("--planes lists a plane twice")
    a.settle, a.pause = 2.0, 1.0
    if a.quick:
        a.duration, a.idle, a.warmup, a.profile = 2, 1.0, 1, False
        a.rates = a.rates[:1]
        a.settle, a.pause = 0.5, 0.2
    if a.duration < 1 or a.connections < 1 or a.burst < 1 or a.period <= 0 or a.images < 1:
        ap.error("--duration, --connections, --burst, --period and --images must be positive")
    a.out = os.path.abspath(a.out)
    a.chain = os.path.abspath(a.chain or os.path.join(ROOT, "examples", a.workload,
                                                      "chain.yaml"))
    return a


def main(argv=None):
    args = parse_args(argv)
    _matplotlib()   # fail (or switch to Debian's python3) before anything runs
    started = datetime.datetime.now().astimezone()
    command = shlex.join([rel(os.path.abspath(sys.argv[0]))] + sys.argv[1:])
    planes, skipped = [], []
    for p in args.planes:
        if args.workload in PLANES[p].workloads:
            planes.append(p)
        else:
            skipped.append((p, f"serves {', '.join(PLANES[p].workloads)} only"))
            log(f"{p}: skipped ({skipped[-1][1]})")

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with it ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    ctx = None
    rc = 0
    try:
        preflight(args, planes)
        ctx = Context(args)
        ctx.profile_plane = None
        if args.profile:
            ctx.profile_plane = "sockmap" if "sockmap" in planes else (planes[0] if planes else None)
        workload = WORKLOAD_CLASSES[args.workload](args)
        workload.prepare(ctx)
        log(f"{args.workload}: planes {', '.join(planes)}; work directory {ctx.workdir}")
        results = []
        for p in planes:
            listen = f"127.0.0.1:{args.port_base + PLANE_ORDER.index(p)}"
            results.append(run_plane(ctx, workload, PLANES[p], listen))
        if not any(p["phases"] for p in results):
            raise BenchError("no plane ran a phase (see above); report not written, "
                             f"{rel(os.path.join(args.out, args.workload + '.md'))} left as it was")
        perf = perf_summary(ctx) if args.profile else None
        problems = write_report(ctx, workload, results, skipped, command, started, perf)
        if problems:
            log(f"{len(problems)} problem(s), listed in the report:")
            for fatal, x in problems:
                print(f"  - {'' if fatal else '(warning) '}{x.splitlines()[0]}")
            if any(fatal for fatal, _ in problems):
                rc = 1
    except BenchError as e:
        log(f"error: {e}")
        rc = 1
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({str(e) or 'SIGINT'}): stopping; no report written")
        rc = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ctx is not None:
            for proc in ctx.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            ctx.cgroups.cleanup()
            if rc != 0 or args.keep_workdir:
                log(f"kept the work directory (plane logs, wrk output): {ctx.workdir}")
            else:
                shutil.rmtree(ctx.workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
