//! The Task service over a recording runtime: the order of runc calls and events, the state
//! machine at the API, and the codes containerd gets, without root.

mod fake;

use super::*;
use containerd_shim::api::Status;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use fake::{Call, Exit, FakeRuntime, Journal, Kind, Recorder};
use serde_json::json;
use std::fmt::Debug;

const CREATE: &str = "/tasks/create";
const START: &str = "/tasks/start";
const EXIT: &str = "/tasks/exit";
const DELETE: &str = "/tasks/delete";
const EXEC_ADDED: &str = "/tasks/exec-added";
const EXEC_STARTED: &str = "/tasks/exec-started";

struct Shim {
    service: TaskService,
    runc: FakeRuntime,
    journal: Arc<Journal>,
    /// For each scripted exit of a known pid: whether its start gate was closed (its exit
    /// then waits for the start event).
    gate_closed_at_exit: Arc<Mutex<Vec<bool>>>,
    bundles: tempfile::TempDir,
    _runtime_root: tempfile::TempDir,
}

fn shim() -> Shim {
    shim_in(tempfile::tempdir().unwrap())
}

/// A shim whose chains are published in `runtime_root`; the fake's scripted exits reach it as
/// the reaper's would.
fn shim_in(runtime_root: tempfile::TempDir) -> Shim {
    shim_counting(runtime_root, |_, _, _, _| Ok(None))
}

/// [`shim_in`] with `start` starting EPROXY on function containers, all of which are in the
/// test's own network namespace.
fn shim_counting(runtime_root: tempfile::TempDir, start: crate::traffic::Start) -> Shim {
    let count_traffic = crate::traffic::Seam {
        open: |_| crate::traffic::Netns::open("/proc/self/ns/net"),
        start,
    };
    let runc = FakeRuntime::new();
    let journal = runc.journal();
    let service = TaskService::with_parts(
        "test",
        Arc::new(runc.clone()),
        Arc::new(Recorder(journal.clone())),
        runtime_root.path().to_owned(),
        Arc::new(ExitSignal::default()),
        count_traffic,
    );
    let reaper = service.clone();
    let gate_closed_at_exit = Arc::new(Mutex::new(Vec::new()));
    let gates = gate_closed_at_exit.clone();
    runc.set_exit_sink(Arc::new(move |pid, code| {
        let containers = reaper.inner.containers.lock().unwrap();
        let gate = containers
            .values()
            .flat_map(|c| std::iter::once(&c.init).chain(c.execs.values()))
            .find(|p| p.pid == pid)
            .map(|p| !*p.started.borrow());
        drop(containers);
        gates.lock().unwrap().extend(gate);
        reaper.exited(pid, code, now());
    }));
    Shim {
        service,
        runc,
        journal,
        gate_closed_at_exit,
        bundles: tempfile::tempdir().unwrap(),
        _runtime_root: runtime_root,
    }
}

fn ctx() -> TtrpcContext {
    TtrpcContext {
        mh: Default::default(),
        metadata: Default::default(),
        timeout_nano: 0,
    }
}

/// The code and message containerd would get.
fn refused<T: Debug>(result: TtrpcResult<T>) -> (Code, String) {
    match result {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message),
        other => panic!("expected a status, got {other:?}"),
    }
}

fn runc_failed(command: &str, message: &str) -> crate::runc::RuncError {
    crate::runc::RuncError::Failed {
        command: command.into(),
        code: 1,
        message: message.into(),
    }
}

impl Shim {
    /// A bundle for `id` whose spec has `annotations` and a PID namespace of its own or not.
    fn bundle(&self, id: &str, own_pid_namespace: bool, annotations: Value) -> String {
        let dir = self.bundles.path().join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let namespaces = if own_pid_namespace {
            json!([{"type": "pid"}, {"type": "mount"}])
        } else {
            json!([{"type": "mount"}])
        };
        let spec = json!({
            "ociVersion": "1.1.0",
            "process": {"args": ["/bin/app"], "env": ["PATH=/bin"]},
            "mounts": [],
            "annotations": annotations,
            "linux": {"namespaces": namespaces},
        });
        std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
        dir.to_string_lossy().into_owned()
    }

