//! A process's life as a state machine: a container's init and each exec go
//! `Created -> Running (<-> Paused) -> Stopped -> Deleted`, and whatever else is asked of them
//! is refused here, with the reason, before runc is called.

use containerd_shim::api::Status;
use containerd_shim::protos::ttrpc::Code;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `runc create` (or Exec) done, not started.
    Created,
    Running,
    /// The container's cgroup is frozen (init only).
    Paused,
    /// Exited, and the exit reported.
    Stopped,
    /// Removed: what the record says when the shim lets go of it.
    Deleted,
}

/// What containerd asks of a process (or what happens to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Pause,
    Resume,
    /// Its exit is reported.
    Exit,
    /// A signal: changes no state, but needs a live process (a created init has one; a
    /// created exec does not, see `Process::signal_target`).
    Kill,
    /// Adding an exec to a container (checked on the init).
    Exec,
    Delete,
}

/// An action the process's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Refused {
    /// "container c1" or "exec e1 in c1".
    pub process: String,
    pub state: State,
    pub action: Action,
}

impl Refused {
    /// The status code containerd reads: a signal for a process that is gone is NotFound,
    /// which containerd (and the CRI plugin) take as "already finished"; the rest is
    /// FailedPrecondition.
    pub fn code(&self) -> Code {
        match (self.action, self.state) {
            (Action::Kill, State::Stopped | State::Deleted) => Code::NOT_FOUND,
            _ => Code::FAILED_PRECONDITION,
        }
    }

    fn message(&self) -> String {
        let p = &self.process;
        match (self.action, self.state) {
            (Action::Kill, State::Stopped | State::Deleted) => "process already finished".into(),
            (Action::Kill, State::Created) => format!("{p} has not been started"),
            (Action::Start, State::Stopped | State::Deleted) => {
                format!("{p} is {}: it cannot be started", self.state)
            }
            (Action::Start, _) => format!("{p} was already started (it is {})", self.state),
            (Action::Delete, State::Running | State::Paused) => {
                format!("{p} is still running; kill it first")
            }
            (Action::Exec, _) => format!("{p} is {}: nothing can be exec'd into it", self.state),
            (action, state) => format!("{p} is {state}: cannot {action:?}"),
        }
    }
}

impl State {
    /// The state `action` leads to, or why it is refused. `process` names the process for
    /// the refusal.
    pub fn after(self, action: Action, process: impl FnOnce() -> String) -> Result<State, Refused> {
        use {Action as A, State as S};
        let next = match (self, action) {
            (S::Created, A::Start) => Some(S::Running),
            (S::Running, A::Pause) => Some(S::Paused),
            (S::Paused, A::Resume) => Some(S::Running),
            (S::Created | S::Running | S::Paused, A::Exit) => Some(S::Stopped),
            (S::Created | S::Running | S::Paused, A::Kill) => Some(self),
            (S::Created | S::Running | S::Paused, A::Exec) => Some(self),
            // A created init was never started: runc deletes it only by force, as
            // containerd's runc shim does.
            (S::Created | S::Stopped, A::Delete) => Some(S::Deleted),
            _ => None,
        };
        next.ok_or_else(|| Refused {
            process: process(),
            state: self,
            action,
        })
    }

    /// What the state API reports.
    pub fn status(self) -> Status {
        match self {
            State::Created => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Paused => Status::PAUSED,
            State::Stopped | State::Deleted => Status::STOPPED,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Deleted => "deleted",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use State::*;

    fn after(s: State, a: Action) -> Result<State, Refused> {
        s.after(a, || "container c".into())
    }

    #[test]
    fn a_process_goes_created_running_paused_stopped_deleted() {
        let mut s = Created;
        for (action, expected) in [
            (Start, Running),
            (Pause, Paused),
            (Resume, Running),
            (Kill, Running),
            (Exit, Stopped),
            (Delete, Deleted),
        ] {
            s = after(s, action).unwrap();
            assert_eq!(s, expected, "after {action:?}");
        }
        assert_eq!(after(Created, Delete), Ok(Deleted), "a created task");
        assert_eq!(after(Paused, Exit), Ok(Stopped), "killed while frozen");
    }

    #[test]
    fn impossible_transitions_are_refused_with_containerds_code() {
        let refused = [
            (
                Running,
                Start,
                Code::FAILED_PRECONDITION,
                "was already started",
            ),
            (
                Stopped,
                Start,
                Code::FAILED_PRECONDITION,
                "is stopped: it cannot be started",
            ),
            (Created, Pause, Code::FAILED_PRECONDITION, "cannot Pause"),
            (Running, Resume, Code::FAILED_PRECONDITION, "cannot Resume"),
            (Running, Delete, Code::FAILED_PRECONDITION, "kill it first"),
            (Paused, Delete, Code::FAILED_PRECONDITION, "kill it first"),
            (
                Stopped,
                Exec,
                Code::FAILED_PRECONDITION,
                "nothing can be exec'd",
            ),
            (Stopped, Kill, Code::NOT_FOUND, "process already finished"),
            (Deleted, Kill, Code::NOT_FOUND, "process already finished"),
            (Stopped, Exit, Code::FAILED_PRECONDITION, "cannot Exit"),
            (Deleted, Delete, Code::FAILED_PRECONDITION, "cannot Delete"),
        ];
        for (state, action, code, says) in refused {
            let e = after(state, action).unwrap_err();
            assert_eq!(e.code(), code, "{state} {action:?}");
            assert!(e.to_string().contains(says), "{state} {action:?}: {e}");
        }
    }
}
