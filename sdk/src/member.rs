//! Joining a chain: registration with the pool-manager, the data socket (or in poll mode the
//! descriptor rings), and sending descriptors. The function runtime and the gateway both stand
//! on this.

use crate::error::SdkError;
pub use crate::sender::Sender;
use spright_core::chain::RoutingMode;
use spright_core::descriptor::{Descriptor, DescriptorFramer};
use spright_core::env;
use spright_core::fdpass::recv_with_fd;
use spright_core::ids::{Endpoint, FnId, InstanceId};
use spright_core::load::{self, LoadBoard};
use spright_core::pool::Pool;
use spright_core::protocol::{Event, Hello, MemberRequest, Registration, Welcome};
use spright_core::rings::{self, RingId, Rings};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::OwnedReadHalf as UnixReadHalf;
use tokio::net::{TcpStream, UnixStream};

/// A registered instance: its identity, the mapped pool and its data socket.
pub struct Member {
    pub welcome: Welcome,
    pub endpoint: Endpoint,
    pub pool: Arc<Pool>,
    /// The chain's load board, where this instance reports its load; why not, if it is not.
    pub load: Result<Arc<LoadBoard>, String>,
    pub sender: Sender,
    data: Arc<TcpStream>,
    /// Poll mode: the rings, and the one this instance consumes.
    rings: Option<(Arc<Rings>, RingId)>,
    registration: UnixStream,
}

impl Member {
    /// Registers using `SPRIGHT_SOCKET` (and `SPRIGHT_POOL` when the pool is mounted somewhere
    /// other than its host path, as in a container).
    pub async fn from_env() -> Result<Member, SdkError> {
        let socket = std::env::var_os(env::SOCKET).ok_or(SdkError::MissingEnv(env::SOCKET))?;
        let pool = std::env::var_os(env::POOL).map(PathBuf::from);
        Member::register(Path::new(&socket), pool.as_deref()).await
    }

