//! nerdctl with `--runtime io.containerd.spright.v1`, against a private containerd: plain
//! containers behave as under runc (CNI bridge and port mapping set up by nerdctl's OCI hooks,
//! exec, logs, stop, rm), and annotated function containers join their chain.
//!
//! Network traffic goes only to 127.0.0.1 (nerdctl's port mapping) and to addresses on the
//! test's own bridge.

use spright_e2e::containerd::{containerd_for_test, text, Containerd, Version};
use spright_e2e::load::{self, Load};
use spright_e2e::nerdctl::{self, iptables_rules_mentioning, Nerdctl, Network};
use spright_e2e::{http, wait_for, ChainSpec, ChainUnderTest};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

const RUNC: &str = "io.containerd.runc.v2";
const SPRIGHT: &str = "io.containerd.spright.v1";
const IMAGE: &str = "spright.local/functions:latest";

/// Runs `scenario` on containerd `series` with nerdctl, if both may run here (root, fetched
/// binaries; under `CI=true` their absence fails the test).
fn run_on(series: &str, test: &str, scenario: fn(&Version, &Path)) {
    let Some(version) = containerd_for_test(series, test) else {
        return;
    };
    let Some(binary) = nerdctl::for_test(&format!("{test} on containerd {series}")) else {
        return;
    };
    let begun = Instant::now();
    scenario(&version, &binary);
    eprintln!("{test} on {version}: {:.1?}", begun.elapsed());
}

/// A test per listed containerd series for `scenario`: `scenario::on_2_3`, ...
macro_rules! on_containerd {
    ($scenario:ident: $($series:literal => $test:ident),+ $(,)?) => {
        mod $scenario {
            $(
                #[test]
                fn $test() {
                    super::run_on($series, stringify!($scenario), super::$scenario)
                }
            )+
        }
    };
}

on_containerd!(plain_containers_behave_as_under_runc:
    "1.6" => on_1_6, "1.7" => on_1_7, "2.0" => on_2_0, "2.1" => on_2_1, "2.2" => on_2_2,
    "2.3" => on_2_3);
on_containerd!(function_containers_join_their_chain_and_bad_annotations_leave_nothing:
    "1.6" => on_1_6, "1.7" => on_1_7, "2.0" => on_2_0, "2.1" => on_2_1, "2.2" => on_2_2,
    "2.3" => on_2_3);

/// The page the test server serves.
const PAGE: &str = "hello from a nerdctl container\n";

