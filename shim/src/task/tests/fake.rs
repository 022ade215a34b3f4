//! A runtime and an event sink that write what the Task service does into one journal, in
//! order, so a test can assert the order of runc calls and events together. The runtime can be
//! scripted to fail a call or to have the process exit while a call runs.

use crate::runc::{ChildIo, RuncError, Runtime};
use crate::task::events::Events;
use async_trait::async_trait;
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::MessageDyn;
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// One runc command (or direct signal) as the Task service asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Create {
        id: String,
        systemd_cgroup: bool,
    },
    Start {
        id: String,
    },
    /// `spec`: the process JSON as it was on disk when runc was called.
    Exec {
        id: String,
        spec: String,
    },
    Kill {
        id: String,
        signal: u32,
        all: bool,
    },
    Delete {
        id: String,
        force: bool,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Ps {
        id: String,
    },
    Update {
        id: String,
    },
    Signal {
        pid: u32,
        signal: i32,
    },
}

impl Call {
    fn kind(&self) -> Kind {
        match self {
            Call::Create { .. } => Kind::Create,
            Call::Start { .. } => Kind::Start,
            Call::Exec { .. } => Kind::Exec,
            Call::Kill { .. } => Kind::Kill,
            Call::Delete { .. } => Kind::Delete,
            Call::Pause { .. } => Kind::Pause,
            Call::Resume { .. } => Kind::Resume,
            Call::Ps { .. } => Kind::Ps,
            Call::Update { .. } => Kind::Update,
            Call::Signal { .. } => Kind::Signal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Create,
    Start,
    Exec,
    Kill,
    Delete,
    Pause,
    Resume,
    Ps,
    Update,
    Signal,
}

/// An exit event as published: container, process id, pid, status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub container_id: String,
    pub id: String,
    pub pid: u32,
    pub status: u32,
}

#[derive(Debug)]
pub enum Entry {
    Runc(Call),
    /// Topic, and for `/tasks/exit` the exit.
    Event(String, Option<Exit>),
}

/// Everything the runtime was asked and every event, in order.
pub struct Journal {
    entries: Mutex<Vec<Entry>>,
    count: watch::Sender<usize>,
}

impl Journal {
    fn push(&self, entry: Entry) {
        let len = {
            let mut entries = self.entries.lock().unwrap();
            entries.push(entry);
            entries.len()
        };
        // Outside the lock: a waiter reads the entries while it holds the channel.
        self.count.send_replace(len);
    }

    pub fn calls(&self) -> Vec<Call> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .filter_map(|e| match e {
                Entry::Runc(c) => Some(c.clone()),
                Entry::Event(..) => None,
            })
            .collect()
    }

    pub fn topics(&self) -> Vec<String> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .filter_map(|e| match e {
                Entry::Event(t, _) => Some(t.clone()),
                Entry::Runc(_) => None,
            })
            .collect()
    }

    pub fn exits(&self) -> Vec<Exit> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .filter_map(|e| match e {
                Entry::Event(_, Some(exit)) => Some(exit.clone()),
                _ => None,
            })
            .collect()
    }

    /// Runc calls and topics in one sequence, as short strings ("runc Start", "/tasks/exit").
    pub fn sequence(&self) -> Vec<String> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .map(|e| match e {
                Entry::Runc(c) => format!("runc {:?}", c.kind()),
                Entry::Event(t, _) => t.clone(),
            })
            .collect()
    }

    /// Waits (5 s at most) until `topic` was published `n` times.
    pub async fn wait_for_event(&self, topic: &str, n: usize) {
        let mut count = self.count.subscribe();
        let seen = |_: &usize| self.topics().iter().filter(|t| *t == topic).count() >= n;
        let waited = tokio::time::timeout(Duration::from_secs(5), count.wait_for(seen)).await;
        assert!(
            waited.is_ok(),
            "{topic} was not published {n} time(s): {:?}",
            self.sequence()
        );
    }
}

/// Called with (pid, exit code) for a process that exits while a call runs: the test passes
/// it on to the service as the reaper would.
pub type ExitSink = Arc<dyn Fn(u32, i32) + Send + Sync>;

#[derive(Default)]
struct Script {
    failures: HashMap<Kind, VecDeque<RuncError>>,
    /// The process the call creates or starts exits with this code before the call returns.
    exits_during: HashMap<Kind, i32>,
    next_pid: u32,
    sink: Option<ExitSink>,
}

