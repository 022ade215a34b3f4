//! The runtime in process: members on a fake router over a real pool in a temporary file.

use super::fake::{FakeEvents, FakeInbound, FakeRouter};
use super::*;
use crate::error::CallError;
use spright_core::chain::{Route, RoutingMode};
use spright_core::ids::InstanceId;
use spright_core::pool::PoolSpec;

const GW: Endpoint = Endpoint {
    function: GATEWAY,
    instance: InstanceId(0),
};
const FRONT: Endpoint = Endpoint {
    function: FnId(1),
    instance: InstanceId(0),
};
const BACK: Endpoint = Endpoint {
    function: FnId(2),
    instance: InstanceId(0),
};
/// Route 0 runs front then back; route 1 is front alone.
const SEQUENCE: u16 = 0;

struct Chain {
    _dir: tempfile::TempDir,
    pool: Arc<Pool>,
    router: Arc<FakeRouter>,
}

impl Chain {
    fn new() -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let spec = PoolSpec {
            buffer_count: 16,
            buffer_size: 1024,
        };
        let pool = Pool::create(&dir.path().join("t.pool"), spec, "t", 0o600).unwrap();
        Chain {
            _dir: dir,
            pool: Arc::new(pool),
            router: Arc::default(),
        }
    }

    fn member(&self, me: Endpoint) -> (Runtime, FakeInbound) {
        let route = |path: &str, sequence: Vec<u16>| Route {
            method: None,
            path: path.into(),
            sequence,
        };
        let info = MemberInfo {
            welcome: Welcome {
                abi_version: 1,
                chain: "t".into(),
                function: "f".into(),
                function_id: me.function.0,
                instance: me.instance.0,
                routing: RoutingMode::User,
                pool_path: self.pool.path().to_owned(),
                pool_tag: self.pool.tag(),
                rings_path: None,
                load_path: None,
                timeout_ms: 1000,
                routes: vec![route("/seq", vec![1, 2]), route("/front", vec![1])],
                functions: vec![("front".into(), 1), ("back".into(), 2)],
            },
            endpoint: me,
            pool: self.pool.clone(),
            load: Err("no board in these tests".into()),
        };
        let (link, inbound) = self.router.attach(me);
        let log = Logger::root(slog::Discard, slog::o!());
        (Runtime::new(&info, link, log), inbound)
    }

    fn all_free(&self) -> bool {
        let s = self.pool.stats();
        s.free == s.total
    }
}

/// A response of `status` with `body`, in a fresh buffer of `member`.
fn response(member: &Runtime, request_id: u64, status: u16, body: &[u8]) -> Response {
    let mut lease = member.lease(request_id).unwrap();
    lease.write_envelope(status, b"POST /x\n", body).unwrap();
    Response { lease }
}

/// A request with `body`, in a fresh buffer of `member`.
fn request(member: &Runtime, request_id: u64, body: &[u8]) -> Lease {
    let mut lease = member.lease(request_id).unwrap();
    lease.write_envelope(0, b"POST /x\n", body).unwrap();
    lease
}

fn trail(request_id: u64) -> Trail {
    Trail::start(request_id, 1, InstanceId(0))
}

/// `member` takes what is queued for it; returns the work among it.
fn pump(member: &Runtime, inbound: &mut FakeInbound) -> Vec<Work> {
    inbound
        .queued()
        .into_iter()
        .filter_map(|d| member.accept(d))
        .collect()
}

const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_call_gets_its_reply_and_every_buffer_comes_back() {
    let chain = Chain::new();
    let (front, mut front_in) = chain.member(FRONT);
    let (back, mut back_in) = chain.member(BACK);
    let mut answer = front
        .call(trail(7), FnId(2), request(&front, 7, b"ping"))
        .unwrap();
    assert_eq!(front.in_flight(), 1);

    let work = pump(&back, &mut back_in).pop().expect("back got the call");
    let caller = work.caller.expect("a call names its caller");
    assert_eq!((caller.function, work.trail.request_id), (FnId(1), 7));
    let body = Message::parse(work.lease.unwrap()).unwrap().body().to_vec();
    assert_eq!(body, b"ping");
    back.answer(
        work.trail,
        work.caller,
        Ok(response(&back, 7, 200, b"pong")),
    );

    assert!(pump(&front, &mut front_in).is_empty(), "a reply is no work");
    let reply = answer.outcome(SOON).await.expect("the reply");
    assert_eq!((reply.status(), reply.body()), (200, &b"pong"[..]));
    assert_eq!(front.in_flight(), 0);
    drop(reply);
    assert!(chain.all_free());
}

