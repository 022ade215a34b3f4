//! A function that lies: forged descriptors (out of bounds, stale, from another pool, a false
//! sender) are refused or rejected, nobody crashes, and the pool is not corrupted.

mod common;

use spright_core::descriptor::{Descriptor, Kind, RefuseReason, ABI_VERSION};
use spright_core::ids::{FnId, GATEWAY};
use spright_e2e::http;
use spright_sdk::member::Member;
use spright_sdk::Lease;
use std::time::Duration;

fn forged_descriptors(routing: &'static str) {
    let chain = common::start(common::TESTFN_YAML, routing, &[]);
    let back_pid = chain.wait_instances("back", 1)[0];
    let manifest = chain.manifest();
    let rogue_socket = manifest.function("rogue").unwrap().socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut refusals = rt.block_on(async {
        let member = Member::register(&rogue_socket, Some(&manifest.pool.path))
            .await
            .expect("rogue registers");
        let (info, sender, mut receiver, _events) = member.into_parts();
        let pool = info.pool.clone();
        let me = info.endpoint;
        let base = |dst: u16, kind: Kind| Descriptor {
            version: ABI_VERSION,
            kind: kind as u8,
            dst_fn: dst,
            dst_instance: spright_core::ANY_INSTANCE.0,
            pool_tag: pool.tag(),
            request_id: 77,
            len: 32,
            ..Descriptor::default()
        };

        // 1. Out of bounds, to the gateway and to back.
        for dst in [GATEWAY.0, 2] {
            let mut d = base(dst, if dst == 0 { Kind::Reply } else { Kind::Request });
            d.offset = pool.layout().total_size + 4096;
            sender.send_raw(&d).unwrap();
        }
        // 2. Stale: a real buffer, sent with the generation before its current one.
        let lease = Lease::alloc(&pool, me, 77).unwrap();
        let buf = lease.buffer();
        for dst in [GATEWAY, FnId(2)] {
            assert!(pool.mark_in_transit(buf, me, dst));
            let mut d = base(
                dst.0,
                if dst == GATEWAY {
                    Kind::Reply
                } else {
                    Kind::Request
                },
            );
            pool.describe(buf, &mut d);
            d.generation = d.generation.wrapping_sub(1);
            sender.send_raw(&d).unwrap();
            // Nobody could claim it; take it back for the next round.
            assert!(
                pool.take_back(buf, dst, me),
                "a stale descriptor claimed the buffer"
            );
        }
        drop(lease);
        // 3. Another chain's pool.
        let mut d = base(GATEWAY.0, Kind::Reply);
        d.pool_tag ^= 0x5A5A;
        d.offset = pool.layout().offset_of(0);
        sender.send_raw(&d).unwrap();
        // 4. A destination the allow list forbids, and the same while claiming to be the gateway.
        sender.send_raw(&base(1, Kind::Request)).unwrap();
        let mut lie = base(1, Kind::Request);
        lie.src_fn = GATEWAY.0;
        sender.send_raw(&lie).unwrap();
        // 5. A function the chain does not have: no destination, not "forbidden".
        sender.send_raw(&base(500, Kind::Request)).unwrap();

        let mut refusals = Vec::new();
        while refusals.len() < 3 {
            let got = tokio::time::timeout(
                Duration::from_secs(5),
                receiver.next_batch(|d| refusals.push(d)),
            )
            .await
            .expect("the refusals come back");
            assert!(got.unwrap(), "data socket closed");
        }
        refusals
    });
    let unknown = refusals.pop().unwrap();
    assert_eq!(
        (unknown.refusal().unwrap().0, unknown.dst_fn),
        (Some(RefuseReason::NoDestination), 500),
        "{routing}: {unknown:?}"
    );
    for r in &refusals {
        assert_eq!(r.kind(), Some(Kind::Refused), "{routing}: {r:?}");
        assert_eq!(
            r.refusal().unwrap().0,
            Some(RefuseReason::Forbidden),
            "{routing}: {r:?}"
        );
        assert_eq!(
            (r.src_fn, r.dst_fn),
            (9, 1),
            "{routing}: the sender is who its socket says"
        );
    }

    // The gateway rejected its three forgeries (bounds, stale, wrong pool) and kept serving.
    spright_e2e::wait_for(
        "the gateway to count three rejections",
        Duration::from_secs(5),
        || (chain.metric("spright_gateway_rejected_descriptors_total") == 3).then_some(()),
    );
    let stats = chain.stats();
    let rogue = stats.functions.iter().find(|f| f.name == "rogue").unwrap();
    assert_eq!(rogue.refused, 3, "{routing}: {stats:?}");
    assert_eq!(
        chain.pids("back"),
        vec![back_pid],
        "{routing}: back survived its forgeries"
    );
    assert_eq!(
        http::post(chain.addr, "/back/echo", b"intact").text(),
        "intact"
    );
    assert_eq!(
        http::post(chain.addr, "/front/call?to=back", b"x").text(),
        "200 via front: x"
    );
    chain.wait_pool_idle();
    chain.stop();
}

#[test]
fn forged_descriptors_are_rejected_without_a_crash() {
    for routing in common::modes("forged_descriptors_are_rejected_without_a_crash") {
        forged_descriptors(routing);
    }
}
