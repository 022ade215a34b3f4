#!/usr/bin/env python3
"""Data-plane benchmark: the demo chain in kernel mode, the same chain in user-space mode, and a
bare hyper server answering the same bytes; three no-op functions in sequence (GET, keep-alive)
next to nginx with one worker answering a constant; and the floor of a hop on this machine
(48-byte ping-pong over sk_msg and over a shared-memory ring, spright-floor). All measured one
after another in one run with wrk on loopback.

For each system: requests/s, p50/p99 latency, CPU cores used by all of the system's processes
under load (from /proc), CPU per request and per hop, and wrk's own CPU apart. For the chains:
CPU used over an idle period. Writes docs/bench/dataplane.md.

Usage (as root, from the repository): e2e/bench/dataplane.py [--duration 20] [--idle 30]

With --before DIR (the target/release directory of another build, say an older commit's), it
instead compares that build with this one: each routing mode of both builds, in alternating
order over several rounds, and writes the medians side by side (docs/bench/dataplane-compare.md),
with the system calls and context switches per request that `perf stat` counts; `--only TEXT`
keeps the cases whose name matches the regular expression TEXT (say `--only req/s` for the
light-load rows, `--only 'functions, sockmap$'` for the saturated no-op chain).
"""

import argparse
import collections
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")
TICK = os.sysconf("SC_CLK_TCK")
BODY = "the cat saw the dog and the dog saw the cat, then the cat ran off and the dog sat down"
CONNECTIONS = 64


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / TICK


def steal_ticks():
    """The machine's stolen time so far (/proc/stat), in clock ticks summed over CPUs: time the
    hypervisor ran something else while this VM wanted the CPU."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8])


def start_counting(pids):
    """perf stat counting the system calls and context switches of pids (None without perf).
    It puts every system call of the machine on the traced path, a small cost that falls on
    both builds of a comparison alike; the main tables are measured without it."""
    try:
        counter = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter,context-switches",
             "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        print("perf is missing: no system call counts (scripts/install-deps.sh installs it)")
        return None
    time.sleep(0.2)  # attached before the load starts
    return counter


def stop_counting(counter):
    """{event: count} of a counter from start_counting; empty without perf or a count."""
    if counter is None:
        return {}
    counter.send_signal(signal.SIGINT)
    try:
        _, err = counter.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        counter.kill()
        _, err = counter.communicate()
    counts = {}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            counts[fields[2]] = int(fields[0])
    if not counts:
        print(f"perf stat counted nothing: {err.strip()}")
    return counts


def descendants(root):
    """root and every process below it."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def wait_http(url, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, data=b"ready", method="POST")
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def run_wrk(url, seconds, script, connections=CONNECTIONS, script_args=()):
    """Runs wrk (a GET without a script); returns (stdout, wrk's own CPU seconds)."""
    proc = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
        + (["-s", script] if script else []) + [url]
        + (["--", *script_args] if script_args else []),
        stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed: {out}")
    return out, usage.ru_utime + usage.ru_stime


def parse_wrk(out):
    def ms(v, unit):
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p = {}
    for q in ("50", "99"):
        m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out)
        p[q] = ms(m.group(1), m.group(2))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return rps, p["50"], p["99"], int(errors.group(1)) if errors else 0, socket_errors.group(1) if socket_errors else ""


