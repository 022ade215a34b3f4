//! Driving the `runc` command line.
//!
//! The shim is a child subreaper and its reaper (`launch::serve`) reaps every child on SIGCHLD,
//! runc included, so a runc invocation is waited for through the exit monitor: subscribe first,
//! spawn, then wait for the event carrying runc's pid.

use async_trait::async_trait;
use containerd_shim::asynchronous::monitor::{monitor_subscribe, monitor_unsubscribe};
use containerd_shim::monitor::{Subject, Topic};
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("runc {command} failed (exit {code}): {message}")]
    Failed {
        command: String,
        code: i32,
        message: String,
    },
    #[error("waiting for runc: {0}")]
    Monitor(String),
}

/// The three standard streams a runc invocation passes on to the container process.
#[derive(Default)]
pub struct ChildIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

fn stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map(Stdio::from).unwrap_or_else(Stdio::null)
}

/// What the Task service needs from the container runtime: runc's commands, and signalling
/// one process directly (an exec: `runc kill` reaches the init only). A trait so that the
/// Task service's ordering can be tested against a recording fake, without root.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// The same runtime, driving cgroups through systemd or not (a container's options say).
    fn with_systemd_cgroup(&self, on: bool) -> Arc<dyn Runtime>;
    /// `runc create`: sets the container up with its init process waiting to start; its pid
    /// is written to `<bundle>/init.pid`.
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        console_socket: Option<&Path>,
        io: ChildIo,
    ) -> Result<(), RuncError>;
    async fn start(&self, id: &str, bundle: &Path) -> Result<(), RuncError>;
    /// `runc exec --detach`: starts another process in the container, its pid written to
    /// `pid_file`.
    async fn exec(
        &self,
        id: &str,
        bundle: &Path,
        process_json: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        io: ChildIo,
    ) -> Result<(), RuncError>;
    async fn kill(&self, id: &str, bundle: &Path, signal: u32, all: bool) -> Result<(), RuncError>;
    async fn delete(&self, id: &str, bundle: &Path, force: bool) -> Result<(), RuncError>;
    async fn pause(&self, id: &str, bundle: &Path) -> Result<(), RuncError>;
    async fn resume(&self, id: &str, bundle: &Path) -> Result<(), RuncError>;
    /// The pids of the container's processes.
    async fn ps(&self, id: &str) -> Result<Vec<u32>, RuncError>;
    /// `runc update --resources -` with OCI `LinuxResources` JSON.
    async fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), RuncError>;
    /// Sends `signal` to the process `pid` (live: not reaped yet, so not a reused pid).
    fn signal(&self, pid: u32, signal: i32) -> std::io::Result<()>;
}

#[derive(Debug, Clone)]
pub struct Runc {
    binary: String,
    /// runc's state directory for this namespace.
    root: PathBuf,
    systemd_cgroup: bool,
}

impl Runc {
    pub fn new(namespace: &str) -> Runc {
        Runc {
            binary: std::env::var("SPRIGHT_RUNC").unwrap_or_else(|_| "runc".into()),
            root: Path::new("/run/containerd/spright").join(namespace),
            systemd_cgroup: false,
        }
    }

    /// Runs runc with `args`; its errors go to `log` (JSON lines) when given, else to a pipe.
    /// With `io`, runc's streams are the container process's (`create`, `exec`: runc's children
    /// inherit them and outlive runc, so they must never be pipes the shim waits on); without,
    /// runc's output is captured.
    async fn run(
        &self,
        args: Vec<OsString>,
        io: Option<ChildIo>,
        log: Option<&Path>,
        input: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, RuncError> {
        let command = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        if let Some(log) = log {
            cmd.arg("--log").arg(log).args(["--log-format", "json"]);
        }
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.args(&args);
        match io {
            Some(io) => {
                cmd.stdin(stdio(io.stdin))
                    .stdout(stdio(io.stdout))
                    .stderr(stdio(io.stderr));
            }
            None => {
                cmd.stdin(if input.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            }
        }

        let subscription = monitor_subscribe(Topic::Pid)
            .await
            .map_err(|e| RuncError::Monitor(e.to_string()))?;
        let spawned = cmd.spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                let _ = monitor_unsubscribe(subscription.id).await;
                return Err(RuncError::Spawn {
                    binary: self.binary.clone(),
                    source,
                });
            }
        };
        // Everything passed to the child is closed here, so the container's streams end when
        // the container's processes end, not when the shim does.
        drop(cmd);
        let pid = child.id() as i32;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&data);
            });
        }
        let out = child.stdout.take().map(|mut o| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = o.read_to_end(&mut v);
                v
            })
        });
        let err = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = e.read_to_end(&mut v);
                v
            })
        });
        let mut rx = subscription.rx;
        let code = loop {
            match rx.recv().await {
                Some(e) => {
                    if matches!(e.subject, Subject::Pid(p) if p == pid) {
                        break e.exit_code;
                    }
                }
                None => {
                    let _ = monitor_unsubscribe(subscription.id).await;
                    return Err(RuncError::Monitor("exit monitor closed".into()));
                }
            }
        };
        let _ = monitor_unsubscribe(subscription.id).await;
        let stdout = out.and_then(|t| t.join().ok()).unwrap_or_default();
        let stderr = err.and_then(|t| t.join().ok()).unwrap_or_default();
        if code != 0 {
            let message = log
                .and_then(last_error)
                .or_else(|| {
                    let s = String::from_utf8_lossy(&stderr).trim().to_owned();
                    (!s.is_empty()).then_some(s)
                })
                .unwrap_or_else(|| "no message".into());
            return Err(RuncError::Failed {
                command,
                code,
                message,
            });
        }
        Ok(stdout)
    }

    async fn simple(&self, args: &[&str], bundle: &Path) -> Result<(), RuncError> {
        self.run(
            args.iter().map(OsString::from).collect(),
            None,
            Some(&bundle.join("log.json")),
            None,
        )
        .await
        .map(drop)
    }
}