/// A shell that writes a line to each stream, serves `PAGE` on port 8080 with busybox httpd,
/// and on SIGTERM says so and exits 3.
const SERVER: &str = "/bin/busybox mkdir -p /tmp/www; \
    echo 'hello from a nerdctl container' > /tmp/www/index.html; \
    echo 'to stdout'; echo 'to stderr' >&2; trap 'echo stopping; exit 3' TERM; \
    /bin/busybox httpd -f -p 8080 -h /tmp/www & wait";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn connect(port: u16) -> String {
    let addr = ([127, 0, 0, 1], port).into();
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => "answers".into(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

/// GET / from `addr`, waiting up to 10 s for something to answer.
fn page_at(addr: SocketAddr) -> String {
    wait_for(
        &format!("an answer from {addr}"),
        Duration::from_secs(10),
        || {
            http::raw(addr, b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
                .ok()
                .map(|r| format!("{} {}", r.status, r.text()))
        },
    )
}

/// stderr without nerdctl's own log lines (`time="..." level=...`).
fn container_stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("time=\""))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn streams(out: &std::process::Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        container_stderr(out)
    )
}

/// What one runtime did with the server container, step by step (only what is the same on
/// every run), and how long stop and rm took.
fn serve_exec_log_stop_rm(
    n: &Nerdctl<'_>,
    network: &Network,
    runtime: &str,
) -> (Vec<(&'static str, String)>, Duration) {
    let name = format!("web-{}", runtime.split('.').nth(2).unwrap_or("x"));
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let id = n
        .ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--runtime",
            runtime,
            "--net",
            &network.name,
            "-p",
            &publish,
            IMAGE,
            "/bin/sh",
            "-c",
            SERVER,
        ])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "nerdctl run -d printed {id:?}");
    let mut seen = Vec::new();

    // Through nerdctl's port mapping (CNI portmap's DNAT on 127.0.0.1), and on the bridge.
    seen.push((
        "GET / via 127.0.0.1 port mapping",
        page_at(([127, 0, 0, 1], port).into()),
    ));
    let ip: Ipv4Addr = n
        .inspect(&name, "{{.NetworkSettings.IPAddress}}")
        .parse()
        .unwrap_or_else(|e| panic!("{runtime}: container IP: {e}"));
    assert!(
        network.contains(ip),
        "{runtime}: {ip} is not on {}",
        network.cidr()
    );
    seen.push(("GET / via the bridge IP", page_at((ip, 8080).into())));
    seen.push((
        "ports",
        n.ok(&["port", &name])
            .trim()
            .replace(&port.to_string(), "<port>"),
    ));

    let exec = n.run(&[
        "exec",
        &name,
        "/bin/sh",
        "-c",
        "echo exec out; echo exec err >&2; exit 7",
    ]);
    seen.push(("exec (exit 7)", streams(&exec)));
    let exec = n.run_with_input(&["exec", "-i", &name, "/bin/cat"], b"piped in\n");
    seen.push(("exec -i cat", streams(&exec)));
    let exec = n.run(&[
        "exec",
        &name,
        "/bin/sh",
        "-c",
        "cat /proc/1/cmdline | /bin/busybox tr '\\0' ' '",
    ]);
    seen.push(("exec: pid 1", streams(&exec)));

    // The server wrote its lines before it served, which it does by now. `run -d` hands
    // containerd nerdctl's logging driver as a `binary://` URI for both output streams, which
    // the runtime must start (as the runc v2 shim does) for these to show.
    seen.push(("logs while running", streams(&n.run(&["logs", &name]))));

    let begun = Instant::now();
    let stop = n.run(&["stop", &name]);
    let stop_took = begun.elapsed();
    seen.push(("stop", streams(&stop)));
    seen.push((
        "state after stop",
        n.inspect(&name, "{{.State.Status}} {{.State.ExitCode}}"),
    ));
    seen.push(("logs after stop", streams(&n.run(&["logs", &name]))));
    // nerdctl's hook holds the host port (a `sleep infinity` with the socket, a child of the
    // shim) from create until the container is removed.
    seen.push(("127.0.0.1 port after stop", connect(port)));

    let begun = Instant::now();
    n.ok(&["rm", &name]);
    let rm_took = begun.elapsed();
    let ps = n.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    seen.push(("127.0.0.1 port after rm", connect(port)));
    seen.push(("listed after rm", ps.lines().any(|l| l == name).to_string()));
    // CNI DEL ran (nerdctl's poststop hook): no rule, lease or shim of the container left.
    let rules = iptables_rules_mentioning(&[&id, &format!("{ip}/32"), &format!("{ip}:")]);
    assert!(
        rules.is_empty(),
        "{runtime}: rules left after rm: {rules:#?}"
    );
    let lease = Path::new("/var/lib/cni/networks")
        .join(&network.name)
        .join(ip.to_string());
    assert!(
        !lease.exists(),
        "{runtime}: {} left after rm",
        lease.display()
    );
    wait_for(
        &format!("the {runtime} shim of {name} to exit"),
        Duration::from_secs(10),
        || n.containerd.shim_pids_for(&id).is_empty().then_some(()),
    );
    eprintln!("{runtime}: nerdctl stop took {stop_took:.1?}, rm {rm_took:.1?}");
    (seen, stop_took)
}