#[tokio::test]
async fn a_refused_call_fails_with_its_reason_and_its_buffer_back() {
    for reason in [
        RefuseReason::Forbidden,
        RefuseReason::NoDestination,
        RefuseReason::BadDescriptor,
        RefuseReason::Busy,
    ] {
        let chain = Chain::new();
        let (front, mut front_in) = chain.member(FRONT);
        chain.router.refuse(FnId(2), reason);
        let mut answer = front
            .call(trail(7), FnId(2), request(&front, 7, b"x"))
            .unwrap();
        pump(&front, &mut front_in);
        let failure = answer.outcome(SOON).await.unwrap_err();
        match &failure {
            Failure::Refused {
                function,
                reason: got,
                lease,
            } => {
                assert_eq!((*function, *got), (FnId(2), Some(reason)));
                assert!(lease.is_some(), "the buffer is ours again");
            }
            other => panic!("{reason:?}: {other:?}"),
        }
        let error = failure.call_error("back".into());
        match reason {
            RefuseReason::Busy => assert!(matches!(error, CallError::Busy { .. }), "{error:?}"),
            _ => assert!(
                matches!(error, CallError::Refused { reason: Some(r), .. } if r == reason),
                "{error:?}"
            ),
        }
        assert!(chain.all_free(), "{reason:?}: the refused buffer is freed");
    }
}

#[tokio::test]
async fn the_gateway_retries_a_request_refused_for_no_destination() {
    let chain = Chain::new();
    let (gw, mut gw_in) = chain.member(GW);
    let (front, mut front_in) = chain.member(FRONT);
    chain.router.refuse(FnId(1), RefuseReason::NoDestination);
    let mut answer = gw.open_request();
    let id = answer.key();
    let first = next_hop(&[1], Position::Entry).unwrap();
    let d = Trail::start(id, 1, GW.instance).to(Destination::Next(first));
    gw.send_lease(request(&gw, id, b"hi"), d).unwrap();
    pump(&gw, &mut gw_in);
    let Err(Failure::Refused {
        lease: Some(lease), ..
    }) = answer.outcome(SOON).await
    else {
        panic!("refused with the buffer back")
    };

    chain.router.deliver(FnId(1));
    answer.reopen();
    gw.send_lease(lease, d).unwrap();
    let work = pump(&front, &mut front_in).pop().unwrap();
    front.answer(
        work.trail,
        work.caller,
        Ok(response(&front, id, 200, b"ok")),
    );
    pump(&gw, &mut gw_in);
    assert_eq!(answer.outcome(SOON).await.unwrap().body(), b"ok");
    assert_eq!(gw.in_flight(), 0);
}

#[tokio::test]
async fn a_departure_fails_exactly_the_waits_it_affects() {
    let chain = Chain::new();
    let (front, _front_in) = chain.member(FRONT);
    let mut to_back_10 = front
        .call(trail(10), FnId(2), request(&front, 10, b""))
        .unwrap();
    let mut to_back_11 = front
        .call(trail(11), FnId(2), request(&front, 11, b""))
        .unwrap();
    let mut to_3 = front
        .call(trail(12), FnId(3), request(&front, 12, b""))
        .unwrap();
    let gone = |remaining, requests| Event::Gone {
        function: 2,
        instance: 0,
        remaining,
        requests,
    };

    // One of two instances left holding request 11: only that call fails.
    assert_eq!(front.on_event(gone(1, vec![99, 11])), 1);
    assert!(matches!(
        to_back_11.outcome(SOON).await,
        Err(Failure::Gone { function: FnId(2) })
    ));
    assert_eq!(front.in_flight(), 2);

    // The last instance left: every call to its function fails, and no other.
    assert_eq!(front.on_event(gone(0, vec![])), 1);
    let error = to_back_10
        .outcome(SOON)
        .await
        .unwrap_err()
        .call_error("back".into());
    assert!(matches!(error, CallError::Gone { .. }), "{error:?}");
    assert_eq!(front.in_flight(), 1);
    to_3.forget();
    assert_eq!(front.in_flight(), 0);

    // The gateway waits on requests, not on functions: a function leaving fails only the
    // requests it held part of.
    let (gw, _gw_in) = chain.member(GW);
    let mut held = gw.open_request();
    let elsewhere = gw.open_request();
    let event = Event::Gone {
        function: 1,
        instance: 0,
        remaining: 0,
        requests: vec![held.key()],
    };
    assert_eq!(gw.on_event(event), 1);
    let failure = held.outcome(SOON).await.unwrap_err();
    assert_eq!(failure.http_status(), 502);
    assert_eq!(
        failure.http_text(|f| gw.name_of(f)),
        "function front exited while handling the request"
    );
    assert_eq!(gw.in_flight(), 1);
    drop(elsewhere);
    assert_eq!(gw.in_flight(), 0, "a dropped wait is forgotten");
}

