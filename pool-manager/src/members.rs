//! Registration and the life of each registered instance.
//!
//! An instance connects to its function's unix socket (which socket it can reach is what makes
//! it that function), says hello, and receives a TCP data socket made here. The connection then
//! stays open: it carries events to the instance, and its end (or the end of the data socket)
//! ends the registration.

use crate::membership::Member;
use crate::router::{InstanceSocket, Router};
use crate::Shared;
use slog::{info, warn};
use spright_core::chain::RoutingMode;
use spright_core::descriptor::ABI_VERSION;
use spright_core::fdpass::send_with_fd;
use spright_core::ids::{Endpoint, FnId};
use spright_core::protocol::{Event, Hello, MemberRequest, Registration, Welcome};
use spright_core::rings::Interrupted;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};

/// How long a connecting instance has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const HELLO_MAX: usize = 4096;

/// Tells every member's task to end without sweeping (the whole chain is going away).
pub fn close_all(shared: &Shared) {
    shared.members.lock().unwrap().shut_down();
}

/// The loopback listener data-socket pairs are made on.
pub struct DataListener {
    listener: TcpListener,
    // One pair at a time, so an accept always returns the connection just made.
    making: tokio::sync::Mutex<()>,
}

impl DataListener {
    pub async fn bind() -> io::Result<DataListener> {
        // Our end carries plain TCP only (the relay's writes, the audit path's reads): fixed
        // buffers, instead of autotuning up to megabytes, bound what a receiver that stops
        // reading (or a sender that floods the audit path) can pin in the kernel. Set before
        // listening, so accepted sockets start with them (shrinking a buffer after the window
        // was advertised makes the kernel drop and retransmit).
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(PEER_BUFFER)?;
        socket.set_send_buffer_size(PEER_BUFFER)?;
        socket.bind("127.0.0.1:0".parse().expect("an address"))?;
        Ok(DataListener {
            listener: socket.listen(128)?,
            making: tokio::sync::Mutex::new(()),
        })
    }

    /// A connected TCP pair: (the instance's socket, the pool-manager's peer end).
    pub(crate) async fn pair(&self) -> io::Result<(TcpStream, TcpStream)> {
        let _one = self.making.lock().await;
        // The instance's end receives plain TCP only from the relay (sockmap redirection does
        // not use this buffer): the same bound for what a stalled instance leaves unread.
        let client = TcpSocket::new_v4()?;
        client.set_recv_buffer_size(PEER_BUFFER)?;
        let client = client.connect(self.listener.local_addr()?).await?;
        let mine: SocketAddr = client.local_addr()?;
        let peer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let (peer, from) = self.listener.accept().await?;
                // Anyone on the host can connect to a loopback port; only our own connection
                // is the pair.
                if from == mine {
                    return Ok::<_, io::Error>(peer);
                }
            }
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "data socket pair not accepted"))??;
        client.set_nodelay(true)?;
        peer.set_nodelay(true)?;
        Ok((client, peer))
    }
}

/// Socket buffer size of the pool-manager's end of each data socket, and of the instance's
/// receive side (the kernel doubles it).
const PEER_BUFFER: u32 = 64 * 1024;