    async fn create_with(
        &self,
        id: &str,
        own_pid_namespace: bool,
        annotations: Value,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let req = api::CreateTaskRequest {
            id: id.into(),
            bundle: self.bundle(id, own_pid_namespace, annotations),
            ..Default::default()
        };
        self.service.create(&ctx(), req).await
    }

    /// Creates a plain container with its own PID namespace; its init's pid.
    async fn create(&self, id: &str) -> u32 {
        self.create_with(id, true, json!({})).await.unwrap().pid
    }

    async fn start(&self, id: &str, exec_id: &str) -> TtrpcResult<u32> {
        let req = api::StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.start(&ctx(), req).await.map(|r| r.pid)
    }

    async fn exec(&self, id: &str, exec_id: &str) -> TtrpcResult<api::Empty> {
        let mut spec = containerd_shim::protos::protobuf::well_known_types::any::Any::new();
        spec.value = json!({"args": ["/bin/sh"], "env": ["PATH=/bin"], "cwd": "/"})
            .to_string()
            .into_bytes();
        let req = api::ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            spec: Some(spec).into(),
            ..Default::default()
        };
        self.service.exec(&ctx(), req).await
    }

    async fn kill(&self, id: &str, exec_id: &str, signal: u32) -> TtrpcResult<api::Empty> {
        let req = api::KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal,
            ..Default::default()
        };
        self.service.kill(&ctx(), req).await
    }

    async fn delete(&self, id: &str, exec_id: &str) -> TtrpcResult<api::DeleteResponse> {
        let req = api::DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.delete(&ctx(), req).await
    }

    async fn pause(&self, id: &str, pause: bool) -> TtrpcResult<api::Empty> {
        if pause {
            let req = api::PauseRequest {
                id: id.into(),
                ..Default::default()
            };
            self.service.pause(&ctx(), req).await
        } else {
            let req = api::ResumeRequest {
                id: id.into(),
                ..Default::default()
            };
            self.service.resume(&ctx(), req).await
        }
    }

    /// Waits (5 s at most) for the process's exit; its status.
    async fn wait(&self, id: &str, exec_id: &str) -> u32 {
        let req = api::WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let ctx = ctx();
        let waited = tokio::time::timeout(Duration::from_secs(5), self.service.wait(&ctx, req));
        let response = waited.await.expect("the exit within 5 s").unwrap();
        response.exit_status
    }

    async fn status(&self, id: &str, exec_id: &str) -> TtrpcResult<Status> {
        let req = api::StateRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let state = self.service.state(&ctx(), req).await?;
        Ok(state.status.enum_value_or_default())
    }

    /// What the reaper does when it reaps `pid`.
    fn reap(&self, pid: u32, code: i32) {
        self.service.exited(pid, code, now());
    }
}

#[tokio::test]
async fn a_task_is_created_started_killed_and_deleted_in_runcs_order_with_each_event_once() {
    let s = shim();
    let pid = s.create("c1").await;
    assert_eq!(s.status("c1", "").await.unwrap(), Status::CREATED);
    assert_eq!(s.start("c1", "").await.unwrap(), pid);
    assert_eq!(s.status("c1", "").await.unwrap(), Status::RUNNING);
    s.kill("c1", "", 15).await.unwrap();
    s.reap(pid, 143);
    assert_eq!(s.wait("c1", "").await, 143);
    s.journal.wait_for_event(EXIT, 1).await;
    assert_eq!(s.status("c1", "").await.unwrap(), Status::STOPPED);
    let deleted = s.delete("c1", "").await.unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (pid, 143));

    assert_eq!(
        s.journal.calls(),
        [
            Call::Create {
                id: "c1".into(),
                systemd_cgroup: false
            },
            Call::Start { id: "c1".into() },
            Call::Kill {
                id: "c1".into(),
                signal: 15,
                all: false
            },
            Call::Delete {
                id: "c1".into(),
                force: false
            },
        ]
    );
    assert_eq!(s.journal.topics(), [CREATE, START, EXIT, DELETE]);
    assert_eq!(
        s.journal.exits(),
        [Exit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid,
            status: 143
        }]
    );
    assert_eq!(s.service.container_count(), 0);
    assert_eq!(refused(s.status("c1", "").await).0, Code::NOT_FOUND);
}

