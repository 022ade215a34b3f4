//! Loopback ports for a launch's functions and sidecars.
//!
//! A port that is free when we look is bound a moment later by the process we start, and
//! launchers running side by side (the test suite starts many) could pick the same one in that
//! moment: one function then fails to bind, or worse, another launch's function answers its
//! requests. So each launcher claims its ports for as long as it runs, with an abstract unix
//! socket named after the port: binding the name succeeds for one process at a time, and the
//! kernel releases it when that process ends, however it ends (no files to clean up). Abstract
//! names are per network namespace, as the loopback ports are.

use super::LaunchError;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// Below Linux's default ephemeral range (32768-60999): a pod scaled to zero gets the same
/// ports when it starts again, and an outgoing connection must not have taken one of them as
/// its local port meanwhile.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Ports claimed by this launcher; the claims end when this is dropped.
#[derive(Debug)]
pub struct Ports {
    pub numbers: Vec<u16>,
    _claims: Vec<UnixListener>,
}

/// `n` distinct loopback ports, free when looked at and claimed against every other launcher.
pub fn claim_free(n: usize) -> Result<Ports, LaunchError> {
    let mut numbers = Vec::with_capacity(n);
    let mut claims = Vec::with_capacity(n);
    for _ in 0..n {
        let (port, claim) = (0..1000)
            .map(|_| fastrand::u16(RANGE))
            .find_map(|port| {
                let claim = claim(port)?;
                // Claimed by no launcher, but is anything else listening there?
                std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
                Some((port, claim))
            })
            .ok_or_else(|| {
                LaunchError::io(
                    "picking free ports",
                    std::io::Error::other(format!("no free port in {RANGE:?} after 1000 tries")),
                )
            })?;
        numbers.push(port);
        claims.push(claim);
    }
    Ok(Ports {
        numbers,
        _claims: claims,
    })
}

/// This process's claim on `port`, unless another process holds it.
fn claim(port: u16) -> Option<UnixListener> {
    let name = format!("spright-baseline/port/{port}");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    UnixListener::bind_addr(&addr).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_port_is_refused_until_its_claim_ends() {
        let ports = claim_free(3).unwrap();
        assert_eq!(ports.numbers.len(), 3);
        let mut distinct = ports.numbers.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{:?}", ports.numbers);
        let port = ports.numbers[0];
        assert!(claim(port).is_none(), "port {port} claimed twice");
        drop(ports);
        assert!(
            claim(port).is_some(),
            "port {port} still claimed after the drop"
        );
    }

    #[test]
    fn claims_side_by_side_never_share_a_port() {
        // Together they take a tenth of the range: unclaimed, a pair would share a port in
        // nearly every run.
        let a = claim_free(600).unwrap();
        let b = claim_free(600).unwrap();
        let shared: Vec<_> = a.numbers.iter().filter(|p| b.numbers.contains(p)).collect();
        assert!(shared.is_empty(), "shared ports: {shared:?}");
    }
}
