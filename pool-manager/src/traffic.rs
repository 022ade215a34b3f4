//! Function containers' own traffic: EPROXY counts it in each container's network namespace,
//! attached there by the shim, which hands the counts map over on a control connection and
//! holds that connection while a function container runs there. The counts are reported while
//! it is open.

use spright_core::chain::Chain;
use spright_core::protocol::{FunctionTraffic, TrafficCounters, TrafficHandover};
use spright_ebpf::eproxy::TrafficCounts;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// Longest container id taken (containerd's are at most 76 characters).
const MAX_CONTAINER_ID: usize = 128;
/// Most interfaces one container's count is reported for.
const MAX_INTERFACES: usize = 64;
/// Most containers reported at once (every /metrics scrape reads each one's map).
const MAX_CONTAINERS: usize = 4096;

/// One container's counts.
struct Counted {
    function: String,
    namespace: String,
    container: String,
    names: HashMap<u32, String>,
    counts: TrafficCounts,
}

/// The counts of every function container whose shim handed them over.
#[derive(Default)]
pub struct Registry {
    next: u64,
    entries: BTreeMap<u64, Counted>,
}

/// A container's place in the registry: dropping it (its shim's connection ended) takes the
/// container's counts out.
pub struct Lease {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.registry.lock().unwrap().entries.remove(&self.id);
    }
}

/// Takes a container's counts map (`fd`, sent with the request) after checking the request:
/// from root (the shim; `peer_uid` is the connection's), a function of this chain, a container
/// id containerd could have given and not reported already, interface names the kernel could
/// have, and a descriptor that is EPROXY's counts map and can be read here.
pub fn take(
    registry: &Arc<Mutex<Registry>>,
    chain: &Chain,
    peer_uid: Option<u32>,
    handover: TrafficHandover,
    fd: Option<OwnedFd>,
) -> Result<Lease, String> {
    let TrafficHandover {
        function,
        namespace,
        container,
        interfaces,
    } = handover;
    if peer_uid != Some(0) {
        return Err(format!(
            "only root (the shim) hands over counts; this connection's peer is {}",
            peer_uid.map_or("of an unknown user".to_owned(), |u| format!("uid {u}"))
        ));
    }
    if chain.function(&function).is_none() {
        return Err(format!(
            "function {function:?} is not declared in the chain"
        ));
    }
    let id_ok = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    for (what, value) in [("namespace", &namespace), ("container id", &container)] {
        if value.is_empty() || value.len() > MAX_CONTAINER_ID || !value.chars().all(id_ok) {
            return Err(format!(
                "{what} {value:?} is not 1 to {MAX_CONTAINER_ID} letters, digits, '_', '.' or '-'"
            ));
        }
    }
    if interfaces.is_empty() || interfaces.len() > MAX_INTERFACES {
        return Err(format!(
            "{} interfaces given: 1 to {MAX_INTERFACES} are taken",
            interfaces.len()
        ));
    }
    for i in &interfaces {
        let name_ok = !i.name.is_empty()
            && i.name.len() < libc::IFNAMSIZ
            && !i.name.contains(['/', ':'])
            && i.name.chars().all(|c| c.is_ascii_graphic());
        if !name_ok {
            return Err(format!(
                "interface name {:?} is not one the kernel gives",
                i.name
            ));
        }
    }
    let fd = fd.ok_or("no descriptor came with the request (send EPROXY's counts map with it)")?;
    let counts = TrafficCounts::from_fd(fd).map_err(|e| e.to_string())?;
    // Read once now: a map this process cannot read is refused, not reported empty later.
    counts
        .read(|i| i.to_string())
        .map_err(|e| format!("cannot read the counts: {e}"))?;
    let mut r = registry.lock().unwrap();
    if r.entries.len() >= MAX_CONTAINERS {
        return Err(format!("{MAX_CONTAINERS} containers are reported already"));
    }
    if r.entries
        .values()
        .any(|c| (&c.function, &c.namespace, &c.container) == (&function, &namespace, &container))
    {
        // The shim recognises this ending (a predecessor's report may not have ended yet).
        return Err(format!(
            "container {namespace}/{container} of function {function:?} is reported already"
        ));
    }
    let id = r.next;
    r.next += 1;
    r.entries.insert(
        id,
        Counted {
            function,
            namespace,
            container,
            names: interfaces
                .into_iter()
                .map(|i| (i.ifindex, i.name))
                .collect(),
            counts,
        },
    );
    Ok(Lease {
        registry: registry.clone(),
        id,
    })
}

