//! Requests in flight: each HTTP request waits on a slot keyed by its request id; the receive
//! loop fills the slot when the chain answers, and pool-manager events fail the slots of
//! requests a dying function took with it.

use slog::{warn, Logger};
use spright_core::descriptor::{Descriptor, Kind, RefuseReason, ReplyError};
use spright_core::ids::{Endpoint, FnId};
use spright_core::pool::{Holder, Pool};
use spright_core::protocol::Event;
use spright_sdk::member::{Events, Receiver};
use spright_sdk::{Lease, Message};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How a request through the chain ended, short of a timeout.
pub enum Outcome {
    /// The chain answered with a message.
    Reply(Message),
    /// The chain answered with an error code and no buffer.
    Failed(Option<ReplyError>),
    /// The router would not deliver our request to `function`; the buffer is ours again.
    Refused {
        function: FnId,
        reason: Option<RefuseReason>,
        lease: Option<Lease>,
    },
    /// An instance holding part of the request went away.
    Gone { function: FnId },
}

const SHARDS: usize = 16;

/// Closes a request's slot when dropped.
pub struct Slot {
    dispatcher: Arc<Dispatcher>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.dispatcher.close(self.id);
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("me", &self.me).finish()
    }
}

pub struct Dispatcher {
    shards: Vec<Mutex<HashMap<u64, oneshot::Sender<Outcome>>>>,
    next_id: AtomicU64,
    id_base: u64,
    pool: Arc<Pool>,
    me: Endpoint,
    /// Descriptors that failed validation (forged, stale, wrong pool, ...).
    pub rejected: Arc<AtomicU64>,
    log: Logger,
}

impl Dispatcher {
    pub fn new(pool: Arc<Pool>, me: Endpoint, log: Logger) -> Dispatcher {
        Dispatcher {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            // Random start: a restarted gateway instance must not reuse ids whose replies may
            // still be on their way.
            next_id: AtomicU64::new(fastrand::u64(1..1 << 47)),
            // Request ids are unique across gateway instances of the chain.
            id_base: (me.instance.0 as u64) << 48,
            pool,
            me,
            rejected: Arc::new(AtomicU64::new(0)),
            log,
        }
    }

    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, oneshot::Sender<Outcome>>> {
        &self.shards[(id as usize) % SHARDS]
    }

    /// A new request id and the slot its outcome will arrive in.
    pub fn open(&self) -> (u64, oneshot::Receiver<Outcome>) {
        let id = self.id_base | (self.next_id.fetch_add(1, Ordering::Relaxed) & ((1 << 48) - 1));
        let (tx, rx) = oneshot::channel();
        self.shard(id).lock().unwrap().insert(id, tx);
        (id, rx)
    }

    /// A fresh slot for a request being sent again.
    pub fn reopen(&self, id: u64) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.shard(id).lock().unwrap().insert(id, tx);
        rx
    }

    /// A guard that forgets request `id` when dropped: hyper drops a request's future when its
    /// client goes away, and the slot must not outlive it.
    pub fn slot(self: &Arc<Self>, id: u64) -> Slot {
        Slot {
            dispatcher: self.clone(),
            id,
        }
    }

    /// Forgets a request (answered, timed out or abandoned).
    pub fn close(&self, id: u64) {
        self.shard(id).lock().unwrap().remove(&id);
    }

    fn complete(&self, id: u64, outcome: Outcome) {
        let slot = self.shard(id).lock().unwrap().remove(&id);
        if let Some(tx) = slot {
            // If the waiter is gone, the outcome (and any buffer in it) is dropped and freed.
            let _ = tx.send(outcome);
        }
    }

    /// Requests waiting for the chain.
    pub fn in_flight(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    /// Frees the buffers of an abandoned request that are in transit (they may sit in the
    /// queue of an instance that died; a late receiver finds the generation moved on).
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

    /// Receives the chain's answers until the data socket closes.
    pub async fn receive(self: Arc<Self>, mut receiver: Receiver) {
        loop {
            match receiver.next_batch(|d| self.on_descriptor(d)).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    fn on_descriptor(&self, d: Descriptor) {
        match d.kind() {
            Some(Kind::Reply) if d.call_id == 0 => match self.pool.claim(&d, self.me) {
                Ok(Some(buf)) => {
                    let lease = Lease::claimed(&self.pool, buf, self.me, d.len);
                    match Message::parse(lease) {
                        Ok(m) => self.complete(d.request_id, Outcome::Reply(m)),
                        Err((_, e)) => {
                            warn!(self.log, "malformed reply envelope"; "error" => %e, "from" => d.src_fn);
                            self.complete(d.request_id, Outcome::Failed(None));
                        }
                    }
                }
                Ok(None) => {
                    self.complete(d.request_id, Outcome::Failed(ReplyError::from_u8(d.status)))
                }
                Err(e) => self.reject(&d, &e.to_string()),
            },
            Some(Kind::Refused) => {
                let lease = match self.pool.check(&d) {
                    Ok(Some(buf)) if self.pool.take_back(buf, FnId(d.dst_fn), self.me) => {
                        Some(Lease::claimed(&self.pool, buf, self.me, d.len))
                    }
                    _ => None,
                };
                let (reason, _) = d.refusal().unwrap_or((None, None));
                self.complete(
                    d.request_id,
                    Outcome::Refused {
                        function: FnId(d.dst_fn),
                        reason,
                        lease,
                    },
                );
            }
            _ => {
                self.reject(&d, "not a reply or refusal");
                // A valid buffer sent to us anyway is taken and freed, not left in transit.
                if let Ok(Some(buf)) = self.pool.claim(&d, self.me) {
                    self.pool.free(buf, self.me);
                }
            }
        }
    }

    fn reject(&self, d: &Descriptor, why: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        warn!(self.log, "rejected a descriptor"; "error" => why, "from" => d.src_fn, "request" => d.request_id);
    }

    /// Applies pool-manager events until the registration ends.
    pub async fn events(self: Arc<Self>, mut events: Events) {
        while let Some(event) = events.next().await {
            if let Event::Gone {
                function, requests, ..
            } = event
            {
                for id in requests {
                    self.complete(
                        id,
                        Outcome::Gone {
                            function: FnId(function),
                        },
                    );
                }
            }
        }
    }
}
