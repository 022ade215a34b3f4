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

/// Ports claimed by this launcher; the claims end when this is dropped, so keep it for as long
/// as the ports are in use.
#[derive(Debug)]
pub struct Ports {
    numbers: Vec<u16>,
    _claims: Vec<UnixListener>,
}

impl Ports {
    pub fn numbers(&self) -> &[u16] {
        &self.numbers
    }
}

/// `n` distinct loopback ports, free when looked at and claimed against every other launcher.
pub fn claim_free(n: usize) -> Result<Ports, LaunchError> {
    let mut numbers = Vec::with_capacity(n);
    let mut claims = Vec::with_capacity(n);
    for _ in 0..n {
        let mut found = None;
        for _ in 0..1000 {
            let port = fastrand::u16(RANGE);
            let Some(held) = claim(port)? else {
                continue;
            };
            // Claimed by no launcher, but is anything else listening there?
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                found = Some((port, held));
                break;
            }
        }
        let (port, held) = found.ok_or_else(|| {
            LaunchError::io(
                "picking free ports",
                std::io::Error::other(format!("no free port in {RANGE:?} after 1000 tries")),
            )
        })?;
        numbers.push(port);
        claims.push(held);
    }
    Ok(Ports {
        numbers,
        _claims: claims,
    })
}

/// This process's claim on `port`, or `None` when another claim holds it (any other failure,
/// such as running out of descriptors, is an error: it would otherwise pass for a busy port).
fn claim(port: u16) -> Result<Option<UnixListener>, LaunchError> {
    let name = format!("spright-baseline/port/{port}");
    let claiming = |e| LaunchError::io(format!("claiming port {port}"), e);
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(claiming)?;
    match UnixListener::bind_addr(&addr) {
        Ok(claim) => Ok(Some(claim)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(claiming(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test, so that the re-claim after the drop races no other claim of this crate's.
    #[test]
    fn claimed_ports_are_refused_to_others_until_the_claim_ends() {
        let ports = claim_free(3).unwrap();
        let mut distinct = ports.numbers().to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{:?}", ports.numbers());
        let port = ports.numbers()[0];
        assert!(claim(port).unwrap().is_none(), "port {port} claimed twice");
        drop(ports);
        // Another test's process, forked but not yet exec'd, may hold a copy of the claim for a
        // moment (the suite runs tests side by side).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while claim(port).unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "port {port} still claimed 5 s after the drop"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }

        // Unclaimed, two sets of 400 of the 12,000 ports would share about 13.
        let a = claim_free(400).unwrap();
        let b = claim_free(400).unwrap();
        let shared: Vec<_> = a
            .numbers()
            .iter()
            .filter(|p| b.numbers().contains(p))
            .collect();
        assert!(shared.is_empty(), "shared ports: {shared:?}");
    }
}
