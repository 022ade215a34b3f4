//! Membership's order of operations against a recording router, with a real pool.

use super::*;
use crate::sweep::tests::pool;
use spright_core::ids::GATEWAY;
use spright_core::pool::BufferRef;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Register(Endpoint),
    Unregister(Endpoint, u16),
    SetInstances(FnId, Vec<InstanceId>),
    Transit(u32),
    Drain(Endpoint),
}

/// A router that records what it is asked, in order, and refuses when told to.
#[derive(Default)]
struct Recorder {
    calls: RefCell<Vec<Call>>,
    refuse_sockets: bool,
    refuse_tables: bool,
    routed: HashMap<u32, Transit>,
    /// What its own queue held for a leaving instance (poll mode's ring).
    queued: BTreeSet<u64>,
}

impl Recorder {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.borrow_mut())
    }
}

impl MemberTable for Recorder {
    type Socket<'s> = ();
    type Kept = ();
    type Error = String;

    fn register(&mut self, endpoint: Endpoint, _: ()) -> Result<(), String> {
        self.calls.borrow_mut().push(Call::Register(endpoint));
        if self.refuse_sockets {
            return Err("no room in the sockhash".into());
        }
        Ok(())
    }

    fn unregister(&mut self, endpoint: Endpoint, port: u16) {
        self.calls
            .borrow_mut()
            .push(Call::Unregister(endpoint, port));
    }

    fn set_instances(&mut self, function: FnId, instances: &[InstanceId]) -> Result<(), String> {
        self.calls
            .borrow_mut()
            .push(Call::SetInstances(function, instances.to_vec()));
        if self.refuse_tables {
            return Err("map update failed".into());
        }
        Ok(())
    }

    fn transit(&self, index: u32) -> Option<Transit> {
        self.calls.borrow_mut().push(Call::Transit(index));
        self.routed.get(&index).copied()
    }

    fn drain(&self, gone: Endpoint, _pool: &Pool) -> BTreeSet<u64> {
        self.calls.borrow_mut().push(Call::Drain(gone));
        self.queued.clone()
    }
}

const F: FnId = FnId(1);

fn at(instance: u16) -> Endpoint {
    Endpoint::new(F, InstanceId(instance))
}

/// A member whose data socket has port `port`.
fn member(port: u16) -> (Member, Arc<Notify>) {
    let stop = Arc::new(Notify::new());
    let m = Member {
        pid: 1000 + port as u32,
        port,
        events: mpsc::unbounded_channel().0,
        stop: stop.clone(),
        withdrawn: false,
    };
    (m, stop)
}

fn join(members: &mut Members, router: &mut Recorder, port: u16) -> Result<Endpoint, JoinError> {
    join_in(members, router, port, RoutingMode::Sockmap)
}

fn join_in(
    members: &mut Members,
    router: &mut Recorder,
    port: u16,
    routing: RoutingMode,
) -> Result<Endpoint, JoinError> {
    let (m, _) = member(port);
    members
        .join(router, F, "parse", routing, (), m)
        .map(|(e, ())| e)
}

/// A buffer of request `request` on its way from the gateway to `F`.
fn in_transit(pool: &Pool, request: u64) -> BufferRef {
    let gw = Endpoint::new(GATEWAY, InstanceId(0));
    let b = pool.alloc(gw, request).unwrap();
    assert!(pool.mark_in_transit(b, gw, F));
    b
}

#[test]
fn a_socket_is_registered_before_its_instance_is_routed_to() {
    let (mut members, mut router) = (Members::default(), Recorder::default());
    assert_eq!(join(&mut members, &mut router, 7001), Ok(at(0)));
    assert_eq!(join(&mut members, &mut router, 7002), Ok(at(1)));
    assert_eq!(
        router.take(),
        [
            Call::Register(at(0)),
            Call::SetInstances(F, vec![InstanceId(0)]),
            Call::Register(at(1)),
            Call::SetInstances(F, vec![InstanceId(0), InstanceId(1)]),
        ]
    );
    assert_eq!(members.pids()[&F.0], [8001, 8002]);
}

#[test]
fn a_refused_instance_table_rolls_the_join_back() {
    let (mut members, mut router) = (Members::default(), Recorder::default());
    router.refuse_tables = true;
    let e = join(&mut members, &mut router, 7001).unwrap_err();
    assert_eq!(e, JoinError::Instance("map update failed".into()));
    assert_eq!(
        e.to_string(),
        "router refused the instance: map update failed"
    );
    assert_eq!(
        router.take(),
        [
            Call::Register(at(0)),
            Call::SetInstances(F, vec![InstanceId(0)]),
            Call::Unregister(at(0), 7001),
        ]
    );
    assert!(members.instance_ids().values().all(Vec::is_empty));
    // The number is free again.
    router.refuse_tables = false;
    assert_eq!(join(&mut members, &mut router, 7002), Ok(at(0)));
}

