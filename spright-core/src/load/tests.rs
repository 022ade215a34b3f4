use super::*;
use crate::ids::{FnId, InstanceId};

fn board() -> (tempfile::TempDir, LoadBoard) {
    let dir = tempfile::tempdir().unwrap();
    let b = LoadBoard::create(&dir.path().join("p.pool.load"), 7, 0o600).unwrap();
    (dir, b)
}

fn ep(f: u16, i: u16) -> Endpoint {
    Endpoint::new(FnId(f), InstanceId(i))
}

#[test]
fn busy_time_is_the_integral_of_requests_in_flight() {
    let (_d, b) = board();
    let e = ep(3, 1);
    b.reset(e, 1_000);
    b.started(e, 2_000);
    b.started(e, 3_000);
    assert_eq!(
        b.read(e, 4_000),
        Some(Reading {
            in_flight: 2,
            busy_ns: 1_000 + 2 * 1_000,
            completed: 0
        })
    );
    b.finished(e, 5_000);
    b.finished(e, 9_000);
    // 1 over 2..3, 2 over 3..5, 1 over 5..9.
    let r = b.read(e, 20_000).unwrap();
    assert_eq!(
        r,
        Reading {
            in_flight: 0,
            busy_ns: 1_000 + 4_000 + 4_000,
            completed: 2
        }
    );
    // Slots are separate.
    assert_eq!(b.read(ep(3, 2), 20_000).unwrap(), Reading::default());
    assert_eq!(b.read(ep(2, 1), 20_000).unwrap(), Reading::default());
}

#[test]
fn a_reset_slot_starts_from_nothing_and_out_of_range_endpoints_are_ignored() {
    let (_d, b) = board();
    let e = ep(0, 0);
    b.started(e, 10);
    b.reset(e, 100);
    assert_eq!(b.read(e, 200), Some(Reading::default()));
    let out = ep(MAX_FUNCTIONS, 0);
    b.started(out, 1);
    assert_eq!(b.read(out, 2), None);
}

#[test]
fn a_slot_left_locked_costs_no_wait_and_keeps_counts_exact() {
    let (_d, b) = board();
    let e = ep(5, 0);
    b.reset(e, 0);
    b.slot(e).unwrap().seq.fetch_add(1, Ordering::Relaxed); // odd: "locked" for ever
    let started = std::time::Instant::now();
    for t in 0..1000 {
        b.started(e, t);
    }
    b.finished(e, 2000);
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    assert_eq!(
        b.read(e, 3000),
        None,
        "a slot that stays locked cannot be read"
    );
    b.slot(e).unwrap().seq.fetch_add(1, Ordering::Relaxed); // unlocked again
    let r = b.read(e, 3000).unwrap();
    assert_eq!((r.in_flight, r.completed), (999, 1));
    b.reset(e, 30);
    assert_eq!(b.read(e, 40), Some(Reading::default()));
}

#[test]
fn scribbled_figures_saturate_instead_of_overflowing() {
    let (_d, b) = board();
    let e = ep(6, 0);
    let slot = b.slot(e).unwrap();
    slot.in_flight.store(u32::MAX, Ordering::Relaxed);
    slot.busy_ns.store(u64::MAX - 5, Ordering::Relaxed);
    slot.seq.store(u32::MAX - 1, Ordering::Relaxed);
    let r = b.read(e, u64::MAX).unwrap();
    assert_eq!((r.in_flight, r.busy_ns), (u32::MAX, u64::MAX));
    b.started(e, u64::MAX); // no overflow of the count or the sequence
    b.finished(e, u64::MAX);
    assert_eq!(b.read(e, u64::MAX).unwrap().in_flight, u32::MAX - 1);
}

#[test]
fn open_checks_the_board_and_its_pool() {
    let (d, b) = board();
    let path = b.path().to_owned();
    b.started(ep(1, 0), 5);
    let other = LoadBoard::open(&path, 7).unwrap();
    assert_eq!(
        other.read(ep(1, 0), 5).unwrap().in_flight,
        1,
        "one shared file"
    );
    assert!(matches!(
        LoadBoard::open(&path, 8),
        Err(LoadError::WrongPool {
            found: 7,
            expected: 8,
            ..
        })
    ));
    let junk = d.path().join("junk");
    std::fs::write(&junk, b"not a board").unwrap();
    assert!(matches!(
        LoadBoard::open(&junk, 7),
        Err(LoadError::NotABoard { .. })
    ));
    assert!(matches!(
        LoadBoard::create(&path, 7, 0o600),
        Err(LoadError::Exists { .. })
    ));
}

#[test]
fn concurrent_writers_lose_nothing() {
    let (_d, b) = board();
    let e = ep(9, 3);
    b.reset(e, 0);
    let b = std::sync::Arc::new(b);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    b.started(e, now_ns());
                    b.finished(e, now_ns());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = b.read(e, now_ns()).unwrap();
    assert_eq!((r.in_flight, r.completed), (0, 40_000));
}
