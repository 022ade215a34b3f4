#!/usr/bin/env python3
"""Scaling benchmark: instances that follow load against fixed instances and against the
Knative-style baseline with scale to zero, over time.

    e2e/bench/scaling.py [--workloads boutique,motion] [--step 5] [--out docs/bench]
                         [--quick] [--no-build]

For each workload and plane in turn it starts the plane, runs the workload's load profile as
back-to-back wrk runs of --step seconds (so latency is known every step), and meanwhile samples
every 0.5 s the plane's CPU (its cgroup) and its instances (spright: the pool-manager's stats;
Knative-style: the function processes alive). Then it measures the plane idle, per process,
and (autoscaled plane) EPROXY's cost per packet from the kernel's BPF run-time statistics.

Planes:
  autoscaled   spright up, every function instances: {min: 1, max: 3, target_concurrency: 2,
               window: 10s} (sockmap)
  fixed        spright up with the example's chain file as it is (sockmap)
  knative-s2z  spright-baseline knative --scale-to-zero 2s (one pod per function, 0 or 1)

Load profiles:
  boutique  the Locust user mix at rising then falling offered rates (100, 300, 600, 1200
            requests/s, a closed loop of 32 connections, then 300, 100), --phase seconds each
  motion    bursts of 50 requests on 8 connections, 6 s apart (longer than the 2 s scale-to-zero
            grace: every burst is cold on knative-s2z)

Writes docs/bench/scaling.md and docs/bench/scaling/*.png. Run as root on an idle machine;
scripts/install-deps.sh installs what it needs (wrk, python3-matplotlib, bpftool).
"""

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

# Debian's python3-matplotlib belongs to /usr/bin/python3: when another python3 comes first in
# PATH (pyenv, a venv), run again under Debian's (as workloads.py does).
try:
    import matplotlib  # noqa: F401
