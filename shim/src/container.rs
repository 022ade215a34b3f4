//! What the shim knows about each container and each of its processes.

use crate::runc::Runc;
use crate::stdio::{Fifos, ProcessIo};
use crate::wiring::FunctionWiring;
use containerd_shim::api::Status;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::sync::watch;

/// One process: a container's init, or an exec.
pub struct Process {
    /// The exec id; empty for the init process.
    pub exec_id: String,
    /// 0 until the process was started.
    pub pid: u32,
    pub status: Status,
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
    pub fn new(exec_id: &str, fifos: Fifos) -> Process {
        Process {
            exec_id: exec_id.to_owned(),
            pid: 0,
            status: Status::CREATED,
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

    pub fn is_stopped(&self) -> bool {
        self.status == Status::STOPPED
    }

    /// Gone already, even if its exit is not reported yet.
    pub fn is_gone(&self) -> bool {
        self.is_stopped() || self.reaped.is_some()
    }

    pub fn set_exited(&mut self, code: i32, at: Timestamp) {
        self.status = Status::STOPPED;
        self.exit_status = code as u32;
        self.exited_at = Some(at);
        self.exited.send_replace(true);
    }
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs_mounted: bool,
    pub runc: Runc,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    /// Set for a SPRIGHT function: its execs get the same environment.
    pub function: Option<FunctionWiring>,
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
