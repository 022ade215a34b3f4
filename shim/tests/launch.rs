//! The shim binary's start handshake, run for real: `start` as containerd 2.3 calls it (the
//! bootstrap message on stdin, a socket directory of the test's), the server it spawns serving
//! the Task service under both API names, and a start that cannot succeed leaving nothing.
//! No containerd is needed: a unix socket that accepts stands in for containerd's ttrpc
//! address (the server only connects there to publish events).

use containerd_shim::api::{ConnectRequest, ConnectResponse, Empty, ShutdownRequest};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{CodedOutputStream, Message};
use containerd_shim::protos::ttrpc::r#async::Client;
use containerd_shim::protos::ttrpc::Request;
use containerd_shim::protos::types::introspection::RuntimeInfo;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-spright-v1");

fn bootstrap_params(id: &str, ttrpc: &Path, socket_dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = CodedOutputStream::vec(&mut out);
    w.write_string(1, id).unwrap();
    w.write_string(2, "launch-test").unwrap();
    w.write_string(4, "v2.3.7").unwrap();
    w.write_string(5, ttrpc.to_str().unwrap()).unwrap();
    w.write_string(6, "/run/launch-test/containerd.sock")
        .unwrap();
    w.write_string(7, "/usr/local/bin/containerd").unwrap();
    w.write_string(9, socket_dir.to_str().unwrap()).unwrap();
    w.flush().unwrap();
    drop(w);
    out
}

/// Runs `shim <args>` in `bundle` with `stdin`, without containerd's legacy variables.
fn shim(bundle: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(SHIM)
        .args(args)
        .current_dir(bundle)
        .env_remove("TTRPC_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the shim");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Processes running the shim binary whose command line names `needle`.
fn shim_processes(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd-shim-spright-v1") && cmdline.contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// The shim's log fifo in the bundle, read as containerd reads it (until the server closes it).
fn read_shim_log(bundle: &Path) -> std::thread::JoinHandle<String> {
    let fifo = bundle.join("log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap_or_default())
}

/// Kills the test's shim servers if the test fails before shutting them down.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in shim_processes(&self.0) {
            // SAFETY: signalling a shim server this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address in a `BootstrapResult { 1 version, 2 address, 3 protocol }`.
fn read_result(bytes: &[u8]) -> (u64, String, String) {
    let mut input = containerd_shim::protos::protobuf::CodedInputStream::from_bytes(bytes);
    let (mut version, mut address, mut protocol) = (0, String::new(), String::new());
    while !input.eof().unwrap() {
        match input.read_raw_varint32().unwrap() {
            8 => version = input.read_raw_varint64().unwrap(),
            18 => address = input.read_string().unwrap(),
            26 => protocol = input.read_string().unwrap(),
            tag => panic!("unexpected field tag {tag} in {bytes:?}"),
        }
    }
    (version, address, protocol)
}

async fn call<Req: Message, Resp: Message>(
    client: &Client,
    service: &str,
    method: &str,
    req: &Req,
) -> Result<Resp, String> {
    let request = Request {
        service: service.into(),
        method: method.into(),
        payload: req.write_to_bytes().unwrap(),
        timeout_nano: Duration::from_secs(5).as_nanos() as i64,
        ..Default::default()
    };
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    if let Some(status) = response.status.as_ref() {
        if status.code.value() != 0 {
            return Err(status.message.clone());
        }
    }
    Resp::parse_from_bytes(&response.payload).map_err(|e| e.to_string())
}

#[test]
fn a_bootstrap_start_serves_task_api_v2_and_v3_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let sockets = dir.path().join("s");
    std::fs::create_dir_all(&bundle).unwrap();
    let shim_log = read_shim_log(&bundle);
    // containerd's ttrpc address: accepting is enough for the publisher to connect.
    let ttrpc = dir.path().join("containerd.sock.ttrpc");
    let _containerd = UnixListener::bind(&ttrpc).unwrap();
    let id = format!("launch-{}", std::process::id());
    let _reap = KillOnDrop(id.clone());

    let out = shim(
        &bundle,
        &["-id", "stale-flag", "start"],
        &bootstrap_params(&id, &ttrpc, &sockets),
    );
    assert!(
        out.status.success(),
        "start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (version, address, protocol) = read_result(&out.stdout);
    assert_eq!((version, protocol.as_str()), (3, "ttrpc"));
    let socket = PathBuf::from(address.strip_prefix("unix://").expect("a unix address"));
    assert_eq!(socket.parent(), Some(sockets.as_path()), "{address}");
    assert_eq!(
        std::fs::read_to_string(bundle.join("address")).unwrap(),
        address
    );
    assert_eq!(shim_processes(&id).len(), 1, "one server for the container");
    // The listening socket it was handed must not leak into runc and the containers.
    let server = shim_processes(&id)[0];
    let fdinfo = std::fs::read_to_string(format!("/proc/{server}/fdinfo/3")).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(
        flags & libc::O_CLOEXEC as u32,
        0,
        "fd 3 is close-on-exec: {fdinfo}"
    );

    // A second start for the same group joins the live server.
    let again = shim(
        &bundle,
        &["start"],
        &bootstrap_params(&id, &ttrpc, &sockets),
    );
    assert!(again.status.success());
    assert_eq!(read_result(&again.stdout).1, address);
    assert_eq!(shim_processes(&id).len(), 1, "joined, not spawned");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect(&address).await.unwrap();
        let server_pid = *shim_processes(&id).first().unwrap();
        for service in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
            let connected: ConnectResponse =
                call(&client, service, "Connect", &ConnectRequest::new())
                    .await
                    .unwrap_or_else(|e| panic!("{service}/Connect: {e}"));
            assert_eq!(connected.shim_pid, server_pid, "{service}");
        }
        let unknown: Result<ConnectResponse, _> = call(
            &client,
            "containerd.task.v4.Task",
            "Connect",
            &ConnectRequest::new(),
        )
        .await;
        assert!(unknown.is_err(), "only v2 and v3 are served");
        let _ = call::<_, Empty>(
            &client,
            "containerd.task.v3.Task",
            "Shutdown",
            &ShutdownRequest::new(),
        )
        .await;
    });
    wait_until("the server to exit after Shutdown", || {
        shim_processes(&id).is_empty()
    });
    assert!(!socket.exists(), "the server removed its socket");
    let log = shim_log.join().unwrap();
    assert!(
        log.contains("serving task API v2 and v3"),
        "shim log: {log}"
    );
}

