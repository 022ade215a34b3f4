//! `spright-baseline grpc`: every function a gRPC server calling its peers directly, the entry
//! function taking outside HTTP requests itself.

mod common;

use common::*;

#[test]
fn answers_with_calls_over_grpc() {
    let mut l = launch("grpc", &chain_yaml(true), &[]).unwrap_or_else(|e| panic!("{e}"));
    let a = l.addr;
    let mut conn = Conn::open(a);
    for _ in 0..3 {
        let r = conn.request("POST", "/echo", b"hello");
        assert_eq!((r.status, r.text().as_str()), (200, "echo: HELLO"));
    }
    let r = post(a, "/echo", "fail");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("call to shout failed"), "{}", r.text());
    assert!(
        r.text()
            .contains("Internal: shout.Upper failed: asked to fail"),
        "{}",
        r.text()
    );
    // Outside requests reach echo itself: no gateway, no sidecar.
    let pid: i32 = get(a, "/pid").text().parse().unwrap();
    let children = descendants(l.proc.pid());
    assert!(children.iter().any(|(p, _)| *p == pid), "{children:?}");
    assert_eq!(children.len(), 2, "{children:?}");
    terminate_cleanly(&mut l);
}

#[test]
fn only_rpc_style_chains_with_one_entry() {
    let e = launch("grpc", &chain_yaml(false), &[]).err().unwrap();
    assert!(
        e.contains("routes[1] (POST /twice): a sequence of 2 functions"),
        "{e}"
    );
    let chain = chain_yaml(true) + "  - { method: POST, path: /shout, function: shout }\n";
    let e = launch("grpc", &chain, &[]).err().unwrap();
    assert!(
        e.contains("routes[1] (POST /shout): enters at shout"),
        "{e}"
    );
}