pub async fn accept_loop(
    shared: Arc<Shared>,
    data: Arc<DataListener>,
    function: FnId,
    listener: UnixListener,
) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(register(shared.clone(), data.clone(), function, conn));
            }
            Err(e) => {
                warn!(shared.log, "accept failed on a registration socket"; "function" => function.0, "error" => %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_hello(conn: &mut UnixStream) -> Result<Hello, String> {
    let mut buf = Vec::with_capacity(256);
    let read = async {
        let mut chunk = [0u8; 512];
        loop {
            let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed before hello".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                buf.truncate(end);
                return Ok(());
            }
            if buf.len() > HELLO_MAX {
                return Err(format!("hello longer than {HELLO_MAX} bytes"));
            }
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, read)
        .await
        .map_err(|_| format!("no hello within {HELLO_TIMEOUT:?}"))??;
    let hello: Hello = serde_json::from_slice(&buf).map_err(|e| format!("malformed hello: {e}"))?;
    if hello.abi_version != ABI_VERSION {
        return Err(format!(
            "instance speaks ABI version {}, this pool-manager speaks {ABI_VERSION}",
            hello.abi_version
        ));
    }
    Ok(hello)
}

async fn refuse(conn: &mut UnixStream, error: String) {
    let mut line = serde_json::to_vec(&Registration::Refused { error }).unwrap_or_default();
    line.push(b'\n');
    let _ = conn.write_all(&line).await;
}

/// Sends the welcome line with the data socket attached.
async fn send_welcome(
    conn: &mut UnixStream,
    welcome: Welcome,
    socket: &TcpStream,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(&Registration::Welcome(welcome))?;
    line.push(b'\n');
    let sent = loop {
        conn.writable().await?;
        match conn.try_io(Interest::WRITABLE, || {
            send_with_fd(conn.as_raw_fd(), &line, socket)
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    conn.write_all(&line[sent..]).await
}

async fn register(
    shared: Arc<Shared>,
    data: Arc<DataListener>,
    function: FnId,
    mut conn: UnixStream,
) {
    let name = shared.chain.name_of(function).to_owned();
    let mut hello = match read_hello(&mut conn).await {
        Ok(h) => h,
        Err(e) => {
            warn!(shared.log, "registration refused"; "function" => &name, "error" => &e);
            refuse(&mut conn, e).await;
            return;
        }
    };
    // The kernel's word for who connected, in our PID namespace (a process in a container
    // reports its own, often 1).
    if let Some(pid) = conn.peer_cred().ok().and_then(|c| c.pid()) {
        hello.pid = pid as u32;
    }
    let (client, peer) = match data.pair().await {
        Ok(p) => p,
        Err(e) => {
            warn!(shared.log, "cannot make a data socket"; "function" => &name, "error" => %e);
            refuse(
                &mut conn,
                format!("pool-manager could not make a data socket: {e}"),
            )
            .await;
            return;
        }
    };
    let port = match client.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            refuse(&mut conn, format!("data socket has no address: {e}")).await;
            return;
        }
    };
    let (peer_read, peer_write) = peer.into_split();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let stop = Arc::new(Notify::new());

    let joined = {
        let mut members = shared.members.lock().unwrap();
        let mut router = shared.router.lock().unwrap();
        let socket = InstanceSocket {
            client: &client,
            port,
            peer_writer: peer_write,
        };
        let member = Member {
            pid: hello.pid,
            port,
            events: events_tx,
            stop: stop.clone(),
            withdrawn: false,
        };
        let joined = members.join(
            &mut *router,
            function,
            &name,
            shared.routing,
            socket,
            member,
        );
        if let Ok((endpoint, _)) = &joined {
            // Under the members lock: nobody reads the instance as live before its slot is
            // cleared of what its number's previous holder left there.
            shared
                .load
                .lock()
                .unwrap()
                .joined(*endpoint, spright_core::load::now_ns());
        }
        joined
    };
    let (endpoint, kept_writer) = match joined {
        Ok(j) => j,
        Err(e) => {
            warn!(shared.log, "registration refused"; "function" => &name, "error" => %e);
            refuse(&mut conn, e.to_string()).await;
            return;
        }
    };

    let welcome = Welcome {
        abi_version: ABI_VERSION,
        chain: shared.chain.name.clone(),
        function: name.clone(),
        function_id: function.0,
        instance: endpoint.instance.0,
        routing: shared.routing,
        pool_path: shared.paths.pool.clone(),
        pool_tag: shared.pool.tag(),
        rings_path: (shared.routing == RoutingMode::Poll).then(|| shared.paths.rings.clone()),
        load_path: Some(shared.paths.load.clone()),
        timeout_ms: shared.chain.timeout_ms,
        routes: shared.chain.routes.clone(),
        functions: shared
            .chain
            .functions
            .iter()
            .map(|f| (f.name.clone(), f.id))
            .collect(),
    };
    if let Err(e) = send_welcome(&mut conn, welcome, &client).await {
        warn!(shared.log, "could not hand over the data socket"; "function" => &name, "error" => %e);
        drop(client);
        leave(&shared, endpoint, "handover failed");
        return;
    }
    // The instance owns its socket now; ours must go so that its death closes the socket.
    drop(client);
    info!(shared.log, "instance joined";
        "function" => &name, "instance" => endpoint.instance.0, "pid" => hello.pid, "port" => port);
    shared.members.lock().unwrap().broadcast(&Event::Joined {
        function: function.0,
        instance: endpoint.instance.0,
    });

    let reason = serve_member(&shared, endpoint, conn, peer_read, events_rx, stop).await;
    drop(kept_writer);
    if shared.members.lock().unwrap().is_shutting_down() {
        return;
    }
    leave(&shared, endpoint, reason);
}

/// Runs until the registration ends; returns why.
async fn serve_member(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    conn: UnixStream,
    peer_read: OwnedReadHalf,
    mut events: mpsc::UnboundedReceiver<Event>,
    stop: Arc<Notify>,
) -> &'static str {
    let (mut conn_read, mut conn_write) = conn.into_split();
    let mut peer_task = match (&*shared.router.lock().unwrap(), shared.routing) {
        (Router::User(relay), RoutingMode::User) => {
            let relay = relay.clone();
            tokio::spawn(async move {
                let _ = relay.read_loop(endpoint, peer_read).await;
            })
        }
        _ => tokio::spawn(audit_loop(shared.clone(), endpoint, peer_read)),
    };
    let mut buf = [0u8; 256];
    let mut said = Vec::new();
    let mut asked = false;
    let reason = loop {
        tokio::select! {
            r = conn_read.read(&mut buf) => match r {
                Ok(0) | Err(_) => break "registration connection closed",
                Ok(n) => {
                    said.extend_from_slice(&buf[..n]);
                    let mut failed = false;
                    while let Some(end) = said.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = said.drain(..=end).collect();
                        let answer = on_member_request(shared, endpoint, &line, &mut asked);
                        if let Some(event) = answer {
                            let mut line = serde_json::to_vec(&event).unwrap_or_default();
                            line.push(b'\n');
                            if conn_write.write_all(&line).await.is_err() {
                                failed = true;
                                break;
                            }
                        }
                    }
                    if failed {
                        break "registration connection failed";
                    }
                    // A member that talks without ever ending a line is not heard.
                    if said.len() > 4096 {
                        said.clear();
                    }
                }
            },
            Some(event) = events.recv() => {
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                if conn_write.write_all(&line).await.is_err() {
                    break "registration connection failed";
                }
            }
            _ = &mut peer_task => break "data socket closed",
            _ = stop.notified() => break "chain shutting down",
        }
    };
    peer_task.abort();
    reason
}

/// What a member asks after its hello (unknown lines are ignored: a newer SDK may say more).
fn on_member_request(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    line: &[u8],
    asked: &mut bool,
) -> Option<Event> {
    match serde_json::from_slice::<MemberRequest>(line).ok()? {
        MemberRequest::Withdraw => {
            let mut members = shared.members.lock().unwrap();
            let withdrawn = {
                let mut router = shared.router.lock().unwrap();
                members.withdraw(&mut *router, endpoint)
            };
            let withdrawn = withdrawn.unwrap_or_else(|e| {
                warn!(shared.log, "could not update the instance table"; "error" => e);
                false
            });
            if !std::mem::replace(asked, true) {
                // Once per registration: a member that repeats itself is not logged again.
                info!(shared.log, "instance withdrawing";
                    "function" => shared.chain.name_of(endpoint.function),
                    "instance" => endpoint.instance.0,
                    "withdrawn" => withdrawn);
            }
            Some(Event::Withdrawn { withdrawn })
        }
    }
}

/// How often the audit path logs about one instance, at most.
const AUDIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// Kernel mode: SPROXY passes to the socket's TCP peer, which is ours, what it cannot parse and
/// the refusals of a sender that does not read its own queue. Poll mode: nothing should arrive
/// at all (descriptors go through the rings). Read and drop it (reading is what keeps the
/// sender's socket from filling), count it (SPROXY already did), log it now and then, and
/// notice the socket closing. Buffers those descriptors named are reclaimed by the stale
/// transit sweep.
async fn audit_loop(shared: Arc<Shared>, endpoint: Endpoint, mut peer: OwnedReadHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut unlogged = 0u64;
    let mut last_log: Option<Instant> = None;
    loop {
        match peer.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Router::Poll(p) = &*shared.router.lock().unwrap() {
                    p.rings.note_malformed();
                }
                unlogged += n as u64;
                if last_log.is_none_or(|at| at.elapsed() >= AUDIT_LOG_EVERY) {
                    warn!(shared.log, "function sent what its router would not route (malformed sends, or refusals it left unread)";
                        "function" => shared.chain.name_of(endpoint.function), "instance" => endpoint.instance.0, "bytes" => unlogged);
                    unlogged = 0;
                    last_log = Some(Instant::now());
                }
            }
        }
    }
}

