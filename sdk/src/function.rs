//! The function runtime: receives descriptors, runs the handler for each request concurrently,
//! and sends the result on: to the next function of a sequence, back to a caller, or to the
//! gateway.

use crate::error::{CallError, SdkError};
use crate::lease::Lease;
use crate::member::{Member, MemberInfo, Sender};
use crate::message::{Message, Reply, Request, Response};
use slog::{debug, info, warn, Logger};
use spright_core::descriptor::{Descriptor, Kind, RefuseReason, ReplyError, ABI_VERSION};
use spright_core::envelope::{self, ENVELOPE_HEADER_SIZE};
use spright_core::ids::{Endpoint, FnId, GATEWAY};
use spright_core::protocol::Event;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

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

struct PendingCall {
    reply: oneshot::Sender<Result<Reply, CallError>>,
    callee: u16,
    request_id: u64,
}

/// State shared by every request an instance serves.
struct Instance {
    info: MemberInfo,
    sender: Sender,
    pending: Mutex<HashMap<u32, PendingCall>>,
    next_call: AtomicU32,
    ids: HashMap<String, u16>,
    timeout: Duration,
    log: Logger,
    rejected: AtomicU64,
    refused: AtomicU64,
    activity: Arc<Activity>,
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
}

impl Activity {
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

/// After SIGTERM, an instance serves on until the chain has been idle this long (nothing
/// received, no pool buffer in use)...
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// ...or for the gateway's timeout and a second at most (the gateway's own drain bound).
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

impl Instance {
    fn me(&self) -> Endpoint {
        self.info.endpoint
    }

    fn name_of(&self, id: u16) -> String {
        if id == GATEWAY.0 {
            return "gateway".into();
        }
        self.ids
            .iter()
            .find(|(_, &v)| v == id)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| format!("function {id}"))
    }
}

/// What a handler knows about the request it serves, and how it makes responses and calls.
#[derive(Clone)]
pub struct Context {
    instance: Arc<Instance>,
    request_id: u64,
    route: u16,
    hops: u8,
    origin_instance: u16,
    /// Set when this request is a call: (caller function, caller instance, call id).
    caller: Option<(u16, u16, u32)>,
    request_line: Arc<[u8]>,
}

impl Context {
    /// The id the gateway gave the request.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// This function's name.
    pub fn function(&self) -> &str {
        &self.instance.info.welcome.function
    }

    /// This instance's number.
    pub fn instance(&self) -> u16 {
        self.instance.info.endpoint.instance.0
    }