#[test]
fn a_refused_socket_leaves_nothing_behind() {
    let (mut members, mut router) = (Members::default(), Recorder::default());
    router.refuse_sockets = true;
    let e = join(&mut members, &mut router, 7001).unwrap_err();
    assert_eq!(
        e.to_string(),
        "router refused the socket: no room in the sockhash"
    );
    assert_eq!(
        router.take(),
        [Call::Register(at(0))],
        "routed to a socket it does not have"
    );
    assert!(members.pids().values().all(Vec::is_empty));
}

#[test]
fn the_lowest_free_number_is_given_out() {
    let (_dir, pool) = pool();
    let (mut members, mut router) = (Members::default(), Recorder::default());
    for port in [7000, 7001, 7002] {
        join(&mut members, &mut router, port).unwrap();
    }
    members.leave(&mut router, &pool, at(1));
    assert_eq!(join(&mut members, &mut router, 7003), Ok(at(1)));
    assert_eq!(join(&mut members, &mut router, 7004), Ok(at(3)));
}

#[test]
fn a_function_at_its_limit_is_refused_by_name() {
    let (mut members, mut router) = (Members::default(), Recorder::default());
    let limit = max_instances(RoutingMode::Poll);
    for i in 0..limit {
        assert_eq!(
            join_in(&mut members, &mut router, 7000 + i, RoutingMode::Poll),
            Ok(at(i))
        );
    }
    router.take();
    let e = join_in(&mut members, &mut router, 7100, RoutingMode::Poll).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("function parse already has {limit} instances, the most poll routing serves")
    );
    assert!(
        router.take().is_empty(),
        "a refused instance reached the router"
    );
    assert!(max_instances(RoutingMode::Sockmap) > limit);
}

#[test]
fn shutting_down_stops_every_member_and_refuses_newcomers() {
    let (mut members, mut router) = (Members::default(), Recorder::default());
    let (m, stop) = member(7001);
    members
        .join(&mut router, F, "parse", RoutingMode::User, (), m)
        .unwrap();
    members.shut_down();
    assert!(members.is_shutting_down());
    router.take();
    assert_eq!(
        join(&mut members, &mut router, 7002),
        Err(JoinError::ShuttingDown)
    );
    assert!(router.take().is_empty());
    // The member's task was told to end (the permit waits for it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), stop.notified())
            .await
            .expect("the member was not told to stop");
    });
}

#[test]
fn a_leaving_instance_is_unrouted_then_unregistered_then_swept() {
    let (_dir, pool) = pool();
    let (mut members, mut router) = (Members::default(), Recorder::default());
    join(&mut members, &mut router, 7000).unwrap();
    join(&mut members, &mut router, 7001).unwrap();
    router.take();
    // Request 10: held by the leaving instance. Request 11: routed to it, not yet claimed.
    // Request 12: held by the other instance.
    pool.alloc(at(0), 10).unwrap();
    let routed = in_transit(&pool, 11);
    router.routed.insert(
        routed.index,
        Transit {
            generation: routed.generation,
            to: at(0),
        },
    );
    pool.alloc(at(1), 12).unwrap();
    // Request 13: on its way to the function with no record of which instance; the other
    // instance may still receive it.
    let unrecorded = in_transit(&pool, 13);

    let left = members.leave(&mut router, &pool, at(0));
    assert_eq!(
        router.take(),
        [
            Call::SetInstances(F, vec![InstanceId(1)]),
            Call::Unregister(at(0), 7000),
            Call::Transit(routed.index),
            Call::Transit(unrecorded.index),
            Call::Drain(at(0)),
        ]
    );
    assert_eq!(left.requests.into_iter().collect::<Vec<_>>(), [10, 11]);
    assert_eq!(left.remaining, 1);
    assert_eq!(left.member.map(|m| m.pid), Some(8000));
    assert!(left.table_error.is_none());
    assert_eq!(
        pool.stats().in_use(),
        2,
        "the other instance's buffer or the one still on its way to it was swept"
    );
    assert_eq!(members.instance_ids()[&F.0], [InstanceId(1)]);
}

#[test]
fn the_last_instance_leaving_takes_what_was_on_its_way_and_its_queue() {
    let (_dir, pool) = pool();
    let (mut members, mut router) = (Members::default(), Recorder::default());
    join(&mut members, &mut router, 7000).unwrap();
    router.take();
    // On its way to the function, with no record of which instance: nobody is left to take it.
    in_transit(&pool, 20);
    router.queued.insert(21);
    let left = members.leave(&mut router, &pool, at(0));
    assert_eq!(router.take()[0], Call::SetInstances(F, vec![]));
    assert_eq!(left.requests.into_iter().collect::<Vec<_>>(), [20, 21]);
    assert_eq!(left.remaining, 0);
    assert_eq!(pool.stats().in_use(), 0);
}

