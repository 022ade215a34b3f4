//! Sending descriptors: on the data socket, or in poll mode into the destination's ring.
//!
//! Every send is exactly one descriptor (the router redirects a whole send to the destination of
//! its first descriptor). Sending is synchronous and cannot be cancelled halfway: the common
//! case is one `write` straight from the caller; when the socket is full (or a write was short)
//! the rest waits in a backlog that one writer task drains in order. So no caller that gives up
//! (a dropped HTTP request, a handler's timeout) can leave half a descriptor on the stream or a
//! buffer marked in transit that was never sent. In poll mode a send is one push into a ring
//! (see `spright_core::rings`), which is synchronous by nature; there is no backlog: a full ring
//! is refused as SPROXY refuses an undeliverable descriptor.

use spright_core::descriptor::{Descriptor, DESCRIPTOR_SIZE};
use spright_core::ids::{Endpoint, FnId};
use spright_core::pool::Pool;
use spright_core::rings::Rings;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Sends descriptors for one instance. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Arc<Pool>,
    me: Endpoint,
    transport: Transport,
}

enum Transport {
    Socket(Socket),
    /// Poll mode: the sender routes into the rings itself.
    Rings(Arc<Rings>),
}

struct Socket {
    data: Arc<TcpStream>,
    backlog: Mutex<Backlog>,
    wake: Notify,
}

#[derive(Default)]
struct Backlog {
    queue: VecDeque<Descriptor>,
    /// Bytes of the front descriptor already written.
    written: usize,
    /// Set once a write failed: the socket is gone and so is this instance's registration.
    broken: Option<io::ErrorKind>,
}

impl Sender {
    /// A sender on `data`; spawns its writer task on the current tokio runtime.
    pub fn new(data: Arc<TcpStream>, pool: Arc<Pool>, me: Endpoint) -> Sender {
        let inner = Arc::new(Inner {
            pool,
            me,
            transport: Transport::Socket(Socket {
                data,
                backlog: Mutex::new(Backlog::default()),
                wake: Notify::new(),
            }),
        });
        tokio::spawn(drain(inner.clone()));
        Sender { inner }
    }

    /// A sender into the chain's descriptor rings (poll mode).
    pub fn with_rings(rings: Arc<Rings>, pool: Arc<Pool>, me: Endpoint) -> Sender {
        Sender {
            inner: Arc::new(Inner {
                pool,
                me,
                transport: Transport::Rings(rings),
            }),
        }
    }

    /// Sends exactly `d`, unmodified: the member runtime stamps the pool tag and marks the
    /// buffer in transit first; tools and tests may put arbitrary descriptors on the wire. The
    /// router still stamps the sender's identity (in poll mode, this sender does).
    pub fn send_raw(&self, d: &Descriptor) -> io::Result<()> {
        self.enqueue(*d)
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.inner.pool
    }

    pub fn me(&self) -> Endpoint {
        self.inner.me
    }

    fn enqueue(&self, d: Descriptor) -> io::Result<()> {
        match &self.inner.transport {
            Transport::Socket(socket) => socket.enqueue(d),
            // A refusal is in our own ring by now, as SPROXY would have put it in our socket.
            Transport::Rings(rings) => rings
                .send(self.inner.me, d)
                .map(|_| ())
                .map_err(io::Error::other),
        }
    }
}

impl Socket {
    fn enqueue(&self, d: Descriptor) -> io::Result<()> {
        let mut backlog = self.backlog.lock().unwrap();
        if let Some(kind) = backlog.broken {
            return Err(kind.into());
        }
        if !backlog.queue.is_empty() {
            backlog.queue.push_back(d);
            return Ok(());
        }
        match self.data.try_write(d.as_bytes()) {
            Ok(DESCRIPTOR_SIZE) => return Ok(()),
            Ok(n) => backlog.written = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => backlog.written = 0,
            Err(e) => return Err(e),
        }
        backlog.queue.push_back(d);
        drop(backlog);
        self.wake.notify_one();
        Ok(())
    }
}

/// Writes the backlog in order, one descriptor per write, waiting for room when needed.
async fn drain(inner: Arc<Inner>) {
    enum Next {
        Idle,
        Wait,
        Fail(io::ErrorKind),
    }
    let Transport::Socket(socket) = &inner.transport else {
        return;
    };
    loop {
        socket.wake.notified().await;
        loop {
            let next = {
                let mut backlog = socket.backlog.lock().unwrap();
                write_front(&socket.data, &mut backlog)
                    .map(|more| if more { None } else { Some(Next::Idle) })
                    .unwrap_or_else(|e| {
                        Some(if e.kind() == io::ErrorKind::WouldBlock {
                            Next::Wait
                        } else {
                            Next::Fail(e.kind())
                        })
                    })
            };
            match next {
                None => {}
                Some(Next::Idle) => break,
                Some(Next::Wait) => {
                    if let Err(e) = socket.data.writable().await {
                        fail(&inner, socket, e.kind());
                        return;
                    }
                }
                Some(Next::Fail(kind)) => {
                    fail(&inner, socket, kind);
                    return;
                }
            }
        }
    }
}

/// Writes (what is left of) the front descriptor; `Ok(false)` when the backlog is empty.
fn write_front(data: &TcpStream, backlog: &mut Backlog) -> io::Result<bool> {
    let Some(front) = backlog.queue.front().copied() else {
        return Ok(false);
    };
    let n = data.try_write(&front.as_bytes()[backlog.written..])?;
    backlog.written += n;
    if backlog.written == DESCRIPTOR_SIZE {
        backlog.queue.pop_front();
        backlog.written = 0;
    }
    Ok(true)
}

/// The socket broke: refuse further sends and give back the buffers that will never leave.
fn fail(inner: &Inner, socket: &Socket, kind: io::ErrorKind) {
    let mut backlog = socket.backlog.lock().unwrap();
    backlog.broken = Some(kind);
    for d in backlog.queue.drain(..) {
        if let Ok(Some(buf)) = inner.pool.check(&d) {
            if inner.pool.take_back(buf, FnId(d.dst_fn), inner.me) {
                inner.pool.free(buf, inner.me);
            }
        }
    }
}
