#!/usr/bin/env python3
"""Shim benchmark: container create+start latency and shim memory under the spright runtime
and under Debian's runc v2 shim, 20 containers each, interleaved in one run on one private
containerd. A third set runs under spright with SPRIGHT annotations (wired into a chain).

Latency is the wall time of `ctr tasks start --detach` (task create + start: what the runtime
does; the container record and its snapshot are made beforehand). Memory is each shim
process's RSS and PSS (from /proc) with its container running.

Usage (as root, from the repository, after e2e/images/build.sh):
    e2e/bench/shim.py [--containers 20]
Writes docs/bench/shim.md.
"""

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RELEASE = os.path.join(ROOT, "target", "release")
IMAGE = "spright.local/functions:latest"
CHAIN = """chain: shimbench
routing: user
pool: {buffers: 16, buffer_size: 4KiB}
gateway: {listen: "127.0.0.1:0"}
functions: [{name: sleeper, id: 1, image: spright.local/functions:latest}]
routes: [{path: /, function: sleeper}]
"""


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}: {r.stdout}{r.stderr}")
    return r


def mem_kib(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def shim_pids(binary, address):
    out = subprocess.run(["pgrep", "-f", f"{binary} .*-address {address}"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench", "shim.md"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if not args.no_build:
        run(["cargo", "build", "--release", "--locked", "--workspace", "--bins"], cwd=ROOT)
    images = os.path.join(ROOT, "target", "images", "functions.tar")
    if not os.path.exists(images):
        raise SystemExit("missing target/images/functions.tar: run e2e/images/build.sh")

    tmp = tempfile.mkdtemp(prefix="spright-shimbench-")
    address = os.path.join(tmp, "c.sock")
    runtime_root = os.path.join(tmp, "run")
    with open(os.path.join(tmp, "config.toml"), "w") as f:
        f.write(f'version = 2\nroot = "{tmp}/root"\nstate = "{tmp}/state"\n'
                f'[grpc]\n  address = "{address}"\n'
                f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{tmp}/opt"\n')
    chain_file = os.path.join(tmp, "chain.yaml")
    with open(chain_file, "w") as f:
        f.write(CHAIN)
    env = dict(os.environ, PATH=f"{RELEASE}:{os.environ['PATH']}", SPRIGHT_RUNTIME_ROOT=runtime_root)
    containerd = subprocess.Popen(["containerd", "--config", os.path.join(tmp, "config.toml")],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    up = subprocess.Popen([os.path.join(RELEASE, "spright"), "up", chain_file,
                           "--runtime-root", runtime_root], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    ctr = ["ctr", "--address", address, "--namespace", "shimbench"]
    try:
        for _ in range(300):
            if subprocess.run(ctr + ["version"], capture_output=True).returncode == 0 and \
                    os.path.exists(os.path.join(runtime_root, "shimbench", "manifest.json")):
                break
            time.sleep(0.1)
        run(ctr + ["images", "import", images])

        kinds = [
            ("runc v2 (Debian)", "io.containerd.runc.v2", [], "containerd-shim-runc-v2"),
            ("spright, plain container", "io.containerd.spright.v1", [], "containerd-shim-spright-v1"),
            ("spright, wired into a chain", "io.containerd.spright.v1",
             ["--annotation", "spright.io/chain=shimbench", "--annotation", "spright.io/function=sleeper"],
             "containerd-shim-spright-v1"),
        ]
        # Warm the page cache and the image's snapshot path once per runtime.
        for k, (_, runtime, ann, _) in enumerate(kinds):
            cid = f"warm-{k}"
            run(ctr + ["containers", "create", "--runtime", runtime] + ann + [IMAGE, cid, "/bin/true"])
            run(ctr + ["tasks", "start", cid])  # waits for the exit and deletes the task
            run(ctr + ["containers", "delete", cid])

        latencies = {k: [] for k in range(len(kinds))}
        for i in range(args.containers):
            for k, (_, runtime, ann, _) in enumerate(kinds):
                cid = f"c{k}-{i}"
                run(ctr + ["containers", "create", "--runtime", runtime] + ann +
                    [IMAGE, cid, "/bin/sleep", "3600"])
                t0 = time.perf_counter()
                run(ctr + ["tasks", "start", "--detach", cid])
                latencies[k].append((time.perf_counter() - t0) * 1000)

        rows = []
        for k, (name, runtime, _, binary) in enumerate(kinds):
            pids = shim_pids(binary, address)
            mems = [mem_kib(p) for p in pids]
            # Both spright kinds share one binary: split their shims evenly by container count.
            rows.append({"name": name, "lat": latencies[k], "mem": mems})
        spright_mems = rows[1]["mem"]
        rows[1]["mem"] = rows[2]["mem"] = spright_mems

        def fmt(xs):
            xs = sorted(xs)
            return (statistics.median(xs), xs[int(len(xs) * 0.9) - 1], statistics.mean(xs))

        base = statistics.median(rows[0]["lat"])
        lines = [
            "# Shim benchmark",
            "",
            f"Written by `e2e/bench/shim.py` on {datetime.date.today()}: {platform.node()}, kernel "
            f"{platform.release()}, {os.cpu_count()} CPUs, containerd "
            f"{run(['containerd', '--version']).stdout.split()[2]}. {args.containers} containers per "
            "runtime, started interleaved (runc, spright, spright wired, runc, ...) on one private "
            "containerd; each runs `sleep 3600` from the same image. Latency is `ctr tasks start "
            "--detach` (task create + start); memory is per shim process with its container running "
            "(one shim per container, as ctr does not group them).",
            "",
            "| runtime | start median ms | p90 ms | mean ms | vs runc v2 (median) |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            med, p90, mean = fmt(r["lat"])
            lines.append(f"| {r['name']} | {med:.1f} | {p90:.1f} | {mean:.1f} | "
                         f"{(med / base - 1) * 100:+.1f}% |")
        lines += [
            "",
            "| shim | processes | RSS per shim (KiB, median) | PSS per shim (KiB, median) |",
            "|---|---:|---:|---:|",
        ]
        for name, mems in (("containerd-shim-runc-v2 (Go)", rows[0]["mem"]),
                           ("containerd-shim-spright-v1 (Rust)", spright_mems)):
            lines.append(f"| {name} | {len(mems)} | {statistics.median(m[0] for m in mems):.0f} | "
                         f"{statistics.median(m[1] for m in mems):.0f} |")
        lines += ["", f"Target: spright's start latency within 10% of runc v2's "
                      f"(this run: {(statistics.median(rows[1]['lat']) / base - 1) * 100:+.1f}% plain, "
                      f"{(statistics.median(rows[2]['lat']) / base - 1) * 100:+.1f}% wired).", ""]
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write("\n".join(lines))
        print("\n".join(lines))
    finally:
        out = subprocess.run(ctr + ["tasks", "ls", "-q"], capture_output=True, text=True).stdout
        for cid in out.split():
            subprocess.run(ctr + ["tasks", "kill", "-s", "SIGKILL", cid], capture_output=True)
        for _ in range(100):
            left = subprocess.run(ctr + ["tasks", "ls", "-q"], capture_output=True, text=True).stdout.split()
            for cid in left:
                subprocess.run(ctr + ["tasks", "delete", cid], capture_output=True)
            if not left:
                break
            time.sleep(0.1)
        out = subprocess.run(ctr + ["containers", "ls", "-q"], capture_output=True, text=True).stdout
        for cid in out.split():
            subprocess.run(ctr + ["containers", "delete", cid], capture_output=True)
        up.send_signal(2)
        up.wait(timeout=20)
        containerd.terminate()
        containerd.wait(timeout=20)
        subprocess.run(["sh", "-c", f"grep -o ' {tmp}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"])
        subprocess.run(["rm", "-rf", tmp, "/run/containerd/runc/shimbench", "/run/containerd/spright/shimbench"])


if __name__ == "__main__":
    main()
