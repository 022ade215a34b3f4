//! The demo chain under load, in each routing mode (kernel, user-space relay, polled rings):
//! every answer must be the right page.

mod common;

use spright_e2e::load::{self, Load};

fn text_for(i: usize) -> Vec<u8> {
    // Different texts so a mixed-up reply cannot pass: request i mentions its own number.
    format!("request {i} counts words: spright moves descriptors, and spright moves request {i}")
        .into_bytes()
}

fn load_test(routing: &'static str) {
    let chain = common::start(&common::demo_yaml(), routing, &[]);
    assert_pool_manager_unprivileged(&chain);
    for (path, requests) in [("/render", 10_000), ("/count", 2_000)] {
        let mut l = Load::new(chain.addr, "POST", path, text_for);
        l.connections = 64;
        l.requests = requests;
        let outcomes = load::run(l);
        assert_eq!(
            outcomes.len(),
            requests,
            "{routing} {path}: every request answered"
        );
        for (i, o) in &outcomes {
            assert_eq!(
                o.status,
                200,
                "{routing} {path}: request {i}: {}",
                String::from_utf8_lossy(&o.body)
            );
            let expected = spright_demo_chain::expected_page(&text_for(*i));
            assert_eq!(
                o.body.as_ref(),
                expected.as_slice(),
                "{routing} {path}: request {i} got another request's page or a wrong one"
            );
        }
    }
    let stats = chain.stats();
    let sent = |name: &str| {
        stats
            .functions
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .sent
    };
    assert_eq!(
        sent("gateway"),
        12_000,
        "the gateway sent one descriptor per request"
    );
    assert_eq!(
        sent("parse"),
        12_000,
        "parse answered each /render and each call from /count"
    );
    assert_eq!(
        sent("render"),
        12_000 + 2 * 2_000,
        "render's replies plus its two calls per /count"
    );
    assert!(
        stats.functions.iter().all(|f| f.refused == 0),
        "nothing refused: {stats:?}"
    );
    let pool = chain.wait_pool_idle();
    assert_eq!(pool.free, pool.total);
    let rings = spright_core::rings::rings_path(&chain.manifest().pool.path);
    assert_eq!(rings.exists(), routing == "poll", "{}", rings.display());
    chain.stop();
    assert!(!rings.exists(), "{routing}: rings file left behind");
}

/// The pool-manager loaded SPROXY as root, then dropped every capability.
fn assert_pool_manager_unprivileged(chain: &spright_e2e::ChainUnderTest) {
    let pid = chain.manifest().pid;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm:"), "0000000000000000", "{status}");
    assert_eq!(field("CapBnd:"), "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
}

#[test]
fn demo_chain_in_kernel_mode_answers_10k_requests_on_64_connections() {
    if !spright_e2e::have_root("demo_chain_in_kernel_mode_answers_10k_requests_on_64_connections") {
        return;
    }
    load_test("sockmap");
}

#[test]
fn demo_chain_in_user_mode_answers_10k_requests_on_64_connections() {
    load_test("user");
}

#[test]
fn demo_chain_in_poll_mode_answers_10k_requests_on_64_connections() {
    load_test("poll");
}
