//! The demo chain with its functions as containers under the spright runtime, started with
//! `ctr run --runtime io.containerd.spright.v1`: the shim wires each into the chain.

use spright_e2e::containerd::{text, Containerd, Version};
use spright_e2e::load::{self, Load};
use spright_e2e::{http, on_every_containerd, wait_for, ChainSpec, ChainUnderTest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SPRIGHT: &str = "io.containerd.spright.v1";
const IMAGE: &str = "spright.local/functions:latest";

on_every_containerd!(
    functions_run_as_containers_answer_and_can_be_exec_ed_into,
    the_online_boutique_runs_as_containers,
    killing_a_function_container_fails_fast_and_it_rejoins_when_restarted,
    bad_annotations_fail_the_create_and_leave_nothing_behind,
);

/// The demo chain with images instead of commands: `spright up` runs only the pool-manager
/// and the gateway, the functions come as containers.
fn container_chain() -> String {
    spright_e2e::demo_chain_yaml(true)
}

struct Setup {
    chain: ChainUnderTest,
    containerd: Containerd,
}

fn setup(version: &Version, routing: &'static str) -> Setup {
    let yaml = container_chain();
    let chain = ChainUnderTest::start(ChainSpec {
        yaml: &yaml,
        routing,
        args: &[],
    });
    let containerd = Containerd::start(version, &chain.runtime_root);
    for f in ["parse", "transform", "render"] {
        run_function(&containerd, &chain, f, f);
    }
    for f in ["parse", "transform", "render"] {
        chain.wait_instances(f, 1);
    }
    Setup { chain, containerd }
}

/// `ctr run -d` of a demo function container (own network namespace, no privileges).
fn run_function(c: &Containerd, chain: &ChainUnderTest, function: &str, id: &str) {
    run_container(
        c,
        chain,
        function,
        id,
        &[&format!("/bin/spright-demo-{function}")],
    );
}

/// `ctr run -d` of `command` in the functions image, wired in as `function`.
fn run_container(
    c: &Containerd,
    chain: &ChainUnderTest,
    function: &str,
    id: &str,
    command: &[&str],
) {
    let chain_annotation = format!("spright.io/chain={}", chain.name);
    let function_annotation = format!("spright.io/function={function}");
    let mut args = vec![
        "run",
        "-d",
        "--runtime",
        SPRIGHT,
        "--annotation",
        &chain_annotation,
        "--annotation",
        &function_annotation,
        IMAGE,
        id,
    ];
    args.extend(command);
    let out = c.ctr(&args);
    assert!(
        out.status.success(),
        "ctr run {id} on {}: {}\n{}",
        c.version,
        text(&out),
        c.log()
    );
}

fn text_for(i: usize) -> Vec<u8> {
    format!("container request {i}: functions in containers count words in containers {i}")
        .into_bytes()
}

fn functions_run_as_containers_answer_and_can_be_exec_ed_into(version: &Version) {
    let Setup { chain, containerd } = setup(version, "sockmap");
    let mut l = Load::new(chain.addr, "POST", "/render", text_for);
    l.connections = 16;
    l.requests = 1_000;
    load::assert_all_answered("containers", &load::run(l), |i| {
        spright_demo_chain::expected_page(&text_for(i))
    });
    assert_eq!(http::post(chain.addr, "/count", b"a b a").status, 200);

    let out = containerd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "look",
        "parse",
        "/bin/sh",
        "-c",
        "echo $SPRIGHT_CHAIN $SPRIGHT_FUNCTION; ls /run/spright; cat /proc/net/dev; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("{} parse", chain.name)), "{said}");
    assert!(
        said.contains("function.sock") && said.contains("pool"),
        "{said}"
    );

    // No host network: the container sees only its own loopback, none of the host's interfaces.
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    for iface in host
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(i, _)| i.trim())
    {
        if iface != "lo" {
            assert!(
                !said.contains(&format!("{iface}:")),
                "host interface {iface} visible: {said}"
            );
        }
    }
    assert!(said.contains("lo:"), "{said}");
    chain.wait_pool_idle();
    drop(containerd);
    chain.stop();
}

/// The Online Boutique's ten services as containers: a shopper's visit answers correctly.
fn the_online_boutique_runs_as_containers(version: &Version) {
    let services = spright_example_boutique::services::NAMES;
    let mut yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/boutique/chain.yaml"
    ))
    .unwrap()
    .replace("chain: boutique", "chain: {name}");
    for s in services {
        yaml = yaml.replace(
            &format!("command: [spright-boutique, {s}]"),
            &format!("image: {IMAGE}"),
        );
    }
    assert!(!yaml.contains("command:"), "every service is a container");
    let chain = ChainUnderTest::start(ChainSpec {
        yaml: &yaml,
        routing: "sockmap",
        args: &[],
    });
    let containerd = Containerd::start(version, &chain.runtime_root);
    for s in services {
        run_container(&containerd, &chain, s, s, &["/bin/spright-boutique", s]);
    }
    for s in services {
        chain.wait_instances(s, 1);
    }
    spright_e2e::workloads::boutique_visit(chain.addr, "containers");
    chain.wait_pool_idle();
    drop(containerd);
    chain.stop();
}

