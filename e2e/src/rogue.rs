//! A function that lies: it registers like any other (as the chain file's `rogue`) and sends
//! whatever descriptors a test or benchmark wants, through the real router.

use crate::ChainUnderTest;
use spright_core::descriptor::{Descriptor, Kind, ABI_VERSION};
use spright_core::ids::{Endpoint, FnId};
use spright_core::Pool;
use spright_sdk::member::Member;
use std::sync::Arc;
use std::time::Duration;

/// The rogue's view of the chain: registered like any function, sending what it likes.
pub struct Rogue {
    pub rt: tokio::runtime::Runtime,
    pub me: Endpoint,
    pub pool: Arc<Pool>,
    pub sender: spright_sdk::Sender,
    receiver: spright_sdk::member::Receiver,
    _events: spright_sdk::member::Events,
}

impl Rogue {
    /// Registers as the chain's function `rogue` (declared in the chain file, never started).
    pub fn register(chain: &ChainUnderTest) -> Rogue {
        let manifest = chain.manifest();
        let socket = manifest.function("rogue").unwrap().socket.clone();
        // A worker thread of its own: the sender's backlog drains in the background while the
        // test thread waits on the chain.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let member = rt
            .block_on(Member::register(&socket, Some(&manifest.pool.path)))
            .expect("rogue registers");
        let (info, sender, receiver, events) = rt.block_on(async { member.into_parts() });
        Rogue {
            rt,
            me: info.endpoint,
            pool: info.pool.clone(),
            sender,
            receiver,
            _events: events,
        }
    }

    /// A bufferless request for any instance of `dst`.
    pub fn descriptor(&self, dst: FnId, request: u64) -> Descriptor {
        Descriptor {
            version: ABI_VERSION,
            kind: Kind::Request as u8,
            dst_fn: dst.0,
            dst_instance: spright_core::ANY_INSTANCE.0,
            pool_tag: self.pool.tag(),
            request_id: request,
            ..Descriptor::default()
        }
    }

    /// Sends `n` bufferless requests to `dst` without reading anything; returns how many
    /// sends succeeded (poll mode fails a send once the rogue's own ring is full of refusals).
    pub fn flood(&self, dst: FnId, n: u64) -> u64 {
        let _rt = self.rt.enter();
        (0..n)
            .filter(|&i| self.sender.send_raw(&self.descriptor(dst, i)).is_ok())
            .count() as u64
    }

    /// Reads what is queued for the rogue until nothing comes for 200 ms.
    pub fn drain(&mut self) -> Vec<Descriptor> {
        let mut got = Vec::new();
        self.rt.block_on(async {
            while let Ok(Ok(true)) = tokio::time::timeout(
                Duration::from_millis(200),
                self.receiver.next_batch(|d| got.push(d)),
            )
            .await
            {}
        });
        got
    }
}
