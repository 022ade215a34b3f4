//! The control socket: answers stats requests (the gateway's /metrics reads it), streams the
//! scaling signal to the runner, and takes function containers' traffic counts from the shim.

use crate::Shared;
use slog::debug;
use spright_core::ids::{FnId, GATEWAY};
use spright_core::protocol::{ControlRequest, ControlResponse, RouterStats};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line read.
const MAX_REQUEST: u64 = 1 << 20;

pub async fn serve(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            // Out of descriptors or similar: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(&shared, conn).await {
                debug!(shared.log, "control connection ended"; "error" => %e);
            }
        });
    }
}

async fn answer(shared: &Shared, conn: UnixStream) -> std::io::Result<()> {
    let (first, mut handed) = first_read(&conn).await?;
    let peer_uid = conn.peer_cred().map(|c| c.uid()).ok();
    let (read, mut write) = conn.into_split();
    let mut lines =
        BufReader::new(std::io::Cursor::new(first).chain(read).take(MAX_REQUEST)).lines();
    // A container's counts, reported while this connection stays open.
    let mut lease = None;
    while let Some(line) = lines.next_line().await? {
        let response = match serde_json::from_str::<ControlRequest>(&line) {
            Ok(ControlRequest::Stats) => ControlResponse::Stats(stats(shared)),
            Ok(ControlRequest::WatchLoad) => {
                drop(handed.take());
                return watch_load(shared, lines, write).await;
            }
            Ok(ControlRequest::CountTraffic(handover)) if lease.is_none() => {
                let (function, container) = (handover.function.clone(), handover.container.clone());
                let taken = crate::traffic::take(
                    &shared.traffic,
                    &shared.chain,
                    peer_uid,
                    handover,
                    handed.take(),
                );
                match taken {
                    Ok(l) => {
                        debug!(shared.log, "counting a function container's own traffic";
                            "function" => function, "container" => container);
                        lease = Some(l);
                        ControlResponse::Counting
                    }
                    Err(error) => ControlResponse::Error {
                        error: format!("count_traffic for container {container:?}: {error}"),
                    },
                }
            }
            Ok(ControlRequest::CountTraffic(_)) => ControlResponse::Error {
                error: "one count_traffic per connection".into(),
            },
            Err(e) => ControlResponse::Error {
                error: format!("bad control request: {e}"),
            },
        };
        // A descriptor comes only with the first request.
        handed = None;
        let mut out = serde_json::to_vec(&response)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

/// The connection's first bytes, and the descriptor sent with them if any (a `CountTraffic`
/// carries one; any other is closed as soon as the first request is answered).
async fn first_read(conn: &UnixStream) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = vec![0u8; 4096];
    loop {
        conn.readable().await?;
        match conn.try_io(tokio::io::Interest::READABLE, || {
            spright_core::fdpass::recv_with_fd(conn.as_raw_fd(), &mut buf)
        }) {
            Ok((n, fd)) => {
                buf.truncate(n);
                return Ok((buf, fd));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes the scaling signal now and then whenever the pool-manager's look at the board finds
/// it changed, until the watcher hangs up (anything more it writes ends the watch too).
async fn watch_load(
    shared: &Shared,
    mut lines: Lines<impl AsyncBufRead + Unpin>,
    mut write: tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut updates = shared.load_watch.subscribe();
    let scaled = |id: &u16| {
        shared
            .chain
            .function_by_id(FnId(*id))
            .is_some_and(|f| f.scaling.is_some())
    };
    let mut functions: Vec<_> = load(shared)
        .into_iter()
        .filter(|(id, _)| scaled(id))
        .collect();
    loop {
        let mut out = serde_json::to_vec(&ControlResponse::Load { functions })?;
        out.push(b'\n');
        write.write_all(&out).await?;
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                functions = updates.borrow_and_update().clone();
            }
            _ = lines.next_line() => return Ok(()),
        }
    }
}

/// Every function's scaling signal (the gateway's too), by id.
pub fn load(shared: &Shared) -> Vec<(u16, spright_core::protocol::FunctionLoad)> {
    // The members lock held throughout: no instance joins or leaves between the list of live
    // instances and their slots' reading (it would be counted twice, or a stale slot read).
    let members = shared.members.lock().unwrap();
    let instances = members.instance_ids();
    let load = shared.load.lock().unwrap();
    let now = spright_core::load::now_ns();
    std::iter::once(GATEWAY.0)
        .chain(shared.chain.functions.iter().map(|f| f.id))
        .map(|id| {
            let ids = instances.get(&id).map_or(&[][..], |v| v);
            (id, load.figures(id, ids, now))
        })
        .collect()
}

pub fn stats(shared: &Shared) -> RouterStats {
    // Read first, under its own lock only: it walks BPF maps.
    let function_eproxy = shared.traffic.lock().unwrap().read();
    // Lock order: members, router, load (as join and leave take them).
    let members = shared.members.lock().unwrap();
    let (pids, instances) = (members.pids(), members.instance_ids());
    let router = shared.router.lock().unwrap();
    let load = shared.load.lock().unwrap();
    let now = spright_core::load::now_ns();
    let pids_of = |id: u16| pids.get(&id).cloned().unwrap_or_default();
    let stats_of = |id: u16, name: &str| {
        let none = Vec::new();
        let ids = instances.get(&id).unwrap_or(&none);
        let mut stats = router.function_stats(FnId(id), name, pids_of(id), ids);
        stats.load = Some(load.figures(id, ids, now));
        stats
    };
    let mut functions = vec![stats_of(GATEWAY.0, "gateway")];
    for f in &shared.chain.functions {
        functions.push(stats_of(f.id, &f.name));
    }
    RouterStats {
        routing: Some(shared.routing),
        functions,
        malformed: router.malformed(),
        overflow: router.overflow(),
        eproxy: shared
            .eproxy
            .as_ref()
            .map(crate::eproxy::counters)
            .unwrap_or_default(),
        function_eproxy,
    }
}