    /// Registers on the registration socket at `socket`, mapping the pool at `pool_path` (or
    /// where the pool-manager says it is). In poll mode the rings are mapped from beside
    /// `pool_path` when it is given, else from where the pool-manager says.
    pub async fn register(socket: &Path, pool_path: Option<&Path>) -> Result<Member, SdkError> {
        let failed = |reason: String| SdkError::Registration {
            path: socket.to_owned(),
            reason,
        };
        let mut registration =
            UnixStream::connect(socket)
                .await
                .map_err(|source| SdkError::Connect {
                    path: socket.to_owned(),
                    source,
                })?;
        let mut hello = serde_json::to_vec(&Hello {
            abi_version: spright_core::descriptor::ABI_VERSION,
            pid: std::process::id(),
        })
        .map_err(|e| failed(e.to_string()))?;
        hello.push(b'\n');
        registration.write_all(&hello).await?;

        // The answer is one line; the data socket rides on its first bytes.
        let mut line = Vec::new();
        let mut fd = None;
        let mut chunk = [0u8; 4096];
        while !line.contains(&b'\n') {
            registration.readable().await?;
            let got = registration.try_io(Interest::READABLE, || {
                recv_with_fd(registration.as_raw_fd(), &mut chunk)
            });
            match got {
                Ok((0, _)) => return Err(failed("pool-manager closed the connection".into())),
                Ok((n, passed)) => {
                    line.extend_from_slice(&chunk[..n]);
                    if passed.is_some() {
                        fd = passed;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
            if line.len() > 1 << 20 {
                return Err(failed("answer longer than 1 MiB".into()));
            }
        }
        let end = line.iter().position(|&b| b == b'\n').unwrap();
        let welcome = match serde_json::from_slice::<Registration>(&line[..end])
            .map_err(|e| failed(format!("malformed answer: {e}")))?
        {
            Registration::Welcome(w) => w,
            Registration::Refused { error } => {
                return Err(SdkError::Refused {
                    path: socket.to_owned(),
                    reason: error,
                })
            }
        };
        let fd = fd.ok_or_else(|| failed("no data socket came with the answer".into()))?;
        let std_stream = std::net::TcpStream::from(fd);
        std_stream.set_nonblocking(true)?;
        let data = Arc::new(TcpStream::from_std(std_stream)?);

        let pool_path = pool_path.unwrap_or(&welcome.pool_path);
        let pool = Arc::new(Pool::open(pool_path)?);
        if pool.tag() != welcome.pool_tag {
            return Err(failed(format!(
                "pool {} is not this chain's (tag {:#x}, expected {:#x})",
                pool_path.display(),
                pool.tag(),
                welcome.pool_tag
            )));
        }
        let endpoint = Endpoint::new(FnId(welcome.function_id), InstanceId(welcome.instance));
        let rings = match welcome.routing {
            RoutingMode::Poll => {
                let path = match (pool_path == welcome.pool_path, &welcome.rings_path) {
                    (true, Some(p)) => p.clone(),
                    _ => rings::rings_path(pool_path),
                };
                let rings = Rings::open(&path).map_err(|e| failed(e.to_string()))?;
                rings.check_pool(&pool).map_err(|e| failed(e.to_string()))?;
                let ring = rings.ring_of(endpoint).ok_or_else(|| {
                    failed(format!("{} has no ring for {endpoint}", path.display()))
                })?;
                Some((Arc::new(rings), ring))
            }
            RoutingMode::Sockmap | RoutingMode::User => None,
        };
        let sender = match &rings {
            Some((r, _)) => Sender::with_rings(r.clone(), pool.clone(), endpoint),
            None => Sender::new(data.clone(), pool.clone(), endpoint),
        };
        // Beside the pool, as the rings are; a pool-manager that keeps no board says none.
        let load = match (pool_path == welcome.pool_path, &welcome.load_path) {
            (true, Some(p)) => LoadBoard::open(p, pool.pool_id())
                .map(Arc::new)
                .map_err(|e| e.to_string()),
            (true, None) => Err("the pool-manager keeps no load board".to_owned()),
            (false, _) => LoadBoard::open(&load::load_path(pool_path), pool.pool_id())
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        };
        Ok(Member {
            welcome,
            endpoint,
            pool,
            load,
            sender,
            data,
            rings,
            registration,
        })
    }

    /// Splits into the receiving side of the data socket and the event stream.
    pub fn into_parts(self) -> (MemberInfo, Sender, Receiver, Events) {
        let (read, _write) = self.registration.into_split();
        (
            MemberInfo {
                welcome: self.welcome,
                endpoint: self.endpoint,
                pool: self.pool,
                load: self.load,
            },
            self.sender,
            Receiver {
                data: self.data,
                inbound: match self.rings {
                    Some((rings, ring)) => Inbound::Ring { rings, ring },
                    None => Inbound::Socket {
                        framer: DescriptorFramer::default(),
                        buf: vec![0u8; 64 * 1024],
                    },
                },
                registration_write: Withdrawal(Arc::new(tokio::sync::Mutex::new(_write))),
            },
            Events {
                lines: BufReader::new(read),
            },
        )
    }
}

/// Who this instance is.
#[derive(Clone)]
pub struct MemberInfo {
    pub welcome: Welcome,
    pub endpoint: Endpoint,
    pub pool: Arc<Pool>,
    pub load: Result<Arc<LoadBoard>, String>,
}

/// The receiving side: the data socket, or in poll mode this instance's ring.
pub struct Receiver {
    data: Arc<TcpStream>,
    inbound: Inbound,
    // Closing our end of the registration would end it; kept until the receiver goes (and
    // any withdrawal handle).
    registration_write: Withdrawal,
}

/// Asks the pool-manager to route no new request to this instance (see
/// [`MemberRequest::Withdraw`]); the answer comes as [`Event::Withdrawn`].
#[derive(Clone, Debug)]
pub struct Withdrawal(Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>);

impl Withdrawal {
    pub async fn ask(&self) -> io::Result<()> {
        let mut line = serde_json::to_vec(&MemberRequest::Withdraw)?;
        line.push(b'\n');
        self.0.lock().await.write_all(&line).await
    }
}

enum Inbound {
    Socket {
        framer: DescriptorFramer,
        buf: Vec<u8>,
    },
    Ring {
        rings: Arc<Rings>,
        ring: RingId,
    },
}

/// Most descriptors taken from the ring per batch, so handlers get to run in between.
const RING_BATCH: usize = 64;
/// Empty polls spent spinning on the CPU before each yield to other threads and tasks.
const SPINS: u32 = 64;
/// Yields between looks at the data socket for the pool-manager having gone.
const LIVENESS_EVERY: u32 = 1024;

impl Receiver {
    /// A handle to ask, when stopping, that no new request be routed here.
    pub fn withdrawal(&self) -> Withdrawal {
        self.registration_write.clone()
    }

    /// Waits for descriptors and calls `each` for every one received; returns `Ok(false)` when
    /// the data socket closes (the registration ended or the pool-manager is gone).
    pub async fn next_batch(&mut self, mut each: impl FnMut(Descriptor)) -> io::Result<bool> {
        let (rings, ring) = match &mut self.inbound {
            Inbound::Socket { framer, buf } => loop {
                match read_draining(&self.data, buf) {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        framer.feed(&buf[..n], &mut each);
                        // Handlers answered here inline: a socket that never runs dry must not
                        // starve this runtime's tasks (handlers that wait, timers, events).
                        tokio::task::consume_budget().await;
                        return Ok(true);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.data.readable().await?,
                    Err(e) => return Err(e),
                }
            },
            Inbound::Ring { rings, ring } => (rings, *ring),
        };
        // Poll mode busy-polls and never sleeps: D-SPRIGHT trades a core per process for
        // never waiting on the kernel. Yielding keeps this runtime's other tasks (handlers,
        // timers, the event stream) and other processes on the core going.
        let mut idle = 0u32;
        loop {
            let mut taken = 0;
            while taken < RING_BATCH {
                let Some(d) = rings.pop(ring) else { break };
                taken += 1;
                if !rings::is_blank(&d) {
                    each(d);
                }
            }
            if taken > 0 {
                // Count against tokio's budget: a ring that never runs dry must not starve
                // this runtime's other tasks (handlers, the events stream, shutdown).
                tokio::task::consume_budget().await;
                return Ok(true);
            }
            idle = idle.wrapping_add(1);
            if idle < SPINS {
                std::hint::spin_loop();
                continue;
            }
            if idle.is_multiple_of(LIVENESS_EVERY) {
                // Nothing travels on the data socket in poll mode; its end is the news that
                // the pool-manager closed the registration.
                match self.data.try_read(&mut [0u8; 64]) {
                    Ok(0) => return Ok(false),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }
}

/// Reads what the data socket holds. A read that leaves room in `buf` took everything queued,
/// so the socket's readiness is cleared as well: the next wait goes straight to the reactor
/// instead of spending a `recv` on `EAGAIN` first. Data that arrives after the read raises a
/// new edge, and tokio clears only the readiness this read saw, so no wake-up is lost.
///
/// "Everything" holds because a TCP receive copies until its queue runs dry, and so does
/// sk_msg's ingress queue. But a receive on a socket in a sockmap reads only that queue while
/// it holds anything, so this relies on nothing writing plain TCP to a member's socket in
/// sockmap mode: the pool-manager keeps its end only to see the close (`Router::register`).
fn read_draining(data: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut drained = None;
    let read = data.try_io(Interest::READABLE, || {
        let n = data.try_read(buf)?;
        if n > 0 && n < buf.len() {
            drained = Some(n);
            // Tells try_io to clear the readiness it saw; the bytes are returned below.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (read, drained) {
        (_, Some(n)) => Ok(n),
        (read, None) => read,
    }
}

/// Events from the pool-manager.
pub struct Events {
    lines: BufReader<UnixReadHalf>,
}

impl Events {
    /// The next event; `None` when the pool-manager closed the registration (the chain is
    /// going away).
    pub async fn next(&mut self) -> Option<Event> {
        let mut line = String::new();
        loop {
            line.clear();
            match self.lines.read_line(&mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    if let Ok(e) = serde_json::from_str::<Event>(line.trim_end()) {
                        return Some(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;
    use std::time::Duration;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn a_read_that_drains_the_socket_clears_its_readiness_and_loses_no_wake_up() {
        let (mut writer, reader) = pair().await;
        let mut buf = [0u8; 4096];
        for round in 0..3u8 {
            writer.write_all(&[round; 48]).await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), reader.readable())
                .await
                .expect("the write makes the socket readable")
                .unwrap();
            assert_eq!(read_draining(&reader, &mut buf).unwrap(), 48);
            assert_eq!(buf[..48], [round; 48]);
            // try_read alone would leave it ready, and the next wait would start with a recv
            // that finds nothing.
            assert!(
                reader.readable().now_or_never().is_none(),
                "readiness is cleared after a read that left room in the buffer"
            );
        }
        // A read that fills the buffer proves nothing: readiness stays.
        writer.write_all(&[7; 64]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), reader.readable())
            .await
            .unwrap()
            .unwrap();
        let mut small = [0u8; 16];
        assert_eq!(read_draining(&reader, &mut small).unwrap(), 16);
        assert!(reader.readable().now_or_never().is_some());
        drop(writer);
        let mut total = 0;
        loop {
            tokio::time::timeout(Duration::from_secs(5), reader.readable())
                .await
                .expect("the rest and the end are announced")
                .unwrap();
            match read_draining(&reader, &mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(total, 48);
    }
}
