//! The function runtime: receives descriptors, runs the handler for each request concurrently,
//! and sends the result on: to the next function of a sequence, back to a caller, or to the
//! gateway.

use crate::error::{CallError, SdkError};
use crate::lease::Lease;
use crate::member::Member;
use crate::message::{Message, Reply, Request, Response};
use crate::runtime::{Caller, Runtime, Trail, Work};
use slog::{debug, info, warn, Logger};
use spright_core::descriptor::ReplyError;
use spright_core::envelope::{self, ENVELOPE_HEADER_SIZE};
use spright_core::ids::GATEWAY;
use spright_core::protocol::Event;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a handler may fail with; it becomes a 500 response naming the function.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A function: turns a request into a response, possibly calling other functions.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: Request,
        ctx: Context,
    ) -> impl Future<Output = Result<Response, Error>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, Error>> + Send,
{
    fn handle(
        &self,
        request: Request,
        ctx: Context,
    ) -> impl Future<Output = Result<Response, Error>> + Send {
        self(request, ctx)
    }
}

/// State shared by every request an instance serves.
struct Instance {
    runtime: Runtime,
    /// This function's name.
    function: String,
    log: Logger,
    activity: Arc<Activity>,
    /// On a single-threaded runtime a handler is polled once as soon as its request arrives;
    /// on a multi-threaded one every handler is a task, spread over the workers.
    inline_first_poll: bool,
}

/// What a stopping instance watches to know the chain has nothing left for it.
#[derive(Debug, Default)]
struct Activity {
    /// Descriptors received so far.
    received: AtomicU64,
    /// Requests being handled now.
    handling: AtomicUsize,
    /// The gateway has left: nothing that reaches this instance can be answered any more.
    gateway_gone: std::sync::atomic::AtomicBool,
    /// The chain's pool and the gateway's timeout, once registered.
    chain: std::sync::OnceLock<(Arc<spright_core::pool::Pool>, Duration)>,
    /// How to ask the pool-manager, once registered, to route no new request here.
    withdrawal: std::sync::OnceLock<crate::member::Withdrawal>,
    /// The pool-manager's answer to that: `Some(true)` once no new request comes here.
    withdrawn: std::sync::Mutex<Option<bool>>,
    answered: tokio::sync::Notify,
}

impl Activity {
    /// Asks to be taken out of load balancing and waits (briefly) for the answer: whether no
    /// new request will come here.
    async fn withdraw(&self) -> bool {
        let Some(withdrawal) = self.withdrawal.get() else {
            return false;
        };
        let answered = self.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        if withdrawal.ask().await.is_err() {
            return false;
        }
        let _ = tokio::time::timeout(WITHDRAW_ANSWER, answered).await;
        self.withdrawn.lock().unwrap().unwrap_or(false)
    }

    /// A withdrawn instance has nothing in hand once no handler runs (the stop loop also waits
    /// for a quiet spell with nothing received: a send that chose it just before the table
    /// changed lands within microseconds).
    fn own_work_done(&self) -> bool {
        self.handling.load(Ordering::Relaxed) == 0
    }

    /// Nothing in flight anywhere in the chain: every pool buffer free and no handler of ours
    /// running. Judged on the pool, not on this instance alone: a later stage of a sequence
    /// sees nothing while an earlier one is still working on a request.
    fn chain_idle(&self) -> bool {
        if self.gateway_gone.load(Ordering::Relaxed) {
            return true;
        }
        let pool_idle = self.chain.get().is_none_or(|(pool, _)| {
            let s = pool.stats();
            s.free == s.total
        });
        pool_idle && self.handling.load(Ordering::Relaxed) == 0
    }
}

/// Counts a request as being handled while it lives.
struct Handling(Arc<Activity>);

