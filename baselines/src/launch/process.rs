//! Child processes the launcher owns: each in its own process group (so nginx's worker goes
//! with its master, and a terminal's Ctrl-C reaches only the launcher, which then stops them),
//! told to stop when the launcher dies, and killed with their group if dropped unstopped.

use super::LaunchError;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a stopped process gets between SIGTERM and SIGKILL (as a pod deletion would).
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running child and what to call it in messages ("function echo", "nginx for echo").
pub struct Proc {
    pub what: String,
    child: Child,
    /// The process id, which is also its group's.
    pid: i32,
    /// Not yet waited for.
    running: bool,
}

impl Proc {
    /// Starts `program` with `args` and extra `env`. Its stdout goes to our stderr, keeping the
    /// launcher's stdout for the `ready:` line.
    pub fn spawn<I, K, V>(
        what: String,
        program: &Path,
        args: &[String],
        env: I,
    ) -> Result<Proc, LaunchError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| LaunchError::io(format!("starting {what}"), source))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .process_group(0);
        let launcher = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe and the closure touches nothing else.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The launcher may have died between fork and prctl: then no signal will come.
                if libc::getppid() != launcher {
                    return Err(std::io::Error::other("the launcher is gone"));
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| {
            LaunchError::io(format!("starting {what} ({})", program.display()), source)
        })?;
        let pid = child.id().map_or(0, |p| p as i32);
        Ok(Proc {
            what,
            child,
            pid,
            running: true,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How it ended, if it has: "function echo (pid 12) exited: exit status 1".
    pub fn exited(&mut self) -> Option<String> {
        if !self.running {
            return None; // reported already
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.running = false;
                // Nothing of its group outlives it (nginx's worker, should its master die).
                self.signal_group(libc::SIGKILL);
                Some(format!(
                    "{} (pid {}) {}",
                    self.what,
                    self.pid,
                    describe(&status)
                ))
            }
            Ok(None) => None,
            Err(e) => Some(format!("{}: cannot tell whether it runs: {e}", self.what)),
        }
    }

    fn signal_group(&self, signal: libc::c_int) {
        if self.pid > 0 {
            // SAFETY: signalling the process group we created for our own child.
            unsafe { libc::killpg(self.pid, signal) };
        }
    }
}

impl Drop for Proc {
    /// Dropped without [`stop_all`] (a failed or interrupted start): kill the whole group now;
    /// tokio reaps the child in the background.
    fn drop(&mut self) {
        if self.running {
            self.signal_group(libc::SIGKILL);
        }
    }
}

/// Stops `procs` together: SIGTERM to each group, then SIGKILL to what is left after
/// [`STOP_GRACE`]; returns once every one has been waited for.
pub async fn stop_all(procs: Vec<Proc>) {
    let mut procs: Vec<Proc> = procs.into_iter().filter(|p| p.running).collect();
    for p in &procs {
        p.signal_group(libc::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for p in &mut procs {
        if tokio::time::timeout_at(deadline, p.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} ignored SIGTERM for {STOP_GRACE:?}: killing it", p.what);
            p.signal_group(libc::SIGKILL);
            let _ = p.child.wait().await;
        }
        // nginx's master waits for its worker before it exits, so the group is empty now.
        p.running = false;
    }
}

/// "exit status 1", "killed by signal 9".
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// `command` as run: a path if it has a '/', else looked up on PATH.
pub fn find_program(command: &str) -> Option<PathBuf> {
    if command.contains('/') {
        let p = PathBuf::from(command);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| is_executable(p))
}

pub(super) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