def measure(name, url, proc, seconds, script, idle_seconds, connections=CONNECTIONS, hops=None,
            script_args=(), count=False):
    wait_http(url, proc)
    run_wrk(url, 3, script, connections, script_args)  # warm-up
    pids = descendants(proc.pid)
    counter = start_counting(pids) if count else None
    try:
        cpu0, t0, steal0 = cpu_seconds(pids), time.time(), steal_ticks()
        out, wrk_cpu = run_wrk(url, seconds, script, connections, script_args)
        cpu1, t1, steal1 = cpu_seconds(pids), time.time(), steal_ticks()
    finally:
        counts = stop_counting(counter)
    rps, p50, p99, non2xx, sockerr = parse_wrk(out)
    if non2xx or sockerr:
        raise SystemExit(f"{name}: errors under load: {non2xx} non-2xx, socket errors {sockerr}\n{out}")
    # perf counts a little longer than wrk runs; the excess is idle, so nearly no events.
    served = rps * (t1 - t0)
    row = {
        "name": name, "rps": rps, "p50": p50, "p99": p99,
        "cores": (cpu1 - cpu0) / (t1 - t0), "wrk_cores": wrk_cpu / (t1 - t0),
        "processes": len(pids), "idle": None, "connections": connections, "hops": hops,
        "steal": (steal1 - steal0) / TICK / (t1 - t0) / os.cpu_count(),
        "syscalls": counts["raw_syscalls:sys_enter"] / served
        if "raw_syscalls:sys_enter" in counts else None,
        "switches": counts["context-switches"] / served if "context-switches" in counts else None,
    }
    if idle_seconds:
        time.sleep(2)  # let the last responses drain
        pids = descendants(proc.pid)
        i0, s0 = cpu_seconds(pids), time.time()
        time.sleep(idle_seconds)
        i1, s1 = cpu_seconds(pids), time.time()
        row["idle"] = (i1 - i0) / (s1 - s0)
    print(f"{name}: {rps:.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
          f"{row['cores']:.2f} cores (wrk {row['wrk_cores']:.2f}), {row['steal'] * 100:.0f}% stolen"
          + (f", {row['syscalls']:.1f} system calls per request"
             if row["syscalls"] is not None else "")
          + (f", {row['switches']:.1f} context switches per request"
             if row["switches"] is not None else "")
          + (f", idle {row['idle'] * 100:.3f}% of a core" if row["idle"] is not None else ""),
          flush=True)
    return row


