//! Why a request or a call got no message back, and the one table that says what each reason
//! means: to a client of the gateway (an HTTP status), to a calling function (a [`CallError`])
//! and on the wire (a bufferless reply code).

use crate::error::CallError;
use crate::lease::Lease;
use spright_core::descriptor::{RefuseReason, ReplyError};
use spright_core::ids::FnId;

/// How a pending request or call ended without a message.
#[derive(Debug)]
pub enum Failure {
    /// The chain answered with a bufferless reply code.
    Code(ReplyError),
    /// The answer could not be read (an unknown code, a malformed envelope).
    Malformed(String),
    /// The router would not deliver the request to `function`. The buffer is ours again, in
    /// `lease`, so that the request can be sent once more.
    Refused {
        function: FnId,
        reason: Option<RefuseReason>,
        lease: Option<Lease>,
    },
    /// An instance holding part of the request went away.
    Gone { function: FnId },
    /// No answer within the deadline.
    Timeout { ms: u64 },
    /// The waiter was dropped from the table without an answer.
    Abandoned,
}

/// A bufferless reply code: what it means and how the gateway answers it.
struct Code {
    code: ReplyError,
    meaning: &'static str,
    http_status: u16,
}

/// Every bufferless reply code (`docs/abi.md` §3). A 503 tells the client to retry later.
const CODES: [Code; 5] = [
    Code {
        code: ReplyError::HandlerFailed,
        meaning: "a function failed",
        http_status: 500,
    },
    Code {
        code: ReplyError::PoolExhausted,
        meaning: "a function found the pool exhausted",
        http_status: 503,
    },
    Code {
        code: ReplyError::DownstreamUnavailable,
        meaning: "a function downstream is not registered",
        http_status: 502,
    },
    Code {
        code: ReplyError::DownstreamTimeout,
        meaning: "a function downstream did not answer in time",
        http_status: 504,
    },
    Code {
        code: ReplyError::DownstreamBusy,
        meaning: "a function downstream is busy (its queue is full)",
        http_status: 503,
    },
];

fn code(c: ReplyError) -> &'static Code {
    CODES
        .iter()
        .find(|row| row.code == c)
        .expect("every reply code has a row")
}

impl Failure {
    /// A bufferless reply's status byte, as a failure.
    pub fn from_code(status: u8) -> Failure {
        match ReplyError::from_u8(status) {
            Some(c) => Failure::Code(c),
            None => Failure::Malformed(format!("unknown error code {status}")),
        }
    }

    /// The code to send on when this failure ends a request that others wait for (a forward
    /// of a sequence that was refused).
    pub fn reply_code(&self) -> ReplyError {
        match self {
            Failure::Code(c) => *c,
            Failure::Refused {
                reason: Some(RefuseReason::Busy),
                ..
            } => ReplyError::DownstreamBusy,
            Failure::Timeout { .. } => ReplyError::DownstreamTimeout,
            Failure::Refused { .. } | Failure::Gone { .. } | Failure::Abandoned => {
                ReplyError::DownstreamUnavailable
            }
            Failure::Malformed(_) => ReplyError::HandlerFailed,
        }
    }

    /// The HTTP status the gateway answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Failure::Code(c) => code(*c).http_status,
            Failure::Refused { reason, .. } => match reason {
                Some(RefuseReason::Busy) => 503,
                Some(RefuseReason::NoDestination) | None => 502,
                Some(RefuseReason::Forbidden | RefuseReason::BadDescriptor) => 500,
            },
            Failure::Timeout { .. } => 504,
            Failure::Malformed(_) | Failure::Gone { .. } | Failure::Abandoned => 502,
        }
    }

    /// Whether the client should be told to retry after a second (back-pressure, exhaustion).
    pub fn retry_after(&self) -> bool {
        self.http_status() == 503
    }

    /// The one-line body of the gateway's answer; `name` names functions.
    pub fn http_text<'n>(&self, name: impl Fn(FnId) -> &'n str) -> String {
        match self {
            Failure::Code(c) => code(*c).meaning.into(),
            Failure::Malformed(_) => "the chain answered with a malformed message".into(),
            Failure::Refused {
                function, reason, ..
            } => match reason {
                Some(RefuseReason::Busy) => {
                    format!("function {} is busy (its queue is full)", name(*function))
                }
                Some(RefuseReason::NoDestination) | None => {
                    format!("function {} is not registered", name(*function))
                }
                Some(r) => format!(
                    "the router refused the request for {}: {}",
                    name(*function),
                    r.as_str()
                ),
            },
            Failure::Gone { function } => format!(
                "function {} exited while handling the request",
                name(*function)
            ),
            Failure::Timeout { ms } => format!("the chain did not answer within {ms} ms"),
            Failure::Abandoned => "the request was abandoned".into(),
        }
    }

    /// What a function's call to `function` fails with.
    pub fn call_error(self, function: String) -> CallError {
        match self {
            Failure::Code(c) => CallError::Failed {
                function,
                message: code(c).meaning.into(),
            },
            Failure::Malformed(message) => CallError::Failed { function, message },
            Failure::Refused {
                reason: Some(RefuseReason::Busy),
                ..
            } => CallError::Busy { function },
            Failure::Refused { reason, .. } => CallError::Refused { function, reason },
            Failure::Gone { .. } | Failure::Abandoned => CallError::Gone { function },
            Failure::Timeout { ms } => CallError::Timeout { function, ms },
        }
    }
}