#[tokio::test]
async fn an_exit_is_published_once_however_often_it_is_reported() {
    let s = shim();
    let pid = s.create("c1").await;
    s.start("c1", "").await.unwrap();
    s.reap(pid, 0);
    s.journal.wait_for_event(EXIT, 1).await;
    // The reaper cannot report a reaped pid twice, and a second report is refused by the
    // process's state.
    s.reap(pid, 0);
    s.service.finish("c1", "", pid, 0, now(), true).await;
    assert_eq!(s.journal.exits().len(), 1, "{:?}", s.journal.sequence());
}

#[tokio::test]
async fn an_init_without_its_own_pid_namespace_takes_its_processes_with_it_before_its_exit_is_published(
) {
    let s = shim();
    let pid = s.create_with("c1", false, json!({})).await.unwrap().pid;
    s.start("c1", "").await.unwrap();
    s.reap(pid, 0);
    s.journal.wait_for_event(EXIT, 1).await;
    assert_eq!(
        s.journal.sequence(),
        [
            "runc Create",
            CREATE,
            "runc Start",
            START,
            "runc Kill",
            EXIT
        ]
    );
    assert_eq!(
        s.journal.calls()[2],
        Call::Kill {
            id: "c1".into(),
            signal: 9,
            all: true
        }
    );
}

#[tokio::test]
async fn an_init_that_exits_while_runc_starts_it_is_reported_after_its_start_event() {
    let s = shim();
    s.create("c1").await;
    s.runc.exit_during(Kind::Start, 7);
    s.start("c1", "").await.unwrap();
    assert_eq!(s.wait("c1", "").await, 7);
    s.journal.wait_for_event(EXIT, 1).await;
    assert_eq!(s.journal.topics(), [CREATE, START, EXIT]);
    // The order above holds on the test's single thread even without the start gate; the
    // gate is what holds it with the reaper on another thread.
    assert_eq!(*s.gate_closed_at_exit.lock().unwrap(), [true]);
}

#[tokio::test]
async fn an_init_that_exits_before_runc_create_returns_is_not_lost() {
    let s = shim();
    s.runc.exit_during(Kind::Create, 3);
    let pid = s.create("c1").await;
    assert_eq!(s.wait("c1", "").await, 3);
    s.journal.wait_for_event(EXIT, 1).await;
    assert_eq!(s.journal.topics(), [CREATE, EXIT]);
    assert_eq!(s.journal.exits()[0].pid, pid);
    // Gone already: a kill is "already finished", which containerd takes as done.
    assert_eq!(
        refused(s.kill("c1", "", 9).await),
        (Code::NOT_FOUND, "process already finished".into())
    );
}

