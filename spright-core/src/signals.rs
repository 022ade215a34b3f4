//! Waiting for the signals that ask a spright process to stop.

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what container runtimes and `kill` send).
pub async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default dispositions still stop the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
