//! The shim binary's life as containerd drives it, written here rather than taken from the
//! `containerd-shim` crate's runner so that one binary speaks every containerd's start
//! protocol (see `handshake`) and serves task API v2 and v3 on one socket:
//!
//! - `-v`: the version; `-info`: the runtime's info (containerd 2.x asks on task create);
//! - `start`: read what containerd sent, find or spawn the shim server of the container's
//!   group, answer with its address;
//! - no action: be that server (spawned by `start`, never by containerd);
//! - `delete`: clean up after a server that died.

mod delete;
mod handshake;
mod info;
mod serve;
mod start;

/// The runtime's name, as containerd's `--runtime` names it.
pub const RUNTIME: &str = "io.containerd.spright.v1";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Handshake(#[from] handshake::HandshakeError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the shim server did not start: {0}")]
    ServerFailed(String),
    #[error("{0}")]
    Shim(#[from] containerd_shim::Error),
    #[error("{0}")]
    Other(String),
}

impl LaunchError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
        let context = context.into();
        move |source| LaunchError::Io { context, source }
    }
}

/// Runs the action the command line names; returns the process's exit code.
pub fn main() -> i32 {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(e) => return fail(&LaunchError::Other(e.to_string())),
    };
    let result = if flags.version {
        println!(
            "{}:\n  Runtime: {RUNTIME}\n  Version: {}\n  Task API: v2 (containerd 1.6 to 2.2), v3 (2.3+ bootstrap)",
            BINARY,
            env!("CARGO_PKG_VERSION")
        );
        Ok(())
    } else if flags.info {
        info::info()
    } else {
        match flags.action.as_str() {
            "start" => start::start(&flags),
            "delete" => delete::delete(&flags),
            "" => serve::serve(&flags),
            other => Err(LaunchError::Other(format!(
                "unknown action {other:?} (containerd calls start and delete)"
            ))),
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

fn fail(e: &LaunchError) -> i32 {
    // containerd shows what `start` prints (stdout and stderr together) in its error.
    eprintln!("{}: {e}", BINARY);
    1
}

const BINARY: &str = "containerd-shim-spright-v1";

/// The most containerd sends on stdin (its own limit is 10 MiB as well).
const MAX_STDIN: u64 = 10 << 20;
