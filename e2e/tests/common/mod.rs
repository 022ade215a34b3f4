//! Chain files shared by the end-to-end tests.
#![allow(dead_code)]

use spright_e2e::{have_root, ChainSpec, ChainUnderTest};

/// The shipped demo chain, renamed for the test.
pub fn demo_yaml() -> String {
    spright_e2e::demo_chain_yaml(false)
}

#[allow(unused_imports)] // not every test file uses it
pub use spright_e2e::TESTFN_YAML;

/// The routing modes to test here: the kernel path needs root (and CI runs as root).
pub fn modes(test: &str) -> Vec<&'static str> {
    let mut m = vec!["user", "poll"];
    if have_root(test) {
        m.insert(0, "sockmap");
    }
    m
}

pub fn start(yaml: &str, routing: &'static str, args: &[&str]) -> ChainUnderTest {
    ChainUnderTest::start(ChainSpec {
        yaml,
        routing,
        args,
    })
}
