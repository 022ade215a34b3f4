//! `configs/kubernetes/` on a real single-node cluster (e2e/kubernetes/cluster.sh: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, containerd 2.3
//! with the spright runtime): applied unchanged, reached through its Service, a function pod
//! replaced, a pod with bad annotations refused with an event, and nothing left on the node
//! after `kubectl delete -f`.
//!
//! One test: the cluster takes about a minute to start, and its steps share it in order.

use spright_e2e::http;
use spright_e2e::kubernetes::Cluster;
use spright_e2e::load::{self, Load};
use spright_test_support::{have_root, wait_for};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/kubernetes");
const CHAIN: &str = "demo";

fn text_for(i: usize) -> Vec<u8> {
    format!("kubernetes request {i}: pods on a node count words in pods {i}").into_bytes()
}

#[test]
fn the_manifests_run_unchanged_on_a_real_node() {
    if !have_root("the_manifests_run_unchanged_on_a_real_node") {
        return;
    }
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
    a_deleted_function_pod_is_replaced_and_serving_resumes(&cluster, service);
    bad_annotations_get_a_clear_event(&cluster);
    deleting_the_manifests_leaves_nothing(&cluster);
    let dir = cluster
        .kubeconfig
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_owned();
    assert!(cluster.down(), "cluster.sh down failed");
    the_cluster_leaves_nothing(&dir);
}

/// After `cluster.sh down`: no state, process, bridge, iptables rule or runc state of ours.
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
        let rules = std::process::Command::new(tool).output().unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        let left: Vec<&str> = rules
            .lines()
            .filter(|l| l.contains("KUBE-") || l.contains("spright-k8s"))
            .collect();
        assert!(left.is_empty(), "{tool}: rules left: {left:#?}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir), "mounts left under {dir}");
}

/// Every Deployment rolled out and every pod Ready; the chain Service's address.
fn wait_ready(cluster: &Cluster) -> SocketAddr {
    for d in [
        "spright-demo-chain",
        "demo-parse",
        "demo-transform",
        "demo-render",
    ] {
        let out = cluster.kubectl(&[
            "rollout",
            "status",
            &format!("deployment/{d}"),
            "--timeout=100s",
        ]);
        assert!(
            out.status.success(),
            "deployment {d} did not roll out: {}\n{}\n{}",
            spright_e2e::containerd::text(&out),
            cluster.ok(&["get", "pods", "-o", "wide"]),
            cluster.logs()
        );
    }
    let ip = cluster.ok(&[
        "get",
        "service",
        "spright-demo",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    format!("{ip}:80").parse().expect("cluster IP")
}

fn serves_through_its_service(cluster: &Cluster, service: SocketAddr) {
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
    let mut l = Load::new(service, "POST", "/render", text_for);
    l.connections = 8;
    l.requests = 1_000;
    load::assert_all_answered("through the Service", &load::run(l), |i| {
        spright_demo_chain::expected_page(&text_for(i))
    });
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
    let old = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=demo-parse",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    cluster.ok(&["delete", "pod", &old, "--wait=true", "--timeout=60s"]);
    let out = cluster.kubectl(&[
        "rollout",
        "status",
        "deployment/demo-parse",
        "--timeout=60s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        spright_e2e::containerd::text(&out)
    );
    let new = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=demo-parse",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    assert_ne!(old, new, "the Deployment made a new pod");
    // The replacement registers with the pool-manager: serving resumes without anyone's help.
    wait_for(
        "/render to answer again after parse's pod was replaced",
        Duration::from_secs(30),
        || {
            let r = http::post(service, "/render", b"one two two");
            (r.status == 200 && r.body[..] == spright_demo_chain::expected_page(b"one two two")[..])
                .then_some(())
        },
    );
    let mut l = Load::new(service, "POST", "/render", text_for);
    l.connections = 4;
    l.requests = 200;
    load::assert_all_answered("after the replacement", &load::run(l), |i| {
        spright_demo_chain::expected_page(&text_for(i))
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

fn deleting_the_manifests_leaves_nothing(cluster: &Cluster) {
    cluster.ok(&["delete", "-f", MANIFESTS, "--wait=true", "--timeout=100s"]);
    wait_for("every pod gone", Duration::from_secs(100), || {
        cluster
            .ok(&["get", "pods", "-o", "name"])
            .is_empty()
            .then_some(())
    });
    // The pool-manager cleans up when its container stops; the shim unmounts what it mounted.
    wait_for(
        "the chain's runtime directory, pool and pins gone",
        Duration::from_secs(30),
        || {
            let left: Vec<String> = [
                format!("/run/spright/{CHAIN}"),
                format!("/dev/shm/spright-{CHAIN}.pool"),
                format!("/sys/fs/bpf/spright/{CHAIN}"),
            ]
            .into_iter()
            .filter(|p| Path::new(p).exists())
            .collect();
            left.is_empty().then_some(())
        },
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.contains(&format!("/run/spright/{CHAIN}"))
                || l.contains(&format!("spright-{CHAIN}.pool"))
        })
        .collect();
    assert!(ours.is_empty(), "mounts left: {ours:#?}");
}
