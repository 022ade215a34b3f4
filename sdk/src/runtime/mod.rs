//! The member runtime: what every member of a chain (the gateway and each function instance)
//! does with descriptors, whatever it does with requests. It owns a descriptor's life on this
//! side of the router:
//!
//! - building descriptors ([`Trail`]) and deciding a sequence's next hop ([`next_hop`]);
//! - sending, with the buffer marked in transit and taken back if the send fails;
//! - the table of requests and calls waiting for an answer ([`Awaiting`]);
//! - answers, refusals (handed back by the router) and departures (`gone` events), each
//!   settling exactly the waits it concerns;
//! - what a failure means to a client or a caller ([`Failure`]).
//!
//! It stands on a [`Transport`] ([`Inbound`] and [`EventSource`] for the receiving side): the
//! data socket or the rings of a registered [`crate::member::Member`], or an in-process fake in
//! tests.

mod descriptors;
mod failure;
mod pending;
mod sequence;
mod timer_anchor;
mod transport;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

/// The receiving side of a registered member's own transport.
pub use crate::member::{Events, Receiver};
pub use descriptors::{Caller, Destination, Trail};
pub use failure::Failure;
pub use pending::{Awaiting, Expect, Outcome};
pub use sequence::{next_hop, Position, Step};
pub use timer_anchor::TimerAnchor;
pub use transport::{EventSource, Inbound, Transport};

use crate::error::SdkError;
use crate::lease::Lease;
use crate::member::{Member, MemberInfo};
use crate::message::{Message, Response};
use pending::Pending;
use slog::{debug, warn, Logger};
use spright_core::descriptor::{Descriptor, Kind, RefuseReason, ReplyError};
use spright_core::ids::{Endpoint, FnId, GATEWAY};
use spright_core::load::LoadBoard;
use spright_core::pool::{Holder, Pool};
use spright_core::protocol::{Event, Welcome};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A request this member is given to handle.
pub struct Work {
    pub trail: Trail,
    /// Who called, when the request is a call.
    pub caller: Option<Caller>,
    /// The request's buffer, claimed; `None` for a request that came without one.
    pub lease: Option<Lease>,
}

/// One member's runtime. The gateway serves no requests and waits on request ids; a function
/// serves requests and waits on the ids of its calls.
pub struct Runtime {
    me: Endpoint,
    pool: Arc<Pool>,
    transport: Box<dyn Transport>,
    pending: Pending,
    /// The next wait's key: request ids for the gateway, call ids for a function.
    next_key: AtomicU64,
    /// The sequence of each route, by route index.
    sequences: Vec<Vec<u16>>,
    ids: HashMap<String, u16>,
    timeout: Duration,
    rejected: AtomicU64,
    refused: AtomicU64,
    /// Where this member reports its load (none if the board could not be mapped).
    load: Option<Arc<LoadBoard>>,
    /// Started by the first wait (or the gateway's serving), stopped with the runtime.
    anchor: OnceLock<TimerAnchor>,
    log: Logger,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("me", &self.me).finish()
    }
}

/// A member registered with its chain, its runtime started on the member's own transport.
pub struct Joined {
    pub welcome: Welcome,
    pub runtime: Runtime,
    /// Descriptors for the runtime to [`Runtime::receive`].
    pub inbound: Receiver,
    /// Events for the runtime to [`Runtime::follow`].
    pub events: Events,
    /// The logger given, naming the instance.
    pub log: Logger,
}

/// A request in flight at a member, on its load board; see [`Runtime::busy`].
pub struct Busy {
    board: Option<Arc<LoadBoard>>,
    me: Endpoint,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(board) = &self.board {
            board.finished(self.me, spright_core::load::now_ns());
        }
    }
}

/// Request ids carry the gateway instance in their top 16 bits, unique across the chain.
const INSTANCE_SHIFT: u32 = 48;

impl Runtime {
    /// The runtime of the registered member `info`, sending through `transport`.
    pub fn new(info: &MemberInfo, transport: impl Transport, log: Logger) -> Runtime {
        let is_gateway = info.endpoint.function == GATEWAY;
        Runtime {
            me: info.endpoint,
            pool: info.pool.clone(),
            transport: Box::new(transport),
            pending: Pending::new(),
            // Random, so that a restarted member does not take its predecessor's late answers
            // for its own.
            next_key: AtomicU64::new(if is_gateway {
                fastrand::u64(1..1 << 47)
            } else {
                fastrand::u32(1..) as u64
            }),
            sequences: info
                .welcome
                .routes
                .iter()
                .map(|r| r.sequence.clone())
                .collect(),
            ids: info.welcome.functions.iter().cloned().collect(),
            timeout: Duration::from_millis(info.welcome.timeout_ms),
            rejected: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            load: match &info.load {
                Ok(board) => Some(board.clone()),
                Err(e) => {
                    warn!(log, "not reporting load: autoscalers will not see this instance's";
                        "error" => e);
                    None
                }
            },
            anchor: OnceLock::new(),
            log,
        }
    }

