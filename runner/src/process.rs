//! Child processes: started in their own process group (so a terminal's Ctrl-C reaches only the
//! runner, which then stops them in order) and told to die with the runner.

use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Prepares `cmd` to run as a supervised child.
pub fn supervised(cmd: &mut Command) {
    cmd.process_group(0).kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Gives the child `fd` as descriptor `target` (open across exec).
pub fn inherit_fd(cmd: &mut Command, fd: std::os::fd::RawFd, target: std::os::fd::RawFd) {
    // SAFETY: dup2 and fcntl are async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                // dup2 onto itself keeps close-on-exec: clear it by hand.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Asks a child to stop (SIGTERM), then kills it after `grace`.
pub async fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child.id() {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// Delays between restarts of a process that keeps dying: `first` after a restart that came
/// 10 s or more after the one before (the process had been running), else twice the last
/// delay, from 100 ms up to 5 s.
pub struct Backoff {
    first: Duration,
    last: Option<std::time::Instant>,
    delay: Duration,
}

impl Backoff {
    pub fn new(first: Duration) -> Backoff {
        Backoff {
            first,
            last: None,
            delay: first,
        }
    }

    /// The delay before the next restart (counted from now).
    pub fn next(&mut self) -> Duration {
        let now = std::time::Instant::now();
        let recent = self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(10));
        self.delay = if recent {
            (self.delay * 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
        } else {
            self.first
        };
        self.last = Some(now + self.delay);
        self.delay
    }
}

/// "exit status 1", "killed by signal 9".
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_doubling_up_to_five_seconds() {
        let ms = Duration::from_millis;
        let mut parts = Backoff::new(Duration::ZERO);
        let got: Vec<Duration> = (0..9).map(|_| parts.next()).collect();
        assert_eq!(
            got,
            [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000].map(ms),
            "no delay for a first restart, then doubling"
        );
        let mut functions = Backoff::new(ms(100));
        assert_eq!((functions.next(), functions.next()), (ms(100), ms(200)));
    }
}
