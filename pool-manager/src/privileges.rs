//! Dropping capabilities once setup is done: after SPROXY is loaded and its map descriptors are
//! open, updating the maps needs no capability, so the long-running pool-manager keeps none.

use caps::{CapSet, Capability, CapsHashSet};

/// Drops every capability except `keep` from all sets (bounding first, while CAP_SETPCAP is
/// still held), and sets no_new_privs so nothing exec'd later regains any.
pub fn drop_to(keep: &[Capability]) -> Result<(), caps::errors::CapsError> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    if let Ok(bounding) = caps::read(None, CapSet::Bounding) {
        for cap in bounding.difference(&keep) {
            // Without CAP_SETPCAP (not root) this fails; the sets below still shrink.
            let _ = caps::drop(None, CapSet::Bounding, *cap);
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let held = caps::read(None, set)?;
        let retained: CapsHashSet = held.intersection(&keep).copied().collect();
        caps::set(None, set, &retained)?;
    }
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Ok(())
}

/// The effective capabilities now, for the log.
pub fn effective() -> Vec<String> {
    caps::read(None, CapSet::Effective)
        .map(|s| {
            let mut v: Vec<String> = s.iter().map(|c| c.to_string()).collect();
            v.sort();
            v
        })
        .unwrap_or_default()
}