impl Handling {
    fn new(activity: &Arc<Activity>) -> Handling {
        activity.handling.fetch_add(1, Ordering::Relaxed);
        Handling(activity.clone())
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a stopping instance waits for the pool-manager to answer its withdrawal.
const WITHDRAW_ANSWER: Duration = Duration::from_secs(1);

/// After SIGTERM, an instance serves on until the chain has been idle this long (nothing
/// received, no pool buffer in use)...
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// ...or for the gateway's timeout and a second at most (the gateway's own drain bound).
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

/// What a handler knows about the request it serves, and how it makes responses and calls.
#[derive(Clone)]
pub struct Context {
    instance: Arc<Instance>,
    trail: Trail,
    /// Set when this request is a call.
    caller: Option<Caller>,
    request_line: Arc<[u8]>,
}

impl Context {
    /// The id the gateway gave the request.
    pub fn request_id(&self) -> u64 {
        self.trail.request_id
    }

    /// This function's name.
    pub fn function(&self) -> &str {
        &self.instance.function
    }

    /// This instance's number.
    pub fn instance(&self) -> u16 {
        self.instance.runtime.me().instance.0
    }

    fn lease(&self) -> Result<Lease, SdkError> {
        self.instance.runtime.lease(self.trail.request_id)
    }

    fn meta(&self, content_type: &str) -> Vec<u8> {
        let mut meta = Vec::with_capacity(self.request_line.len() + content_type.len() + 16);
        meta.extend_from_slice(&self.request_line);
        if !content_type.is_empty() {
            meta.extend_from_slice(b"\ncontent-type: ");
            meta.extend_from_slice(content_type.as_bytes());
        }
        meta.push(b'\n');
        meta
    }

    /// A response with `body` copied into a new pool buffer.
    pub fn respond(&self, status: u16, content_type: &str, body: &[u8]) -> Result<Response, Error> {
        let mut lease = self.lease()?;
        lease.write_envelope(status, &self.meta(content_type), body)?;
        Ok(Response { lease })
    }

    /// A response whose body `fill` writes straight into the pool buffer (zero copy); `fill`
    /// gets the room available and returns the bytes it wrote.
    pub fn respond_with(
        &self,
        status: u16,
        content_type: &str,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Response, Error> {
        self.respond_meta(status, &self.meta(content_type), fill)
    }

    fn respond_meta(
        &self,
        status: u16,
        meta: &[u8],
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Response, Error> {
        let mut lease = self.lease()?;
        let n = write_in_place(&mut lease, status, meta, fill)?;
        lease.set_len(n);
        Ok(Response { lease })
    }

    /// A response whose body `write` produces through [`std::io::Write`], straight into the
    /// pool buffer. Writing past the buffer's room fails the response.
    pub fn respond_write(
        &self,
        status: u16,
        content_type: &str,
        write: impl FnOnce(&mut BodyWriter<'_>) -> std::io::Result<()>,
    ) -> Result<Response, Error> {
        let mut outcome = Ok(());
        let response = self.respond_with(status, content_type, |room| {
            let mut w = BodyWriter { room, len: 0 };
            outcome = write(&mut w);
            w.len
        })?;
        outcome?;
        Ok(response)
    }

    /// Calls `function` with a request and waits for its reply (RPC style). The callee must be
    /// declared in this function's `calls` in the chain file.
    pub async fn call(
        &self,
        function: &str,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<Reply, CallError> {
        self.call_with(function, method, target, |room| {
            let n = body.len().min(room.len());
            room[..n].copy_from_slice(&body[..n]);
            if n < body.len() {
                usize::MAX // does not fit
            } else {
                n
            }
        })
        .await
    }

    /// Like [`Context::call`], with the request body written in place by `fill`.
    pub async fn call_with(
        &self,
        function: &str,
        method: &str,
        target: &str,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Reply, CallError> {
        self.call_meta(function, request_line(method, target), fill)
            .await
    }

    /// A call whose body starts 8-byte aligned in the buffer, so that the callee can read a
    /// fixed-layout struct in place.
    pub(crate) async fn call_aligned(
        &self,
        function: &str,
        method: &str,
        target: &str,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Reply, CallError> {
        let mut meta = request_line(method, target);
        pad_meta(&mut meta);
        self.call_meta(function, meta, fill).await
    }

    /// A response whose body starts 8-byte aligned in the buffer (see [`Context::call_aligned`]).
    pub(crate) fn respond_aligned(
        &self,
        status: u16,
        content_type: &str,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Response, Error> {
        let mut meta = self.meta(content_type);
        pad_meta(&mut meta);
        self.respond_meta(status, &meta, fill)
    }

    async fn call_meta(
        &self,
        function: &str,
        meta: Vec<u8>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Reply, CallError> {
        let runtime = &self.instance.runtime;
        let failed = |message: String| CallError::Failed {
            function: function.to_owned(),
            message,
        };
        let callee = runtime
            .function_id(function)
            .ok_or_else(|| failed("no such function in this chain".into()))?;
        let mut lease = self.lease().map_err(|e| failed(e.to_string()))?;
        let n = write_in_place(&mut lease, 0, &meta, fill).map_err(|e| failed(e.to_string()))?;
        lease.set_len(n);
        let mut answer = runtime
            .call(self.trail, callee, lease)
            .map_err(|e| failed(e.to_string()))?;
        answer
            .outcome(runtime.timeout())
            .await
            .map_err(|f| f.call_error(function.to_owned()))
    }
}

/// Writes a response body in place in a pool buffer.
pub struct BodyWriter<'a> {
    room: &'a mut [u8],
    len: usize,
}

impl std::io::Write for BodyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let free = self.room.len() - self.len;
        if data.len() > free {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!(
                    "response body larger than the {} bytes a buffer holds",
                    self.room.len()
                ),
            ));
        }
        self.room[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The meta of a call: its request line.
fn request_line(method: &str, target: &str) -> Vec<u8> {
    let mut meta = Vec::with_capacity(method.len() + target.len() + 10);
    meta.extend_from_slice(method.as_bytes());
    meta.push(b' ');
    meta.extend_from_slice(target.as_bytes());
    meta.push(b'\n');
    meta
}

/// Ends `meta` with a line of spaces (headers ignore it) so that the body after the 16-byte
/// envelope header starts on an 8-byte boundary.
fn pad_meta(meta: &mut Vec<u8>) {
    let misaligned = (ENVELOPE_HEADER_SIZE + meta.len() + 1) % 8;
    if misaligned != 0 {
        meta.extend(std::iter::repeat_n(b' ', 8 - misaligned));
    }
    meta.push(b'\n');
}

/// Writes header, meta and an in-place body; returns the message length.
fn write_in_place(
    lease: &mut Lease,
    status: u16,
    meta: &[u8],
    fill: impl FnOnce(&mut [u8]) -> usize,
) -> Result<usize, SdkError> {
    let space = lease.space();
    let capacity = space.len();
    let room = envelope::body_capacity(capacity, meta.len());
    let body_at = ENVELOPE_HEADER_SIZE + meta.len();
    if body_at > capacity {
        return Err(envelope::EnvelopeError::TooLarge {
            needed: body_at,
            capacity,
        }
        .into());
    }
    space[ENVELOPE_HEADER_SIZE..body_at].copy_from_slice(meta);
    let body_len = fill(&mut space[body_at..body_at + room]);
    if body_len > room {
        return Err(envelope::EnvelopeError::TooLarge {
            needed: body_at.saturating_add(body_len),
            capacity,
        }
        .into());
    }
    envelope::write_header(space, status, meta.len(), body_len);
    Ok(body_at + body_len)
}

/// Registers from the environment and serves `handler` until the chain goes away or the
/// process is told to stop (SIGTERM/SIGINT). Builds its own tokio runtime: one thread unless
/// `SPRIGHT_THREADS` asks for more.
pub fn run<H: Handler>(handler: H) -> Result<(), SdkError> {
    let threads: usize = std::env::var(spright_core::env::THREADS)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let activity = Arc::new(Activity::default());
        let serving = serve_counting(handler, activity.clone());
        tokio::pin!(serving);
        tokio::select! {
            r = &mut serving => return r,
            _ = spright_core::signals::shutdown() => {}
        }
        // Told to stop. First ask to be routed no new request: one of several instances (scaled
        // down, replaced) then only finishes what it has. The last one of its function is kept
        // routed; it is most often stopping together with the gateway (a pod deleted, `spright
        // up` stopped), which drains the requests it took, and they still need this instance:
        // it serves on until the chain is idle.
        let timeout = activity.chain.get().map_or(Duration::ZERO, |(_, t)| *t);
        let deadline = tokio::time::Instant::now() + timeout + DRAIN_MARGIN;
        let withdraw = activity.withdraw();
        tokio::pin!(withdraw);
        let withdrawn = tokio::select! {
            r = &mut serving => {
                if let Err(e) = r {
                    eprintln!("spright: while stopping: {e}");
                }
                return Ok(());
            }
            w = &mut withdraw => w,
        };
        loop {
            let seen = activity.received.load(Ordering::Relaxed);
            tokio::select! {
                r = &mut serving => {
                    // Stopping anyway: the chain going away meanwhile is no failure.
                    if let Err(e) = r {
                        eprintln!("spright: while stopping: {e}");
                    }
                    return Ok(());
                }
                _ = tokio::time::sleep(DRAIN_QUIET) => {}
            }
            let unchanged = activity.received.load(Ordering::Relaxed) == seen;
            // Routed again if the function's last routed instance went meanwhile.
            let withdrawn = withdrawn && activity.withdrawn.lock().unwrap().unwrap_or(false);
            let quiet = unchanged
                && if withdrawn {
                    activity.own_work_done()
                } else {
                    activity.chain_idle()
                };
            if quiet || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
        }
    })
}

/// Registers from the environment and serves `handler`.
pub async fn serve<H: Handler>(handler: H) -> Result<(), SdkError> {
    serve_counting(handler, Arc::default()).await
}

async fn serve_counting<H: Handler>(handler: H, activity: Arc<Activity>) -> Result<(), SdkError> {
    let format = std::env::var(spright_core::env::LOG_FORMAT)
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or_default();
    let log = spright_core::logging::logger("function", format);
    let member = Member::from_env().await?;
    serve_member_counting(member, handler, log, activity).await
}

/// Serves `handler` as an already registered member.
pub async fn serve_member<H: Handler>(
    member: Member,
    handler: H,
    log: Logger,
) -> Result<(), SdkError> {
    serve_member_counting(member, handler, log, Arc::default()).await
}

async fn serve_member_counting<H: Handler>(
    member: Member,
    handler: H,
    log: Logger,
    activity: Arc<Activity>,
) -> Result<(), SdkError> {
    let (info, sender, mut receiver, mut events) = member.into_parts();
    let log = log.new(slog::o!(
        "function" => info.welcome.function.clone(),
        "instance" => info.endpoint.instance.0));
    info!(log, "registered"; "chain" => &info.welcome.chain, "routing" => %info.welcome.routing);
    let instance = Arc::new(Instance {
        runtime: Runtime::new(&info, sender, log.clone()),
        function: info.welcome.function.clone(),
        log: log.clone(),
        activity,
        inline_first_poll: tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread,
    });
    let _ = instance
        .activity
        .chain
        .set((info.pool.clone(), instance.runtime.timeout()));
    let handler = Arc::new(handler);
    let _ = instance.activity.withdrawal.set(receiver.withdrawal());
    let events_done = instance.runtime.follow(&mut events, |event| {
        if let Event::Withdrawn { withdrawn } = event {
            *instance.activity.withdrawn.lock().unwrap() = Some(*withdrawn);
            instance.activity.answered.notify_waiters();
        }
        if let Event::Gone {
            function,
            remaining: 0,
            ..
        } = event
        {
            if *function == GATEWAY.0 {
                instance
                    .activity
                    .gateway_gone
                    .store(true, Ordering::Relaxed);
            }
        }
    });
    let receiving = async {
        loop {
            let batch = receiver.next_batch(|d| {
                instance.activity.received.fetch_add(1, Ordering::Relaxed);
                if let Some(work) = instance.runtime.accept(d) {
                    dispatch(&instance, &handler, work);
                }
            });
            match batch.await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(SdkError::Io(e)),
            }
        }
    };
    let result = tokio::select! {
        _ = events_done => Err(SdkError::PoolManagerGone),
        r = receiving => r.and(Err(SdkError::PoolManagerGone)),
    };
    info!(log, "leaving"; "rejected_descriptors" => instance.runtime.rejected());
    result
}

/// Starts handling a request: the handler runs at once on a single-threaded runtime, in a task
/// of its own if it has to wait (and always on a multi-threaded one, so that handlers use every
/// worker), and its result goes where the runtime says.
fn dispatch<H: Handler>(instance: &Arc<Instance>, handler: &Arc<H>, work: Work) {
    let Work {
        trail,
        caller,
        lease,
    } = work;
    let Some(lease) = lease else {
        warn!(instance.log, "request without a buffer"; "request" => trail.request_id);
        instance
            .runtime
            .answer(trail, caller, Err(ReplyError::HandlerFailed));
        return;
    };
    let message = match Message::parse(lease) {
        Ok(m) => m,
        Err((lease, e)) => {
            warn!(instance.log, "malformed request envelope"; "error" => %e);
            instance
                .runtime
                .answer(trail, caller, Err(ReplyError::HandlerFailed));
            drop(lease);
            return;
        }
    };
    let ctx = Context {
        instance: instance.clone(),
        trail,
        caller,
        request_line: Arc::from(message.request_line()),
    };
    let (this, handler) = (instance.clone(), handler.clone());
    let handling = Handling::new(&instance.activity);
    let busy = instance.runtime.busy();
    let mut task = Box::pin(async move {
        let instance = this;
        let _handling = handling;
        let _busy = busy;
        let result = match handler.handle(message, ctx.clone()).await {
            Ok(r) => Ok(r),
            Err(e) => {
                debug!(instance.log, "handler failed"; "error" => %e, "request" => trail.request_id);
                let exhausted = matches!(
                    e.downcast_ref::<SdkError>(),
                    Some(SdkError::PoolExhausted(_))
                );
                let text = format!("{} failed: {e}", ctx.function());
                if exhausted {
                    Err(ReplyError::PoolExhausted)
                } else {
                    ctx.respond(500, "text/plain", text.as_bytes())
                        .map_err(|_| ReplyError::PoolExhausted)
                }
            }
        };
        instance.runtime.answer(ctx.trail, ctx.caller, result);
    });
    // Most handlers finish without waiting for anything: run them here, at once, and spawn a
    // task only for one that has to wait (its first poll as a task registers the wake-ups it
    // needs, so none is lost to the no-op waker of this first try).
    // A handler that panics loses its request and nothing else, as it would in a task of its
    // own (tokio catches a task's panic): the receive loop goes on.
    if !instance.inline_first_poll {
        tokio::spawn(task);
        return;
    }
    let mut first_try = std::task::Context::from_waker(std::task::Waker::noop());
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        task.as_mut().poll(&mut first_try)
    }));
    match polled {
        Ok(std::task::Poll::Pending) => {
            tokio::spawn(task);
        }
        Ok(std::task::Poll::Ready(())) => {}
        Err(_) => warn!(instance.log, "a handler panicked; its request is lost"),
    }
}