except ImportError:
    if os.path.exists("/usr/bin/python3") and not os.environ.get("SPRIGHT_BENCH_REEXEC"):
        os.environ["SPRIGHT_BENCH_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])
    raise SystemExit("scaling.py: matplotlib is missing: apt-get install python3-matplotlib")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads as wl  # noqa: E402  (the workload benchmark's planes, phases and wrk runs)

ROOT = wl.ROOT
SCALING = {"min": 1, "max": 3, "target_concurrency": 2, "window": "10s"}
PLANES = ("autoscaled", "fixed", "knative-s2z")
BOUTIQUE_RATES = (100, 300, 600, 1200, 0, 300, 100)   # 0: closed loop
IDLE_S = 30


def log(msg):
    wl.log(msg)


def autoscaled_chain(src, dst):
    """The chain file with every function's instances following load."""
    spec = ", ".join(f"{k}: {v}" for k, v in SCALING.items())
    out = []
    with open(src) as f:
        for line in f:
            if re.match(r"^\s*instances:", line):
                continue
            out.append(line)
            m = re.match(r"^(\s*)command:", line)
            if m:
                out.append(f"{m.group(1)}instances: {{{spec}}}\n")
    with open(dst, "w") as f:
        f.writelines(out)


def plane_defs(workdir, workload):
    chain = os.path.join(ROOT, "examples", workload, "chain.yaml")
    scaled = os.path.join(workdir, f"{workload}-autoscaled.yaml")
    autoscaled_chain(chain, scaled)
    up = ("up", "{chain}", "--routing", "sockmap", "--listen", "{listen}",
          "--runtime-root", "{runtime}")
    return {
        "autoscaled": (wl.PlaneDef("autoscaled", "spright (sockmap), instances follow load",
                                   "spright", up), scaled),
        "fixed": (wl.PlaneDef("fixed", "spright (sockmap), fixed instances", "spright", up),
                  chain),
        "knative-s2z": (wl.PLANES["knative-s2z"], chain),
    }


class Instances(threading.Thread):
    """Samples the plane's function instances every 0.5 s: [(t, {function: n})]."""

    def __init__(self, plane, runtime, chain_name, kind):
        super().__init__(daemon=True)
        self.plane, self.runtime, self.chain_name, self.kind = plane, runtime, chain_name, kind
        self.samples = []
        self._halt = threading.Event()

    def control_socket(self):
        try:
            with open(os.path.join(self.runtime, self.chain_name, "manifest.json")) as f:
                return json.load(f)["control_socket"]
        except (OSError, ValueError, KeyError):
            return None

    def spright_instances(self):
        path = self.control_socket()
        if path is None:
            return None
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1.0)
            s.connect(path)
            s.sendall(b'{"op":"stats"}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        stats = json.loads(data)
        return {f["name"]: f["instances"] for f in stats["functions"] if f["id"] != 0}

    def baseline_instances(self):
        counts = {}
        for pid in self.plane.cgroup.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = [a.decode() for a in f.read().split(b"\0") if a]
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == "spright-baseline-host" and len(argv) > 2:
                counts[argv[2]] = counts.get(argv[2], 0) + 1
        return counts

    def run(self):
        while not self._halt.is_set():
            try:
                n = (self.spright_instances() if self.kind == "spright"
                     else self.baseline_instances())
                if n is not None:
                    self.samples.append((time.monotonic(), n))
            except (OSError, ValueError, KeyError):
                pass
            self._halt.wait(0.5)

    def stop(self):
        self._halt.set()
        self.join(timeout=3)


def process_cpu(pids):
    """{pid: (name, cpu seconds)}: every thread's run time from /proc/<pid>/task/*/schedstat
    (nanoseconds, where /proc/<pid>/stat counts 10 ms ticks)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            ns = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        ns += int(f.read().split()[0])
                except OSError:
                    pass
        except OSError:
            continue
        prog = os.path.basename(argv[0]) if argv else str(pid)
        # The function's name for a workload binary ("spright-boutique frontend"); the program
        # alone for the chain's own parts.
        arg = argv[1] if len(argv) > 1 and not argv[1].startswith(("/", "-")) else ""
        name = f"{prog} {arg}".strip()
        if prog == "spright":
            name = "spright up (runner, autoscaler)"
        elif prog in ("spright-pool-manager", "spright-gateway", "spright-baseline"):
            name = prog
        out[pid] = (name, ns / 1e9)
    return out


def bpf_stats(names):
    """{program name: (run_cnt, run_time_ns)} summed over programs of that name (bpftool)."""
    try:
        r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                           timeout=10)
        progs = json.loads(r.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for p in progs:
        if p.get("name") in names:
            cnt, ns = out.get(p["name"], (0, 0))
            out[p["name"]] = (cnt + p.get("run_cnt", 0), ns + p.get("run_time_ns", 0))
    return out


def steps(workload, args, boutique):
    """The load profile as (label, Phase) steps of --step seconds."""
    out = []
    if workload == "boutique":
        per = max(1, args.phase // args.step)
        for rate in BOUTIQUE_RATES:
            label = "closed" if rate == 0 else f"{rate}/s"
            for i in range(per):
                key = "closed" if rate == 0 else f"rate{rate}"
                p = boutique._phase(f"{key}-{i}", label, "closed" if rate == 0 else "rate",
                                    args.step, rate)
                out.append((label, p))
    else:
        out.append(("bursts", wl.Phase("bursts", "bursts", "bursty", 8, 8, args.motion_time,
                                       "motion.lua", ["50", "6000", "{log}"], logged=True)))
    return out


def run_plane(ctx, args, workload, name, pdef, chain, listen, boutique):
    ctx.chain = chain
    ctx.args.chain = chain
    plane = wl.Plane(ctx, pdef, listen)
    runtime = os.path.join(ctx.workdir, f"runtime-{pdef.name}")
    kind = "baseline" if name == "knative-s2z" else "spright"
    res = {"plane": name, "label": pdef.label, "command": shlex.join(
        [wl.rel(plane.cmd[0])] + plane.cmd[1:]), "steps": [], "status": "ok", "warnings": []}
    cpu = wl.Sampler({"plane": plane.cgroup})
    inst = Instances(plane, runtime, workload, kind)
    probe = boutique.probe() if workload == "boutique" else wl.Motion(args).probe()
    bpf_was = None
    log(f"{workload}/{name}: starting: {res['command']}")
    try:
        if name == "autoscaled":
            with open("/proc/sys/kernel/bpf_stats_enabled") as f:
                bpf_was = f.read().strip()
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write("1")
        plane.start()
        cpu.start()
        plane.wait_ready(probe, 60)
        inst.start()
        origin = time.monotonic()
        res["origin"] = origin
        eproxy0 = bpf_stats({"eproxy_ingress", "eproxy_egress"})
        if workload == "boutique":
            wl.run_phase(ctx, plane, boutique.warmup(), origin)
        for label, spec in steps(workload, args, boutique):
            r = wl.run_phase(ctx, plane, spec, origin)
            r["label"] = label
            res["steps"].append(r)
            log(f"{workload}/{name}/{spec.key}: {wl.describe_phase(r)}")
        eproxy1 = bpf_stats({"eproxy_ingress", "eproxy_egress"})
        runs = sum(eproxy1.get(k, (0, 0))[0] - eproxy0.get(k, (0, 0))[0] for k in eproxy1)
        ns = sum(eproxy1.get(k, (0, 0))[1] - eproxy0.get(k, (0, 0))[1] for k in eproxy1)
        res["eproxy"] = {"packets": runs, "ns": ns} if runs else None
        # The autoscaler brings the instances back down (part of the plot); then idle.
        t_quiet = time.monotonic()
        floor = None
        while time.monotonic() - t_quiet < 90:
            n = inst.samples[-1][1] if inst.samples else {}
            if kind == "spright" and n and all(v <= SCALING["min"] for v in n.values()):
                floor = time.monotonic() - t_quiet
                break
            if kind != "spright" and n is not None and sum(n.values()) == 0:
                floor = time.monotonic() - t_quiet
                break
            time.sleep(0.5)
        res["down_after_s"] = floor
        if floor is not None:
            log(f"{workload}/{name}: back to its fewest instances {floor:.1f}s after the load")
        # No more questions to the pool-manager: they would be its idle CPU.
        inst.stop()
        t_idle = time.monotonic()
        pids = plane.cgroup.pids()
        before, c0 = process_cpu(pids), plane.cgroup.usage_ns()
        time.sleep(IDLE_S if not args.quick else 3)
        after, c1 = process_cpu(plane.cgroup.pids()), plane.cgroup.usage_ns()
        span = time.monotonic() - t_idle
        res["idle_pct"] = (c1 - c0) / 1e9 / span * 100
        per = {}
        for pid, (pname, t1) in after.items():
            t0 = before.get(pid, (pname, None))[1]
            if t0 is None:
                continue
            per.setdefault(pname, 0.0)
            per[pname] += (t1 - t0) / span * 100
        res["idle_by_process"] = sorted(per.items(), key=lambda kv: -kv[1])
        res["idle_window"] = [t_idle - origin, t_idle + span - origin]
        log(f"{workload}/{name}: idle {res['idle_pct']:.3f}% of a core over {span:.0f}s")
    except wl.BenchError as e:
        res["status"] = "failed"
        res["error"] = str(e)
        log(f"{workload}/{name}: FAILED: {e}")
    finally:
        inst.stop()
        res["warnings"] += plane.stop()
        cpu.stop()
        ctx.cgroups.remove(f"plane-{pdef.name}")
        if bpf_was is not None:
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write(bpf_was)
    origin = res.get("origin", time.monotonic())
    s = cpu.samples
    res["cpu"] = [[(t0 + t1) / 2 - origin, (c1["plane"] - c0["plane"]) / 1e9 / (t1 - t0)]
                  for (t0, c0), (t1, c1) in zip(s, s[1:]) if t1 > t0]
    res["instances"] = [[t - origin, sum(n.values()), n] for t, n in inst.samples]
    return res


def plot(plt, workload, results, path):
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for r in results:
        if not r["steps"]:
            continue
        if workload == "motion":
            rows = r["steps"][0]["requests_log"] or []
            t0 = r["steps"][0]["t_start"]
            axes[0].plot([t0 + x[0] for x in rows], [x[1] for x in rows], ".", ms=2,
                         label=r["plane"])
        else:
            xs = [(s["t_start"] + s["t_end"]) / 2 for s in r["steps"]]
            axes[0].plot(xs, [s["latency_ms"]["p99"] for s in r["steps"]], "-o", ms=3,
                         label=f"{r['plane']} p99")
        axes[1].step([x[0] for x in r["instances"]], [x[1] for x in r["instances"]],
                     where="post", label=r["plane"])
        axes[2].plot([x[0] for x in r["cpu"]], [x[1] for x in r["cpu"]], label=r["plane"])
    axes[0].set_ylabel("latency (ms)" + (", per request" if workload == "motion" else ", p99"))
    axes[0].set_yscale("log")
    axes[1].set_ylabel("function instances")
    axes[2].set_ylabel("CPU (cores)")
    axes[2].set_xlabel("seconds since the load started")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{workload}: autoscaled vs fixed vs Knative-style scale to zero")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summary_rows(workload, results):
    L = []
    if workload == "boutique":
        labels = []
        for r in results:
            for s in r["steps"]:
                if s["label"] not in labels:
                    labels.append(s["label"])
        L.append("| offered | " + " | ".join(
            f"{r['plane']}: req/s, p50 / p99 ms, CPU ms/req, instances" for r in results) + " |")
        L.append("|---|" + "---|" * len(results))
        for label in labels:
            cells = []
            for r in results:
                ss = [s for s in r["steps"] if s["label"] == label]
                if not ss:
                    cells.append("")
                    continue
                req = sum(s["requests"] for s in ss)
                wall = sum(s["wall_s"] for s in ss)
                p50 = max(s["latency_ms"]["p50"] for s in ss)
                p99 = max(s["latency_ms"]["p99"] for s in ss)
                cpu = sum(s["cores"] * s["wall_s"] for s in ss) * 1000 / req if req else 0
                t0, t1 = ss[0]["t_start"], ss[-1]["t_end"]
                inst = [x[1] for x in r["instances"] if t0 <= x[0] <= t1]
                errs = sum(s["errors_total"] for s in ss)
                cell = (f"{req / wall:.0f}, {p50:.2f} / {p99:.2f}, {cpu:.3f}, "
                        f"{min(inst) if inst else '?'}-{max(inst) if inst else '?'}")
                if errs:
                    cell += f", **{errs} errors**"
                cells.append(cell)
            L.append(f"| {label} | " + " | ".join(cells) + " |")
    else:
        L.append("| plane | requests | first of a burst p50 / max ms | others p50 / p99 ms | "
                 "errors | instances |")
        L.append("|---|---:|---|---|---:|---|")
        for r in results:
            if not r["steps"]:
                continue
            s = r["steps"][0]
            rows = s["requests_log"] or []
            first = sorted(x[1] for x in rows if x[3])
            rest = sorted(x[1] for x in rows if not x[3])

            def q(v, p):
                return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
            inst = [x[1] for x in r["instances"]]
            L.append(f"| {r['plane']} | {s['requests']} | {q(first, 0.5):.2f} / "
                     f"{max(first) if first else float('nan'):.2f} | {q(rest, 0.5):.2f} / "
                     f"{q(rest, 0.99):.2f} | {s['errors_total']} | "
                     f"{min(inst) if inst else '?'}-{max(inst) if inst else '?'} |")
    return L


def report(args, all_results, command, started):
    plt = wl._matplotlib()
    out_dir = os.path.join(args.out, "scaling")
    os.makedirs(out_dir, exist_ok=True)
    L = ["# Scaling: instances that follow load, fixed instances, Knative-style scale to zero",
         "",
         f"Generated by `{command}` on {started:%Y-%m-%d %H:%M %Z} (commit {wl.git_commit()}), "
         f"on this 2-core VM, one plane at a time. The autoscaled plane runs the example's "
         f"chain with every function `instances: {{{', '.join(f'{k}: {v}' for k, v in SCALING.items())}}}`;"
         f" the fixed one runs the chain file as it is (one instance each); knative-s2z is "
         f"`spright-baseline knative --scale-to-zero 2s` (one pod per function, stopped after "
         f"2 s without requests and started by the next one). Latency, instances and CPU are "
         f"sampled while the load runs (wrk runs of {args.step} s back to back; instances and "
         f"CPU every 0.5 s), then the plane is measured idle for {IDLE_S} s.", ""]
    for workload, results in all_results.items():
        png = f"scaling/{workload}.png"
        plot(plt, workload, results, os.path.join(args.out, png))
        L += [f"## {workload}", ""]
        if workload == "boutique":
            L.append(f"The Online Boutique's Locust mix at offered rates "
                     f"{', '.join('closed loop (32 connections)' if r == 0 else str(r) for r in BOUTIQUE_RATES)}, "
                     f"{args.phase} s each. Per offered rate: achieved requests/s, the worst "
                     f"{args.step} s step's p50 and p99, CPU per request, and the range of "
                     f"function instances seen.")
        else:
            L.append(f"Motion events in bursts of 50 requests on each of 8 connections, 6 s "
                     f"apart, for {args.motion_time} s. The first request of each burst is cold "
                     f"on knative-s2z.")
        L += [""] + summary_rows(workload, results) + ["", f"![{workload}]({png})", ""]
        L += ["Idle, after the load: the plane's cgroup, in percent of one core over the idle "
              "window, and by process (threads' run time from schedstat) where it is 0.001% or "
              "more:", ""]
        for r in results:
            by = ", ".join(f"{n} {p:.3f}%" for n, p in r.get("idle_by_process", []) if p >= 0.001)
            L.append(f"- {r['plane']}: {r.get('idle_pct', float('nan')):.3f}%"
                     + (f" ({by})" if by else ""))
            if r.get("eproxy"):
                e = r["eproxy"]
                L.append(f"  - EPROXY under the load: {e['packets']} packets through its two "
                         f"programs, {e['ns'] / e['packets']:.0f} ns each "
                         f"(kernel.bpf_stats_enabled)")
            if r["status"] != "ok":
                L.append(f"  - **failed**: {r.get('error', '')[:300]}")
            for w in r["warnings"]:
                L.append(f"  - warning: {w}")
        downs = ", ".join(f"{r['plane']} {r['down_after_s']:.1f} s" for r in results
                          if r.get("down_after_s") is not None)
        if downs:
            L.append(f"Back to the fewest instances after the load: {downs}.")
        L.append("")
    md = os.path.join(args.out, "scaling.md")
    with open(md, "w") as f:
        f.write("\n".join(L) + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(all_results, f, separators=(",", ":"), default=str)
    log(f"wrote {md}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="boutique,motion")
    ap.add_argument("--planes", default=",".join(PLANES))
    ap.add_argument("--phase", type=int, default=15, help="boutique: seconds per offered rate")
    ap.add_argument("--step", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--motion-time", type=int, default=40, help="motion: seconds of bursts")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"))
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--quick", action="store_true", help="smoke run: short phases")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.planes = [p for p in args.planes.split(",") if p]
    if args.quick:
        args.phase, args.step, args.motion_time = 2, 2, 8
    # What workloads.py's helpers read from their arguments.
    args.connections, args.duration, args.warmup, args.gap = 32, args.step, 3, 6.0
    args.rates, args.burst, args.ready_timeout = [], 50, 60
    args.workload, args.chain, args.profile = args.workloads[0], None, False
    if os.geteuid() != 0:
        raise SystemExit("scaling.py: run as root (eBPF, cgroups)")
    for tool in ("wrk", "bpftool"):
        if not shutil.which(tool):
            raise SystemExit(f"scaling.py: {tool} is missing (scripts/install-deps.sh)")
    if not args.no_build:
        r = subprocess.run([wl.find_cargo() or "cargo", "build", "--release", "--workspace",
                            "--bins"], cwd=ROOT)
        if r.returncode != 0:
            raise SystemExit("cargo build --release failed")
    wl._matplotlib()
    started = datetime.datetime.now().astimezone()
    command = shlex.join(["e2e/bench/scaling.py"] + sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    args.chain = os.path.join(ROOT, "examples", args.workload, "chain.yaml")
    ctx = wl.Context(args)
    all_results = {}
    try:
        for workload in args.workloads:
            args.workload = workload
            boutique = wl.Boutique(args)
            boutique.prepare(ctx)
            defs = plane_defs(ctx.workdir, workload)
            all_results[workload] = []
            for i, name in enumerate(args.planes):
                pdef, chain = defs[name]
                listen = f"127.0.0.1:{18180 + i}"
                all_results[workload].append(
                    run_plane(ctx, args, workload, name, pdef, chain, listen, boutique))
        report(args, all_results, command, started)
    finally:
        for proc in ctx.procs:
            if proc.poll() is None:
                proc.kill()
        ctx.cgroups.cleanup()
        shutil.rmtree(ctx.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