fn killing_a_function_container_fails_fast_and_it_rejoins_when_restarted(version: &Version) {
    let Setup { chain, containerd } = setup(version, "sockmap");
    let stop = Arc::new(AtomicBool::new(false));
    let mut l = Load::new(chain.addr, "POST", "/render", text_for);
    l.connections = 16;
    l.requests = usize::MAX;
    l.until = Some(stop.clone());
    let completed = l.completed.clone();
    let runner = std::thread::spawn(move || load::run(l));
    wait_for("load to get going", Duration::from_secs(20), || {
        (completed.load(Ordering::Relaxed) > 500).then_some(())
    });
    let killed_at = Instant::now();
    let out = containerd.ctr(&["tasks", "kill", "--signal", "SIGKILL", "transform"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(
        "transform to leave the chain",
        Duration::from_secs(5),
        || chain.pids("transform").is_empty().then_some(()),
    );
    // Its sockets close as it dies; containerd learns of the exit a moment later.
    wait_for(
        "containerd to see transform stopped",
        Duration::from_secs(10),
        || {
            let list = text(&containerd.ctr(&["tasks", "ls"]));
            list.lines()
                .any(|l| l.starts_with("transform ") && l.contains("STOPPED"))
                .then_some(())
        },
    );
    let out = containerd.ctr(&["tasks", "delete", "transform"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = containerd.ctr(&["tasks", "start", "--detach", "transform"]);
    assert!(out.status.success(), "{}", text(&out));
    chain.wait_instances("transform", 1);
    let restarted_at = Instant::now();
    let before = completed.load(Ordering::Relaxed);
    wait_for("load to go on", Duration::from_secs(20), || {
        (completed.load(Ordering::Relaxed) > before + 500).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let outcomes = runner.join().unwrap();
    load::assert_failed_fast_and_recovered(
        "transform container",
        &outcomes,
        |i| spright_demo_chain::expected_page(&text_for(i)),
        killed_at,
        restarted_at,
    );
    chain.wait_pool_idle();
    drop(containerd);
    chain.stop();
}

fn bad_annotations_fail_the_create_and_leave_nothing_behind(version: &Version) {
    let yaml = container_chain();
    let chain = ChainUnderTest::start(ChainSpec {
        yaml: &yaml,
        routing: "sockmap",
        args: &[],
    });
    let c = Containerd::start(version, &chain.runtime_root);
    let chain_annotation = format!("spright.io/chain={}", chain.name);
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "spright.io/chain=ghost".into(),
                "spright.io/function=parse".into(),
            ],
            "chain \"ghost\" (annotation spright.io/chain) is not running".into(),
        ),
        (
            vec![
                chain_annotation.clone(),
                "spright.io/function=search".into(),
            ],
            "function \"search\" (annotation spright.io/function) is not declared".into(),
        ),
        (
            vec![chain_annotation.clone()],
            "needs spright.io/function".into(),
        ),
        (
            vec![
                chain_annotation.clone(),
                "spright.io/function=Parse!".into(),
            ],
            "is malformed".into(),
        ),
        (
            vec![chain_annotation, "spright.io/funtcion=parse".into()],
            "unknown annotation spright.io/funtcion".into(),
        ),
    ];
    for (i, (annotations, needle)) in cases.iter().enumerate() {
        let id = format!("bad-{i}");
        let mut args = vec!["run", "--rm", "--runtime", SPRIGHT];
        for a in annotations {
            args.extend(["--annotation", a.as_str()]);
        }
        args.extend([IMAGE, id.as_str(), "/bin/spright-demo-parse"]);
        let out = c.ctr(&args);
        let said = text(&out);
        assert!(
            !out.status.success(),
            "{annotations:?} was accepted on {version}"
        );
        assert!(
            said.contains(needle),
            "{annotations:?} on {version}: {said:?} lacks {needle:?}"
        );
        // Nothing left: no shim, no task, no container record, no runc state, no rootfs
        // mount, no registration. (The shim exits once containerd has deleted the task.)
        wait_for(
            &format!("the shim of {id} to exit"),
            Duration::from_secs(10),
            || c.shim_pids_for(&id).is_empty().then_some(()),
        );
        let tasks = text(&c.ctr(&["tasks", "ls", "--quiet"]));
        assert!(!tasks.contains(&id), "task {id} left behind: {tasks}");
        let containers = text(&c.ctr(&["containers", "ls", "--quiet"]));
        assert!(
            !containers.contains(&id),
            "container {id} left behind: {containers}"
        );
        let rootfs = format!("/{id}/rootfs");
        let mounted = || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| l.contains(&rootfs))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let left = mounted();
        if !left.is_empty() {
            // containerd may still be undoing its side of the create.
            wait_for(
                &format!("the rootfs of {id} to be unmounted on {version}: {left:?}"),
                Duration::from_secs(10),
                || mounted().is_empty().then_some(()),
            );
        }
        let state = std::path::Path::new("/run/containerd/spright")
            .join(&c.namespace)
            .join(&id);
        assert!(!state.exists(), "runc state left at {}", state.display());
    }
    assert!(c.shim_pids().is_empty(), "shims left: {:?}", c.shim_pids());
    let stats = chain.stats();
    assert!(
        stats
            .functions
            .iter()
            .all(|f| f.instances == 0 || f.name == "gateway"),
        "{stats:?}"
    );
    drop(c);
    chain.stop();
}
