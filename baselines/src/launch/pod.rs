//! One function's "pod" in the Knative-style launch: the function process and its nginx
//! sidecar, started together and stopped together.

use super::process::{stop_all, Proc};
use super::{nginx, LaunchError};
use crate::httpx;
use bytes::Bytes;
use http_body_util::Full;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often readiness is probed while a pod starts.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// Everything needed to start a function's pod, again and again.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub function: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The function's own port.
    pub port: u16,
    /// The sidecar's port: where requests for the function go.
    pub sidecar_port: u16,
    pub nginx: PathBuf,
    /// The sidecar's private directory (configuration, pid file, buffers).
    pub dir: PathBuf,
}

pub struct Pod {
    function: Proc,
    sidecar: Proc,
}

impl Pod {
    /// Starts both processes; does not wait for them to answer.
    pub fn start(spec: &PodSpec) -> Result<Pod, LaunchError> {
        let function = Proc::spawn(
            format!("function {}", spec.function),
            &spec.program,
            &spec.args,
            spec.env.iter().map(|(k, v)| (k, v)),
        )?;
        // On failure `function` is dropped, which kills it.
        let sidecar = nginx::spawn(
            &spec.nginx,
            &spec.function,
            &spec.dir,
            spec.sidecar_port,
            spec.port,
        )?;
        Ok(Pod { function, sidecar })
    }

    /// The function process's id.
    pub fn pid(&self) -> i32 {
        self.function.pid()
    }

    /// How one of its processes ended, if one has.
    pub fn exited(&mut self) -> Option<String> {
        self.function.exited().or_else(|| self.sidecar.exited())
    }

    /// Waits until `GET /healthz` through the sidecar answers 200, failing at once if either
    /// process exits, and after `within`.
    pub async fn wait_healthy(
        &mut self,
        spec: &PodSpec,
        client: &httpx::Client,
        within: Duration,
    ) -> Result<(), LaunchError> {
        let started = Instant::now();
        let url: http::Uri = format!("http://127.0.0.1:{}/healthz", spec.sidecar_port)
            .parse()
            .expect("a loopback URL parses");
        loop {
            if let Some(exit) = self.exited() {
                return Err(LaunchError::Exited(exit));
            }
            let request = http::Request::get(url.clone())
                .body(Full::new(Bytes::new()))
                .expect("a GET request builds");
            let probe = tokio::time::timeout(Duration::from_secs(1), client.request(request));
            if let Ok(Ok(response)) = probe.await {
                let ok = response.status() == http::StatusCode::OK;
                // Read to the end so the connection goes back to the pool.
                let _ = httpx::collect(response.into_body()).await;
                if ok {
                    return Ok(());
                }
            }
            if started.elapsed() >= within {
                return Err(LaunchError::NotReady {
                    what: format!(
                        "function {} (GET /healthz through its sidecar)",
                        spec.function
                    ),
                    after: within,
                });
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// Stops both (SIGTERM, then SIGKILL after the grace period) and waits for them.
    pub async fn stop(self) {
        stop_all(self.into_procs()).await;
    }

    pub fn into_procs(self) -> Vec<Proc> {
        vec![self.sidecar, self.function]
    }
}
