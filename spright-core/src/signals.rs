//! Waiting for the signals that ask a spright process to stop.

use std::future::Future;

/// Installs handlers for SIGINT (Ctrl-C) and SIGTERM (what container runtimes and `kill` send)
/// at once, and returns a future that resolves on the first of them. From the moment this
/// returns, those signals are caught rather than fatal, even before the future is first polled:
/// a process that says it is ready after calling this can be stopped cleanly right away.
/// Must be called within a tokio runtime.
pub fn shutdown() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers the default dispositions still stop the process.
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
