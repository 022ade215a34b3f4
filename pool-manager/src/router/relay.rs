//! User-space routing: every function socket's TCP peer is read here, and each descriptor is
//! checked and forwarded exactly as SPROXY would (identity from the connection, the allow list,
//! instance choice, refusals handed back to the sender). For hosts where BPF cannot be loaded.

use super::Counters;
use spright_core::descriptor::{Descriptor, DescriptorFramer, Kind, RefuseReason, ABI_VERSION};
use spright_core::ids::{Endpoint, FnId, InstanceId, ANY_INSTANCE, MAX_FUNCTIONS};
use spright_core::pool::PoolLayout;
use spright_core::transit;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

#[derive(Default)]
struct AtomicCounters {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    received: AtomicU64,
    refused: AtomicU64,
}

#[derive(Default)]
struct Table {
    known: HashSet<u16>,
    allow: HashSet<u32>,
    instances: HashMap<u16, Vec<u16>>,
    writers: HashMap<u32, Writer>,
}

/// The way to one instance's socket: descriptors wait in the channel until its writer task
/// has them on the socket; `queued` counts them, so a receiver that stops reading (and so
/// stops its socket from taking more) holds at most the chain's queue limit here.
struct Writer {
    tx: mpsc::UnboundedSender<Descriptor>,
    queued: Arc<AtomicU32>,
}

impl Writer {
    /// Queues `d` unless `limit` are already waiting.
    fn offer(&self, d: Descriptor, limit: u32) -> Result<(), RefuseReason> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(RefuseReason::Busy);
        }
        self.tx.send(d).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            RefuseReason::NoDestination
        })
    }
}

pub struct Relay {
    table: RwLock<Table>,
    counters: Vec<AtomicCounters>,
    malformed: AtomicU64,
    /// Refusals dropped because their sender left twice the queue limit unread.
    overflow: AtomicU64,
    queue_limit: u32,
    pool: PoolLayout,
    /// Per buffer: where its last descriptor was routed, `generation << 32 | endpoint key`.
    transit: Vec<AtomicU64>,
}

/// How many instances one send tries before it is refused (as SPROXY's MAX_TRIES).
const MAX_TRIES: usize = 4;

/// Descriptors written to one socket per write, at most.
const WRITE_BATCH: usize = 128;

impl Relay {
    /// `functions` are the chain's function ids (the gateway's included); `queue_limit` the
    /// most descriptors waiting for one instance.
    pub fn new(
        allow: impl IntoIterator<Item = (u16, u16)>,
        functions: impl IntoIterator<Item = u16>,
        queue_limit: u32,
        pool: PoolLayout,
    ) -> Relay {
        let table = Table {
            known: functions.into_iter().collect(),
            allow: allow
                .into_iter()
                .map(|(s, d)| ((s as u32) << 16) | d as u32)
                .collect(),
            ..Table::default()
        };
        Relay {
            table: RwLock::new(table),
            counters: (0..MAX_FUNCTIONS)
                .map(|_| AtomicCounters::default())
                .collect(),
            malformed: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            queue_limit: queue_limit.max(1),
            transit: (0..pool.buffer_count).map(|_| AtomicU64::new(0)).collect(),
            pool,
        }
    }

    /// Where buffer `index`'s last descriptor was routed: (generation, endpoint key).
    pub fn transit(&self, index: u32) -> Option<(u32, u32)> {
        transit::read(self.transit.get(index as usize)?)
    }