#[derive(Clone)]
pub struct FakeRuntime {
    journal: Arc<Journal>,
    script: Arc<Mutex<Script>>,
    systemd_cgroup: bool,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime {
            journal: Arc::new(Journal {
                entries: Mutex::new(Vec::new()),
                count: watch::channel(0).0,
            }),
            script: Arc::new(Mutex::new(Script {
                next_pid: 1000,
                ..Script::default()
            })),
            systemd_cgroup: false,
        }
    }

    pub fn journal(&self) -> Arc<Journal> {
        self.journal.clone()
    }

    pub fn set_exit_sink(&self, sink: ExitSink) {
        self.script.lock().unwrap().sink = Some(sink);
    }

    /// The next call of `kind` fails with `error`.
    pub fn fail_next(&self, kind: Kind, error: RuncError) {
        let mut script = self.script.lock().unwrap();
        script.failures.entry(kind).or_default().push_back(error);
    }

    /// The process a call of `kind` starts exits with `code` before that call returns.
    pub fn exit_during(&self, kind: Kind, code: i32) {
        self.script.lock().unwrap().exits_during.insert(kind, code);
    }

    /// The pid the next created or exec'd process gets.
    pub fn next_pid(&self) -> u32 {
        self.script.lock().unwrap().next_pid
    }

    fn call(&self, call: Call) -> Result<(), RuncError> {
        let kind = call.kind();
        self.journal.push(Entry::Runc(call));
        let mut script = self.script.lock().unwrap();
        match script.failures.get_mut(&kind).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A new process: its pid written where runc would write it.
    fn spawn(&self, pid_file: &Path) -> u32 {
        let pid = {
            let mut script = self.script.lock().unwrap();
            script.next_pid += 1;
            script.next_pid - 1
        };
        std::fs::write(pid_file, pid.to_string()).unwrap();
        pid
    }

    /// The scripted exit of `pid` during a call of `kind`, if any.
    fn maybe_exit(&self, kind: Kind, pid: u32) {
        let (code, sink) = {
            let mut script = self.script.lock().unwrap();
            (script.exits_during.remove(&kind), script.sink.clone())
        };
        if let (Some(code), Some(sink)) = (code, sink) {
            sink(pid, code);
        }
    }

    fn init_pid(bundle: &Path) -> u32 {
        std::fs::read_to_string(bundle.join("init.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn with_systemd_cgroup(&self, on: bool) -> Arc<dyn Runtime> {
        Arc::new(FakeRuntime {
            systemd_cgroup: on,
            ..self.clone()
        })
    }

    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        _console_socket: Option<&Path>,
        _io: ChildIo,
    ) -> Result<(), RuncError> {
        self.call(Call::Create {
            id: id.into(),
            systemd_cgroup: self.systemd_cgroup,
        })?;
        let pid = self.spawn(&bundle.join("init.pid"));
        self.maybe_exit(Kind::Create, pid);
        Ok(())
    }

    async fn start(&self, id: &str, bundle: &Path) -> Result<(), RuncError> {
        self.call(Call::Start { id: id.into() })?;
        self.maybe_exit(Kind::Start, FakeRuntime::init_pid(bundle));
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        _bundle: &Path,
        process_json: &Path,
        pid_file: &Path,
        _console_socket: Option<&Path>,
        _io: ChildIo,
    ) -> Result<(), RuncError> {
        let spec = std::fs::read_to_string(process_json).unwrap_or_default();
        self.call(Call::Exec {
            id: id.into(),
            spec,
        })?;
        let pid = self.spawn(pid_file);
        self.maybe_exit(Kind::Exec, pid);
        Ok(())
    }

    async fn kill(
        &self,
        id: &str,
        _bundle: &Path,
        signal: u32,
        all: bool,
    ) -> Result<(), RuncError> {
        self.call(Call::Kill {
            id: id.into(),
            signal,
            all,
        })
    }

    async fn delete(&self, id: &str, _bundle: &Path, force: bool) -> Result<(), RuncError> {
        self.call(Call::Delete {
            id: id.into(),
            force,
        })
    }

    async fn pause(&self, id: &str, _bundle: &Path) -> Result<(), RuncError> {
        self.call(Call::Pause { id: id.into() })
    }

    async fn resume(&self, id: &str, _bundle: &Path) -> Result<(), RuncError> {
        self.call(Call::Resume { id: id.into() })
    }

    async fn ps(&self, id: &str) -> Result<Vec<u32>, RuncError> {
        self.call(Call::Ps { id: id.into() }).map(|()| vec![1, 2])
    }

    async fn update(&self, id: &str, _resources_json: Vec<u8>) -> Result<(), RuncError> {
        self.call(Call::Update { id: id.into() })
    }

    fn signal(&self, pid: u32, signal: i32) -> std::io::Result<()> {
        self.call(Call::Signal { pid, signal })
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Writes every event into the runtime's journal.
pub struct Recorder(pub Arc<Journal>);

#[async_trait]
impl Events for Recorder {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let exit = event.downcast_ref::<TaskExit>().map(|e| Exit {
            container_id: e.container_id.clone(),
            id: e.id.clone(),
            pid: e.pid,
            status: e.exit_status,
        });
        self.0.push(Entry::Event(topic.to_owned(), exit));
    }
}