#[tokio::test]
async fn an_exec_runs_its_spec_through_runc_exec_is_signalled_directly_and_deleted_once_stopped() {
    let s = shim();
    s.create("c1").await;
    s.start("c1", "").await.unwrap();
    s.exec("c1", "e1").await.unwrap();
    assert_eq!(s.status("c1", "e1").await.unwrap(), Status::CREATED);
    let pid = s.runc.next_pid();
    assert_eq!(s.start("c1", "e1").await.unwrap(), pid);
    assert_eq!(s.status("c1", "e1").await.unwrap(), Status::RUNNING);
    s.kill("c1", "e1", 2).await.unwrap();
    assert_eq!(
        refused(s.delete("c1", "e1").await),
        (
            Code::FAILED_PRECONDITION,
            "exec e1 in c1 is still running; kill it first".into()
        )
    );
    s.reap(pid, 130);
    assert_eq!(s.wait("c1", "e1").await, 130);
    s.journal.wait_for_event(EXIT, 1).await;
    assert_eq!(s.delete("c1", "e1").await.unwrap().exit_status, 130);
    assert_eq!(refused(s.status("c1", "e1").await).0, Code::NOT_FOUND);

    let calls = s.journal.calls();
    let Call::Exec { id, spec } = &calls[2] else {
        panic!("{calls:?}")
    };
    assert_eq!(id, "c1");
    assert_eq!(
        serde_json::from_str::<Value>(spec).unwrap()["args"],
        json!(["/bin/sh"])
    );
    assert_eq!(calls[3], Call::Signal { pid, signal: 2 }, "not runc kill");
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(
        s.journal.topics(),
        [CREATE, START, EXEC_ADDED, EXEC_STARTED, EXIT]
    );
    assert_eq!(s.journal.exits()[0].id, "e1");
    let leftovers: Vec<_> = std::fs::read_dir(s.bundles.path().join("c1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".exec-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn an_exec_that_exits_before_runc_exec_returns_is_reported_after_its_start() {
    let s = shim();
    s.create("c1").await;
    s.start("c1", "").await.unwrap();
    s.exec("c1", "e1").await.unwrap();
    s.runc.exit_during(Kind::Exec, 1);
    s.start("c1", "e1").await.unwrap();
    assert_eq!(s.wait("c1", "e1").await, 1);
    s.journal.wait_for_event(EXIT, 1).await;
    assert_eq!(
        s.journal.topics(),
        [CREATE, START, EXEC_ADDED, EXEC_STARTED, EXIT]
    );
    assert_eq!(s.status("c1", "").await.unwrap(), Status::RUNNING);
}

#[tokio::test]
async fn impossible_transitions_are_refused_with_containerds_code_before_runc_is_called() {
    let s = shim();
    let pid = s.create("c1").await;
    let fp = Code::FAILED_PRECONDITION;
    assert_eq!(
        refused(s.create_with("c1", true, json!({})).await),
        (Code::ALREADY_EXISTS, "container c1 already exists".into())
    );
    assert_eq!(
        refused(s.pause("c1", true).await).0,
        fp,
        "pause a created task"
    );
    s.exec("c1", "e1").await.unwrap();
    assert_eq!(
        refused(s.exec("c1", "e1").await),
        (Code::ALREADY_EXISTS, "exec e1 already exists".into())
    );
    assert_eq!(
        refused(s.kill("c1", "e1", 9).await),
        (fp, "exec e1 in c1 has not been started".into()),
        "never signal pid 0"
    );
    assert_eq!(refused(s.exec("c1", "a/b").await).0, Code::INVALID_ARGUMENT);
    s.start("c1", "").await.unwrap();
    let (code, message) = refused(s.start("c1", "").await);
    assert_eq!(code, fp, "start twice: {message}");
    assert!(
        message.contains("container c1 was already started"),
        "{message}"
    );
    assert_eq!(
        refused(s.pause("c1", false).await).0,
        fp,
        "resume a running task"
    );
    assert_eq!(
        refused(s.delete("c1", "").await),
        (fp, "container c1 is still running; kill it first".into())
    );
    s.reap(pid, 0);
    s.wait("c1", "").await;
    assert_eq!(
        refused(s.kill("c1", "", 9).await),
        (Code::NOT_FOUND, "process already finished".into())
    );
    assert_eq!(
        refused(s.exec("c1", "e2").await).0,
        fp,
        "exec into a stopped task"
    );
    assert_eq!(
        refused(s.start("c1", "").await).0,
        fp,
        "start a stopped task"
    );
    s.delete("c1", "").await.unwrap();
    assert_eq!(
        refused(s.kill("c1", "", 9).await).0,
        Code::NOT_FOUND,
        "after delete"
    );
    assert_eq!(refused(s.start("c1", "").await).0, Code::NOT_FOUND);

    assert_eq!(
        s.journal
            .calls()
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>(),
        [
            "Create { id: \"c1\", systemd_cgroup: false }",
            "Start { id: \"c1\" }",
            "Delete { id: \"c1\", force: false }",
        ],
        "the refused calls never reached runc"
    );
}

#[tokio::test]
async fn pause_and_resume_trade_running_and_paused_through_runc() {
    let s = shim();
    s.create("c1").await;
    s.start("c1", "").await.unwrap();
    s.pause("c1", true).await.unwrap();
    assert_eq!(s.status("c1", "").await.unwrap(), Status::PAUSED);
    assert_eq!(
        refused(s.delete("c1", "").await).0,
        Code::FAILED_PRECONDITION,
        "a paused task is still running"
    );
    s.pause("c1", false).await.unwrap();
    assert_eq!(s.status("c1", "").await.unwrap(), Status::RUNNING);
    assert_eq!(
        s.journal.sequence()[4..],
        [
            "runc Pause",
            "/tasks/paused",
            "runc Resume",
            "/tasks/resumed"
        ]
    );
}

#[tokio::test]
async fn a_task_deleted_before_it_started_is_deleted_by_force() {
    let s = shim();
    s.create("c1").await;
    s.delete("c1", "").await.unwrap();
    assert_eq!(
        s.journal.calls()[1],
        Call::Delete {
            id: "c1".into(),
            force: true
        }
    );
    assert_eq!(s.journal.topics(), [CREATE, DELETE]);
}

#[tokio::test]
async fn runc_failures_reach_containerd_as_unknown_with_runcs_message_and_leave_nothing() {
    let s = shim();
    s.runc.fail_next(
        Kind::Create,
        runc_failed("create", "exec: \"nope\": executable file not found"),
    );
    assert_eq!(
        refused(s.create_with("c1", true, json!({})).await),
        (
            Code::UNKNOWN,
            "runc create failed (exit 1): exec: \"nope\": executable file not found".into()
        )
    );
    assert_eq!(s.service.container_count(), 0);
    assert_eq!(
        s.journal.sequence(),
        ["runc Create", "runc Delete"],
        "cleaned up, nothing published"
    );

    s.create("c2").await;
    s.runc.fail_next(Kind::Start, runc_failed("start", "boom"));
    assert_eq!(refused(s.start("c2", "").await).0, Code::UNKNOWN);
    assert_eq!(
        s.status("c2", "").await.unwrap(),
        Status::CREATED,
        "a failed start can be retried"
    );
    s.start("c2", "").await.unwrap();
    assert_eq!(
        s.journal.topics(),
        [CREATE, START],
        "no start event for the failed start"
    );
}

#[tokio::test]
async fn a_delete_runc_refuses_is_forced_and_a_container_runc_no_longer_has_is_deleted() {
    let s = shim();
    let pid = s.create("c1").await;
    s.start("c1", "").await.unwrap();
    s.reap(pid, 0);
    s.wait("c1", "").await;
    s.runc
        .fail_next(Kind::Delete, runc_failed("delete", "busy"));
    s.runc
        .fail_next(Kind::Delete, runc_failed("delete", "busy"));
    assert_eq!(refused(s.delete("c1", "").await).0, Code::UNKNOWN);
    assert_eq!(s.service.container_count(), 1, "left for a retry");

    s.runc
        .fail_next(Kind::Delete, runc_failed("delete", "busy"));
    s.runc.fail_next(
        Kind::Delete,
        runc_failed("delete", "container c1 does not exist"),
    );
    s.delete("c1", "").await.unwrap();
    assert_eq!(s.service.container_count(), 0);
    let deletes: Vec<_> = s
        .journal
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Delete { force, .. } => Some(force),
            _ => None,
        })
        .collect();
    assert_eq!(deletes, [false, true, false, true]);
}

#[tokio::test]
async fn a_function_is_wired_before_runc_create_and_its_execs_get_its_environment() {
    let s = shim_in(wiring::tests::runtime_root());
    let annotations = json!({"spright.io/chain": "shop", "spright.io/function": "ads"});
    s.create_with("f1", true, annotations).await.unwrap();
    s.start("f1", "").await.unwrap();
    s.exec("f1", "e1").await.unwrap();
    s.start("f1", "e1").await.unwrap();
    // The spec runc got: config.json is rewritten before `runc create` and not after.
    let config = std::fs::read_to_string(s.bundles.path().join("f1/config.json")).unwrap();
    let spec: Value = serde_json::from_str(&config).unwrap();
    assert!(
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == wiring::POOL_IN_CONTAINER),
        "{spec}"
    );
    let calls = s.journal.calls();
    let Some(Call::Exec { spec, .. }) = calls.iter().find(|c| matches!(c, Call::Exec { .. }))
    else {
        panic!("{calls:?}")
    };
    assert!(spec.contains("SPRIGHT_FUNCTION=ads"), "{spec}");
}