    /// Counts a request as in flight at this member (for the scaling signal) until the guard
    /// is dropped.
    pub fn busy(&self) -> Busy {
        if let Some(board) = &self.load {
            board.started(self.me, spright_core::load::now_ns());
        }
        Busy {
            board: self.load.clone(),
            me: self.me,
        }
    }

    /// Registers on the registration socket at `socket`, mapping the pool at `pool_path` (or
    /// where the pool-manager says it is), and starts a runtime on the data socket or rings.
    pub async fn join(
        socket: &Path,
        pool_path: Option<&Path>,
        log: &Logger,
    ) -> Result<Joined, SdkError> {
        let (info, sender, inbound, events) =
            Member::register(socket, pool_path).await?.into_parts();
        let log = log.new(slog::o!("instance" => info.endpoint.instance.0));
        Ok(Joined {
            runtime: Runtime::new(&info, sender, log.clone()),
            welcome: info.welcome,
            inbound,
            events,
            log,
        })
    }

    pub fn me(&self) -> Endpoint {
        self.me
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The chain's timeout: how long an answer may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// From now on, keeps the timer driver of the current tokio runtime from being woken by
    /// each request's deadlines: the chain's timeout and, if given, `other_deadlines` and any
    /// longer (see [`TimerAnchor`]). The first wait this member opens does it for the chain's
    /// timeout alone, so a member that never waits pays nothing; the first call wins, and the
    /// anchor stays on the runtime it started on. A chain whose timeout is under 20 ms has none.
    pub fn anchor_timers(&self, other_deadlines: Option<Duration>) {
        if self.anchor.get().is_some() {
            return;
        }
        let shortest = other_deadlines.map_or(self.timeout, |d| d.min(self.timeout));
        let Some(period) = timer_anchor::period_for(shortest) else {
            return;
        };
        let Ok(tokio) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Two at once: the loser's anchor is dropped, which stops it.
        let _ = self.anchor.set(TimerAnchor::start(&tokio, period));
    }

    /// The name of function `f` ("gateway" for 0, "?" for an id the chain does not have).
    pub fn name_of(&self, f: FnId) -> &str {
        if f == GATEWAY {
            return "gateway";
        }
        self.ids
            .iter()
            .find(|(_, &id)| id == f.0)
            .map_or("?", |(name, _)| name)
    }

    /// The id of the function called `name`.
    pub fn function_id(&self, name: &str) -> Option<FnId> {
        self.ids.get(name).map(|&id| FnId(id))
    }

    /// Descriptors that failed validation (forged, stale, another pool's, unexpected).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Requests or calls waiting for an answer now.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn serves_requests(&self) -> bool {
        self.me.function != GATEWAY
    }

    /// A fresh buffer for request `request_id`.
    pub fn lease(&self, request_id: u64) -> Result<Lease, SdkError> {
        Lease::alloc(&self.pool, self.me, request_id)
    }

    /// Sends a bufferless descriptor.
    pub fn send(&self, mut d: Descriptor) -> Result<(), SdkError> {
        d.pool_tag = self.pool.tag();
        self.transport.send(&d).map_err(SdkError::Send)
    }

    /// Sends `lease`'s buffer with `d`: the buffer is described in `d` and marked in transit to
    /// `d.dst_fn`. If it cannot be sent, the buffer comes back and is freed.
    pub fn send_lease(&self, lease: Lease, mut d: Descriptor) -> Result<(), SdkError> {
        let pool = &self.pool;
        let (buf, len) = (lease.buffer(), lease.len());
        pool.describe(buf, &mut d);
        d.len = len;
        let to = d.dst();
        // The lease's buffer is now the descriptor's: it must not be freed on drop.
        std::mem::forget(lease);
        if !pool.mark_in_transit(buf, self.me, to) {
            // Only possible if the pool was tampered with: the buffer is not ours any more.
            return Err(SdkError::Send(io::Error::other(
                "buffer was not held by this instance",
            )));
        }
        if let Err(e) = self.transport.send(&d) {
            if pool.take_back(buf, to, self.me) {
                pool.free(buf, self.me);
            }
            return Err(SdkError::Send(e));
        }
        Ok(())
    }

