//! An in-process data plane for unit tests: a router that delivers between members' queues
//! as SPROXY would (stamping the sender, picking an instance, handing refusals back), refuses
//! what a test tells it to, and can break.

use super::{EventSource, Inbound, Transport};
use spright_core::descriptor::{Descriptor, RefuseReason};
use spright_core::ids::{Endpoint, FnId, InstanceId, ANY_INSTANCE};
use spright_core::protocol::Event;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Default)]
pub struct FakeRouter {
    queues: Mutex<HashMap<Endpoint, mpsc::UnboundedSender<Descriptor>>>,
    refusing: Mutex<HashMap<FnId, RefuseReason>>,
    broken: AtomicBool,
}

impl FakeRouter {
    /// Registers `me`: its link to send on and its queue to read.
    pub fn attach(self: &Arc<Self>, me: Endpoint) -> (FakeLink, FakeInbound) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.queues.lock().unwrap().insert(me, tx);
        (
            FakeLink {
                router: self.clone(),
                me,
            },
            FakeInbound(rx),
        )
    }

    /// Refuses every send to `function` from now on.
    pub fn refuse(&self, function: FnId, reason: RefuseReason) {
        self.refusing.lock().unwrap().insert(function, reason);
    }

    /// Delivers to `function` again.
    pub fn deliver(&self, function: FnId) {
        self.refusing.lock().unwrap().remove(&function);
    }

    /// Every send fails from now on, as on a socket that broke.
    pub fn break_sends(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// Puts `d` in `to`'s queue as it is; `false` if `to` is not attached.
    pub fn inject(&self, to: Endpoint, d: Descriptor) -> bool {
        let queues = self.queues.lock().unwrap();
        queues.get(&to).is_some_and(|q| q.send(d).is_ok())
    }

    /// Ends `who`'s queue: its reader sees the data plane close.
    pub fn close(&self, who: Endpoint) {
        self.queues.lock().unwrap().remove(&who);
    }
}

pub struct FakeLink {
    router: Arc<FakeRouter>,
    me: Endpoint,
}

impl Transport for FakeLink {
    fn send(&self, d: &Descriptor) -> io::Result<()> {
        if self.router.broken.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut d = *d;
        d.src_fn = self.me.function.0;
        d.src_instance = self.me.instance.0;
        if d.dst_instance == ANY_INSTANCE.0 {
            d.dst_instance = 0;
        }
        let to = Endpoint::new(d.dst(), InstanceId(d.dst_instance));
        let refusal = self.router.refusing.lock().unwrap().get(&d.dst()).copied();
        let delivered = refusal.is_none() && self.router.inject(to, d);
        if !delivered {
            d.refuse(refusal.unwrap_or(RefuseReason::NoDestination));
            // A sender whose own queue is closed hears of nothing, as on a closed socket.
            self.router.inject(self.me, d);
        }
        Ok(())
    }
}

pub struct FakeInbound(mpsc::UnboundedReceiver<Descriptor>);

impl FakeInbound {
    /// What is queued now.
    pub fn queued(&mut self) -> Vec<Descriptor> {
        std::iter::from_fn(|| self.0.try_recv().ok()).collect()
    }
}

impl Inbound for FakeInbound {
    async fn next_batch(&mut self, mut each: impl FnMut(Descriptor) + Send) -> io::Result<bool> {
        let Some(first) = self.0.recv().await else {
            return Ok(false);
        };
        each(first);
        self.queued().into_iter().for_each(each);
        Ok(true)
    }
}

pub struct FakeEvents(pub mpsc::UnboundedReceiver<Event>);

impl EventSource for FakeEvents {
    async fn next_event(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}
