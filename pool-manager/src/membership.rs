//! Who is registered, and the order in which an instance enters and leaves the router.
//!
//! The order is what keeps descriptors and buffers safe, so it is written here once, over a
//! [`MemberTable`] (the real router, or a recording fake in the tests): an instance's socket is
//! registered before the instance is routed to, and a leaving instance is first taken out of
//! routing, then its socket unregistered, then its buffers swept and (poll mode) its ring
//! drained, all while the caller holds the members lock so that its number is not handed to a
//! newcomer before the sweep. The registration I/O around it is in `members.rs`.

use crate::sweep::sweep;
use spright_core::chain::RoutingMode;
use spright_core::ids::{Endpoint, FnId, InstanceId, MAX_INSTANCES};
use spright_core::pool::Pool;
use spright_core::protocol::Event;
use spright_core::rings::POLL_INSTANCES;
use spright_core::transit::Transit;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// What membership needs from a router.
pub trait MemberTable {
    /// What registering an instance's socket takes.
    type Socket<'s>;
    /// What the router gives back for the registration to keep while the instance lives.
    type Kept;
    type Error: std::fmt::Display;

    fn register(
        &mut self,
        endpoint: Endpoint,
        socket: Self::Socket<'_>,
    ) -> Result<Self::Kept, Self::Error>;
    fn unregister(&mut self, endpoint: Endpoint, port: u16);
    /// The instances descriptors for `function` may be routed to from now on.
    fn set_instances(
        &mut self,
        function: FnId,
        instances: &[InstanceId],
    ) -> Result<(), Self::Error>;
    /// Where buffer `index`'s last descriptor was routed.
    fn transit(&self, index: u32) -> Option<Transit>;
    /// Frees what waits in `gone`'s queue, if the router keeps one of its own (poll mode's
    /// rings); returns the requests it belonged to.
    fn drain(&self, _gone: Endpoint, _pool: &Pool) -> BTreeSet<u64> {
        BTreeSet::new()
    }
}

/// One registered instance.
pub struct Member {
    pub pid: u32,
    /// Its data socket's local port (how the router knows it).
    pub port: u16,
    pub events: mpsc::UnboundedSender<Event>,
    /// Ends its registration task.
    pub stop: Arc<Notify>,
    /// Asked to be routed no new request (it is stopping); still registered.
    pub withdrawn: bool,
}

/// Registered instances by function.
#[derive(Default)]
pub struct Members {
    by_function: BTreeMap<u16, BTreeMap<u16, Member>>,
    shutting_down: bool,
}

/// Why an instance was not let in.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JoinError {
    #[error("the chain is shutting down")]
    ShuttingDown,
    #[error(
        "function {function} already has {limit} instances, the most {routing} routing serves"
    )]
    Full {
        function: String,
        limit: u16,
        routing: RoutingMode,
    },
    #[error("router refused the socket: {0}")]
    Socket(String),
    #[error("router refused the instance: {0}")]
    Instance(String),
}

/// What leaving did.
pub struct Left {
    /// The member's record, if it was registered.
    pub member: Option<Member>,
    /// Instances of its function still registered.
    pub remaining: usize,
    /// Requests that held buffers it held or that were on their way to it.
    pub requests: BTreeSet<u64>,
    /// The router could not take the instance out of its table (it is unregistered anyway).
    pub table_error: Option<String>,
}

/// Instances a function may have at once: poll mode has a ring for each of a few.
pub fn max_instances(routing: RoutingMode) -> u16 {
    match routing {
        RoutingMode::Poll => POLL_INSTANCES,
        RoutingMode::Sockmap | RoutingMode::User => MAX_INSTANCES,
    }
}

impl Members {
    /// The lowest instance number of `function` not taken, below `limit`.
    fn free_instance(&self, function: FnId, limit: u16) -> Option<InstanceId> {
        let taken = self.by_function.get(&function.0);
        (0..limit)
            .find(|i| taken.is_none_or(|m| !m.contains_key(i)))
            .map(InstanceId)
    }

    fn instances(&self, function: FnId) -> Vec<InstanceId> {
        self.by_function
            .get(&function.0)
            .map(|m| m.keys().map(|&i| InstanceId(i)).collect())
            .unwrap_or_default()
    }