#[test]
fn a_start_whose_server_cannot_come_up_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let sockets = dir.path().join("s");
    std::fs::create_dir_all(&bundle).unwrap();
    let _shim_log = read_shim_log(&bundle);
    // Nobody listens at containerd's ttrpc address: the server cannot publish, so it fails.
    let ttrpc = dir.path().join("nobody.ttrpc");
    let id = format!("launch-fail-{}", std::process::id());
    let out = shim(
        &bundle,
        &["start"],
        &bootstrap_params(&id, &ttrpc, &sockets),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start succeeded without containerd");
    assert!(
        stderr.contains("the shim server did not start") && stderr.contains("nobody.ttrpc"),
        "says what failed: {stderr}"
    );
    assert!(shim_processes(&id).is_empty(), "no server left running");
    let left: Vec<_> = std::fs::read_dir(&sockets)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                // The start lock is shared by every start in the directory and stays.
                .filter(|p| !p.ends_with(".spright-start.lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "sockets left: {left:?}");
    assert!(!bundle.join("address").exists());
}

#[test]
fn an_unknown_start_protocol_is_named_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let id = format!("unknown-protocol-{}", std::process::id());
    let out = shim(
        dir.path(),
        &["-namespace", "n", "-id", &id, "-address", "/a", "start"],
        br#"{"instanceID": "x", "namespace": "n"}"#,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("neither runtime options") && stderr.contains("bootstrap parameters"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no address for containerd to dial");
    assert!(shim_processes(&id).is_empty());
}

#[test]
fn a_legacy_start_without_containerds_variables_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = shim(
        dir.path(),
        &["-namespace", "n", "-id", "x", "-address", "/a", "start"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("TTRPC_ADDRESS"), "{stderr}");
}

#[test]
fn info_describes_the_runtime_with_runcs_features() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Any::new();
    options.type_url = "containerd.runc.v1.Options".into();
    let out = shim(dir.path(), &["-info"], &options.write_to_bytes().unwrap());
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("runc features") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "runc is missing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("skipped: runc is not installed");
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(info.name, "io.containerd.spright.v1");
    assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
    let features: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
    assert!(features.get("ociVersionMax").is_some(), "{features}");
}