fn plain_containers_behave_as_under_runc(version: &Version, binary: &Path) {
    let runtime_root = tempfile::tempdir().unwrap();
    let c = Containerd::start(version, runtime_root.path());
    let mut n = Nerdctl::new(&c, binary);
    let network = n.network();

    let (runc, _) = serve_exec_log_stop_rm(&n, &network, RUNC);
    // What runc does is what is expected of any runtime.
    let expected: Vec<(&str, String)> = vec![
        ("GET / via 127.0.0.1 port mapping", format!("200 {PAGE}")),
        ("GET / via the bridge IP", format!("200 {PAGE}")),
        ("ports", "8080/tcp -> 127.0.0.1:<port>".into()),
        (
            "exec (exit 7)",
            r#"exit Some(1), stdout "exec out\n", stderr "exec err\n""#.into(),
        ),
        (
            "exec -i cat",
            r#"exit Some(0), stdout "piped in\n", stderr """#.into(),
        ),
        (
            "exec: pid 1",
            format!(
                "exit Some(0), stdout {:?}, stderr \"\"",
                format!("/bin/sh -c {SERVER} ")
            ),
        ),
        (
            "logs while running",
            r#"exit Some(0), stdout "to stdout\n", stderr "to stderr\n""#.into(),
        ),
        (
            "stop",
            format!("exit Some(0), stdout {:?}, stderr \"\"", "web-runc\n"),
        ),
        ("state after stop", "exited 3".into()),
        (
            "logs after stop",
            r#"exit Some(0), stdout "to stdout\nstopping\n", stderr "to stderr\n""#.into(),
        ),
        ("127.0.0.1 port after stop", "answers".into()),
        ("127.0.0.1 port after rm", "ConnectionRefused".into()),
        ("listed after rm", "false".into()),
    ];
    assert_eq!(runc, expected, "runc on {version}");

    let (spright, stop_took) = serve_exec_log_stop_rm(&n, &network, SPRIGHT);
    let differences: Vec<String> = runc
        .iter()
        .zip(&spright)
        .filter(|((_, r), (_, s))| r.replace("web-runc", "web-spright") != *s)
        .map(|((step, r), (_, s))| format!("{step}:\n  runc    {r}\n  spright {s}"))
        .collect();
    assert!(
        differences.is_empty(),
        "on {version}, the spright runtime differs from runc:\n{}\n{}",
        differences.join("\n"),
        tail(&c.log(), 40)
    );
    assert!(
        stop_took < Duration::from_secs(5),
        "nerdctl stop under spright took {stop_took:?} (the container exits on SIGTERM)"
    );
    drop(n);
    drop(c);
}

/// The last `n` lines of `log`.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn text_for(i: usize) -> Vec<u8> {
    format!("nerdctl request {i}: functions run by nerdctl count words run by nerdctl {i}")
        .into_bytes()
}

/// The names in a directory (none if it does not exist).
fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// IPs leased on `network` (host-local's files named by address).
fn leases(network: &Network) -> Vec<String> {
    dir_names(&Path::new("/var/lib/cni/networks").join(&network.name))
        .into_iter()
        .filter(|f| f.parse::<Ipv4Addr>().is_ok())
        .collect()
}

fn runc_states(c: &Containerd) -> Vec<String> {
    dir_names(&Path::new("/run/containerd/spright").join(&c.namespace))
}

