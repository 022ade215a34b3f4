//! The Knative-style launch: every function behind its own nginx sidecar (queue-proxy), an
//! activator-like gateway in front, calls between functions through that gateway, and
//! optionally scale to zero. One instance per function (the chain file's `instances` is not
//! used): the benchmarks compare data planes, not autoscalers.

use super::activator::Activator;
use super::pod::PodSpec;
use super::process::stop_all;
use super::revision::Revision;
use super::{announce_ready, commands, nginx, ports, LaunchError, Options, StopSignal};
use crate::httpx;
use crate::routes::Routes;
use spright_core::chain::Chain;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the chain until SIGTERM or SIGINT. With `scale_to_zero`, functions start stopped and
/// are stopped again after that long without requests.
pub async fn run(options: &Options, scale_to_zero: Option<Duration>) -> Result<(), LaunchError> {
    let mut stop = StopSignal::install()?;
    let chain = Chain::load(&options.chain)?;
    let nginx = nginx::locate()?;
    let commands = commands(&chain)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| LaunchError::Bind {
            addr: options.listen,
            source,
        })?;
    let listen = listener
        .local_addr()
        .map_err(|e| LaunchError::io("reading the gateway's address", e))?;
    // Functions reach the gateway over loopback even when it listens on every address.
    let mut gateway = listen;
    if gateway.ip().is_unspecified() {
        gateway.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }

    let dir = tempfile::Builder::new()
        .prefix("spright-baseline-")
        .tempdir()
        .map_err(|e| LaunchError::io("creating a temporary directory", e))?;
    // nginx's worker runs as nobody when we are root: it must reach its buffer directories.
    traversable(dir.path())?;
    // Held until the launch ends, so that no other launcher takes them meanwhile.
    let claimed = ports::claim_free(2 * chain.functions.len())?;
    let ports = claimed.numbers();
    let client = httpx::client();
    let mut revisions = Vec::with_capacity(chain.functions.len());
    for (i, (f, (program, args))) in chain.functions.iter().zip(commands).enumerate() {
        let (port, sidecar_port) = (ports[2 * i], ports[2 * i + 1]);
        let fdir = dir.path().join(&f.name);
        std::fs::create_dir(&fdir)
            .map_err(|e| LaunchError::io(format!("creating {}", fdir.display()), e))?;
        traversable(&fdir)?;
        let mut env: Vec<(String, String)> = f.env.clone().into_iter().collect();
        env.extend([
            ("SPRIGHT_HOST".into(), "http".into()),
            ("SPRIGHT_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("SPRIGHT_GATEWAY_URL".into(), format!("http://{gateway}")),
            (
                spright_core::env::THREADS.into(),
                options.threads.to_string(),
            ),
        ]);
        let spec = PodSpec {
            function: f.name.clone(),
            program,
            args,
            env,
            port,
            sidecar_port,
            nginx: nginx.clone(),
            dir: fdir,
        };
        revisions.push(Arc::new(Revision::new(spec, scale_to_zero, client.clone())));
    }

    if scale_to_zero.is_none() {
        let deadline = Instant::now() + options.ready_timeout;
        let start_all = async {
            for r in &revisions {
                r.start(deadline.saturating_duration_since(Instant::now()))
                    .await?;
            }
            Ok::<_, LaunchError>(())
        };
        let started = tokio::select! {
            r = start_all => r.map(|()| true),
            () = stop.wait() => Ok(false),
        };
        if !matches!(started, Ok(true)) {
            close(&revisions).await;
            return started.map(|_| eprintln!("stopped before the chain was ready"));
        }
    }

    let watchers: Vec<_> = revisions
        .iter()
        .map(|r| tokio::spawn(r.clone().watch()))
        .collect();
    let activator = Arc::new(Activator::new(
        Routes::new(&chain),
        revisions.clone(),
        client,
        Duration::from_millis(chain.timeout_ms),
    ));
    let server = tokio::spawn(httpx::serve(listener, move |req| {
        activator.clone().handle(req)
    }));
    if scale_to_zero.is_some() {
        eprintln!("functions are scaled to zero: each starts with its first request");
    }
    announce_ready(listen);

    stop.wait().await;
    server.abort();
    close(&revisions).await;
    for w in watchers {
        w.abort();
    }
    if scale_to_zero.is_some() {
        let counts: Vec<String> = revisions
            .iter()
            .map(|r| format!("{} {}", r.spec.function, r.cold_starts()))
            .collect();
        eprintln!("cold starts: {}", counts.join(", "));
    }
    let path = dir.path().to_owned();
    dir.close()
        .map_err(|e| LaunchError::io(format!("removing {}", path.display()), e))
}

/// Stops every pod together; none starts after this.
async fn close(revisions: &[Arc<Revision>]) {
    let mut procs = Vec::new();
    for r in revisions {
        if let Some(pod) = r.close().await {
            procs.extend(pod.into_procs());
        }
    }
    stop_all(procs).await;
}

fn traversable(dir: &Path) -> Result<(), LaunchError> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| LaunchError::io(format!("opening {} to nginx's worker", dir.display()), e))
}
