//! User-space routing: every function socket's TCP peer is read here, and each descriptor is
//! routed by the decision SPROXY makes ([`spright_core::route`]), with the sender's identity
//! taken from the connection it came on. For hosts where BPF cannot be loaded.

use super::Counters;
use spright_core::descriptor::{Descriptor, DescriptorFramer};
use spright_core::ids::{Endpoint, FnId, InstanceId, MAX_FUNCTIONS};
use spright_core::pool::PoolLayout;
use spright_core::route::{self, Candidates, NotTaken, Plane, Routed};
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
    instances: HashMap<u16, Vec<InstanceId>>,
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
    fn offer(&self, d: Descriptor, limit: u32) -> Result<(), NotTaken> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(NotTaken::Full);
        }
        self.tx.send(d).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            NotTaken::Gone
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

    /// Where buffer `index`'s last descriptor was routed.
    pub fn transit(&self, index: u32) -> Option<transit::Transit> {
        transit::read(self.transit.get(index as usize)?)
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
            .insert(function.0, instances.to_vec());
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

    fn route(&self, table: &Table, from: Endpoint, d: Descriptor) {
        let plane = RelayPlane { relay: self, table };
        if let Routed::RefusalLost(_) = route::route(&plane, from, d) {
            self.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The relay as a routing plane, for one batch read under its table's lock.
struct RelayPlane<'a> {
    relay: &'a Relay,
    table: &'a Table,
}

impl Plane for RelayPlane<'_> {
    fn is_function(&self, f: FnId) -> bool {
        self.table.known.contains(&f.0)
    }

    fn allowed(&self, src: FnId, dst: FnId) -> bool {
        self.table
            .allow
            .contains(&((src.0 as u32) << 16 | dst.0 as u32))
    }

    /// The function's instances from a random one on.
    fn candidates(&self, f: FnId) -> Candidates {
        match self.table.instances.get(&f.0) {
            Some(all) if !all.is_empty() => Candidates::rotated(all, fastrand::usize(..all.len())),
            _ => Candidates::default(),
        }
    }

    fn offer(&self, to: Endpoint, d: &Descriptor) -> Result<(), NotTaken> {
        let writer = self
            .table
            .writers
            .get(&to.router_key())
            .ok_or(NotTaken::Gone)?;
        writer.offer(*d, self.relay.queue_limit)
    }

    /// Twice the limit, so that a sender that reads hears of its refusals even with a full
    /// queue of work.
    fn hand_back(&self, from: Endpoint, d: &Descriptor) -> bool {
        self.table
            .writers
            .get(&from.router_key())
            .is_some_and(|w| w.offer(*d, 2 * self.relay.queue_limit).is_ok())
    }

    fn pool(&self) -> &PoolLayout {
        &self.relay.pool
    }

    fn transit_slot(&self, index: u32) -> Option<&AtomicU64> {
        self.relay.transit.get(index as usize)
    }

    fn count_delivered(&self, src: FnId, dst: FnId, bytes: u64) {
        if let Some(c) = self.relay.counters.get(src.0 as usize) {
            c.sent.fetch_add(1, Ordering::Relaxed);
            c.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if let Some(c) = self.relay.counters.get(dst.0 as usize) {
            c.received.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_refused(&self, src: FnId) {
        if let Some(c) = self.relay.counters.get(src.0 as usize) {
            c.refused.fetch_add(1, Ordering::Relaxed);
        }
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