/// Withdraws an instance (in the order `Members::leave` keeps), then tells everyone which
/// requests were affected.
fn leave(shared: &Arc<Shared>, endpoint: Endpoint, reason: &str) {
    let mut members = shared.members.lock().unwrap();
    let left = {
        let mut router = shared.router.lock().unwrap();
        members.leave(&mut *router, &shared.pool, endpoint)
    };
    shared
        .load
        .lock()
        .unwrap()
        .left(endpoint, spright_core::load::now_ns());
    if let Some(e) = &left.table_error {
        warn!(shared.log, "could not update the instance table"; "error" => e);
    }
    info!(shared.log, "instance left";
        "function" => shared.chain.name_of(endpoint.function),
        "instance" => endpoint.instance.0,
        "pid" => left.member.as_ref().map(|m| m.pid).unwrap_or(0),
        "reason" => reason,
        "remaining" => left.remaining,
        "requests_affected" => left.requests.len());
    members.broadcast(&Event::Gone {
        function: endpoint.function.0,
        instance: endpoint.instance.0,
        remaining: left.remaining as u16,
        requests: left.requests.into_iter().collect(),
    });
}

/// How long a ring position may stay reserved but unpublished before its producer is taken for
/// dead. A live producer publishes within a few instructions; only a process killed in between
/// (or stopped for this long in between) leaves one.
const PUSH_GRACE: Duration = Duration::from_secs(1);