impl Registry {
    /// Every container's counts now, by function, container, interface and direction: every
    /// interface handed over is reported both ways from the start, at zero until a packet is
    /// counted (so that a rate over the series starts at its first packet). A map that cannot
    /// be read is left out (and reported again when it can).
    pub fn read(&self) -> Vec<FunctionTraffic> {
        let mut out = Vec::new();
        for c in self.entries.values() {
            let name_of = |i: u32| c.names.get(&i).cloned().unwrap_or_else(|| i.to_string());
            let Ok(counters) = c.counts.read(name_of) else {
                continue;
            };
            let mut counters: Vec<TrafficCounters> = counters
                .into_iter()
                .map(|n| TrafficCounters {
                    interface: n.interface,
                    direction: n.direction.as_str().to_owned(),
                    packets: n.packets,
                    bytes: n.bytes,
                })
                .collect();
            for name in c.names.values() {
                for direction in ["in", "out"] {
                    if !counters
                        .iter()
                        .any(|t| &t.interface == name && t.direction == direction)
                    {
                        counters.push(TrafficCounters {
                            interface: name.clone(),
                            direction: direction.to_owned(),
                            packets: 0,
                            bytes: 0,
                        });
                    }
                }
            }
            out.extend(counters.into_iter().map(|counters| FunctionTraffic {
                function: c.function.clone(),
                namespace: c.namespace.clone(),
                container: c.container.clone(),
                counters,
            }));
        }
        out.sort_by(|a, b| {
            let key = |t: &FunctionTraffic| {
                (
                    t.function.clone(),
                    t.namespace.clone(),
                    t.container.clone(),
                    t.counters.interface.clone(),
                    t.counters.direction.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spright_core::protocol::CountedInterface;

    fn chain() -> Chain {
        Chain::parse(
            "chain: shop\npool: {buffers: 4, buffer_size: 4KiB}\nfunctions: [{name: cart, id: 1}]\nroutes: [{path: /, function: cart}]\n",
            "t",
        )
        .unwrap()
    }

    fn eth0() -> Vec<CountedInterface> {
        vec![CountedInterface {
            ifindex: 2,
            name: "eth0".into(),
        }]
    }

    fn handover(
        function: &str,
        namespace: &str,
        container: &str,
        interfaces: Vec<CountedInterface>,
    ) -> TrafficHandover {
        TrafficHandover {
            function: function.into(),
            namespace: namespace.into(),
            container: container.into(),
            interfaces,
        }
    }

    fn refused(
        function: &str,
        container: &str,
        interfaces: Vec<CountedInterface>,
        fd: Option<OwnedFd>,
    ) -> String {
        let registry = Arc::default();
        let e = take(
            &registry,
            &chain(),
            Some(0),
            handover(function, "default", container, interfaces),
            fd,
        )
        .err()
        .expect("refused");
        assert!(registry.lock().unwrap().entries.is_empty());
        e
    }

    #[test]
    fn a_request_that_cannot_be_a_shims_is_refused_naming_what_is_wrong() {
        let registry = Arc::default();
        for (uid, said) in [(Some(1000), "uid 1000"), (None, "of an unknown user")] {
            let e = take(
                &registry,
                &chain(),
                uid,
                handover("cart", "default", "c1", eth0()),
                None,
            )
            .err()
            .expect("refused");
            assert!(
                e.starts_with("only root (the shim)") && e.ends_with(said),
                "{e}"
            );
        }
        let e = refused("ads", "c1", eth0(), None);
        assert!(e.contains("function \"ads\" is not declared"), "{e}");
        for bad in ["", "a/b", "a b", &"x".repeat(129)] {
            let e = refused("cart", bad, eth0(), None);
            assert!(e.contains("container id"), "{bad:?}: {e}");
        }
        let e = refused("cart", "c1", Vec::new(), None);
        assert!(e.contains("0 interfaces given"), "{e}");
        let e = take(
            &registry,
            &chain(),
            Some(0),
            handover("cart", "a/b", "c1", eth0()),
            None,
        )
        .err()
        .expect("refused");
        assert!(e.starts_with("namespace \"a/b\""), "{e}");
        for bad in ["", "a/b", "sixteen-chars-xx", "a b"] {
            let named = vec![CountedInterface {
                ifindex: 2,
                name: bad.into(),
            }];
            let e = refused("cart", "c1", named, None);
            assert!(e.contains("interface name"), "{bad:?}: {e}");
        }
        let e = refused("cart", "c1", eth0(), None);
        assert!(e.contains("no descriptor came with the request"), "{e}");
        let not_a_map = std::fs::File::open("/dev/null").unwrap().into();
        let e = refused("cart", "c1", eth0(), Some(not_a_map));
        assert!(e.starts_with("not EPROXY's counts map"), "{e}");
    }
}