#[tokio::test]
async fn a_bad_annotation_fails_the_create_before_runc_create_and_leaves_nothing() {
    let s = shim();
    let annotations = json!({"spright.io/chain": "shop", "spright.io/funtcion": "ads"});
    let (code, message) = refused(s.create_with("f1", true, annotations).await);
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(
        message.contains("unknown annotation spright.io/funtcion"),
        "{message}"
    );
    assert_eq!(
        s.journal.calls(),
        [Call::Delete {
            id: "f1".into(),
            force: true
        }],
        "no runc create; runc state cleaned up"
    );
    assert!(s.journal.topics().is_empty());
    assert_eq!(s.service.container_count(), 0);
}

#[tokio::test]
async fn a_containers_runtime_options_reach_its_runc_create_and_ps_and_update_go_to_runc() {
    use containerd_shim::protos::protobuf::Message;
    let s = shim();
    let options = api::Options {
        systemd_cgroup: true,
        ..Default::default()
    };
    let mut any = containerd_shim::protos::protobuf::well_known_types::any::Any::new();
    any.type_url = "containerd.runc.v1.Options".into();
    any.value = options.write_to_bytes().unwrap();
    let req = api::CreateTaskRequest {
        id: "c1".into(),
        bundle: s.bundle("c1", true, json!({})),
        options: Some(any).into(),
        ..Default::default()
    };
    s.service.create(&ctx(), req).await.unwrap();
    s.create("c2").await;
    assert_eq!(
        s.journal.calls(),
        [
            Call::Create {
                id: "c1".into(),
                systemd_cgroup: true
            },
            Call::Create {
                id: "c2".into(),
                systemd_cgroup: false
            },
        ]
    );

    let pids = api::PidsRequest {
        id: "c1".into(),
        ..Default::default()
    };
    let listed = s.service.pids(&ctx(), pids).await.unwrap();
    let listed: Vec<u32> = listed.processes.iter().map(|p| p.pid).collect();
    assert_eq!(listed, [1, 2], "runc ps's pids");
    let update = api::UpdateTaskRequest {
        id: "c1".into(),
        ..Default::default()
    };
    assert_eq!(
        refused(s.service.update(&ctx(), update).await),
        (Code::INVALID_ARGUMENT, "update without resources".into())
    );
    assert_eq!(
        s.journal.calls()[2..],
        [Call::Ps { id: "c1".into() }],
        "nothing reaches runc without resources"
    );
}