    /// The gateway: a new request id and the wait for its answer (from any function).
    pub fn open_request(&self) -> Awaiting<'_> {
        self.anchor_timers(None);
        let count = self.next_key.fetch_add(1, Ordering::Relaxed) & ((1 << INSTANCE_SHIFT) - 1);
        let id = ((self.me.instance.0 as u64) << INSTANCE_SHIFT) | count;
        self.pending.open(
            id,
            Expect {
                request_id: id,
                callee: None,
            },
        )
    }

    /// A function: calls `callee` with the request in `lease`, as part of the request `trail`
    /// names. The wait is open before the call leaves, so no answer can come too early.
    pub fn call(&self, trail: Trail, callee: FnId, lease: Lease) -> Result<Awaiting<'_>, SdkError> {
        self.anchor_timers(None);
        let call_id = loop {
            let id = self.next_key.fetch_add(1, Ordering::Relaxed) as u32;
            if id != 0 {
                break id;
            }
        };
        let mut waiting = self.pending.open(
            call_id as u64,
            Expect {
                request_id: trail.request_id,
                callee: Some(callee),
            },
        );
        if let Err(e) = self.send_lease(lease, trail.call(callee, call_id)) {
            waiting.forget();
            return Err(e);
        }
        Ok(waiting)
    }

    /// Sends a handler's result where it goes: back to the caller, on to the next step of the
    /// route's sequence, or to the gateway.
    pub fn answer(
        &self,
        trail: Trail,
        caller: Option<Caller>,
        result: Result<Response, ReplyError>,
    ) {
        let to = match caller {
            Some(caller) => Destination::Caller(caller),
            None => {
                let ok = matches!(&result, Ok(r) if r.status() < 400);
                let sequence = self
                    .sequences
                    .get(trail.route as usize)
                    .map_or(&[][..], |s| s);
                match next_hop(
                    sequence,
                    Position::Answered {
                        hops: trail.hops,
                        ok,
                    },
                ) {
                    Some(step) => Destination::Next(step),
                    None => Destination::Gateway,
                }
            }
        };
        let sent = match result {
            Ok(response) => self.send_lease(response.lease, trail.to(to)),
            Err(code) => self.send(trail.error_to(to, code)),
        };
        if let Err(e) = sent {
            warn!(self.log, "could not send a result on"; "error" => %e, "to" => ?to);
        }
    }

    /// The gateway, after a request timed out: frees its buffers still in transit (they may
    /// sit in the queue of an instance that died; a late receiver finds the generation moved
    /// on). Returns how many.
    pub fn reclaim_in_transit(&self, request_id: u64) -> usize {
        let mut n = 0;
        self.pool.for_each_used(|index, state, owner| {
            if owner == request_id
                && matches!(state.holder, Holder::InTransit { .. })
                && self.pool.reclaim(index, state)
            {
                n += 1;
            }
        });
        n
    }

    /// Receives until the data plane closes, handing each request to `on_work`.
    pub async fn receive(
        &self,
        inbound: &mut impl Inbound,
        mut on_work: impl FnMut(Work) + Send,
    ) -> io::Result<()> {
        while inbound
            .next_batch(|d| {
                if let Some(work) = self.accept(d) {
                    on_work(work)
                }
            })
            .await?
        {}
        Ok(())
    }

    /// Follows the pool-manager's events until the registration ends, showing each to
    /// `also` before applying it.
    pub async fn follow(&self, events: &mut impl EventSource, mut also: impl FnMut(&Event) + Send) {
        while let Some(event) = events.next_event().await {
            also(&event);
            self.on_event(event);
        }
    }

    /// Deals with one received descriptor; returns it as work if it is a request for this
    /// member. Nothing in the pool is touched before the descriptor is validated.
    pub fn accept(&self, d: Descriptor) -> Option<Work> {
        match d.kind() {
            Some(Kind::Request) if self.serves_requests() => match self.pool.claim(&d, self.me) {
                Ok(buf) => Some(Work {
                    trail: Trail::of(&d),
                    caller: Caller::of(&d),
                    lease: buf.map(|b| Lease::claimed(&self.pool, b, self.me, d.len)),
                }),
                Err(e) => {
                    self.reject(&d, &e);
                    None
                }
            },
            Some(Kind::Reply) => {
                match self.waiting_key(&d) {
                    Some(key) => self.on_answer(key, d),
                    None => self.unexpected(d),
                }
                None
            }
            Some(Kind::Refused) => {
                self.on_refused(d);
                None
            }
            _ => {
                self.unexpected(d);
                None
            }
        }
    }

    /// The key an answer to `d` is waited for under: a function waits for its calls, the
    /// gateway for its requests.
    fn waiting_key(&self, d: &Descriptor) -> Option<u64> {
        if self.serves_requests() {
            (d.call_id != 0).then_some(d.call_id as u64)
        } else {
            (d.call_id == 0).then_some(d.request_id)
        }
    }

    fn on_answer(&self, key: u64, d: Descriptor) {
        let outcome = match self.pool.claim(&d, self.me) {
            Err(e) => return self.reject(&d, &e),
            Ok(None) => Err(Failure::from_code(d.status)),
            Ok(Some(buf)) => Message::parse(Lease::claimed(&self.pool, buf, self.me, d.len))
                .map_err(|(_, e)| {
                    warn!(self.log, "malformed answer envelope"; "error" => %e, "from" => d.src_fn);
                    Failure::Malformed(format!("malformed reply: {e}"))
                }),
        };
        // Nobody waits any more (timed out, abandoned): the buffer is freed on drop.
        let _ = self
            .pending
            .complete(key, d.request_id, FnId(d.src_fn), outcome);
    }

    /// A descriptor this member sent came back refused: take its buffer back and fail what
    /// waited on it.
    fn on_refused(&self, d: Descriptor) {
        let lease = match self.pool.check(&d) {
            Ok(Some(buf)) if self.pool.take_back(buf, d.dst(), self.me) => {
                Some(Lease::claimed(&self.pool, buf, self.me, d.len))
            }
            _ => None,
        };
        let (reason, original) = d.refusal().unwrap_or((None, None));
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        // While a function is down every send to it is refused: log the first, then a count
        // now and then, not one line per request.
        if refused == 1 || refused.is_multiple_of(1000) {
            warn!(self.log, "a send was refused";
                "to" => self.name_of(d.dst()), "reason" => reason.map_or("?", RefuseReason::as_str),
                "request" => d.request_id, "refused_so_far" => refused);
        }
        if original != Some(Kind::Request) {
            // A reply refused (its receiver's queue full, or it left): nobody here waits for
            // it, and its buffer is back in the pool. The request ends in a timeout there.
            return;
        }
        let failure = Failure::Refused {
            function: d.dst(),
            reason,
            lease,
        };
        match self.waiting_key(&d) {
            Some(key) => {
                let _ = self
                    .pending
                    .complete(key, d.request_id, d.dst(), Err(failure));
            }
            None if self.serves_requests() => {
                // The next step of a sequence is not there (or too busy to take it): tell the
                // gateway now rather than let the request time out.
                let code = failure.reply_code();
                drop(failure);
                let _ = self.send(Trail::of(&d).error_to(Destination::Gateway, code));
            }
            None => {}
        }
    }

    /// Applies a pool-manager event: an instance that left fails the waits for requests it
    /// held part of, and, when none of its function is left, every call to that function.
    /// Returns how many waits it failed.
    pub fn on_event(&self, event: Event) -> usize {
        let (function, remaining, mut requests) = match event {
            Event::Gone {
                function,
                remaining,
                requests,
                ..
            } => (function, remaining, requests),
            Event::Placement { cpu } => {
                self.place(cpu.map(|c| c as usize));
                return 0;
            }
            // The function runtime's stop path waits on it (see `function::run`).
            Event::Joined { .. } | Event::Withdrawn { .. } => return 0,
        };
        requests.sort_unstable();
        let function = FnId(function);
        self.pending.fail_where(
            |e| {
                requests.binary_search(&e.request_id).is_ok()
                    || (remaining == 0 && e.callee == Some(function))
            },
            || Failure::Gone { function },
        )
    }

    /// Gathers this process's threads on `cpu`, or gives them their own CPUs back.
    fn place(&self, cpu: Option<usize>) {
        let mut threads = spright_core::affinity::own_threads().lock().unwrap();
        match cpu {
            Some(cpu) => {
                let moved = threads.gather(cpu);
                debug!(self.log, "threads gathered on one CPU"; "cpu" => cpu, "threads" => moved);
            }
            None => {
                threads.spread();
                debug!(self.log, "threads back on their own CPUs");
            }
        }
    }

    /// Neither a request for us nor an answer we could wait for. A valid buffer sent to us
    /// anyway is taken and freed, not left in transit.
    fn unexpected(&self, d: Descriptor) {
        self.count_rejected(&d, "unexpected descriptor");
        if let Ok(Some(buf)) = self.pool.claim(&d, self.me) {
            self.pool.free(buf, self.me);
        }
    }

    fn reject(&self, d: &Descriptor, e: &spright_core::DescriptorError) {
        self.count_rejected(d, &e.to_string());
    }

    fn count_rejected(&self, d: &Descriptor, why: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        warn!(self.log, "rejected a descriptor";
            "error" => why, "kind" => d.kind, "from" => d.src_fn, "request" => d.request_id);
    }
}