def start_chain(bin_dir, routing, port, runtime_root, chain_file=None):
    chain_file = chain_file or os.path.join(ROOT, "configs", "demo-chain.yaml")
    return subprocess.Popen(
        [os.path.join(bin_dir, "spright"), "up", chain_file,
         "--routing", routing, "--listen", f"127.0.0.1:{port}", "--runtime-root", runtime_root],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Three functions that answer at once (spright-testfn's echo of an empty GET), in sequence:
# gateway -> a -> b -> c -> gateway, four hops.
NOOP_CHAIN = """chain: noop
pool:
  buffers: 1024
  buffer_size: 16KiB
gateway:
  timeout: 5s
functions:
  - {name: a, id: 1, command: [spright-testfn]}
  - {name: b, id: 2, command: [spright-testfn]}
  - {name: c, id: 3, command: [spright-testfn]}
routes:
  - path: /noop
    sequence: [a, b, c]
"""
NOOP_HOPS = 4
DEMO_HOPS = 4
FLOOR_CONNECTIONS = 32

NGINX_CONF = """worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok"; }}
  }}
}}
"""


def nginx_binary():
    for path in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if os.access(path, os.X_OK):
            return path
    raise SystemExit("nginx is missing: scripts/install-deps.sh installs it")


def run_floor(bin_dir, seconds):
    """spright-floor's cases: one dict per line of its output."""
    import json
    out = subprocess.run([os.path.join(bin_dir, "spright-floor"), "--seconds", str(seconds)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    cases = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for c in cases:
        print(f"floor, {c['case']}: round trip {c['rtt_us_mean']:.2f} µs (p99 "
              f"{c['rtt_us_p99']:.2f}), {c['cpu_us_per_hop']:.2f} µs of CPU per hop", flush=True)
    return cases


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


# One case of the comparison: which chain, how it is loaded, and its hops per request.
Case = collections.namedtuple(
    "Case", "name routing chain_file path script connections script_args hops")


def compare(args, script, tmp):
    """Two builds side by side: the demo chain in every routing mode, and the three no-op
    functions saturated and at a light fixed rate, of each build, rounds in alternating order so
    that drift of the machine falls on both alike."""
    builds = [(args.before_label, os.path.abspath(args.before)), (args.after_label, BIN)]
    for _, d in builds:
        if not os.access(os.path.join(d, "spright"), os.X_OK):
            raise SystemExit(f"{d}/spright is missing: build that tree with cargo build --release")
    noop_file = os.path.join(tmp, "noop.yaml")
    with open(noop_file, "w") as f:
        f.write(NOOP_CHAIN)
    rate_script = os.path.join(ROOT, "e2e", "bench", "lua", "rate.lua")
    cases = [Case(f"demo chain, {r}", r, None, "/render", script, CONNECTIONS, (), DEMO_HOPS)
             for r in args.routings.split(",")]
    cases += [
        Case("3 no-op functions, sockmap", "sockmap", noop_file, "/noop/echo", None,
             FLOOR_CONNECTIONS, (), NOOP_HOPS),
        Case(f"3 no-op functions, sockmap, {args.light_rate} req/s", "sockmap", noop_file,
             "/noop/echo", rate_script, 4, (str(args.light_rate),), NOOP_HOPS),
    ]
    cases = [c for c in cases if args.only is None or re.search(args.only, c.name)]
    if not cases:
        raise SystemExit(f"no case's name matches {args.only!r}")
    results = {(b, c.name): [] for b, _ in builds for c in cases}
    port = 8190
    for round_ in range(args.rounds):
        order = builds if round_ % 2 == 0 else builds[::-1]
        for case in cases:
            paced = bool(case.script_args)
            for label, bin_dir in order:
                port += 1
                root = os.path.join(tmp, f"{label}-{port}")
                proc = start_chain(bin_dir, case.routing, port, root, case.chain_file)
                url = f"http://127.0.0.1:{port}{case.path}"
                try:
                    if paced:
                        wait_http(url, proc)
                        time.sleep(10)  # an idle chain gathers on one CPU after 4 quiet looks
                    results[(label, case.name)].append(
                        measure(f"round {round_ + 1}, {case.name}, {label}", url, proc,
                                args.duration, case.script, 0 if paced else args.idle,
                                case.connections, case.hops, case.script_args, count=True))
                finally:
                    stop(proc)
    lines = [
        "# Data-plane benchmark: two builds side by side",
        "",
        f"Written by `e2e/bench/dataplane.py --before` on {datetime.date.today()}: "
        f"{platform.node()}, kernel {platform.release()}, {os.cpu_count()} CPUs. Each case of "
        f"each build, {args.rounds} rounds in alternating order, {args.duration} s of wrk after "
        f"a 3 s warm-up: the demo chain (`configs/demo-chain.yaml`, four descriptor hops, "
        f"`wrk -t1 -c{CONNECTIONS}` POST to `/render`, then {args.idle} s idle), and the three "
        f"no-op functions in sequence (four hops, GET with keep-alive, `-c{FLOOR_CONNECTIONS}` "
        f"saturated and 4 connections at {args.light_rate} req/s in all). Medians over the "
        f"rounds; the range is in brackets. CPU per request: utime+stime of the chain's "
        f"processes (wrk apart) over requests served; per hop, that over the hops. Stolen: "
        f"the share of the machine's CPU time the hypervisor gave to others during the load "
        f"(/proc/stat); figures from rounds with much of it stolen are noise. System calls "
        f"and context switches per request: `perf stat` over the chain's processes during the "
        f"load (all rows alike pay for the counting); counts, which the machine's noise moves "
        f"far less than it moves timings."
        + (f" Only the cases whose name matches `{args.only}` ran." if args.only else ""),
        "",
        "| case | build | requests/s | p50 ms | p99 ms | CPU per request, µs | CPU per hop, µs "
        "| system calls per request | context switches per request "
        "| idle, % of a core | stolen, % of the machine |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    def counted(rows, key):
        v = [r[key] for r in rows if r.get(key) is not None]
        return f"{median(v):.2f} [{min(v):.2f}-{max(v):.2f}] | " if v else "n/a | "
    for case in cases:
        for label, _ in builds:
            rows = results[(label, case.name)]
            rps = [r["rps"] for r in rows]
            p99 = [r["p99"] for r in rows]
            cpu = [r["cores"] / r["rps"] * 1e6 for r in rows]
            idle = [r["idle"] for r in rows if r["idle"] is not None]
            lines.append(
                f"| {case.name} | {label} | {median(rps):.0f} [{min(rps):.0f}-{max(rps):.0f}] | "
                f"{median([r['p50'] for r in rows]):.2f} | {median(p99):.2f} "
                f"[{min(p99):.2f}-{max(p99):.2f}] | {median(cpu):.1f} "
                f"[{min(cpu):.1f}-{max(cpu):.1f}] | {median(cpu) / case.hops:.1f} | "
                + counted(rows, "syscalls") + counted(rows, "switches")
                + (f"{median(idle) * 100:.3f} |" if idle else " |")
                + f" {median([r['steal'] for r in rows]) * 100:.0f} |")
    (before, _), (after, _) = builds
    lines += ["", f"After against before: the median of the rounds' ratios (each round ran both "
              f"builds back to back, so drift of the machine between rounds cancels), range in "
              f"brackets.", ""]

    def ratios(a, b, of):
        r = [of(x) / of(y) * 100 for x, y in zip(a, b)]
        return f"{median(r):.0f}% [{min(r):.0f}-{max(r):.0f}%]"
    for case in cases:
        b, a = results[(before, case.name)], results[(after, case.name)]
        lines.append(
            f"- {case.name}: requests/s {ratios(a, b, lambda r: r['rps'])}, "
            f"p99 {ratios(a, b, lambda r: r['p99'])}, "
            f"CPU per request {ratios(a, b, lambda r: r['cores'] / r['rps'])} of {before}'s.")
    lines.append("")
    out = args.out or os.path.join(ROOT, "docs", "bench", "dataplane-compare.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {out}")


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=20, help="seconds of load per system")
    ap.add_argument("--idle", type=int, default=30, help="seconds of idle measurement per chain")
    ap.add_argument("--out", help="default docs/bench/dataplane.md (dataplane-compare.md with --before)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--before", metavar="DIR", help="another build's target/release directory to compare with")
    ap.add_argument("--before-label", default="before")
    ap.add_argument("--after-label", default="this tree")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the comparison")
    ap.add_argument("--routings", default="sockmap,user,poll", help="routing modes to compare")
    ap.add_argument("--floor-seconds", type=int, default=3, help="seconds per floor case")
    ap.add_argument("--light-rate", type=int, default=500, help="requests/s of the light-load rows")
    ap.add_argument("--only", metavar="REGEX",
                    help="with --before: compare only the cases whose name matches this")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the kernel-mode chain loads eBPF")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--workspace", "--bins", "--locked"],
                       cwd=ROOT, check=True)

    tmp = tempfile.mkdtemp(prefix="spright-bench-")
    script = os.path.join(tmp, "post.lua")
    with open(script, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.body = "{BODY}"\n')
    if args.before:
        return compare(args, script, tmp)
    rows = []
    for name, routing, port in (("chain, kernel (sockmap)", "sockmap", 8181),
                                ("chain, user-space relay", "user", 8182)):
        proc = start_chain(BIN, routing, port, os.path.join(tmp, routing))
        try:
            rows.append(measure(name, f"http://127.0.0.1:{port}/render", proc,
                                args.duration, script, args.idle))
        finally:
            stop(proc)
    proc = subprocess.Popen([os.path.join(BIN, "spright-bare-server"), "127.0.0.1:8183"],
                            stdout=subprocess.DEVNULL)
    try:
        rows.append(measure("bare hyper server (baseline)", "http://127.0.0.1:8183/render", proc,
                            args.duration, script, 0))
    finally:
        stop(proc)
    bare = rows[-1]
    for r in rows[:2]:
        r["hops"] = DEMO_HOPS

    noop_file = os.path.join(tmp, "noop.yaml")
    with open(noop_file, "w") as f:
        f.write(NOOP_CHAIN)
    noop_rows = []
    for name, routing, port in (("3 no-op functions, sockmap", "sockmap", 8184),
                                ("3 no-op functions, user-space relay", "user", 8185)):
        proc = start_chain(BIN, routing, port, os.path.join(tmp, f"noop-{routing}"), noop_file)
        try:
            noop_rows.append(measure(name, f"http://127.0.0.1:{port}/noop/echo", proc,
                                     args.duration, None, args.idle, FLOOR_CONNECTIONS, NOOP_HOPS))
        finally:
            stop(proc)
    # Light load: a fixed rate, the chain's processes gathered on one CPU (the default) or left
    # to the scheduler.
    rate_script = os.path.join(ROOT, "e2e", "bench", "lua", "rate.lua")
    light_rows = []
    for placement, port in (("adaptive", 8187), ("off", 8188)):
        light_file = os.path.join(tmp, f"noop-{placement}.yaml")
        with open(light_file, "w") as f:
            f.write(NOOP_CHAIN.replace("chain: noop\n", f"chain: noop\ncpu_placement: {placement}\n"))
        proc = start_chain(BIN, "sockmap", port, os.path.join(tmp, f"light-{placement}"), light_file)
        try:
            wait_http(f"http://127.0.0.1:{port}/noop/echo", proc)
            time.sleep(10)  # an idle chain is looked at every 2 s and gathers after 4 quiet looks
            light_rows.append(measure(
                f"3 no-op functions, sockmap, {args.light_rate} req/s, cpu_placement {placement}",
                f"http://127.0.0.1:{port}/noop/echo", proc, args.duration, rate_script, 0, 4,
                NOOP_HOPS, (str(args.light_rate),)))
        finally:
            stop(proc)
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, port=8186))
    proc = subprocess.Popen([nginx_binary(), "-c", conf, "-p", tmp],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        noop_rows.append(measure("nginx, 1 worker, constant reply (baseline)",
                                 "http://127.0.0.1:8186/", proc, args.duration, None, 0,
                                 FLOOR_CONNECTIONS))
    finally:
        stop(proc)
    nginx = noop_rows[-1]
    floor = run_floor(BIN, args.floor_seconds)

    lines = [
        "# Data-plane benchmark",
        "",
        f"Written by `e2e/bench/dataplane.py` on {datetime.date.today()}: {platform.node()}, "
        f"kernel {platform.release()}, {os.cpu_count()} CPUs. All three systems measured one "
        f"after another in one run, wrk on loopback (`wrk -t1 -c{CONNECTIONS} -d{args.duration}s`, "
        f"POST of a {len(BODY)}-byte text to `/render`; the answer is the word-count page, "
        f"non-2xx answers fail the run). CPU is utime+stime of every process of the system under test from "
        f"/proc, divided by wall time; wrk's own CPU is apart. Idle CPU: the chain's processes "
        f"over {args.idle} s with no traffic. Stolen: the share of the machine's CPU time the "
        f"hypervisor gave to others during the load (/proc/stat); a row with much of it stolen "
        f"is noise.",
        "",
        "The chain is `configs/demo-chain.yaml`: gateway -> parse -> transform -> render -> "
        "gateway, four descriptor hops per request. The baseline is `spright-bare-server`: the same "
        "hyper settings and threads as the gateway, computing the same page in-process.",
        "",
        "| system | requests/s | vs bare | p50 ms | p99 ms | cores used | wrk cores | idle, % of a core "
        "| stolen |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        idle = "" if r["idle"] is None else f"{r['idle'] * 100:.3f}"
        lines.append(
            f"| {r['name']} | {r['rps']:.0f} | {r['rps'] / bare['rps'] * 100:.0f}% | {r['p50']:.2f} | "
            f"{r['p99']:.2f} | {r['cores']:.2f} | {r['wrk_cores']:.2f} | {idle} | "
            f"{r['steal'] * 100:.0f}% |")
    def per_hop(r):
        return f"{r['cores'] / r['rps'] * 1e6 / r['hops']:.1f}" if r["hops"] else ""

    lines += [
        "",
        f"Three no-op functions in sequence (`spright-testfn` echoing an empty GET: gateway -> a "
        f"-> b -> c -> gateway, {NOOP_HOPS} hops) and nginx with one worker answering a constant, "
        f"both `wrk -t1 -c{FLOOR_CONNECTIONS}` GET with keep-alive. CPU per hop is the chain's CPU "
        f"per request (the gateway's HTTP work included) over its hops.",
        "",
        "| system | requests/s | vs nginx | p50 ms | p99 ms | cores used | CPU per request, µs "
        "| CPU per hop, µs | idle, % of a core | stolen |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in noop_rows + light_rows:
        idle = "" if r["idle"] is None else f"{r['idle'] * 100:.3f}"
        lines.append(
            f"| {r['name']} | {r['rps']:.0f} | "
            + (f"{r['rps'] / nginx['rps'] * 100:.0f}%" if r in noop_rows else "offered rate")
            + " | "
            f"{r['p50']:.2f} | {r['p99']:.2f} | {r['cores']:.2f} | "
            f"{r['cores'] / r['rps'] * 1e6:.1f} | {per_hop(r)} | {idle} | "
            f"{r['steal'] * 100:.0f}% |")
    lines += [
        "",
        f"The floor of a hop on this machine (`spright-floor`, {args.floor_seconds} s per case): "
        f"48-byte ping-pong between two threads, over sk_msg with a bare redirect program (no "
        f"SPROXY; each side blocks in `read`) and over spright's shared-memory descriptor rings "
        f"(each side polls); and over sk_msg between two processes on one CPU, as a chain's "
        f"functions are (a switch between processes also changes the address space). CPU per "
        f"hop is both sides' CPU time over half the round trips.",
        "",
        "| floor | round trips | round trip µs, mean | p50 µs | p99 µs | CPU per hop, µs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in floor:
        lines.append(
            f"| {c['case']} | {c['round_trips']} | {c['rtt_us_mean']:.2f} | {c['rtt_us_p50']:.2f} "
            f"| {c['rtt_us_p99']:.2f} | {c['cpu_us_per_hop']:.2f} |")
    sk = {c["case"]: c for c in floor}
    lines += ["", "Each plane's CPU per hop and p99 next to the floor (this run):", ""]
    for r in rows[:2] + noop_rows[:2] + light_rows:
        lines.append(f"- {r['name']}: {per_hop(r)} µs of CPU per hop, p99 {r['p99']:.2f} ms.")
    for name in ("sk_msg, one CPU", "sk_msg, one CPU, two processes", "sk_msg, two CPUs",
                 "ring, two CPUs spinning"):
        if name in sk:
            lines.append(f"- floor, {name}: {sk[name]['cpu_us_per_hop']:.2f} µs of CPU per hop, "
                         f"a round trip in {sk[name]['rtt_us_mean']:.2f} µs.")
    kernel, user = rows[0], rows[1]
    tick_pct = 100.0 / TICK / args.idle
    lines += [
        "",
        "Against the targets (this run):",
        "",
        f"- kernel-mode chain throughput: {kernel['rps'] / bare['rps'] * 100:.0f}% of the bare "
        f"server's (target: at least 40%).",
        f"- idle chain CPU: {kernel['idle'] * 100:.3f}% of one core in kernel mode, "
        f"{user['idle'] * 100:.3f}% in user mode (target: under 1%). /proc counts whole "
        f"clock ticks, so over {args.idle} s the resolution is {tick_pct:.3f}% of a core.",
        f"- CPU per request: kernel chain {kernel['cores'] / kernel['rps'] * 1e6:.0f} µs, user "
        f"chain {user['cores'] / user['rps'] * 1e6:.0f} µs, bare server "
        f"{bare['cores'] / bare['rps'] * 1e6:.0f} µs.",
        f"- three no-op functions with keep-alive: {noop_rows[0]['rps'] / nginx['rps'] * 100:.0f}% "
        f"of nginx's requests/s with one worker (target: at least 60%); "
        f"{per_hop(noop_rows[0])} µs of CPU per hop saturated (target: at most 5 µs).",
        "",
        "Where a hop's time goes (perf profiles, per process CPU, what was tried): "
        "[hop-cost.md](hop-cost.md).",
        "",
    ]
    out = args.out or os.path.join(ROOT, "docs", "bench", "dataplane.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