#[tokio::test]
async fn a_function_whose_traffic_must_be_counted_but_cannot_is_not_created() {
    let s = shim_counting(wiring::tests::runtime_root(), |namespace, id, _, w| {
        assert_eq!((namespace, id, w.function.as_str()), ("test", "f1", "ads"));
        assert!(w.control.is_some(), "the chain's control socket is given");
        Err("spright: EPROXY cannot count container f1's traffic: refused".into())
    });
    let annotations = json!({"spright.io/chain": "shop", "spright.io/function": "ads"});
    let (code, message) = refused(s.create_with("f1", true, annotations).await);
    assert_eq!(code, Code::UNKNOWN);
    assert!(
        message.contains("EPROXY cannot count container f1"),
        "{message}"
    );
    // runc created it, then deleted it by force: nothing half-created stays.
    let calls = s.journal.calls();
    assert!(
        matches!(calls.first(), Some(Call::Create { .. })),
        "{calls:?}"
    );
    assert_eq!(
        calls.last(),
        Some(&Call::Delete {
            id: "f1".into(),
            force: true
        })
    );
    assert!(s.journal.topics().is_empty(), "no create event");
    assert_eq!(s.service.container_count(), 0);

    // A plain container is not counted.
    let s = shim_counting(wiring::tests::runtime_root(), |_, _, _, _| {
        panic!("a plain container's traffic is not counted")
    });
    s.create("c1").await;
}

