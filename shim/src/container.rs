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
    pub pid: u32,
    pub status: Status,
    pub exit_status: u32,
    pub exited_at: Option<Timestamp>,
    pub fifos: Fifos,
    pub io: Option<ProcessIo>,
    /// Turns true when the process has exited (and its output was copied out).
    pub exited: watch::Sender<bool>,
    /// An exec's process spec (OCI JSON), written to the bundle when it starts.
    pub spec: Vec<u8>,
}

impl Process {
    pub fn new(exec_id: &str, fifos: Fifos) -> Process {
        Process {
            exec_id: exec_id.to_owned(),
            pid: 0,
            status: Status::CREATED,
            exit_status: 0,
            exited_at: None,
            fifos,
            io: None,
            exited: watch::channel(false).0,
            spec: Vec::new(),
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.status == Status::STOPPED
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

    /// The process with `pid` that has not exited yet, if any.
    pub fn live_process_mut(&mut self, pid: u32) -> Option<&mut Process> {
        std::iter::once(&mut self.init)
            .chain(self.execs.values_mut())
            .find(|p| p.pid == pid && !p.is_stopped())
    }
}
