//! `configs/kubernetes/` on a real single-node cluster (e2e/kubernetes/cluster.sh: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, containerd 2.3
//! with the spright runtime): applied unchanged, reached through its Service, a function pod
//! replaced, a rolling update under load, the chain pod restarted, a pod with bad annotations
//! refused with an event, two whole replicas of the chain on the node behind one Service
//! (`configs/kubernetes/replicas/`) and one of them lost, and nothing left on the node after
//! `kubectl delete -f` and `cluster.sh down`.
//!
//! One test: the cluster takes about a minute to start, and its steps share it in order.

use spright_core::manifest::{ChainKey, Manifest, DEFAULT_RUNTIME_ROOT};
use spright_core::pool::Pool;
use spright_core::protocol::query_stats;
use spright_e2e::http;
use spright_e2e::kubernetes::Cluster;
use spright_e2e::load::{self, Load};
use spright_test_support::{have_root, wait_for};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/kubernetes");
const REPLICAS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/kubernetes/replicas"
);
const AUTOSCALING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/kubernetes/autoscaling"
);
const CHAIN: &str = "demo";

fn text_for(i: usize) -> Vec<u8> {
    format!("kubernetes request {i}: pods on a node count words in pods {i}").into_bytes()
}

#[test]
fn the_manifests_run_unchanged_on_a_real_node() {
    if !have_root("the_manifests_run_unchanged_on_a_real_node") {
        return;
    }
    let sysctls_before = host_sysctls();
    let mut cluster = Cluster::up();
    // The one step the manifests ask of a user: label the node that runs the chain.
    cluster.ok(&[
        "label",
        "node",
        &cluster.node,
        "spright.io/chain-demo=yes",
        "--overwrite",
    ]);
    cluster.ok(&["apply", "-f", MANIFESTS]);
    let service = wait_ready(&cluster);

    serves_through_its_service(&cluster, service);
    function_pods_own_traffic_is_counted(service);
    a_deleted_function_pod_is_replaced_and_serving_resumes(&cluster, service);
    a_rolling_update_under_load_loses_nothing_silently(&cluster, service);
    a_restarted_chain_pod_gets_its_functions_back(&cluster, service);
    bad_annotations_get_a_clear_event(&cluster);
    the_autoscaling_examples_are_valid_objects(&cluster);
    two_replicas_share_the_node_behind_one_service(&cluster);
    deleting_the_manifests_leaves_nothing(&cluster);
    let dir = cluster
        .kubeconfig
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned();
    assert!(cluster.down(), "cluster.sh down failed");
    the_cluster_leaves_nothing(&dir);
    assert_eq!(
        host_sysctls(),
        sysctls_before,
        "cluster.sh down puts back the host's sysctls"
    );
}

/// The sysctls the kubelet and the bridge plugin change.
fn host_sysctls() -> Vec<(String, String)> {
    [
        "kernel/panic",
        "kernel/panic_on_oops",
        "vm/overcommit_memory",
        "net/ipv4/ip_forward",
    ]
    .into_iter()
    .map(|k| {
        let v = std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_default();
        (k.to_owned(), v.trim().to_owned())
    })
    .collect()
}