fn function_containers_join_their_chain_and_bad_annotations_leave_nothing(
    version: &Version,
    binary: &Path,
) {
    let yaml = spright_e2e::demo_chain_yaml(true);
    let chain = ChainUnderTest::start(ChainSpec {
        yaml: &yaml,
        routing: "sockmap",
        args: &[],
    });
    let c = Containerd::start(version, &chain.runtime_root);
    let mut n = Nerdctl::new(&c, binary);
    let network = n.network();
    let chain_annotation = format!("spright.io/chain={}", chain.name);
    for f in ["parse", "transform", "render"] {
        let function_annotation = format!("spright.io/function={f}");
        let name = format!("fn-{f}");
        let command = format!("/bin/spright-demo-{f}");
        n.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--runtime",
            SPRIGHT,
            "--net",
            &network.name,
            "--annotation",
            &chain_annotation,
            "--annotation",
            &function_annotation,
            IMAGE,
            &command,
        ]);
    }
    for f in ["parse", "transform", "render"] {
        chain.wait_instances(f, 1);
        // nerdctl's hooks ran for annotated containers too: each is on the bridge.
        let ip: Ipv4Addr = n
            .inspect(&format!("fn-{f}"), "{{.NetworkSettings.IPAddress}}")
            .parse()
            .expect("function container IP");
        assert!(network.contains(ip), "fn-{f}: {ip}");
    }
    // And the shim counts each one's own traffic on the interface CNI gave it.
    let counted = wait_for(
        "EPROXY on the function containers' eth0",
        Duration::from_secs(10),
        || {
            let mut on_eth0: Vec<String> = chain
                .stats()
                .function_eproxy
                .into_iter()
                .filter(|t| t.counters.interface == "eth0" && t.counters.direction == "in")
                .map(|t| t.function)
                .collect();
            on_eth0.sort();
            (on_eth0.len() == 3).then_some(on_eth0)
        },
    );
    assert_eq!(counted, ["parse", "render", "transform"]);
    let mut l = Load::new(chain.addr, "POST", "/render", text_for);
    l.connections = 4;
    l.requests = 100;
    load::assert_all_answered("nerdctl containers", &load::run(l), |i| {
        spright_demo_chain::expected_page(&text_for(i))
    });
    let out = n.run(&[
        "exec",
        "fn-parse",
        "/bin/sh",
        "-c",
        "echo $SPRIGHT_CHAIN $SPRIGHT_FUNCTION; ls /run/spright",
    ]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("{} parse", chain.name)), "{said}");
    assert!(
        said.contains("function.sock") && said.contains("pool"),
        "{said}"
    );

    // Refused at create, with the annotation named; nothing of it left.
    let shims = {
        let mut p = c.shim_pids();
        p.sort();
        p
    };
    let (states, ips) = (runc_states(&c), leases(&network));
    assert_eq!(shims.len(), 3, "one shim per function container: {shims:?}");
    let cases = [
        (
            vec!["spright.io/function=parse".to_owned()],
            // nerdctl quotes containerd's message: `function=\"parse\" needs ...`.
            &[
                "annotation spright.io/function=",
                "needs spright.io/chain too",
            ][..],
        ),
        (
            vec![
                chain_annotation.clone(),
                "spright.io/function=search".to_owned(),
            ],
            &["search", "(annotation spright.io/function) is not declared"][..],
        ),
    ];
    for (i, (annotations, needles)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let mut args = vec![
            "run",
            "--rm",
            "--name",
            &name,
            "--runtime",
            SPRIGHT,
            "--net",
            &network.name,
        ];
        for a in annotations {
            args.extend(["--annotation", a.as_str()]);
        }
        args.extend([IMAGE, "/bin/spright-demo-parse"]);
        let out = n.run(&args);
        let said = text(&out);
        assert!(
            !out.status.success(),
            "{annotations:?} accepted on {version}"
        );
        for needle in *needles {
            assert!(
                said.contains(needle),
                "{annotations:?} on {version}: {said:?} lacks {needle:?}"
            );
        }
        wait_for(
            &format!("the shim of {name} to exit"),
            Duration::from_secs(10),
            || {
                let mut p = c.shim_pids();
                p.sort();
                (p == shims).then_some(())
            },
        );
        let ps = n.ok(&["ps", "-a", "--format", "{{.Names}}"]);
        assert!(!ps.lines().any(|l| l == name), "{name} listed: {ps}");
        let stdout = |args: &[&str]| String::from_utf8_lossy(&c.ctr(args).stdout).into_owned();
        let containers = stdout(&["containers", "ls", "--quiet"]);
        assert_eq!(containers.lines().count(), 3, "{name}: {containers}");
        let tasks = stdout(&["tasks", "ls", "--quiet"]);
        assert_eq!(tasks.lines().count(), 3, "{name}: {tasks}");
        assert_eq!(runc_states(&c), states, "runc state left by {name}");
        assert_eq!(leases(&network), ips, "IP lease left by {name}");
    }

    // nerdctl rm -f takes a function out of the chain; nothing of it stays.
    n.ok(&["rm", "-f", "fn-render"]);
    wait_for("render to leave the chain", Duration::from_secs(10), || {
        chain.pids("render").is_empty().then_some(())
    });
    chain.wait_pool_idle();
    drop(n);
    drop(c);
    chain.stop();
}
