//! EPROXY for the life of the chain: loaded and attached to the gateway's interfaces while the
//! pool-manager still has its privileges, read through its map afterwards (which needs none),
//! detached when the pool-manager exits, however it exits (tcx links die with their holder).

use slog::{info, warn, Logger};
use spright_core::chain::{Chain, EproxyMode};
use spright_core::protocol::TrafficCounters;
use spright_ebpf::eproxy::{interfaces_for, Eproxy};
use std::net::SocketAddr;

/// Starts EPROXY as the chain asks: `Ok(None)` when it is off, or `auto` and it cannot be
/// loaded here (a warning says why); an error only when it is `on`.
pub fn start(
    chain: &Chain,
    gateway: Option<SocketAddr>,
    log: &Logger,
) -> anyhow::Result<Option<Eproxy>> {
    if chain.eproxy == EproxyMode::Off {
        return Ok(None);
    }
    match attach(chain, gateway) {
        Ok(eproxy) => {
            info!(log, "EPROXY counts the gateway's traffic";
                "interfaces" => eproxy.attached().join(","));
            Ok(Some(eproxy))
        }
        Err(e) if chain.eproxy == EproxyMode::Auto => {
            warn!(log, "EPROXY is not counting the gateway's traffic (gateway.eproxy: auto; say off to silence this, on to make it required)";
                "error" => format!("{e:#}"));
            Ok(None)
        }
        Err(e) => Err(e.context("starting EPROXY (gateway.eproxy: on)")),
    }
}

fn attach(chain: &Chain, gateway: Option<SocketAddr>) -> anyhow::Result<Eproxy> {
    let listen = match gateway {
        Some(a) => a,
        None => chain
            .listen
            .parse()
            .map_err(|e| anyhow::anyhow!("the chain's gateway.listen {:?}: {e}", chain.listen))?,
    };
    let interfaces = interfaces_for(&listen)?;
    if interfaces.is_empty() {
        anyhow::bail!("no interface to count {listen} on (none is up)");
    }
    let mut eproxy = Eproxy::load(listen)?;
    for i in &interfaces {
        eproxy.attach(i)?;
    }
    Ok(eproxy)
}

/// EPROXY's counters now, in the control protocol's terms.
pub fn counters(eproxy: &Eproxy) -> Vec<TrafficCounters> {
    eproxy
        .counters()
        .map(|all| {
            all.into_iter()
                .map(|c| TrafficCounters {
                    interface: c.interface,
                    direction: c.direction.as_str().to_owned(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
                .collect()
        })
        .unwrap_or_default()
}