/// The far ends of the counts' leases the stand-in below hands out, by container: a count has
/// ended when its far end reads end of file.
static LEASES: Mutex<Vec<(String, std::os::unix::net::UnixStream)>> = Mutex::new(Vec::new());

fn counting_stand_in(
    _: &str,
    id: &str,
    _: crate::traffic::Netns,
    _: &wiring::FunctionWiring,
) -> Result<Option<crate::traffic::Counting>, String> {
    let (lease, far) = std::os::unix::net::UnixStream::pair().unwrap();
    far.set_nonblocking(true).unwrap();
    LEASES.lock().unwrap().push((id.to_owned(), far));
    Ok(Some(crate::traffic::Counting::for_tests(lease)))
}

/// Counts made for `id` so far, and whether each is still going.
fn leases_of(id: &str) -> Vec<bool> {
    use std::io::Read;
    LEASES
        .lock()
        .unwrap()
        .iter_mut()
        .filter(|(c, _)| c == id)
        .map(|(_, far)| match far.read(&mut [0u8; 1]) {
            Ok(0) => false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn function_containers_sharing_a_namespace_share_one_count_until_the_last_stops() {
    let s = shim_counting(wiring::tests::runtime_root(), counting_stand_in);
    let annotations = json!({"spright.io/chain": "shop", "spright.io/function": "ads"});
    let first = s
        .create_with("share-1", true, annotations.clone())
        .await
        .unwrap()
        .pid;
    let second = s
        .create_with("share-2", true, annotations.clone())
        .await
        .unwrap()
        .pid;
    s.start("share-1", "").await.unwrap();
    s.start("share-2", "").await.unwrap();
    assert_eq!(
        leases_of("share-1"),
        [true],
        "one count, made for the first"
    );
    assert_eq!(
        leases_of("share-2"),
        Vec::<bool>::new(),
        "the second joins it"
    );

    s.reap(first, 0);
    s.journal.wait_for_event(EXIT, 1).await;
    assert_eq!(
        leases_of("share-1"),
        [true],
        "the second still runs: counting goes on"
    );
    s.reap(second, 0);
    s.journal.wait_for_event(EXIT, 2).await;
    assert_eq!(
        leases_of("share-1"),
        [false],
        "ended with the last, at its exit"
    );

    // A new container there counts afresh; one deleted before it ran ends its count too.
    s.create_with("share-3", true, annotations).await.unwrap();
    assert_eq!(leases_of("share-3"), [true]);
    s.delete("share-3", "").await.unwrap();
    assert_eq!(leases_of("share-3"), [false]);
    s.delete("share-1", "").await.unwrap();
    s.delete("share-2", "").await.unwrap();
}