    /// Records where `d`'s buffer is being routed (undone if it is not delivered after all).
    fn record_transit(&self, d: &Descriptor, key: u32) -> Option<transit::Recorded<'_>> {
        let slot = self
            .pool
            .index_of(d.offset)
            .and_then(|i| self.transit.get(i as usize))?;
        Some(transit::record(slot, d.generation, key))
    }

    /// Starts writing to a new instance through `writer`.
    pub fn add(&self, endpoint: Endpoint, writer: OwnedWriteHalf) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU32::new(0));
        tokio::spawn(write_loop(rx, writer, queued.clone()));
        self.table
            .write()
            .unwrap()
            .writers
            .insert(endpoint.router_key(), Writer { tx, queued });
    }

    pub fn remove(&self, endpoint: Endpoint) {
        self.table
            .write()
            .unwrap()
            .writers
            .remove(&endpoint.router_key());
    }

    pub fn set_instances(&self, function: FnId, instances: &[InstanceId]) {
        self.table
            .write()
            .unwrap()
            .instances
            .insert(function.0, instances.iter().map(|i| i.0).collect());
    }

    pub fn counters(&self, function: FnId) -> Counters {
        let c = &self.counters[function.0 as usize];
        Counters {
            sent: c.sent.load(Ordering::Relaxed),
            sent_bytes: c.sent_bytes.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Descriptors waiting to be written to `endpoint`'s socket.
    pub fn queued(&self, endpoint: Endpoint) -> u32 {
        self.table
            .read()
            .unwrap()
            .writers
            .get(&endpoint.router_key())
            .map(|w| w.queued.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Reads what `from` sends until its socket closes, routing each descriptor.
    pub async fn read_loop(
        &self,
        from: Endpoint,
        mut reader: OwnedReadHalf,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut framer = DescriptorFramer::default();
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                if framer.pending() > 0 {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            let table = self.table.read().unwrap();
            framer.feed(&buf[..n], |d| self.route(&table, from, d));
        }
    }

    fn route(&self, table: &Table, from: Endpoint, mut d: Descriptor) {
        d.src_fn = from.function.0;
        d.src_instance = from.instance.0;
        let Err(reason) = self.deliver(table, &mut d) else {
            return;
        };
        d.refuse(reason);
        if let Some(c) = self.counters.get(from.function.0 as usize) {
            c.refused.fetch_add(1, Ordering::Relaxed);
        }
        // No transit record for a refusal: the descriptor did not pass. Twice the limit, so
        // that a sender that reads hears of its refusals even with a full queue of work.
        if let Some(w) = table.writers.get(&from.router_key()) {
            if w.offer(d, 2 * self.queue_limit).is_err() {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Forwards `d`, or says why not.
    fn deliver(&self, table: &Table, d: &mut Descriptor) -> Result<(), RefuseReason> {
        if d.version != ABI_VERSION || d.kind == Kind::Refused as u8 {
            return Err(RefuseReason::BadDescriptor);
        }
        if !table.known.contains(&d.dst_fn) {
            return Err(RefuseReason::NoDestination);
        }
        let pair = ((d.src_fn as u32) << 16) | d.dst_fn as u32;
        if !table.allow.contains(&pair) {
            return Err(RefuseReason::Forbidden);
        }
        // The instance named, or up to MAX_TRIES of the function's instances from a random one
        // on: a full or vanished one passes the descriptor on to the next (as SPROXY does).
        let instances: &[u16] = if d.dst_instance == ANY_INSTANCE.0 {
            table
                .instances
                .get(&d.dst_fn)
                .filter(|i| !i.is_empty())
                .ok_or(RefuseReason::NoDestination)?
        } else {
            std::slice::from_ref(&d.dst_instance)
        };
        let first = fastrand::usize(..instances.len());
        let mut reason = RefuseReason::NoDestination;
        let mut delivered = None;
        for k in 0..instances.len().min(MAX_TRIES) {
            let instance = instances[(first + k) % instances.len()];
            let key = Endpoint::new(FnId(d.dst_fn), InstanceId(instance)).router_key();
            let Some(writer) = table.writers.get(&key) else {
                continue;
            };
            let mut out = *d;
            out.dst_instance = instance;
            // Before the descriptor is on its way: its receiver may pass it on at once.
            let recorded = self.record_transit(&out, key);
            match writer.offer(out, self.queue_limit) {
                Ok(()) => {
                    d.dst_instance = instance;
                    delivered = Some(key);
                    break;
                }
                Err(r) => {
                    if let Some(recorded) = recorded {
                        recorded.undo();
                    }
                    reason = r;
                }
            }
        }
        delivered.ok_or(reason)?;
        let src = &self.counters[d.src_fn as usize];
        src.sent.fetch_add(1, Ordering::Relaxed);
        src.sent_bytes
            .fetch_add(spright_core::DESCRIPTOR_SIZE as u64, Ordering::Relaxed);
        if let Some(dst) = self.counters.get(d.dst_fn as usize) {
            dst.received.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Descriptor>,
    mut writer: OwnedWriteHalf,
    queued: Arc<AtomicU32>,
) {
    let mut out = Vec::with_capacity(WRITE_BATCH * spright_core::DESCRIPTOR_SIZE);
    while let Some(d) = rx.recv().await {
        out.clear();
        out.extend_from_slice(d.as_bytes());
        while out.len() < WRITE_BATCH * spright_core::DESCRIPTOR_SIZE {
            match rx.try_recv() {
                Ok(d) => out.extend_from_slice(d.as_bytes()),
                Err(_) => break,
            }
        }
        // Waits while the receiver's socket is full: that is what keeps `queued` from falling.
        if writer.write_all(&out).await.is_err() {
            return;
        }
        let n = (out.len() / spright_core::DESCRIPTOR_SIZE) as u32;
        queued.fetch_sub(n, Ordering::AcqRel);
    }
}