#[test]
fn a_refused_table_update_on_leaving_still_unregisters_and_sweeps() {
    let (_dir, pool) = pool();
    let (mut members, mut router) = (Members::default(), Recorder::default());
    join(&mut members, &mut router, 7000).unwrap();
    router.take();
    pool.alloc(at(0), 30).unwrap();
    router.refuse_tables = true;
    let left = members.leave(&mut router, &pool, at(0));
    assert_eq!(left.table_error.as_deref(), Some("map update failed"));
    assert_eq!(
        router.take(),
        [
            Call::SetInstances(F, vec![]),
            Call::Unregister(at(0), 7000),
            Call::Drain(at(0)),
        ]
    );
    assert_eq!(left.requests.into_iter().collect::<Vec<_>>(), [30]);
    assert!(members.pids().values().all(Vec::is_empty));
}

#[test]
fn leaving_an_instance_that_never_joined_unregisters_nothing() {
    let (_dir, pool) = pool();
    let (mut members, mut router) = (Members::default(), Recorder::default());
    join(&mut members, &mut router, 7000).unwrap();
    router.take();
    let left = members.leave(&mut router, &pool, at(3));
    assert!(left.member.is_none());
    assert_eq!(left.remaining, 1);
    let calls = router.take();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Unregister(..))),
        "{calls:?}"
    );
    assert_eq!(calls[0], Call::SetInstances(F, vec![InstanceId(0)]));
}

#[test]
fn a_withdrawn_instance_is_unrouted_but_stays_registered_and_the_last_one_is_kept() {
    let (_dir, pool) = pool();
    let (mut members, mut router) = (Members::default(), Recorder::default());
    join(&mut members, &mut router, 7000).unwrap();
    join(&mut members, &mut router, 7001).unwrap();
    router.take();
    assert_eq!(members.withdraw(&mut router, at(0)), Ok(true));
    assert_eq!(router.take(), [Call::SetInstances(F, vec![InstanceId(1)])]);
    // Still registered: its socket stays for what is addressed to it, its number is taken.
    assert_eq!(members.instance_ids()[&F.0], [InstanceId(0), InstanceId(1)]);
    assert_eq!(join(&mut members, &mut router, 7002), Ok(at(2)));
    assert_eq!(
        router.take(),
        [
            Call::Register(at(2)),
            Call::SetInstances(F, vec![InstanceId(1), InstanceId(2)]),
        ],
        "a newcomer does not route to the withdrawn instance again"
    );
    // Asking twice changes nothing more.
    assert_eq!(members.withdraw(&mut router, at(0)), Ok(true));
    assert_eq!(router.take(), []);
    // The last routed instance is kept routed: the function's requests must find one.
    assert_eq!(members.withdraw(&mut router, at(1)), Ok(true));
    assert_eq!(members.withdraw(&mut router, at(2)), Ok(false));
    router.take();
    // Leaving after withdrawing: the table it is left out of stays as it was.
    let left = members.leave(&mut router, &pool, at(0));
    assert_eq!(left.remaining, 2);
    assert_eq!(router.take()[0], Call::SetInstances(F, vec![InstanceId(2)]));
    // A refused table update takes the withdrawal back.
    router.refuse_tables = true;
    join(&mut members, &mut router, 7003).unwrap_err();
    router.refuse_tables = false;
    join(&mut members, &mut router, 7003).unwrap();
    router.refuse_tables = true;
    assert!(members.withdraw(&mut router, at(0)).is_err());
    router.refuse_tables = false;
    router.take();
    assert_eq!(members.withdraw(&mut router, at(2)), Ok(true));
    assert_eq!(router.take(), [Call::SetInstances(F, vec![InstanceId(0)])]);
}

#[test]
fn withdrawn_instances_are_routed_again_when_the_last_routed_one_leaves() {
    let (_dir, pool) = pool();
    let (mut members, mut router) = (Members::default(), Recorder::default());
    join(&mut members, &mut router, 7000).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let m = Member {
        pid: 9001,
        port: 7001,
        events: tx,
        stop: Arc::new(Notify::new()),
        withdrawn: false,
    };
    members
        .join(&mut router, F, "f", RoutingMode::Sockmap, (), m)
        .unwrap();
    assert_eq!(members.withdraw(&mut router, at(1)), Ok(true));
    router.take();
    // The routed one dies while instance 1 drains.
    members.leave(&mut router, &pool, at(0));
    assert_eq!(router.take()[0], Call::SetInstances(F, vec![InstanceId(1)]));
    assert_eq!(rx.try_recv(), Ok(Event::Withdrawn { withdrawn: false }));
}
