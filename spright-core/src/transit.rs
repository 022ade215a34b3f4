//! Transit words: per pool buffer, where the router last delivered a descriptor of it, as
//! `generation << 32 | endpoint key` (0 for never). The relay keeps them in its memory, the
//! rings file in shared memory, SPROXY in a BPF map; the pool-manager's sweep reads them.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// A transit word's (generation, endpoint key), if it holds a record.
pub fn read(slot: &AtomicU64) -> Option<(u32, u32)> {
    let v = slot.load(Ordering::Acquire);
    (v != 0).then_some(((v >> 32) as u32, v as u32))
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
        assert_eq!(read(&slot), Some((7, 0x0001_0002)));
        let late = record(&slot, 8, 0x0003_0000);
        record(&slot, 9, 0x0004_0000); // moved on meanwhile
        late.undo();
        assert_eq!(
            read(&slot),
            Some((9, 0x0004_0000)),
            "not undone over a newer record"
        );
    }
}
