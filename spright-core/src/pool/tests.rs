use super::*;
use crate::descriptor::Kind;
use crate::ids::{InstanceId, GATEWAY};

const GW: Endpoint = Endpoint {
    function: GATEWAY,
    instance: InstanceId(0),
};
const F1: Endpoint = Endpoint {
    function: FnId(1),
    instance: InstanceId(0),
};

fn new_pool(count: u32) -> (tempfile::TempDir, Pool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.pool");
    let pool = Pool::create(
        &path,
        PoolSpec {
            buffer_count: count,
            buffer_size: 1024,
        },
        "test",
        0o600,
    )
    .unwrap();
    (dir, pool)
}

fn sent_descriptor(pool: &Pool, request: u64, to: FnId) -> Descriptor {
    let buf = pool.alloc(GW, request).unwrap();
    assert!(pool.mark_in_transit(buf, GW, to));
    let mut d = Descriptor::request(to, request);
    pool.describe(buf, &mut d);
    d.len = 10;
    d
}

#[test]
fn create_then_open_sees_the_same_pool() {
    let (dir, pool) = new_pool(8);
    let again = Pool::open(&dir.path().join("p.pool")).unwrap();
    assert_eq!(again.pool_id(), pool.pool_id());
    assert_eq!(again.layout(), pool.layout());
    assert_ne!(pool.tag(), 0);
}

#[test]
fn create_refuses_an_existing_file() {
    let (dir, _pool) = new_pool(8);
    let err = Pool::create(
        &dir.path().join("p.pool"),
        PoolSpec {
            buffer_count: 8,
            buffer_size: 1024,
        },
        "test",
        0o600,
    )
    .err()
    .unwrap();
    assert!(matches!(err, PoolError::Exists { .. }), "{err}");
}

#[test]
fn open_rejects_a_file_that_is_not_a_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    assert!(matches!(Pool::open(&path), Err(PoolError::BadMagic { .. })));
}

#[test]
fn alloc_until_exhausted_then_free_restores() {
    let (_dir, pool) = new_pool(4);
    let bufs: Vec<_> = (0..4).map(|i| pool.alloc(GW, i).unwrap()).collect();
    assert!(pool.alloc(GW, 9).is_none(), "pool of 4 gave a 5th buffer");
    assert_eq!(pool.stats().held, 4);
    for b in &bufs {
        assert!(pool.free(*b, GW));
    }
    assert_eq!(pool.stats().free, 4);
    // A second free of the same buffer is refused: the generation moved on.
    assert!(!pool.free(bufs[0], GW));
}

#[test]
fn claim_moves_a_sent_buffer_to_the_receiver() {
    let (_dir, pool) = new_pool(4);
    let d = sent_descriptor(&pool, 42, F1.function);
    let buf = pool.claim(&d, F1).unwrap().unwrap();
    assert_eq!(
        pool.state(buf.index).holder,
        Holder::Held {
            function: 1,
            instance: 0
        }
    );
    // Claiming twice fails: it is no longer in transit.
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::NotForUs { .. })
    ));
}

#[test]
fn forged_descriptors_are_rejected_without_touching_state() {
    let (_dir, pool) = new_pool(4);
    let good = sent_descriptor(&pool, 42, F1.function);
    let before = pool.stats();

    let mut d = good;
    d.offset = pool.layout().total_size + 4096;
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::OutOfBounds(_))
    ));

    let mut d = good;
    d.offset += 1;
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::OutOfBounds(_))
    ));

    let mut d = good;
    d.offset = 64; // inside the pool header
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::OutOfBounds(_))
    ));

    let mut d = good;
    d.generation = d.generation.wrapping_sub(1);
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::Stale { .. })
    ));

    let mut d = good;
    d.pool_tag ^= 1;
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::WrongPool { .. })
    ));

    let mut d = good;
    d.len = pool.buffer_size() + 1;
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::TooLong { .. })
    ));

    let mut d = good;
    d.version = 9;
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::BadVersion(9))
    ));

    let mut d = good;
    d.request_id = 43;
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::WrongRequest { .. })
    ));

    // Sent to function 1: function 2 cannot take it.
    let other = Endpoint::new(FnId(2), InstanceId(0));
    assert!(matches!(
        pool.claim(&good, other),
        Err(DescriptorError::NotForUs { .. })
    ));

    assert_eq!(
        pool.stats(),
        before,
        "a rejected descriptor changed the pool"
    );
    assert!(
        pool.claim(&good, F1).unwrap().is_some(),
        "the real one still works"
    );
}