#[tokio::test]
async fn a_timed_out_call_is_forgotten_and_its_late_reply_freed() {
    let chain = Chain::new();
    let (front, mut front_in) = chain.member(FRONT);
    let (back, mut back_in) = chain.member(BACK);
    let mut answer = front
        .call(trail(7), FnId(2), request(&front, 7, b""))
        .unwrap();
    // Nothing is pumped: no answer can come.
    let failure = answer.outcome(Duration::from_millis(20)).await.unwrap_err();
    assert!(
        matches!(failure, Failure::Timeout { ms: 20 }),
        "{failure:?}"
    );
    assert!(matches!(
        failure.call_error("back".into()),
        CallError::Timeout { ms: 20, .. }
    ));
    assert_eq!(front.in_flight(), 0);

    let work = pump(&back, &mut back_in).pop().unwrap();
    drop(work.lease);
    back.answer(
        work.trail,
        work.caller,
        Ok(response(&back, 7, 200, b"late")),
    );
    pump(&front, &mut front_in);
    assert_eq!(front.rejected(), 0, "a late reply is no forgery");
    assert!(chain.all_free(), "the late reply's buffer is freed");
}

#[tokio::test]
async fn answers_that_are_not_the_awaited_one_are_ignored() {
    let chain = Chain::new();
    let (front, mut front_in) = chain.member(FRONT);
    let (back, mut back_in) = chain.member(BACK);
    let mut answer = front
        .call(trail(7), FnId(2), request(&front, 7, b""))
        .unwrap();
    let call = pump(&back, &mut back_in).pop().unwrap();
    let caller = call.caller.unwrap();

    // An unknown call id, a reply from a function that was not called, one for another request.
    let unknown = Caller {
        call_id: caller.call_id.wrapping_add(1),
        ..caller
    };
    back.answer(call.trail, Some(unknown), Ok(response(&back, 7, 200, b"x")));
    let (other, _) = chain.member(Endpoint::new(FnId(3), InstanceId(0)));
    other.answer(call.trail, call.caller, Ok(response(&other, 7, 200, b"x")));
    back.answer(trail(8), call.caller, Ok(response(&back, 8, 200, b"x")));
    // A forged reply naming the call but a buffer it does not hold (stale generation).
    let mut forged = call.trail.to(Destination::Caller(caller));
    let stale = back.lease(7).unwrap();
    chain.pool.describe(stale.buffer(), &mut forged);
    forged.generation = forged.generation.wrapping_sub(1);
    forged.src_fn = 2;
    chain.router.inject(FRONT, forged);
    drop(stale);

    assert!(pump(&front, &mut front_in).is_empty());
    assert_eq!(front.rejected(), 1, "only the forgery is rejected");
    assert_eq!(front.in_flight(), 1, "the call still waits for its reply");
    drop(call.lease);
    back.answer(
        call.trail,
        call.caller,
        Ok(response(&back, 7, 200, b"real")),
    );
    pump(&front, &mut front_in);
    assert_eq!(answer.outcome(SOON).await.unwrap().body(), b"real");
    assert!(chain.all_free());
}