    /// The instances new requests for `function` are load-balanced over: the registered ones
    /// that have not withdrawn.
    fn routed(&self, function: FnId) -> Vec<InstanceId> {
        self.by_function
            .get(&function.0)
            .map(|m| {
                m.iter()
                    .filter(|(_, member)| !member.withdrawn)
                    .map(|(&i, _)| InstanceId(i))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_withdrawn(&mut self, endpoint: Endpoint, withdrawn: bool) {
        if let Some(m) = self
            .by_function
            .get_mut(&endpoint.function.0)
            .and_then(|m| m.get_mut(&endpoint.instance.0))
        {
            m.withdrawn = withdrawn;
        }
    }

    /// Takes `endpoint` out of load balancing, at its own request (it is stopping): it stays
    /// registered, and descriptors addressed to it (replies to its calls) still reach it.
    /// Refused (`Ok(false)`) for the function's last routed instance, so that requests for the
    /// function always find one.
    pub fn withdraw<T: MemberTable>(
        &mut self,
        table: &mut T,
        endpoint: Endpoint,
    ) -> Result<bool, String> {
        let function = endpoint.function;
        let routed = self.routed(function);
        if !routed.contains(&endpoint.instance) {
            // Not registered (any more), or withdrawn already.
            return Ok(self
                .by_function
                .get(&function.0)
                .is_some_and(|m| m.contains_key(&endpoint.instance.0)));
        }
        if routed.len() <= 1 {
            return Ok(false);
        }
        self.set_withdrawn(endpoint, true);
        if let Err(e) = table.set_instances(function, &self.routed(function)) {
            self.set_withdrawn(endpoint, false);
            return Err(e.to_string());
        }
        Ok(true)
    }

    /// The registered instances, by function.
    pub fn instance_ids(&self) -> BTreeMap<u16, Vec<InstanceId>> {
        self.by_function
            .iter()
            .map(|(&f, m)| (f, m.keys().map(|&i| InstanceId(i)).collect()))
            .collect()
    }

    /// Pids of the registered instances, by function.
    pub fn pids(&self) -> BTreeMap<u16, Vec<u32>> {
        self.by_function
            .iter()
            .map(|(&f, m)| (f, m.values().map(|m| m.pid).collect()))
            .collect()
    }

    /// Sends `event` to the members whose process is `pid`.
    pub fn tell(&self, pid: u32, event: &Event) {
        for m in self.by_function.values().flat_map(|m| m.values()) {
            if m.pid == pid {
                let _ = m.events.send(event.clone());
            }
        }
    }

    pub fn broadcast(&self, event: &Event) {
        for m in self.by_function.values().flat_map(|m| m.values()) {
            let _ = m.events.send(event.clone());
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Refuses newcomers from now on and tells every member's task to end (the whole chain is
    /// going away: nothing is swept).
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
        for m in self.by_function.values().flat_map(|m| m.values()) {
            m.stop.notify_one();
        }
    }

    /// Lets an instance of `function` in: the lowest free number, its socket registered with
    /// the router, then routed to. Nothing is left behind if the router refuses either step.
    pub fn join<T: MemberTable>(
        &mut self,
        table: &mut T,
        function: FnId,
        name: &str,
        routing: RoutingMode,
        socket: T::Socket<'_>,
        member: Member,
    ) -> Result<(Endpoint, T::Kept), JoinError> {
        if self.shutting_down {
            return Err(JoinError::ShuttingDown);
        }
        let limit = max_instances(routing);
        let instance = self
            .free_instance(function, limit)
            .ok_or_else(|| JoinError::Full {
                function: name.to_owned(),
                limit,
                routing,
            })?;
        let endpoint = Endpoint::new(function, instance);
        // Registered before it is routed to: a descriptor for it must find its socket.
        let kept = table
            .register(endpoint, socket)
            .map_err(|e| JoinError::Socket(e.to_string()))?;
        let port = member.port;
        self.by_function
            .entry(function.0)
            .or_default()
            .insert(instance.0, member);
        if let Err(e) = table.set_instances(function, &self.routed(function)) {
            self.by_function
                .get_mut(&function.0)
                .map(|m| m.remove(&instance.0));
            table.unregister(endpoint, port);
            return Err(JoinError::Instance(e.to_string()));
        }
        Ok((endpoint, kept))
    }

    /// Withdraws an instance: out of routing first (no new descriptor goes to it), then its
    /// socket, then its buffers are swept and its own queue drained. The caller holds the
    /// members lock throughout, so the number is not reused before the sweep (a newcomer under
    /// the same identity could otherwise claim the dead instance's buffers).
    pub fn leave<T: MemberTable>(
        &mut self,
        table: &mut T,
        pool: &Pool,
        endpoint: Endpoint,
    ) -> Left {
        let member = self
            .by_function
            .get_mut(&endpoint.function.0)
            .and_then(|m| m.remove(&endpoint.instance.0));
        let instances = self.instances(endpoint.function);
        // The function's last routed instance gone while others drain withdrawn: they are
        // routed again (and told), or the function's requests would find none.
        if self.routed(endpoint.function).is_empty() {
            for m in self
                .by_function
                .get_mut(&endpoint.function.0)
                .into_iter()
                .flat_map(|m| m.values_mut())
                .filter(|m| m.withdrawn)
            {
                m.withdrawn = false;
                let _ = m.events.send(Event::Withdrawn { withdrawn: false });
            }
        }
        let table_error = table
            .set_instances(endpoint.function, &self.routed(endpoint.function))
            .err()
            .map(|e| e.to_string());
        if let Some(m) = &member {
            table.unregister(endpoint, m.port);
        }
        let mut requests = sweep(pool, endpoint, instances.is_empty(), |i| table.transit(i));
        requests.extend(table.drain(endpoint, pool));
        Left {
            member,
            remaining: instances.len(),
            requests,
            table_error,
        }
    }
}

#[cfg(test)]
mod tests;
