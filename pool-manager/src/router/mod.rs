//! The three ways descriptors move: SPROXY in the kernel, a relay in this process, or rings in
//! shared memory that the functions poll. All present the same operations to the
//! pool-manager, and functions cannot tell them apart (except by the CPU polling burns).

mod kernel;
mod poll;
mod relay;

#[cfg(test)]
mod conformance;

pub use kernel::KernelRouter;
pub use poll::PollRouter;
pub use relay::Relay;

use crate::membership::MemberTable;
use spright_core::ids::{Endpoint, FnId, InstanceId};
use spright_core::pool::Pool;
use spright_core::protocol::FunctionStats;
use spright_core::transit;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Sproxy(#[from] spright_ebpf::SproxyError),
    #[error(transparent)]
    Rings(#[from] spright_core::rings::RingsError),
}

pub enum Router {
    Kernel(Box<KernelRouter>),
    User(Arc<Relay>),
    Poll(Box<PollRouter>),
}

/// Counters for one function, whichever router produced them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub refused: u64,
}

impl Router {
    /// Adds an instance's socket. `client` is the socket the instance will own; `peer_writer`
    /// is the pool-manager's end (the relay writes to the instance through it).
    pub fn register(
        &mut self,
        endpoint: Endpoint,
        client: &TcpStream,
        client_port: u16,
        peer_writer: OwnedWriteHalf,
    ) -> Result<Option<OwnedWriteHalf>, RouterError> {
        match self {
            Router::Kernel(k) => {
                k.sproxy.insert_socket(endpoint, client, client_port)?;
                // Kept only to see the instance close: nothing may be written on it, since a
                // member's receive then reads only the sk_msg queue (spright-sdk's
                // `read_draining` relies on that).
                Ok(Some(peer_writer))
            }
            Router::User(r) => {
                r.add(endpoint, peer_writer);
                Ok(None)
            }
            // The socket carries no descriptors; it is kept for exit detection and the audit.
            Router::Poll(p) => {
                p.check_endpoint(endpoint)?;
                Ok(Some(peer_writer))
            }
        }
    }

    pub fn unregister(&mut self, endpoint: Endpoint, client_port: u16) {
        match self {
            Router::Kernel(k) => k.sproxy.remove_socket(endpoint, client_port),
            Router::User(r) => r.remove(endpoint),
            // Out of the live table already (set_instances); its ring is drained after the sweep.
            Router::Poll(_) => {}
        }
    }

    pub fn set_instances(
        &mut self,
        function: FnId,
        instances: &[InstanceId],
    ) -> Result<(), RouterError> {
        match self {
            Router::Kernel(k) => Ok(k.sproxy.set_instances(function, instances)?),
            Router::User(r) => {
                r.set_instances(function, instances);
                Ok(())
            }
            Router::Poll(p) => Ok(p.set_instances(function, instances)?),
        }
    }

    pub fn counters(&self, function: FnId) -> Counters {
        match self {
            Router::Kernel(k) => k
                .sproxy
                .counters(function)
                .map(|c| Counters {
                    sent: c.sent,
                    sent_bytes: c.sent_bytes,
                    received: c.received,
                    refused: c.refused,
                })
                .unwrap_or_default(),
            Router::User(r) => r.counters(function),
            Router::Poll(p) => p.counters(function),
        }
    }

    /// Where buffer `index`'s last descriptor was routed.
    pub fn transit(&self, index: u32) -> Option<transit::Transit> {
        match self {
            Router::Kernel(k) => k.sproxy.transit(index),
            Router::User(r) => r.transit(index),
            Router::Poll(p) => p.rings.transit(index),
        }
    }

    /// Sends that could not be parsed as one descriptor.
    pub fn malformed(&self) -> u64 {
        match self {
            Router::Kernel(k) => k
                .sproxy
                .chain_counters()
                .map(|c| c.malformed + c.unknown_sender)
                .unwrap_or(0),
            Router::User(r) => r.malformed(),
            Router::Poll(p) => p.rings.malformed(),
        }
    }

    /// Descriptors queued unread at `endpoint`.
    pub fn queued(&self, endpoint: Endpoint) -> u64 {
        match self {
            Router::Kernel(k) => k.sproxy.backlog(endpoint) as u64,
            Router::User(r) => r.queued(endpoint) as u64,
            Router::Poll(p) => p.rings.queued(endpoint),
        }
    }

    /// Refusals dropped because their sender was not reading its own queue.
    pub fn overflow(&self) -> u64 {
        match self {
            Router::Kernel(k) => k.sproxy.chain_counters().map(|c| c.overflow).unwrap_or(0),
            Router::User(r) => r.overflow(),
            Router::Poll(_) => 0, // a full own ring fails the send itself
        }
    }

    pub fn function_stats(
        &self,
        function: FnId,
        name: &str,
        pids: Vec<u32>,
        instances: &[InstanceId],
    ) -> FunctionStats {
        let c = self.counters(function);
        let queued = instances
            .iter()
            .map(|&i| self.queued(Endpoint::new(function, i)))
            .sum();
        FunctionStats {
            id: function.0,
            name: name.to_owned(),
            instances: pids.len() as u16,
            pids,
            sent: c.sent,
            sent_bytes: c.sent_bytes,
            received: c.received,
            refused: c.refused,
            queued,
            load: None,
        }
    }
}

/// An instance's data socket as registration hands it to the router.
pub struct InstanceSocket<'s> {
    /// The socket the instance will own.
    pub client: &'s TcpStream,
    pub port: u16,
    /// The pool-manager's end (the relay writes to the instance through it).
    pub peer_writer: OwnedWriteHalf,
}

impl MemberTable for Router {
    type Socket<'s> = InstanceSocket<'s>;
    /// The pool-manager's end, when the router does not keep it (it must stay open while the
    /// instance lives).
    type Kept = Option<OwnedWriteHalf>;
    type Error = RouterError;

    fn register(
        &mut self,
        endpoint: Endpoint,
        socket: InstanceSocket<'_>,
    ) -> Result<Self::Kept, RouterError> {
        Router::register(
            self,
            endpoint,
            socket.client,
            socket.port,
            socket.peer_writer,
        )
    }

    fn unregister(&mut self, endpoint: Endpoint, port: u16) {
        Router::unregister(self, endpoint, port)
    }

    fn set_instances(
        &mut self,
        function: FnId,
        instances: &[InstanceId],
    ) -> Result<(), RouterError> {
        Router::set_instances(self, function, instances)
    }

    fn transit(&self, index: u32) -> Option<transit::Transit> {
        Router::transit(self, index)
    }

    fn drain(&self, gone: Endpoint, pool: &Pool) -> BTreeSet<u64> {
        match self {
            Router::Poll(p) => p.drain(gone, pool),
            Router::Kernel(_) | Router::User(_) => BTreeSet::new(),
        }
    }
}