#[tokio::test]
async fn a_sequence_goes_step_by_step_and_an_error_ends_it() {
    let chain = Chain::new();
    let (gw, mut gw_in) = chain.member(GW);
    let (front, mut front_in) = chain.member(FRONT);
    let (back, mut back_in) = chain.member(BACK);
    for (front_status, reaches_back) in [(200, true), (500, false)] {
        let mut answer = gw.open_request();
        let id = answer.key();
        let first = next_hop(&[1, 2], Position::Entry).unwrap();
        let d = Trail::start(id, SEQUENCE, GW.instance).to(Destination::Next(first));
        gw.send_lease(request(&gw, id, b"in"), d).unwrap();

        let step = pump(&front, &mut front_in).pop().unwrap();
        assert_eq!((step.trail.hops, step.caller), (0, None));
        front.answer(
            step.trail,
            None,
            Ok(response(&front, id, front_status, b"1")),
        );
        let back_work = pump(&back, &mut back_in).pop();
        assert_eq!(back_work.is_some(), reaches_back, "status {front_status}");
        if let Some(step) = back_work {
            assert_eq!(step.trail.hops, 1);
            back.answer(step.trail, None, Ok(response(&back, id, 201, b"2")));
        }
        pump(&gw, &mut gw_in);
        let reply = answer.outcome(SOON).await.unwrap();
        let expected = if reaches_back { 201 } else { front_status };
        assert_eq!(reply.status(), expected);
    }
    assert!(chain.all_free());
}

#[tokio::test]
async fn a_refused_forward_reaches_the_gateway_as_its_code() {
    for (reason, code, status) in [
        (RefuseReason::Busy, ReplyError::DownstreamBusy, 503),
        (
            RefuseReason::NoDestination,
            ReplyError::DownstreamUnavailable,
            502,
        ),
    ] {
        let chain = Chain::new();
        let (gw, mut gw_in) = chain.member(GW);
        let (front, mut front_in) = chain.member(FRONT);
        chain.router.refuse(FnId(2), reason);
        let mut answer = gw.open_request();
        let id = answer.key();
        let d = Trail::start(id, SEQUENCE, GW.instance).to(Destination::Next(Step {
            function: FnId(1),
            hops: 0,
        }));
        gw.send_lease(request(&gw, id, b""), d).unwrap();
        let step = pump(&front, &mut front_in).pop().unwrap();
        drop(step.lease);
        front.answer(step.trail, None, Ok(response(&front, id, 200, b"")));
        assert!(
            pump(&front, &mut front_in).is_empty(),
            "the refusal is handled"
        );
        pump(&gw, &mut gw_in);
        let failure = answer.outcome(SOON).await.unwrap_err();
        assert!(
            matches!(failure, Failure::Code(c) if c == code),
            "{failure:?}"
        );
        assert_eq!(failure.http_status(), status);
        assert_eq!(failure.retry_after(), status == 503);
        assert!(chain.all_free());
    }
}

#[tokio::test]
async fn a_call_that_cannot_be_sent_is_forgotten_and_its_buffer_freed() {
    let chain = Chain::new();
    let (front, _front_in) = chain.member(FRONT);
    chain.router.break_sends();
    assert!(front
        .call(trail(7), FnId(2), request(&front, 7, b""))
        .is_err());
    assert_eq!(front.in_flight(), 0);
    assert!(chain.all_free());
}

#[tokio::test]
async fn the_gateway_rejects_requests_and_functions_final_replies() {
    let chain = Chain::new();
    let (gw, mut gw_in) = chain.member(GW);
    let (front, mut front_in) = chain.member(FRONT);
    // A request for the gateway, and a final reply for a function: neither is theirs.
    let d = trail(5).to(Destination::Next(Step {
        function: GATEWAY,
        hops: 0,
    }));
    front.send_lease(request(&front, 5, b""), d).unwrap();
    gw.send_lease(
        request(&gw, 6, b""),
        trail(6).to(Destination::Caller(Caller {
            function: FnId(1),
            instance: InstanceId(0),
            call_id: 0,
        })),
    )
    .unwrap();
    assert!(pump(&gw, &mut gw_in).is_empty());
    assert!(pump(&front, &mut front_in).is_empty());
    assert_eq!((gw.rejected(), front.rejected()), (1, 1));
    assert!(chain.all_free(), "their buffers are taken and freed");
}