/// How often poll mode looks for interrupted pushes.
const PUSH_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Poll mode, for the life of the chain: a push whose producer died between reserving a ring
/// position and publishing it would block that ring for good. Any position found reserved but
/// unpublished at the ring's tail for longer than the grace gets a blank published in its
/// place. Checking continually (not once per exit) also catches a dead producer's position
/// that reaches the tail only later, or a second one behind the first.
pub async fn watch_interrupted_pushes(shared: Arc<Shared>) {
    let mut first_seen: HashMap<Interrupted, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(PUSH_CHECK_EVERY).await;
        let router = shared.router.lock().unwrap();
        let Router::Poll(p) = &*router else { return };
        let now = Instant::now();
        let current = p.interrupted_pushes();
        first_seen.retain(|at, _| current.contains(at));
        let stale: Vec<Interrupted> = current
            .iter()
            .filter(|at| now.duration_since(*first_seen.entry(**at).or_insert(now)) >= PUSH_GRACE)
            .copied()
            .collect();
        if !stale.is_empty() {
            let unblocked = p.unblock(&stale);
            if unblocked > 0 {
                warn!(shared.log, "unblocked rings behind a push its producer never finished"; "rings" => unblocked);
            }
            for at in &stale {
                first_seen.remove(at);
            }
        }
    }
}
