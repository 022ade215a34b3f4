//! Calls a function makes together are in flight together: the callee sees them all at once.

mod common;

use spright_e2e::http;

#[test]
fn calls_made_together_reach_the_callee_together() {
    for routing in common::modes("calls_made_together_reach_the_callee_together") {
        let chain = common::start(common::TESTFN_YAML, routing, &[]);
        // back answers a gather only once 8 are inside it at the same time: 8 calls made one
        // after another would each time out alone.
        let r = http::post(chain.addr, "/front/fanout?to=back&n=8", b"");
        assert_eq!(r.status, 200, "{routing}: {}", r.text());
        assert_eq!(r.text(), ["8 together"; 8].join("\n"), "{routing}");
        // And the gathering can fail: 2 calls never make a group of 3.
        let r = http::post(
            chain.addr,
            "/front/fanout?to=back&n=2&group=3&wait_ms=300",
            b"",
        );
        assert_eq!(r.status, 500, "{routing}: {}", r.text());
        assert!(
            r.text().contains("3 calls did not arrive together"),
            "{routing}: {}",
            r.text()
        );
        chain.wait_pool_idle();
        chain.stop();
    }
}
