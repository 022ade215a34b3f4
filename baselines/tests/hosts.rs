//! The hosts on their own: the test function run by hand with `SPRIGHT_HOST=http` or `grpc`,
//! checked over real HTTP/1.1 and gRPC.

mod common;

use common::*;
use prost::Message;
use spright_baselines::host::RawCodec;
use std::time::Duration;

#[derive(Clone, PartialEq, prost::Message)]
struct TextProto {
    #[prost(string, tag = "1")]
    text: String,
}

fn http_host(service: &str, extra: &[(&str, String)]) -> (Proc, std::net::SocketAddr) {
    let addr = free_addr();
    let mut env = vec![
        ("SPRIGHT_HOST", "http".to_owned()),
        ("SPRIGHT_LISTEN", addr.to_string()),
    ];
    env.extend(extra.iter().cloned());
    let p = testfn(service, &env);
    wait_listening(addr);
    (p, addr)
}

#[test]
fn http_host_serves_methods_health_and_the_http_entry() {
    let (mut p, a) = http_host("shout", &[]);
    let mut conn = Conn::open(a);
    let r = conn.request("POST", "/rpc/Upper", br#"{"text":"abc"}"#);
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"text":"ABC"}"#));
    let r = conn.request("GET", "/healthz", b"");
    assert_eq!(r.status, 200);
    let r = conn.request("POST", "/rpc/Nope", b"{}");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "shout has no method \"Nope\"\n");
    let r = conn.request("POST", "/rpc/Upper", b"[1]");
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("shout.Upper: malformed JSON"),
        "{}",
        r.text()
    );
    let r = conn.request("POST", "/rpc/Upper", br#"{"text":"fail"}"#);
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "shout.Upper failed: asked to fail\n");
    let r = conn.request("GET", "/anything", b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "shout serves no HTTP requests\n")
    );
    // SIGTERM stops it cleanly.
    assert!(p.terminate().success(), "{}", p.stderr());
}

#[test]
fn http_host_calls_through_the_gateway() {
    // No gateway configured: the call fails, saying why.
    let (_p, a) = http_host("echo", &[]);
    let r = post(a, "/", "x");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("SPRIGHT_GATEWAY_URL is not set"),
        "{}",
        r.text()
    );

    // A gateway that is not there: the error names the URL.
    let nowhere = free_addr();
    let gateway = ("SPRIGHT_GATEWAY_URL", format!("http://{nowhere}"));
    let (_p, a) = http_host("echo", &[gateway]);
    let r = post(a, "/", "x");
    assert_eq!(r.status, 500);
    let url = format!("POST http://{nowhere}/_fn/shout/rpc/Upper");
    assert!(r.text().contains(&url), "{}", r.text());

    // shout itself as the "gateway" would need /_fn/ paths: it answers 404, which the
    // caller reports with the body.
    let (_shout, s) = http_host("shout", &[]);
    let (_p, a) = http_host("echo", &[("SPRIGHT_GATEWAY_URL", format!("http://{s}/"))]);
    let r = post(a, "/", "x");
    assert_eq!(r.status, 500);
    assert!(
        r.text()
            .contains("404 Not Found: shout serves no HTTP requests"),
        "{}",
        r.text()
    );
}

#[test]
fn missing_and_invalid_variables_are_named() {
    let mut p = testfn("echo", &[("SPRIGHT_HOST", "http".into())]);
    assert!(!p.wait(Duration::from_secs(10)).success());
    assert!(
        p.stderr().contains("SPRIGHT_LISTEN is not set"),
        "{}",
        p.stderr()
    );
    let mut p = testfn(
        "echo",
        &[
            ("SPRIGHT_HOST", "grpc".into()),
            ("SPRIGHT_LISTEN", free_addr().to_string()),
            ("SPRIGHT_PEERS", "shout".into()),
        ],
    );
    assert!(!p.wait(Duration::from_secs(10)).success());
    assert!(
        p.stderr().contains("SPRIGHT_PEERS=\"shout\""),
        "{}",
        p.stderr()
    );
}

async fn unary(
    addr: std::net::SocketAddr,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let reply = grpc
        .unary(tonic::Request::new(body), path.parse().unwrap(), RawCodec)
        .await?;
    Ok(reply.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn grpc_host_serves_protobuf_with_status_codes() {
    let addr = free_addr();
    let mut p = testfn(
        "shout",
        &[
            ("SPRIGHT_HOST", "grpc".into()),
            ("SPRIGHT_LISTEN", addr.to_string()),
        ],
    );
    tokio::task::spawn_blocking(move || wait_listening(addr))
        .await
        .unwrap();
    let text = |t: &str| TextProto { text: t.into() }.encode_to_vec();

    let reply = unary(addr, "/spright.shout/Upper", text("abc"))
        .await
        .unwrap();
    assert_eq!(TextProto::decode(&reply[..]).unwrap().text, "ABC");

    let code = |r: Result<Vec<u8>, tonic::Status>| r.unwrap_err();
    let s = code(unary(addr, "/spright.shout/Nope", text("a")).await);
    assert_eq!(s.code(), tonic::Code::Unimplemented, "{s:?}");
    assert_eq!(s.message(), "shout has no method \"Nope\"");
    let s = code(unary(addr, "/spright.other/Upper", text("a")).await);
    assert_eq!(s.code(), tonic::Code::Unimplemented, "{s:?}");
    let s = code(unary(addr, "/spright.shout/Upper", vec![0xff, 0xff]).await);
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("malformed protobuf"), "{s:?}");
    let s = code(unary(addr, "/spright.shout/Upper", text(&"x".repeat(65))).await);
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    let s = code(unary(addr, "/spright.shout/Upper", text("fail")).await);
    assert_eq!(s.code(), tonic::Code::Internal, "{s:?}");
    assert_eq!(s.message(), "shout.Upper failed: asked to fail");

    let status = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap();
    assert!(status.success());
}

#[test]
fn grpc_host_calls_peers_and_serves_outside_http() {
    let shout = free_addr();
    let _s = testfn(
        "shout",
        &[
            ("SPRIGHT_HOST", "grpc".into()),
            ("SPRIGHT_LISTEN", shout.to_string()),
        ],
    );
    let (grpc, http) = (free_addr(), free_addr());
    let _e = testfn(
        "echo",
        &[
            ("SPRIGHT_HOST", "grpc".into()),
            ("SPRIGHT_LISTEN", grpc.to_string()),
            ("SPRIGHT_HTTP_LISTEN", http.to_string()),
            ("SPRIGHT_PEERS", format!("echo={grpc},shout={shout}")),
        ],
    );
    wait_listening(shout);
    wait_listening(http);
    let mut conn = Conn::open(http);
    for word in ["one", "two"] {
        let r = conn.request("POST", "/", word.as_bytes());
        assert_eq!(
            (r.status, r.text()),
            (200, format!("echo: {}", word.to_uppercase()))
        );
    }
    assert_eq!(get(http, "/healthz").status, 200);
}
