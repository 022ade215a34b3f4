//! Transit words: per pool buffer, where the router last delivered a descriptor of it, as
//! `generation << 32 | endpoint key` (0 for never). The relay keeps them in its memory, the
//! rings file in shared memory, SPROXY in a BPF map; the pool-manager's sweep reads them.

use crate::ids::Endpoint;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a buffer's last descriptor was delivered: to whom, and of which generation of the
/// buffer it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transit {
    pub generation: u32,
    pub to: Endpoint,
}

impl Transit {
    /// A transit word as SPROXY writes it: `generation << 32 | endpoint key`, 0 for none.
    pub fn from_word(word: u64) -> Option<Transit> {
        (word != 0).then(|| Transit {
            generation: (word >> 32) as u32,
            to: Endpoint::from_router_key(word as u32),
        })
    }
}

/// The record of a delivery about to happen, which can be taken back if it does not.
pub struct Recorded<'a> {
    slot: &'a AtomicU64,
    before: u64,
    ours: u64,
}

/// Records that a descriptor of generation `generation` is being delivered to `key`. Done
/// before the descriptor becomes visible: its receiver may pass it on at once.
pub fn record(slot: &AtomicU64, generation: u32, key: u32) -> Recorded<'_> {
    let ours = ((generation as u64) << 32) | key as u64;
    Recorded {
        slot,
        before: slot.swap(ours, Ordering::AcqRel),
        ours,
    }
}

impl Recorded<'_> {
    /// The delivery did not happen: put back what was there, unless the word moved on since.
    pub fn undo(self) {
        let _ =
            self.slot
                .compare_exchange(self.ours, self.before, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// What a transit word records, if anything.
pub fn read(slot: &AtomicU64) -> Option<Transit> {
    Transit::from_word(slot.load(Ordering::Acquire))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_back_and_undone_only_if_unchanged() {
        let slot = AtomicU64::new(0);
        assert_eq!(read(&slot), None);
        record(&slot, 7, 0x0001_0002).undo();
        assert_eq!(read(&slot), None, "undone");
        let _kept = record(&slot, 7, 0x0001_0002);
        assert_eq!(read(&slot), Transit::from_word(7 << 32 | 0x0001_0002));
        assert_eq!(read(&slot).unwrap().to.to_string(), "1#2");
        let late = record(&slot, 8, 0x0003_0000);
        record(&slot, 9, 0x0004_0000); // moved on meanwhile
        late.undo();
        assert_eq!(
            read(&slot).map(|t| t.generation),
            Some(9),
            "not undone over a newer record"
        );
    }
}
