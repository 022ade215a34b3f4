//! Malformed, oversized and unroutable HTTP: each gets the right status and a body that says
//! why, and the gateway goes on serving.

mod common;

use spright_e2e::http;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn bad_http_gets_named_errors_and_the_gateway_keeps_serving() {
    // The kernel path if we can; the HTTP side is the same in both modes.
    let routing = common::modes("bad_http_gets_named_errors_and_the_gateway_keeps_serving")[0];
    let chain = common::start(common::TESTFN_YAML, routing, &[]);
    let addr = chain.addr;

    let r = http::get(addr, "/nowhere");
    assert_eq!(
        (r.status, r.text().trim()),
        (404, "no route for GET /nowhere")
    );

    // 16 KiB buffers: the body room is a little less.
    let big = vec![b'x'; 17 * 1024];
    let r = http::post(addr, "/back/echo", &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("larger than"), "{}", r.text());

    // Declared too large: refused before the body is sent.
    let r = http::raw(
        addr,
        b"POST /back/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 413);

    // Chunked, growing past the buffer as it streams.
    let mut req = b"POST /back/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b'y'; 1024]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(http::raw(addr, &req).unwrap().status, 413);

    // A chunked body that fits is fine.
    let r = http::raw(
        addr,
        b"POST /back/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));

    // Garbage instead of a request line.
    let r = http::raw(addr, b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    assert_eq!(r.status, 400);

    // A header block larger than the gateway accepts.
    let mut req = b"GET /back/echo HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    req.extend_from_slice(&vec![b'a'; 100 * 1024]);
    req.extend_from_slice(b"\r\n\r\n");
    let r = http::raw(addr, &req).unwrap();
    assert_eq!(r.status, 431);

    // Headers that fit the gateway but not a pool buffer.
    let mut req = b"GET /back/echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: ".to_vec();
    req.extend_from_slice(&vec![b'a'; 20 * 1024]);
    req.extend_from_slice(b"\r\n\r\n");
    let r = http::raw(addr, &req).unwrap();
    assert_eq!(r.status, 431, "{}", r.text());
    assert!(r.text().contains("do not fit"), "{}", r.text());

    // A client that sends half a request and stalls does not hold anything: others are served.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(b"POST /back/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();

    // Keep-alive: several requests on one connection.
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for i in 0..3 {
        let body = format!("ping {i}");
        write!(
            conn,
            "POST /back/echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = conn.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with(&body), "{text}");
    }

    // Request headers reach the function; its headers come back.
    let r = http::raw(
        addr,
        b"POST /back/echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-spright\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .unwrap();
    assert_eq!(r.header("content-type"), Some("text/x-spright"));

    drop(stalled);
    chain.wait_pool_idle();
    chain.stop();
}

#[test]
fn h2c_requests_are_served() {
    let routing = common::modes("h2c_requests_are_served")[0];
    let chain = common::start(common::TESTFN_YAML, routing, &[]);
    let addr = chain.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(async move {
        use http_body_util::{BodyExt, Full};
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post(format!("http://{addr}/back/echo"))
            .body(Full::new(bytes::Bytes::from_static(b"over h2c")))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    assert_eq!(body.as_ref(), b"over h2c");
    chain.stop();
}

#[test]
fn clients_that_hang_up_leave_nothing_behind() {
    let routing = common::modes("clients_that_hang_up_leave_nothing_behind")[0];
    let chain = common::start(common::TESTFN_YAML, routing, &[]);
    for i in 0..20 {
        let mut c = TcpStream::connect(chain.addr).unwrap();
        if i % 2 == 0 {
            // Whole request, then gone while the chain works on it.
            c.write_all(
                b"POST /back/sleep?ms=300 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
            )
            .unwrap();
        } else {
            // Gone halfway through the body.
            c.write_all(b"POST /back/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        drop(c);
    }
    spright_e2e::wait_for("no request left in flight", Duration::from_secs(10), || {
        (chain.metric("spright_gateway_in_flight_requests") == 0).then_some(())
    });
    chain.wait_pool_idle();
    assert_eq!(http::post(chain.addr, "/back/echo", b"fine").text(), "fine");
    chain.stop();
}
