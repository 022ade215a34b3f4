#!/usr/bin/env python3
"""Shim benchmark: container create+start latency and shim memory under the spright runtime and
under runc v2, on several containerd versions, each against that version's own runc v2 shim.

Per containerd version (a series of e2e/containerd/versions, fetched by e2e/containerd/fetch.sh
into ${SPRIGHT_TEST_CACHE:-/var/cache/spright-test}/containerd/<version>/bin): one private
containerd of that version (own root, state and sockets; config version 2 for 1.x, 3 for 2.x),
with the spright shim first on its PATH and then that version's bin dir, so
`io.containerd.runc.v2` is that version's containerd-shim-runc-v2; that version's ctr drives it.
20 containers each under runc v2, spright, and spright with SPRIGHT annotations (wired into a
chain), interleaved. The versions run one after the other in one run.

Latency is the wall time of `ctr tasks start --detach` (task create + start: what the runtime
does; the container record and its snapshot are made beforehand). Memory is each shim
process's RSS and PSS (from /proc) with its container running.

Usage (as root, from the repository, after e2e/images/build.sh and e2e/containerd/fetch.sh):
    e2e/bench/shim.py [--containerd 1.6,2.3] [--containers 20] [--out docs/bench/shim.md]
                      [--no-build]
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
VERSIONS_FILE = os.path.join(ROOT, "e2e", "containerd", "versions")
IMAGE = "spright.local/functions:latest"
NAMESPACE = "shimbench"
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


def read_versions():
    """{series: version} from e2e/containerd/versions (nerdctl's line skipped)."""
    versions = {}
    with open(VERSIONS_FILE) as f:
        for line in f:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 3 and fields[0] != "nerdctl":
                versions[fields[0]] = fields[2]
    return versions


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


def config(tmp, address, major):
    """The private containerd's config: config version 2 (1.x) or 3 (2.x). NRI (on by default in
    2.x) is off: it would listen on the host-wide /var/run/nri/nri.sock."""
    return (f'version = {3 if major >= 2 else 2}\n'
            f'root = "{tmp}/root"\nstate = "{tmp}/state"\n'
            'disabled_plugins = ["io.containerd.nri.v1.nri"]\n'
            f'[grpc]\n  address = "{address}"\n'
            f'[ttrpc]\n  address = "{address}.ttrpc"\n'
            f'[debug]\n  address = "{address}.debug"\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{tmp}/opt"\n')


def bench(series, version, bin_dir, containers):
    """One containerd version: the three kinds' latencies and the shims' memory."""
    tmp = tempfile.mkdtemp(prefix=f"spright-shimbench-{series}-")
    address = os.path.join(tmp, "c.sock")
    runtime_root = os.path.join(tmp, "run")
    with open(os.path.join(tmp, "config.toml"), "w") as f:
        f.write(config(tmp, address, int(series.split(".")[0])))
    chain_file = os.path.join(tmp, "chain.yaml")
    with open(chain_file, "w") as f:
        f.write(CHAIN)
    # The spright shim first, then this version's runc shim, then the rest.
    env = dict(os.environ, PATH=f"{RELEASE}:{bin_dir}:{os.environ['PATH']}",
               SPRIGHT_RUNTIME_ROOT=runtime_root)
    containerd_bin = os.path.join(bin_dir, "containerd")
    log = open(os.path.join(tmp, "containerd.log"), "w")
    containerd = subprocess.Popen([containerd_bin, "--config", os.path.join(tmp, "config.toml")],
                                  env=env, stdout=subprocess.DEVNULL, stderr=log)
    up = subprocess.Popen([os.path.join(RELEASE, "spright"), "up", chain_file,
                           "--runtime-root", runtime_root], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    ctr = [os.path.join(bin_dir, "ctr"), "--address", address, "--namespace", NAMESPACE]
    images = os.path.join(ROOT, "target", "images", "functions.tar")
    try:
        for _ in range(300):
            if subprocess.run(ctr + ["version"], capture_output=True).returncode == 0 and \
                    os.path.exists(os.path.join(runtime_root, "shimbench", "manifest.json")):
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"containerd {version} or the chain did not come up (see {tmp})")
        run(ctr + ["images", "import", images])

        kinds = [
            ("io.containerd.runc.v2", [], "containerd-shim-runc-v2"),
            ("io.containerd.spright.v1", [], "containerd-shim-spright-v1"),
            ("io.containerd.spright.v1",
             ["--annotation", "spright.io/chain=shimbench", "--annotation", "spright.io/function=sleeper"],
             "containerd-shim-spright-v1"),
        ]
        # Warm the page cache and the image's snapshot path once per runtime.
        for k, (runtime, ann, _) in enumerate(kinds):
            cid = f"warm-{k}"
            run(ctr + ["containers", "create", "--runtime", runtime] + ann + [IMAGE, cid, "/bin/true"])
            run(ctr + ["tasks", "start", cid])  # waits for the exit and deletes the task
            run(ctr + ["containers", "delete", cid])

        latencies = [[] for _ in kinds]
        for i in range(containers):
            for k, (runtime, ann, _) in enumerate(kinds):
                cid = f"c{k}-{i}"
                run(ctr + ["containers", "create", "--runtime", runtime] + ann +
                    [IMAGE, cid, "/bin/sleep", "3600"])
                t0 = time.perf_counter()
                run(ctr + ["tasks", "start", "--detach", cid])
                latencies[k].append((time.perf_counter() - t0) * 1000)

        # Both spright kinds share one binary: their shims are counted together.
        runc_mem = [mem_kib(p) for p in shim_pids("containerd-shim-runc-v2", address)]
        spright_mem = [mem_kib(p) for p in shim_pids("containerd-shim-spright-v1", address)]
        for name, mems, want in (("runc v2", runc_mem, containers),
                                 ("spright", spright_mem, 2 * containers)):
            if not mems:
                raise SystemExit(f"containerd {version}: no {name} shim process found")
            if len(mems) != want:
                print(f"containerd {version}: {len(mems)} {name} shim processes, expected {want}")
        return {
            "series": series,
            "version": run([containerd_bin, "--version"]).stdout.split()[2],
            "lat": latencies,
            "runc_mem": runc_mem,
            "spright_mem": spright_mem,
        }
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
        log.close()
        subprocess.run(["sh", "-c", f"grep -o ' {tmp}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"])
        subprocess.run(["rm", "-rf", tmp, f"/run/containerd/runc/{NAMESPACE}",
                        f"/run/containerd/spright/{NAMESPACE}"])


def fmt(xs):
    xs = sorted(xs)
    return (statistics.median(xs), xs[int(len(xs) * 0.9) - 1], statistics.mean(xs))


def section(r):
    v = r["version"]
    names = [f"runc v2 (containerd {v})", "spright, plain container", "spright, wired into a chain"]
    base = statistics.median(r["lat"][0])
    lines = [
        f"## containerd {r['series']} ({v})",
        "",
        "| runtime | start median ms | p90 ms | mean ms | vs runc v2 (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, lat in zip(names, r["lat"]):
        med, p90, mean = fmt(lat)
        lines.append(f"| {name} | {med:.1f} | {p90:.1f} | {mean:.1f} | {(med / base - 1) * 100:+.1f}% |")
    lines += [
        "",
        "| shim | processes | RSS per shim (KiB, median) | PSS per shim (KiB, median) |",
        "|---|---:|---:|---:|",
    ]
    pss = {}
    for key, name in (("runc_mem", f"containerd-shim-runc-v2 {v} (Go)"),
                      ("spright_mem", "containerd-shim-spright-v1 (Rust)")):
        mems = r[key]
        pss[key] = statistics.median(m[1] for m in mems)
        lines.append(f"| {name} | {len(mems)} | {statistics.median(m[0] for m in mems):.0f} | "
                     f"{pss[key]:.0f} |")
    plain = (statistics.median(r["lat"][1]) / base - 1) * 100
    wired = (statistics.median(r["lat"][2]) / base - 1) * 100
    lines += ["", f"spright vs runc v2 {v}: median start {plain:+.1f}% plain, {wired:+.1f}% wired "
                  f"(target: within +10%); PSS per shim {pss['spright_mem']:.0f} vs "
                  f"{pss['runc_mem']:.0f} KiB ({(pss['spright_mem'] / pss['runc_mem'] - 1) * 100:+.1f}%).",
              ""]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--containerd", default="1.6,2.3",
                    help="containerd series to measure, comma-separated (default 1.6,2.3)")
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench", "shim.md"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    versions = read_versions()
    cache = os.path.join(os.environ.get("SPRIGHT_TEST_CACHE") or "/var/cache/spright-test", "containerd")
    wanted = []
    for series in [s.strip() for s in args.containerd.split(",") if s.strip()]:
        if series not in versions:
            raise SystemExit(f"containerd {series} is not in {VERSIONS_FILE}")
        d = os.path.join(cache, versions[series])
        if not os.path.isfile(os.path.join(d, "complete")):
            raise SystemExit(f"containerd {versions[series]} is not fetched (no {d}/complete): "
                             f"run e2e/containerd/fetch.sh {series}")
        wanted.append((series, versions[series], os.path.join(d, "bin")))
    if not args.no_build:
        run(["cargo", "build", "--release", "--locked", "--workspace", "--bins"], cwd=ROOT)
    if not os.path.exists(os.path.join(ROOT, "target", "images", "functions.tar")):
        raise SystemExit("missing target/images/functions.tar: run e2e/images/build.sh")

    loads = [os.getloadavg()[0]]
    results = []
    for series, version, bin_dir in wanted:
        results.append(bench(series, version, bin_dir, args.containers))
        loads.append(os.getloadavg()[0])

    runc = run(["runc", "--version"]).stdout.split("\n")[0].split()[-1]
    lines = [
        "# Shim benchmark",
        "",
        f"Written by `e2e/bench/shim.py --containerd {','.join(r['series'] for r in results)}` on "
        f"{datetime.date.today()}: {platform.node()}, kernel {platform.release()}, "
        f"{os.cpu_count()} CPUs, runc {runc}, load average (1 min) "
        f"{' / '.join(f'{l:.2f}' for l in loads)} before and after each version. Per containerd "
        f"version: one private containerd of that version, driven by its own `ctr`, with that "
        "version's `containerd-shim-runc-v2` as `io.containerd.runc.v2`; "
        f"{args.containers} containers per runtime, started interleaved (runc, spright, spright "
        "wired, runc, ...); each runs `sleep 3600` from the same image. Latency is `ctr tasks "
        "start --detach` (task create + start); memory is per shim process with its container "
        "running (one shim per container, as ctr does not group them).",
        "",
    ]
    for r in results:
        lines += section(r)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