#[tokio::test]
async fn receive_hands_over_requests_until_the_data_plane_closes() {
    let chain = Chain::new();
    let (front, mut front_in) = chain.member(FRONT);
    let (gw, _gw_in) = chain.member(GW);
    for id in [1, 2] {
        let d = Trail::start(id, 1, GW.instance).to(Destination::Next(Step {
            function: FnId(1),
            hops: 0,
        }));
        gw.send_lease(request(&gw, id, b""), d).unwrap();
    }
    chain.router.close(FRONT);
    let mut got = Vec::new();
    front
        .receive(&mut front_in, |w| got.push(w.trail.request_id))
        .await
        .unwrap();
    assert_eq!(got, [1, 2]);

    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiting = front
        .call(trail(1), FnId(2), request(&front, 1, b""))
        .unwrap();
    events_tx
        .send(Event::Gone {
            function: 2,
            instance: 0,
            remaining: 0,
            requests: vec![],
        })
        .unwrap();
    drop(events_tx);
    let mut seen = 0;
    front
        .follow(&mut FakeEvents(events_rx), |_| seen += 1)
        .await;
    assert_eq!(seen, 1);
    assert!(matches!(
        waiting.outcome(SOON).await,
        Err(Failure::Gone { .. })
    ));
}

#[test]
fn one_table_says_what_each_reply_code_means_everywhere() {
    // docs/abi.md §3: codes 1..=5 are answered 500, 503, 502, 504 and 503 (503 with Retry-After).
    let codes = [
        (ReplyError::HandlerFailed, 500),
        (ReplyError::PoolExhausted, 503),
        (ReplyError::DownstreamUnavailable, 502),
        (ReplyError::DownstreamTimeout, 504),
        (ReplyError::DownstreamBusy, 503),
    ];
    for (code, status) in codes {
        let failure = Failure::from_code(code as u8);
        assert_eq!(failure.http_status(), status, "{code:?}");
        assert_eq!(failure.retry_after(), status == 503, "{code:?}");
        assert_eq!(failure.reply_code(), code, "a code passes on as itself");
        let text = failure.http_text(|_| "?");
        match failure.call_error("back".into()) {
            CallError::Failed { message, .. } => assert_eq!(message, text, "{code:?}"),
            other => panic!("{code:?}: {other:?}"),
        }
    }
    let unknown = Failure::from_code(9);
    assert_eq!(unknown.http_status(), 502);
    assert!(matches!(unknown, Failure::Malformed(_)));

    let refused = |reason| Failure::Refused {
        function: FnId(2),
        reason,
        lease: None,
    };
    let name = |_| "back";
    assert_eq!(refused(Some(RefuseReason::Busy)).http_status(), 503);
    assert!(refused(Some(RefuseReason::Busy)).retry_after());
    assert_eq!(
        refused(Some(RefuseReason::Busy)).http_text(name),
        "function back is busy (its queue is full)"
    );
    assert_eq!(
        refused(Some(RefuseReason::NoDestination)).http_status(),
        502
    );
    assert_eq!(
        refused(None).http_text(name),
        "function back is not registered"
    );
    assert_eq!(refused(Some(RefuseReason::Forbidden)).http_status(), 500);
    assert_eq!(
        refused(Some(RefuseReason::Busy)).reply_code(),
        ReplyError::DownstreamBusy
    );
    assert_eq!(
        refused(Some(RefuseReason::Forbidden)).reply_code(),
        ReplyError::DownstreamUnavailable
    );
    assert_eq!(Failure::Timeout { ms: 300 }.http_status(), 504);
    assert_eq!(
        Failure::Timeout { ms: 300 }.http_text(name),
        "the chain did not answer within 300 ms"
    );
}

#[tokio::test]
async fn a_member_anchors_its_timers_at_its_first_wait_with_one_task() {
    let chain = Chain::new();
    let (gateway, _inbound) = chain.member(GW);
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    assert!(gateway.anchor.get().is_none(), "anchored before any wait");
    let wait = gateway.open_request();
    assert!(
        gateway.anchor.get().is_some(),
        "the first wait starts the anchor"
    );
    assert_eq!(tasks(), before + 1);
    drop(wait);
    // Later waits keep the one anchor.
    let _again = gateway.open_request();
    gateway.anchor_timers(Some(Duration::from_secs(10)));
    assert_eq!(tasks(), before + 1);
    drop(_again);
    drop(gateway);
    tokio::time::timeout(SOON, async {
        while tasks() != before {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the anchor outlived the member's runtime");
}

#[test]
fn a_member_outside_a_tokio_runtime_opens_waits_without_an_anchor() {
    let chain = Chain::new();
    let (gateway, _inbound) = chain.member(GW);
    let _wait = gateway.open_request();
    assert!(gateway.anchor.get().is_none());
}
