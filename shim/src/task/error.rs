//! The Task service's errors, and the one place they become the status codes containerd reads
//! (it acts on some: NotFound from kill or delete means "already gone").

use super::state::Refused;
use crate::runc::RuncError;
use containerd_shim::protos::ttrpc::{self, Code};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such container or process ("container c1", "exec e1 in c1").
    #[error("{0}")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A request or a spec the shim cannot honour (bad SPRIGHT annotations among them).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unimplemented(String),
    /// The process's state does not allow what was asked.
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Runc(#[from] RuncError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// From the containerd-shim crate's helpers (mounts, cgroups).
    #[error(transparent)]
    Shim(#[from] containerd_shim::Error),
    #[error("{0}")]
    Failed(String),
}

impl TaskError {
    /// Wraps an I/O error with what the shim was doing.
    pub fn io(context: &'static str) -> impl Fn(std::io::Error) -> TaskError {
        move |source| TaskError::Io {
            context: context.to_owned(),
            source,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            TaskError::NotFound(_) => Code::NOT_FOUND,
            TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            TaskError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            TaskError::Unimplemented(_) => Code::UNIMPLEMENTED,
            TaskError::Refused(r) => r.code(),
            // What containerd's runc shim answers for a failed runc or system call.
            TaskError::Runc(_)
            | TaskError::Io { .. }
            | TaskError::Shim(_)
            | TaskError::Failed(_) => Code::UNKNOWN,
        }
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::state::{Action, State};

    fn status(e: TaskError) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn each_error_reaches_containerd_with_its_code_and_message() {
        let runc = RuncError::Failed {
            command: "start".into(),
            code: 1,
            message: "container not found".into(),
        };
        let cases = [
            (
                TaskError::NotFound("container c".into()),
                Code::NOT_FOUND,
                "container c",
            ),
            (
                TaskError::AlreadyExists("container c".into()),
                Code::ALREADY_EXISTS,
                "container c already exists",
            ),
            (
                TaskError::InvalidArgument("spright: bad".into()),
                Code::INVALID_ARGUMENT,
                "spright: bad",
            ),
            (
                TaskError::Unimplemented("no".into()),
                Code::UNIMPLEMENTED,
                "no",
            ),
            (
                TaskError::Runc(runc),
                Code::UNKNOWN,
                "runc start failed (exit 1): container not found",
            ),
            (
                TaskError::io("stdio pipes")(std::io::Error::other("EMFILE")),
                Code::UNKNOWN,
                "stdio pipes: EMFILE",
            ),
            (
                Refused {
                    process: "exec e in c".into(),
                    state: State::Stopped,
                    action: Action::Kill,
                }
                .into(),
                Code::NOT_FOUND,
                "process already finished",
            ),
            (
                Refused {
                    process: "container c".into(),
                    state: State::Running,
                    action: Action::Delete,
                }
                .into(),
                Code::FAILED_PRECONDITION,
                "container c is still running; kill it first",
            ),
        ];
        for (e, code, message) in cases {
            assert_eq!(status(e), (code, message.to_owned()));
        }
    }
}
