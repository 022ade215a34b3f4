//! What the member runtime needs from a data plane, and the real one: the data socket or, in
//! poll mode, the descriptor rings (`crate::member`, `crate::sender`).

use crate::member::{Events, Receiver};
use crate::sender::Sender;
use spright_core::descriptor::Descriptor;
use spright_core::protocol::Event;
use std::future::Future;
use std::io;

/// Puts descriptors on the way. A send is synchronous and never half done (see
/// `crate::sender`): the runtime marks a buffer in transit just before it.
pub trait Transport: Send + Sync + 'static {
    /// Sends `d` as it is (the runtime has stamped the pool tag; the router stamps the sender).
    fn send(&self, d: &Descriptor) -> io::Result<()>;
}

/// Takes descriptors in, a batch at a time.
pub trait Inbound: Send {
    /// Waits for descriptors and calls `each` for every one; `Ok(false)` once the data plane
    /// has closed (the registration ended).
    fn next_batch(
        &mut self,
        each: impl FnMut(Descriptor) + Send,
    ) -> impl Future<Output = io::Result<bool>> + Send;
}

/// The pool-manager's events.
pub trait EventSource: Send {
    /// The next event; `None` once the registration has ended.
    fn next_event(&mut self) -> impl Future<Output = Option<Event>> + Send;
}

impl Transport for Sender {
    fn send(&self, d: &Descriptor) -> io::Result<()> {
        self.send_raw(d)
    }
}

impl Inbound for Receiver {
    fn next_batch(
        &mut self,
        each: impl FnMut(Descriptor) + Send,
    ) -> impl Future<Output = io::Result<bool>> + Send {
        Receiver::next_batch(self, each)
    }
}

impl EventSource for Events {
    fn next_event(&mut self) -> impl Future<Output = Option<Event>> + Send {
        self.next()
    }
}
