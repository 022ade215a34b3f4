//! Chain files shared by the end-to-end tests.
#![allow(dead_code)]

use spright_e2e::{have_root, ChainSpec, ChainUnderTest};

/// The shipped demo chain, renamed for the test.
pub fn demo_yaml() -> String {
    spright_e2e::demo_chain_yaml(false)
}

/// Two test functions: `front` may call `back`; `rogue` is declared but never started.
pub const TESTFN_YAML: &str = r#"
chain: {name}
pool:
  buffers: 64
  buffer_size: 16KiB
gateway:
  timeout: 30s
functions:
  - name: front
    id: 1
    command: [spright-testfn]
    calls: [back]
  - name: back
    id: 2
    command: [spright-testfn]
  - name: rogue
    id: 9
    calls: [back]
routes:
  - path: /front
    function: front
  - path: /back
    function: back
  - path: /pipe
    sequence: [front, back]
"#;

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