    fn lease(&self) -> Result<Lease, SdkError> {
        Lease::alloc(
            &self.instance.info.pool,
            self.instance.me(),
            self.request_id,
        )
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
        let inst = &self.instance;
        let failed = |message: String| CallError::Failed {
            function: function.to_owned(),
            message,
        };
        let callee = *inst
            .ids
            .get(function)
            .ok_or_else(|| failed("no such function in this chain".into()))?;
        let mut lease = self.lease().map_err(|e| failed(e.to_string()))?;
        let n = write_in_place(&mut lease, 0, &meta, fill).map_err(|e| failed(e.to_string()))?;
        lease.set_len(n);

        let call_id = loop {
            let id = inst.next_call.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let (tx, rx) = oneshot::channel();
        inst.pending.lock().unwrap().insert(
            call_id,
            PendingCall {
                reply: tx,
                callee,
                request_id: self.request_id,
            },
        );
        let d = Descriptor {
            version: ABI_VERSION,
            kind: Kind::Request as u8,
            hops: self.hops,
            dst_fn: callee,
            dst_instance: spright_core::ANY_INSTANCE.0,
            route: self.route,
            origin_instance: self.origin_instance,
            request_id: self.request_id,
            call_id,
            ..Descriptor::default()
        };
        if let Err(e) = inst.sender.send_lease(lease, d) {
            inst.pending.lock().unwrap().remove(&call_id);
            return Err(failed(e.to_string()));
        }
        match tokio::time::timeout(inst.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Gone {
                function: function.to_owned(),
            }),
            Err(_) => {
                inst.pending.lock().unwrap().remove(&call_id);
                Err(CallError::Timeout {
                    function: function.to_owned(),
                    ms: inst.timeout.as_millis() as u64,
                })
            }
        }
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
    let threads: usize = std::env::var("SPRIGHT_THREADS")
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
        // Told to stop, most often together with the gateway (a pod deleted, `spright up`
        // stopped): the gateway drains the requests it took, and they still need this
        // instance. Serve on until the chain is idle, then leave.
        let timeout = activity.chain.get().map_or(Duration::ZERO, |(_, t)| *t);
        let deadline = tokio::time::Instant::now() + timeout + DRAIN_MARGIN;
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
            let quiet = activity.received.load(Ordering::Relaxed) == seen && activity.chain_idle();
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
    let format = std::env::var("SPRIGHT_LOG_FORMAT")
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
        ids: info.welcome.functions.iter().cloned().collect(),
        timeout: Duration::from_millis(info.welcome.timeout_ms),
        info,
        sender,
        pending: Mutex::new(HashMap::new()),
        // Random, so a restarted instance does not take its predecessor's late replies for
        // answers to its own calls.
        next_call: AtomicU32::new(fastrand::u32(1..)),
        log: log.clone(),
        rejected: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        activity,
    });
    let _ = instance
        .activity
        .chain
        .set((instance.info.pool.clone(), instance.timeout));
    let handler = Arc::new(handler);
    let events_done = {
        let instance = instance.clone();
        async move {
            while let Some(event) = events.next().await {
                on_event(&instance, event);
            }
        }
    };
    let receiving = async {
        loop {
            match receiver
                .next_batch(|d| dispatch(&instance, &handler, d))
                .await
            {
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
    info!(log, "leaving"; "rejected_descriptors" => instance.rejected.load(Ordering::Relaxed));
    result
}

fn on_event(instance: &Instance, event: Event) {
    if let Event::Gone {
        function,
        remaining,
        requests,
        ..
    } = event
    {
        if function == GATEWAY.0 && remaining == 0 {
            instance
                .activity
                .gateway_gone
                .store(true, Ordering::Relaxed);
        }
        let mut pending = instance.pending.lock().unwrap();
        let dead: Vec<u32> = pending
            .iter()
            .filter(|(_, p)| {
                requests.binary_search(&p.request_id).is_ok()
                    || (remaining == 0 && p.callee == function)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in dead {
            if let Some(p) = pending.remove(&id) {
                let _ = p.reply.send(Err(CallError::Gone {
                    function: instance.name_of(p.callee),
                }));
            }
        }
    }
}

/// Handles one received descriptor. Nothing in the pool is touched before the descriptor is
/// validated and its buffer claimed.
fn dispatch<H: Handler>(instance: &Arc<Instance>, handler: &Arc<H>, d: Descriptor) {
    instance.activity.received.fetch_add(1, Ordering::Relaxed);
    let pool = &instance.info.pool;
    let me = instance.me();
    let claim = |d: &Descriptor| -> Option<Option<Lease>> {
        match pool.claim(d, me) {
            Ok(buf) => Some(buf.map(|b| Lease::claimed(pool, b, me, d.len))),
            Err(e) => {
                instance.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(instance.log, "rejected a descriptor";
                    "error" => %e, "from" => d.src_fn, "request" => d.request_id);
                None
            }
        }
    };
    match d.kind() {
        Some(Kind::Request) => {
            let Some(lease) = claim(&d) else { return };
            let Some(lease) = lease else {
                warn!(instance.log, "request without a buffer"; "from" => d.src_fn);
                let instance = instance.clone();
                tokio::spawn(async move {
                    let ctx = context(&instance, &d, Arc::from(&b""[..]));
                    deliver(&instance, &ctx, Err(ReplyError::HandlerFailed), &d).await;
                });
                return;
            };
            let message = match Message::parse(lease) {
                Ok(m) => m,
                Err((lease, e)) => {
                    warn!(instance.log, "malformed request envelope"; "error" => %e);
                    let instance = instance.clone();
                    tokio::spawn(async move {
                        let ctx = context(&instance, &d, Arc::from(&b""[..]));
                        deliver(&instance, &ctx, Err(ReplyError::HandlerFailed), &d).await;
                        drop(lease);
                    });
                    return;
                }
            };
            let ctx = context(instance, &d, Arc::from(message.request_line()));
            let (instance, handler) = (instance.clone(), handler.clone());
            let handling = Handling::new(&instance.activity);
            tokio::spawn(async move {
                let _handling = handling;
                let result = match handler.handle(message, ctx.clone()).await {
                    Ok(r) => Ok(r),
                    Err(e) => {
                        debug!(instance.log, "handler failed"; "error" => %e, "request" => d.request_id);
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
                deliver(&instance, &ctx, result, &d).await;
            });
        }
        Some(Kind::Reply) if d.call_id != 0 => {
            // Only the reply from the function called, for the request it was called for.
            let pending = {
                let mut pending = instance.pending.lock().unwrap();
                let ours = pending
                    .get(&d.call_id)
                    .is_some_and(|p| p.callee == d.src_fn && p.request_id == d.request_id);
                if ours {
                    pending.remove(&d.call_id)
                } else {
                    None
                }
            };
            let Some(lease) = claim(&d) else {
                if let Some(p) = pending {
                    let _ = p.reply.send(Err(CallError::Failed {
                        function: instance.name_of(p.callee),
                        message: "the reply was not valid".into(),
                    }));
                }
                return;
            };
            let Some(p) = pending else {
                return; // the call timed out; the lease drops and frees the buffer
            };
            let function = instance.name_of(p.callee);
            let result = match lease {
                None => Err(CallError::Failed {
                    function,
                    message: reply_error_text(d.status).into(),
                }),
                Some(lease) => Message::parse(lease).map_err(|(_, e)| CallError::Failed {
                    function,
                    message: format!("malformed reply: {e}"),
                }),
            };
            let _ = p.reply.send(result);
        }
        Some(Kind::Refused) => refused(instance, d),
        _ => {
            instance.rejected.fetch_add(1, Ordering::Relaxed);
            warn!(instance.log, "unexpected descriptor"; "kind" => d.kind, "from" => d.src_fn);
            // If it validly hands us a buffer, take it and free it so that it does not stay in
            // transit.
            if let Ok(Some(buf)) = pool.claim(&d, me) {
                pool.free(buf, me);
            }
        }
    }
}

fn context(instance: &Arc<Instance>, d: &Descriptor, request_line: Arc<[u8]>) -> Context {
    Context {
        instance: instance.clone(),
        request_id: d.request_id,
        route: d.route,
        hops: d.hops,
        origin_instance: d.origin_instance,
        caller: (d.call_id != 0).then_some((d.src_fn, d.src_instance, d.call_id)),
        request_line,
    }
}

fn reply_error_text(status: u8) -> &'static str {
    match ReplyError::from_u8(status) {
        Some(ReplyError::HandlerFailed) => "the handler failed",
        Some(ReplyError::PoolExhausted) => "the pool was exhausted",
        Some(ReplyError::DownstreamUnavailable) => "a function downstream is unavailable",
        Some(ReplyError::DownstreamTimeout) => "a function downstream timed out",
        Some(ReplyError::DownstreamBusy) => "a function downstream is busy",
        None => "unknown error",
    }
}

/// Sends a handler's result where it goes: back to the caller, on to the next function of the
/// route's sequence, or to the gateway.
async fn deliver(
    instance: &Instance,
    ctx: &Context,
    result: Result<Response, ReplyError>,
    request: &Descriptor,
) {
    let mut d = Descriptor {
        version: ABI_VERSION,
        kind: Kind::Reply as u8,
        hops: request.hops,
        route: request.route,
        origin_instance: request.origin_instance,
        request_id: request.request_id,
        ..Descriptor::default()
    };
    if let Some((caller, caller_instance, call_id)) = ctx.caller {
        d.dst_fn = caller;
        d.dst_instance = caller_instance;
        d.call_id = call_id;
    } else {
        let sequence = instance
            .info
            .welcome
            .routes
            .get(request.route as usize)
            .map(|r| r.sequence.as_slice())
            .unwrap_or(&[]);
        let next = request.hops as usize + 1;
        // An error answer (4xx/5xx) ends the sequence: it goes straight back to the client.
        let go_on = matches!(&result, Ok(r) if r.status() < 400);
        match (go_on, sequence.get(next)) {
            (true, Some(&next_fn)) => {
                d.kind = Kind::Request as u8;
                d.hops = request.hops.saturating_add(1);
                d.dst_fn = next_fn;
                d.dst_instance = spright_core::ANY_INSTANCE.0;
            }
            _ => {
                d.dst_fn = GATEWAY.0;
                d.dst_instance = request.origin_instance;
            }
        }
    }
    let sent = match result {
        Ok(response) => instance.sender.send_lease(response.lease, d),
        Err(code) => {
            d.status = code as u8;
            instance.sender.send(&d).map_err(SdkError::Send)
        }
    };
    if let Err(e) = sent {
        warn!(instance.log, "could not send a result on"; "error" => %e, "to" => d.dst_fn);
    }
}

/// A descriptor this instance sent came back refused: take the buffer back and fail what
/// waited on it.
fn refused(instance: &Arc<Instance>, d: Descriptor) {
    let pool = &instance.info.pool;
    let me = instance.me();
    if let Ok(Some(buf)) = pool.check(&d) {
        if pool.take_back(buf, FnId(d.dst_fn), me) {
            drop(Lease::claimed(pool, buf, me, 0));
        }
    }
    let (reason, original) = d.refusal().unwrap_or((None, None));
    let function = instance.name_of(d.dst_fn);
    let refused = instance.refused.fetch_add(1, Ordering::Relaxed) + 1;
    // While a function is down every send to it is refused: log the first, then a count now
    // and then, not one line per request.
    if refused == 1 || refused.is_multiple_of(1000) {
        warn!(instance.log, "a send was refused";
            "to" => &function, "reason" => reason.map(RefuseReason::as_str).unwrap_or("?"),
            "request" => d.request_id, "refused_so_far" => refused);
    }
    match original {
        Some(Kind::Request) if d.call_id != 0 => {
            let mut pending = instance.pending.lock().unwrap();
            let ours = pending
                .get(&d.call_id)
                .is_some_and(|p| p.callee == d.dst_fn && p.request_id == d.request_id);
            if ours {
                if let Some(p) = pending.remove(&d.call_id) {
                    let error = match reason {
                        Some(RefuseReason::Busy) => CallError::Busy { function },
                        _ => CallError::Refused { function, reason },
                    };
                    let _ = p.reply.send(Err(error));
                }
            }
        }
        Some(Kind::Request) => {
            // The next function of a sequence is not there (or too busy to take it): tell the
            // gateway now rather than let the request time out.
            let code = match reason {
                Some(RefuseReason::Busy) => ReplyError::DownstreamBusy,
                _ => ReplyError::DownstreamUnavailable,
            };
            let instance = instance.clone();
            tokio::spawn(async move {
                let reply = Descriptor {
                    version: ABI_VERSION,
                    kind: Kind::Reply as u8,
                    status: code as u8,
                    dst_fn: GATEWAY.0,
                    dst_instance: d.origin_instance,
                    origin_instance: d.origin_instance,
                    route: d.route,
                    hops: d.hops,
                    request_id: d.request_id,
                    ..Descriptor::default()
                };
                let _ = instance.sender.send(&reply);
            });
        }
        // A reply refused as busy: its receiver (the gateway, a caller) is so far behind that
        // its queue is full. The reply is dropped with its buffer; the request ends in a
        // timeout there (504), as it would behind any receiver that does not keep up.
        _ => {} // a reply nobody waits for any more; its buffer is back in the pool
    }
}