#[test]
fn a_freed_buffer_cannot_be_claimed_by_its_old_descriptor() {
    let (_dir, pool) = new_pool(1);
    let d = sent_descriptor(&pool, 1, F1.function);
    let buf = pool.claim(&d, F1).unwrap().unwrap();
    assert!(pool.free(buf, F1));
    // Reallocated for another request and sent to F1 again.
    let d2 = sent_descriptor(&pool, 2, F1.function);
    assert!(matches!(
        pool.claim(&d, F1),
        Err(DescriptorError::Stale { .. })
    ));
    assert!(pool.claim(&d2, F1).unwrap().is_some());
}

#[test]
fn reclaim_only_matches_the_exact_state() {
    let (_dir, pool) = new_pool(2);
    let d = sent_descriptor(&pool, 5, F1.function);
    let index = pool.layout().index_of(d.offset).unwrap();
    let state = pool.state(index);
    let buf = pool.claim(&d, F1).unwrap().unwrap();
    assert!(
        !pool.reclaim(index, state),
        "reclaimed a buffer that moved on"
    );
    assert!(pool.reclaim(index, pool.state(index)));
    assert_eq!(pool.state(index).holder, Holder::Free);
    assert!(!pool.free(buf, F1));
}

#[test]
fn refused_buffers_come_back_to_the_sender() {
    let (_dir, pool) = new_pool(1);
    let d = sent_descriptor(&pool, 5, F1.function);
    let buf = pool.check(&d).unwrap().unwrap();
    assert!(pool.take_back(buf, F1.function, GW));
    assert!(pool.free(buf, GW));
    assert_eq!(d.kind(), Some(Kind::Request));
}

#[test]
fn concurrent_allocators_never_share_a_buffer() {
    let (_dir, pool) = new_pool(64);
    let pool = std::sync::Arc::new(pool);
    let threads: Vec<_> = (0..4u16)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let me = Endpoint::new(FnId(t + 1), InstanceId(0));
                for round in 0..20_000u64 {
                    let Some(b) = pool.alloc(me, round) else {
                        continue;
                    };
                    // While we hold it, nobody else may.
                    let s = pool.state(b.index);
                    assert_eq!(
                        s.holder,
                        Holder::Held {
                            function: t + 1,
                            instance: 0
                        }
                    );
                    // SAFETY: this thread holds `b` (checked just above).
                    unsafe { pool.data_mut(b)[0] = t as u8 };
                    // SAFETY: as above.
                    assert_eq!(unsafe { pool.data(b)[0] }, t as u8);
                    assert!(pool.free(b, me));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(pool.stats().free, 64);
}

#[test]
fn processes_share_the_pool() {
    let (dir, pool) = new_pool(16);
    let path = dir.path().join("p.pool");
    let d = sent_descriptor(&pool, 77, F1.function);
    let buf = pool.check(&d).unwrap().unwrap();
    // SAFETY: nobody else runs yet; the descriptor names this buffer.
    unsafe { pool.data_mut(buf)[..5].copy_from_slice(b"hello") };
    // SAFETY: the child only maps the pool, works on it and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            let child = Pool::open(&path).unwrap();
            let b = child.claim(&d, F1).unwrap().unwrap();
            // SAFETY: the child claimed `b`; the parent waits meanwhile.
            let data = unsafe { child.data_mut(b) };
            assert_eq!(&data[..5], b"hello");
            data[..5].copy_from_slice(b"HELLO");
            assert!(child.mark_in_transit(b, F1, GATEWAY));
        })
        .is_ok();
        // SAFETY: _exit ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `status` outlives the call; `pid` is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
    let mut back = d;
    back.dst_fn = 0;
    let b = pool.claim(&back, GW).unwrap().unwrap();
    // SAFETY: we claimed `b` back; the child is gone.
    assert_eq!(unsafe { &pool.data(b)[..5] }, b"HELLO");
}