#[async_trait]
impl Runtime for Runc {
    fn with_systemd_cgroup(&self, on: bool) -> Arc<dyn Runtime> {
        Arc::new(Runc {
            systemd_cgroup: on,
            ..self.clone()
        })
    }

    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        console_socket: Option<&Path>,
        io: ChildIo,
    ) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec!["create".into(), "--bundle".into(), bundle.into()];
        args.push("--pid-file".into());
        args.push(bundle.join("init.pid").into());
        if let Some(s) = console_socket {
            args.push("--console-socket".into());
            args.push(s.into());
        }
        args.push(id.into());
        self.run(args, Some(io), Some(&bundle.join("log.json")), None)
            .await
            .map(drop)
    }

    async fn start(&self, id: &str, bundle: &Path) -> Result<(), RuncError> {
        self.simple(&["start", id], bundle).await
    }

    async fn exec(
        &self,
        id: &str,
        bundle: &Path,
        process_json: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        io: ChildIo,
    ) -> Result<(), RuncError> {
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            "--detach".into(),
            "--process".into(),
            process_json.into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if let Some(s) = console_socket {
            args.push("--console-socket".into());
            args.push(s.into());
        }
        args.push(id.into());
        self.run(args, Some(io), Some(&bundle.join("log.json")), None)
            .await
            .map(drop)
    }

    async fn kill(&self, id: &str, bundle: &Path, signal: u32, all: bool) -> Result<(), RuncError> {
        let signal = signal.to_string();
        if all {
            self.simple(&["kill", "--all", id, &signal], bundle).await
        } else {
            self.simple(&["kill", id, &signal], bundle).await
        }
    }

    async fn delete(&self, id: &str, bundle: &Path, force: bool) -> Result<(), RuncError> {
        if force {
            self.simple(&["delete", "--force", id], bundle).await
        } else {
            self.simple(&["delete", id], bundle).await
        }
    }

    async fn pause(&self, id: &str, bundle: &Path) -> Result<(), RuncError> {
        self.simple(&["pause", id], bundle).await
    }

    async fn resume(&self, id: &str, bundle: &Path) -> Result<(), RuncError> {
        self.simple(&["resume", id], bundle).await
    }

    async fn ps(&self, id: &str) -> Result<Vec<u32>, RuncError> {
        let out = self
            .run(
                vec!["ps".into(), "--format".into(), "json".into(), id.into()],
                None,
                None,
                None,
            )
            .await?;
        let text = String::from_utf8_lossy(&out);
        serde_json::from_str::<Option<Vec<u32>>>(text.trim())
            .map(Option::unwrap_or_default)
            .map_err(|e| RuncError::Failed {
                command: "ps".into(),
                code: 0,
                message: format!("unreadable output {text:?}: {e}"),
            })
    }

    async fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), RuncError> {
        self.run(
            vec!["update".into(), "--resources".into(), "-".into(), id.into()],
            None,
            None,
            Some(resources_json),
        )
        .await
        .map(drop)
    }

    fn signal(&self, pid: u32, signal: i32) -> std::io::Result<()> {
        // SAFETY: kill(2) with integer arguments.
        if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The last error runc logged (JSON lines with "level" and "msg").
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v.get("level")?.as_str()? == "error")
            .then(|| v.get("msg")?.as_str().map(str::to_owned))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_logged_error_is_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"warning\",\"msg\":\"w\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found\"}\n{\"level\":\"info\",\"msg\":\"i\"}\n",
        )
        .unwrap();
        assert_eq!(
            last_error(&log).as_deref(),
            Some("exec: \"nope\": executable file not found")
        );
        assert_eq!(last_error(&dir.path().join("missing")), None);
    }
}