/// After `cluster.sh down`: no state, process, mount, bridge, iptables rule, cgroup or lease of
/// ours.
fn the_cluster_leaves_nothing(dir: &Path) {
    assert!(!dir.exists(), "cluster.sh down left {}", dir.display());
    let dir = dir.to_string_lossy().into_owned();
    let ours: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir))
        .collect();
    assert!(ours.is_empty(), "processes left: {ours:#?}");
    let link = std::process::Command::new("ip")
        .args(["link", "show", "spright-k8s0"])
        .output()
        .unwrap();
    assert!(!link.status.success(), "the bridge spright-k8s0 is left");
    for tool in ["iptables-save", "ip6tables-save"] {
        let Ok(rules) = std::process::Command::new(tool).output() else {
            continue; // no such tool on this host: no such rules either
        };
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        let left: Vec<&str> = rules
            .lines()
            .filter(|l| l.contains("KUBE-") || l.contains("spright-k8s"))
            .collect();
        assert!(left.is_empty(), "{tool}: rules left: {left:#?}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir), "mounts left under {dir}");
    let left: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
        .map(|h| h.path().join("kubepods"))
        .chain([
            "/sys/fs/cgroup/kubepods".into(),
            "/var/lib/cni/networks/spright-k8s".into(),
        ])
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    assert!(left.is_empty(), "left: {left:?}");
}

/// Every Deployment rolled out and every pod Ready; the chain Service's address.
fn wait_ready(cluster: &Cluster) -> SocketAddr {
    for d in [
        "spright-demo-chain",
        "demo-parse",
        "demo-transform",
        "demo-render",
    ] {
        cluster.rolled_out(d, 100);
    }
    service_address(cluster, "spright-demo")
}

fn service_address(cluster: &Cluster, service: &str) -> SocketAddr {
    let ip = cluster.ok(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    format!("{ip}:80").parse().expect("cluster IP")
}

fn serves_through_its_service(cluster: &Cluster, service: SocketAddr) {
    // Function pods have no readiness probe of their own (joining is the shim's and the SDK's
    // business) and kube-proxy programs the Service's endpoints a moment later.
    wait_for(
        "the Service to answer /render",
        Duration::from_secs(60),
        || {
            let r = http::try_request(service, "POST", "/render", b"a b a").ok()?;
            (r.status == 200).then_some(())
        },
    );
    // curl, as a user would, through kube-proxy's rules.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--data-binary",
            "a b a",
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{service}/render"))
        .output()
        .expect("run curl");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = said.rsplit_once('\n').unwrap_or((&said, ""));
    assert_eq!(
        code,
        "200",
        "curl {service}/render: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        body.as_bytes(),
        spright_demo_chain::expected_page(b"a b a").as_slice(),
        "the word-count page"
    );
    all_answered(service, "through the Service", 8, 1_000);
    // Both pods of transform's Deployment joined the chain as instances 0 and 1.
    let log = cluster.ok(&[
        "logs",
        "deployment/spright-demo-chain",
        "-c",
        "pool-manager",
    ]);
    for instance in [0, 1] {
        let joined = format!(r#""instance":{instance},"function":"transform""#);
        assert!(
            log.contains(&joined),
            "transform instance {instance} never joined:\n{log}"
        );
    }
}

fn a_deleted_function_pod_is_replaced_and_serving_resumes(cluster: &Cluster, service: SocketAddr) {
    let old = cluster.pod_of("demo-parse");
    cluster.ok(&["delete", "pod", &old, "--wait=true", "--timeout=60s"]);
    cluster.rolled_out("demo-parse", 60);
    let new = cluster.pod_of("demo-parse");
    assert_ne!(old, new, "the Deployment made a new pod");
    // The replacement registers with the pool-manager: serving resumes without anyone's help.
    wait_for(
        "/render to answer again after parse's pod was replaced",
        Duration::from_secs(30),
        || right_page(service, b"one two two"),
    );
    all_answered(service, "after the replacement", 4, 200);
}

/// `kubectl rollout restart` of transform (two pods) while 8 connections send: each request
/// gets the right page or a 502 at once; none hangs; no pool buffer is left in use.
fn a_rolling_update_under_load_loses_nothing_silently(cluster: &Cluster, service: SocketAddr) {
    let (requests, failed) = under_load(service, 8, &[502], || {
        cluster.ok(&["rollout", "restart", "deployment/demo-transform"]);
        cluster.rolled_out("demo-transform", 100);
    });
    eprintln!("rolling update: {requests} requests, {failed} failed with 502");
    // `rollout status` can return before the last old pod is gone: wait for two pods, both of
    // the new ReplicaSet.
    wait_for(
        "the old transform pods gone",
        Duration::from_secs(60),
        || {
            let hashes = cluster.ok(&[
                "get",
                "pods",
                "-l",
                "app=demo-transform",
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.labels.pod-template-hash}{"\n"}{end}"#,
            ]);
            let hashes: Vec<&str> = hashes.lines().collect();
            (hashes.len() == 2 && hashes[0] == hashes[1]).then_some(())
        },
    );
    wait_pool_idle();
}

/// The chain pod (pool-manager and gateway) deleted: its Deployment makes a new one, the
/// function containers exit as their data sockets close, the kubelet restarts them in their
/// pods, and they register with the new pool-manager; nobody restarts anything by hand.
fn a_restarted_chain_pod_gets_its_functions_back(cluster: &Cluster, service: SocketAddr) {
    let functions = || {
        cluster.ok(&[
            "get",
            "pods",
            "-l",
            "app in (demo-parse,demo-transform,demo-render)",
            "-o",
            "name",
        ])
    };
    let before = functions();
    cluster.ok(&[
        "delete",
        "pod",
        "-l",
        "app=spright-demo-chain",
        "--wait=true",
        "--timeout=60s",
    ]);
    cluster.rolled_out("spright-demo-chain", 100);
    // The kubelet's crash-loop back-off (10 s, then doubling) paces the functions' return.
    wait_for(
        "/render to answer after the chain pod's restart",
        Duration::from_secs(120),
        || right_page(service, b"x y x"),
    );
    assert_eq!(functions(), before, "the same function pods serve again");
    // transform's second instance may still be in its back-off: wait until both are back.
    wait_for(
        "both transform instances back",
        Duration::from_secs(120),
        || (instances("transform")? == 2).then_some(()),
    );
    all_answered(service, "after the chain pod's restart", 4, 200);
}

/// `/render` of `words` answered with its page: `Some`, for `wait_for`.
fn right_page(service: SocketAddr, words: &[u8]) -> Option<()> {
    let r = http::try_request(service, "POST", "/render", words).ok()?;
    (r.status == 200 && r.body == spright_demo_chain::expected_page(words)).then_some(())
}

/// `requests` requests over `connections` connections, each answered with its page.
fn all_answered(service: SocketAddr, what: &str, connections: usize, requests: usize) {
    let mut l = Load::new(service, "POST", "/render", text_for);
    l.connections = connections;
    l.requests = requests;
    load::assert_all_answered(what, &load::run(l), |i| {
        spright_demo_chain::expected_page(&text_for(i))
    });
}

/// `connections` connections send `/render` through `service` while `during` runs (from once
/// the load flows until 200 more requests after it). Every request gets its right page, or fails
/// with a status in `fails_with` (0: its connection closed) within a second; none takes over
/// 6 s (the gateway's timeout is 5 s). Returns how many requests were sent and how many failed.
fn under_load(
    service: SocketAddr,
    connections: usize,
    fails_with: &[u16],
    during: impl FnOnce(),
) -> (usize, usize) {
    let until = Arc::new(AtomicBool::new(false));
    let mut l = Load::new(service, "POST", "/render", text_for);
    l.connections = connections;
    l.requests = 1_000_000;
    l.until = Some(until.clone());
    let completed = l.completed.clone();
    let load = std::thread::spawn(move || load::run(l));
    wait_for("load to flow", Duration::from_secs(10), || {
        (completed.load(Ordering::Relaxed) > 100).then_some(())
    });
    during();
    let after = completed.load(Ordering::Relaxed);
    wait_for("more load afterwards", Duration::from_secs(10), || {
        (completed.load(Ordering::Relaxed) > after + 200).then_some(())
    });
    until.store(true, Ordering::Relaxed);
    let outcomes = load.join().expect("load thread");
    let mut failed = 0;
    for (i, o) in &outcomes {
        let took = o.finished - o.started;
        if o.status == 200 {
            assert_eq!(
                o.body.as_ref(),
                spright_demo_chain::expected_page(&text_for(*i)).as_slice(),
                "request {i} got a wrong page"
            );
        } else {
            failed += 1;
            eprintln!(
                "request {i}: status {} after {took:?}: {}",
                o.status,
                String::from_utf8_lossy(&o.body)
            );
            assert!(
                fails_with.contains(&o.status) && took < Duration::from_secs(1),
                "request {i}: status {} after {took:?}: {:?}",
                o.status,
                o.body
            );
        }
        assert!(took < Duration::from_secs(6), "request {i} took {took:?}");
    }
    (outcomes.len(), failed)
}

/// The chain's manifest on the node (the pool-manager publishes it under the default root).
fn manifest() -> Option<Manifest> {
    Manifest::load(Path::new(DEFAULT_RUNTIME_ROOT), &ChainKey::chain(CHAIN)).ok()
}

/// Each function pod's `eth0` (the CNI bridge's) carries EPROXY, attached by the shim, and the
/// pool-manager reports it per function and container (a function may have several pods), on
/// /metrics too.
fn function_pods_own_traffic_is_counted(service: SocketAddr) {
    let counted = wait_for(
        "EPROXY on every function pod's eth0",
        Duration::from_secs(20),
        || {
            let stats = query_stats(&manifest()?.control_socket, Duration::from_secs(2)).ok()?;
            let mut functions: Vec<String> = stats
                .function_eproxy
                .into_iter()
                .filter(|t| t.counters.interface == "eth0" && t.counters.direction == "out")
                .map(|t| t.function)
                .collect();
            functions.sort();
            functions.dedup();
            (functions.len() == 3).then_some(functions)
        },
    );
    assert_eq!(counted, ["parse", "render", "transform"]);
    let metrics = http::get(service, "/metrics").text();
    assert!(
        metrics.contains(
            r#"spright_function_eproxy_packets_total{function="parse",namespace="k8s.io",container=""#
        ),
        "{metrics}"
    );
}

/// How many instances of `function` the pool-manager has registered.
fn instances(function: &str) -> Option<u16> {
    let stats = query_stats(&manifest()?.control_socket, Duration::from_secs(2)).ok()?;
    stats
        .functions
        .into_iter()
        .find(|f| f.name == function)
        .map(|f| f.instances)
}

fn wait_pool_idle() {
    let manifest = manifest().expect("the chain's manifest");
    let pool = Pool::open(&manifest.pool.path).expect("open the chain's pool");
    wait_for("every pool buffer free", Duration::from_secs(10), || {
        let s = pool.stats();
        (s.free == s.total).then_some(())
    });
}

fn bad_annotations_get_a_clear_event(cluster: &Cluster) {
    cluster.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: bad-annotation
  annotations: {spright.io/chain: "Not A Chain!", spright.io/function: parse}
spec:
  runtimeClassName: spright
  containers:
    - {name: parse, image: spright.local/functions:latest, command: [/bin/spright-demo-parse]}
"#,
    );
    let message = wait_for(
        "an event naming the bad annotation",
        Duration::from_secs(60),
        || {
            let events = cluster.ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=bad-annotation",
                "-o",
                "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
            ]);
            events
                .lines()
                .find(|l| l.contains("spright.io/chain"))
                .map(str::to_owned)
        },
    );
    assert!(
        message.contains("Not A Chain!"),
        "the event names the value: {message}"
    );
    let phase = cluster.ok(&[
        "get",
        "pod",
        "bad-annotation",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_ne!(phase, "Running", "{message}");
    cluster.ok(&[
        "delete",
        "pod",
        "bad-annotation",
        "--wait=true",
        "--timeout=60s",
    ]);
}

/// configs/kubernetes/autoscaling/ against the real API server: the HPA and the adapter's
/// ConfigMap as they are, the ScaledObject against KEDA's own CRD (e2e/kubernetes/fetch-keda.sh),
/// all with strict field validation (a misspelt field is refused, not dropped).
fn the_autoscaling_examples_are_valid_objects(cluster: &Cluster) {
    let versions =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kubernetes/versions"))
            .unwrap();
    let keda = versions
        .lines()
        .find_map(|l| l.strip_prefix("KEDA_VERSION="))
        .expect("KEDA_VERSION in e2e/kubernetes/versions");
    let cache = std::env::var("SPRIGHT_TEST_CACHE").unwrap_or("/var/cache/spright-test".into());
    let crd = format!("{cache}/keda/{keda}/keda.sh_scaledobjects.yaml");
    assert!(
        Path::new(&crd).exists(),
        "{crd} is missing: run e2e/kubernetes/fetch-keda.sh (scripts/test.sh does)"
    );
    cluster.ok(&["apply", "-f", &crd]);
    cluster.ok(&[
        "wait",
        "--for=condition=established",
        "crd/scaledobjects.keda.sh",
        "--timeout=60s",
    ]);
    let dry_run = |path: &str| {
        cluster.kubectl(&["apply", "--dry-run=server", "--validate=strict", "-f", path])
    };
    let out = dry_run(AUTOSCALING);
    assert!(
        out.status.success(),
        "configs/kubernetes/autoscaling/ refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a misspelt field in each kind is refused.
    let dir = tempfile::tempdir().unwrap();
    for (file, from, to) in [
        ("keda-scaledobject.yaml", "cooldownPeriod", "coolDownPeriod"),
        ("hpa.yaml", "minReplicas", "minReplica"),
    ] {
        let text = std::fs::read_to_string(Path::new(AUTOSCALING).join(file)).unwrap();
        assert!(text.contains(from), "{file} has no {from}");
        let bad = dir.path().join(file);
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        let out = dry_run(bad.to_str().unwrap());
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(to),
            "{file} with {to} was accepted: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    cluster.ok(&["delete", "-f", &crd, "--wait=true", "--timeout=60s"]);
}

fn deleting_the_manifests_leaves_nothing(cluster: &Cluster) {
    cluster.ok(&["delete", "-f", MANIFESTS, "--wait=true", "--timeout=100s"]);
    wait_for("every pod gone", Duration::from_secs(100), || {
        cluster
            .ok(&["get", "pods", "-o", "name"])
            .is_empty()
            .then_some(())
    });
    nothing_left_of(CHAIN);
}

/// No runtime directory, pool, pins, lock or mount of `key` (a chain's name, or a replica's
/// `<chain>@`) on the node. The pool-manager cleans up when its container stops; the shim
/// unmounts what it mounted.
fn nothing_left_of(key: &str) {
    let ours = |dir: &str, prefix: String| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .map(|n| format!("{dir}/{n}"))
            .collect()
    };
    let left = || {
        let mut left = ours("/run/spright", key.to_owned());
        left.extend(ours("/dev/shm", format!("spright-{key}")));
        left.extend(ours("/sys/fs/bpf/spright", key.to_owned()));
        left
    };
    wait_for(
        &format!("the runtime directories, pools and pins of {key} gone"),
        Duration::from_secs(30),
        || left().is_empty().then_some(()),
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounted: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.contains(&format!("/run/spright/{key}")) || l.contains(&format!("spright-{key}"))
        })
        .collect();
    assert!(mounted.is_empty(), "mounts left: {mounted:#?}");
}

/// A pod of the replicas' Deployment that is not being deleted.
struct Replica {
    pod: String,
    uid: String,
    gateway: SocketAddr,
}

impl Replica {
    fn key(&self) -> ChainKey {
        ChainKey::replica(CHAIN, &self.uid).expect("a pod UID is a replica id")
    }

    fn manifest(&self) -> Option<Manifest> {
        Manifest::load(Path::new(DEFAULT_RUNTIME_ROOT), &self.key()).ok()
    }

    /// Requests this replica's gateway answered with 200, on any route.
    fn answered(&self) -> u64 {
        let text = http::get(self.gateway, "/metrics").text();
        text.lines()
            .filter(|l| {
                l.starts_with("spright_http_requests_total{") && l.contains(r#"code="200""#)
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    }
}

fn live_replicas(cluster: &Cluster) -> Vec<Replica> {
    let out = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=spright-demo-replicas",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}|{.metadata.uid}|{.status.podIP}|{.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            // With an address, and no deletion time (a pod on its way out).
            (f.len() == 4 && !f[2].is_empty() && f[3].is_empty()).then(|| Replica {
                pod: f[0].to_owned(),
                uid: f[1].to_owned(),
                gateway: format!("{}:8080", f[2]).parse().expect("pod IP"),
            })
        })
        .collect()
}

/// Both replicas Ready, each with its three functions registered in its own pool-manager.
fn wait_two_replicas(cluster: &Cluster) -> Vec<Replica> {
    cluster.rolled_out("spright-demo-replicas", 100);
    let replicas = wait_for("two live replicas", Duration::from_secs(60), || {
        let r = live_replicas(cluster);
        (r.len() == 2).then_some(r)
    });
    for r in &replicas {
        wait_for(
            &format!("replica {} with parse, transform and render", r.pod),
            Duration::from_secs(60),
            || {
                let stats =
                    query_stats(&r.manifest()?.control_socket, Duration::from_secs(2)).ok()?;
                stats
                    .functions
                    .iter()
                    .all(|f| f.instances == 1)
                    .then_some(())
            },
        );
    }
    replicas
}

/// `configs/kubernetes/replicas/`: two whole replicas of the chain on this one node (beside the
/// chain the other manifests run, under the same name): their files never collide, each answers
/// right, the Service spreads requests over both, and deleting one under load costs at most its
/// requests in flight while the other serves on.
fn two_replicas_share_the_node_behind_one_service(cluster: &Cluster) {
    cluster.ok(&["apply", "-f", REPLICAS]);
    let replicas = wait_two_replicas(cluster);
    let service = service_address(cluster, "spright-demo-replicas");
    let [one, two] = [&replicas[0], &replicas[1]];
    let (m1, m2) = (one.manifest().unwrap(), two.manifest().unwrap());
    assert_ne!(m1.runtime_dir, m2.runtime_dir);
    assert_ne!(m1.pool.path, m2.pool.path);
    for (r, m) in [(one, &m1), (two, &m2)] {
        assert_eq!(m.replica.as_deref(), Some(r.uid.as_str()));
        let pins = Path::new("/sys/fs/bpf/spright").join(r.key().to_string());
        assert!(pins.is_dir(), "{} has its own pins", r.pod);
    }
    assert!(
        manifest().is_some(),
        "the chain of the other manifests still runs beside the replicas"
    );

    // Each replica answers right through its own gateway.
    for r in &replicas {
        wait_for(
            &format!("replica {} to answer", r.pod),
            Duration::from_secs(30),
            || right_page(r.gateway, b"left right left"),
        );
        all_answered(r.gateway, &format!("replica {}", r.pod), 4, 200);
    }
    // The Service spreads new connections over both (kube-proxy picks an endpoint per
    // connection): 100 requests, each on a connection of its own.
    wait_for(
        "the replicas' Service to answer",
        Duration::from_secs(60),
        || right_page(service, b"a b"),
    );
    // kube-proxy programs the second endpoint a moment after the rollout: wait until a
    // request has reached each replica through the Service.
    let start = [one.answered(), two.answered()];
    wait_for(
        "the Service to send requests to both replicas",
        Duration::from_secs(60),
        || {
            for i in 0..10 {
                right_page(service, &text_for(i))?;
            }
            (one.answered() > start[0] && two.answered() > start[1]).then_some(())
        },
    );
    let before = [one.answered(), two.answered()];
    for i in 0..100 {
        let r = http::request(service, "POST", "/render", &text_for(i));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.body, spright_demo_chain::expected_page(&text_for(i)));
    }
    let spread = [one.answered() - before[0], two.answered() - before[1]];
    eprintln!("replicas: the Service sent {spread:?} of 100 requests to each");
    assert!(
        spread.iter().all(|&n| n > 0) && spread.iter().sum::<u64>() == 100,
        "the Service spreads requests over both replicas: {spread:?}"
    );

    // One replica deleted while 8 connections send through the Service. A request in flight
    // on it may fail: 502 from its draining gateway, or its connection closed (status 0).
    let connections = 8;
    let mut survivor_during = 0;
    let mut replaced = Vec::new();
    let (requests, failed) = under_load(service, connections, &[0, 502], || {
        let survivor_before = two.answered();
        cluster.ok(&["delete", "pod", &one.pod, "--wait=true", "--timeout=60s"]);
        survivor_during = two.answered() - survivor_before;
        nothing_left_of(&one.key().to_string());
        replaced = wait_two_replicas(cluster);
    });
    assert!(
        replaced.iter().all(|r| r.uid != one.uid),
        "the Deployment made a new replica"
    );
    eprintln!(
        "replica lost: {requests} requests, {failed} failed; the other replica answered \
         {survivor_during} while the lost one was deleted"
    );
    assert!(
        failed <= connections,
        "losing a replica costs at most its requests in flight (one per connection): {failed} failed"
    );
    assert!(
        survivor_during > 0,
        "the other replica served while one was being deleted"
    );

    cluster.ok(&["delete", "-f", REPLICAS, "--wait=true", "--timeout=100s"]);
    wait_for("the replicas' pods gone", Duration::from_secs(100), || {
        cluster
            .ok(&[
                "get",
                "pods",
                "-l",
                "app=spright-demo-replicas",
                "-o",
                "name",
            ])
            .is_empty()
            .then_some(())
    });
    for r in &replaced {
        nothing_left_of(&r.key().to_string());
    }
    assert!(
        manifest().is_some(),
        "the other chain of the same name is untouched"
    );
}
