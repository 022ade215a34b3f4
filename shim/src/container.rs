//! What the shim knows about each container and each of its processes.

use crate::runc::Runtime;
use crate::stdio::{Fifos, ProcessIo};
use crate::task::state::{Action, Refused, State};
use crate::wiring::FunctionWiring;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// One process: a container's init, or an exec.
pub struct Process {
    /// The container's id.
    pub container_id: String,
    /// The exec id; empty for the init process.
    pub exec_id: String,
    /// 0 until the process was started (an init's is known once it is created).
    pub pid: u32,
    /// Changed only through [`Process::apply`].
    state: State,
    /// Set as soon as the process is reaped; the exit is reported once its output is out.
    pub reaped: Option<(i32, Timestamp)>,
    pub exit_status: u32,
    pub exited_at: Option<Timestamp>,
    pub fifos: Fifos,
    pub io: Option<ProcessIo>,
    /// Turns true when the process has exited (and its output was copied out).
    pub exited: watch::Sender<bool>,
    /// False while a start is being carried out and reported: an exit is never reported
    /// before the start event.
    pub started: watch::Sender<bool>,
    /// An exec's process spec (OCI JSON), written to the bundle when it starts.
    pub spec: Vec<u8>,
}

impl Process {
    pub fn new(container_id: &str, exec_id: &str, fifos: Fifos) -> Process {
        Process {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid: 0,
            state: State::Created,
            reaped: None,
            exit_status: 0,
            exited_at: None,
            fifos,
            io: None,
            exited: watch::channel(false).0,
            started: watch::channel(true).0,
            spec: Vec::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// "container c1" or "exec e1 in c1", for messages.
    pub fn name(&self) -> String {
        if self.exec_id.is_empty() {
            format!("container {}", self.container_id)
        } else {
            format!("exec {} in {}", self.exec_id, self.container_id)
        }
    }

    /// Whether `action` is allowed now, without taking it.
    pub fn check(&self, action: Action) -> Result<(), Refused> {
        self.state.after(action, || self.name()).map(drop)
    }

    /// Takes `action`, or says why not (the state then stays as it was).
    pub fn apply(&mut self, action: Action) -> Result<State, Refused> {
        self.state = self.state.after(action, || self.name())?;
        Ok(self.state)
    }

    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The pid a signal may go to: a started process that has not been reaped (a reaped
    /// one's pid may already be another process's).
    pub fn signal_target(&self) -> Result<u32, Refused> {
        let state = if self.reaped.is_some() {
            State::Stopped
        } else {
            self.state
        };
        let refused = |state| Refused {
            process: self.name(),
            state,
            action: Action::Kill,
        };
        state.after(Action::Kill, || self.name())?;
        if self.pid == 0 {
            // Never signal pid 0: that is the shim's own process group.
            return Err(refused(State::Created));
        }
        Ok(self.pid)
    }

    /// Gone already, even if its exit is not reported yet.
    pub fn is_gone(&self) -> bool {
        self.is_stopped() || self.reaped.is_some()
    }

    /// Records the exit, once: false if it was recorded already.
    pub fn set_exited(&mut self, code: i32, at: Timestamp) -> bool {
        if self.apply(Action::Exit).is_err() {
            return false;
        }
        self.exit_status = code as u32;
        self.exited_at = Some(at);
        self.exited.send_replace(true);
        true
    }
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs_mounted: bool,
    pub runc: Arc<dyn Runtime>,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    /// Set for a SPRIGHT function: its execs get the same environment.
    pub function: Option<FunctionWiring>,
    /// EPROXY counting a function's own traffic, for as long as the container is kept.
    /// The count (in the Task service's `Counts`) this running function shares; taken when its
    /// init exits or it is deleted.
    pub count: Option<crate::traffic::CountKey>,
    /// Whether the container has a PID namespace of its own (if not, its other processes are
    /// killed when its init exits, as the runc v2 shim does).
    pub own_pid_namespace: bool,
}

impl Container {
    /// The process `exec_id` names (the init process for "").
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// The started process with `pid` that has not been reaped yet, if any.
    pub fn live_process_mut(&mut self, pid: u32) -> Option<&mut Process> {
        std::iter::once(&mut self.init)
            .chain(self.execs.values_mut())
            .find(|p| p.pid == pid && pid != 0 && !p.is_gone())
    }
}
