use super::*;

const GOOD: &str = r#"
chain: demo
pool:
  buffers: 128
  buffer_size: 64KiB
gateway:
  listen: 127.0.0.1:9000
  timeout: 2s
functions:
  - name: parse
    id: 1
    command: [spright-demo-parse]
  - name: transform
    id: 2
    instances: 2
  - name: render
    id: 3
    calls: [transform]
routes:
  - method: post
    path: /render
    sequence: [parse, transform, render]
  - path: /
    function: render
"#;

#[test]
fn a_good_chain_loads() {
    let c = Chain::parse(GOOD, "good.yaml").unwrap();
    assert_eq!(c.name, "demo");
    assert_eq!(c.routing, RoutingMode::Sockmap);
    assert_eq!(c.pool.buffer_size, 65536);
    assert_eq!(c.timeout_ms, 2000);
    assert_eq!(c.routes[0].method.as_deref(), Some("POST"));
    assert_eq!(c.routes[0].sequence, vec![1, 2, 3]);
    assert_eq!(c.routes[1].sequence, vec![3]);
    assert_eq!(c.function("transform").unwrap().instances, 2);
    assert_eq!(c.function("render").unwrap().calls, vec![2]);
}

#[test]
fn the_allow_list_is_derived_from_routes_and_calls() {
    let c = Chain::parse(GOOD, "good.yaml").unwrap();
    let allow = c.allow_list();
    let expected: BTreeSet<(u16, u16)> = [
        (0, 1), // gateway -> entry of /render
        (0, 3), // gateway -> entry of /
        (1, 2),
        (2, 3), // the sequence
        (1, 0),
        (2, 0),
        (3, 0), // replies
        (3, 2),
        (2, 3), // render calls transform, and its reply
    ]
    .into_iter()
    .collect();
    assert_eq!(allow, expected);
    assert!(!allow.contains(&(1, 3)), "parse may not skip transform");
    assert!(!allow.contains(&(2, 1)));
}

/// Replaces `from` in the good file by `to` and returns the error message.
fn error_after(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "test edit {from:?} does not apply");
    let text = GOOD.replacen(from, to, 1);
    Chain::parse(&text, "bad.yaml").unwrap_err().to_string()
}

#[test]
fn bad_chains_name_the_field_and_the_problem() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("chain: demo", "chain: Demo_1", &["chain", "lowercase"]),
        (
            "  buffers: 128",
            "  buffers: 128\n  colour: blue",
            &["unknown field `colour`"],
        ),
        ("  buffers: 128", "  buffers: 0", &["pool", "at least 1"]),
        (
            "  buffers: 128",
            "  buffers: 128\n  queue_limit: 0",
            &["pool.queue_limit", "1..=65536"],
        ),
        (
            "buffer_size: 64KiB",
            "buffer_size: 100",
            &["pool", "buffer_size 100"],
        ),
        (
            "buffer_size: 64KiB",
            "buffer_size: 64 parsecs",
            &["unknown size unit"],
        ),
        ("timeout: 2s", "timeout: 2", &["needs a unit"]),
        (
            "listen: 127.0.0.1:9000",
            "listen: nowhere",
            &["gateway.listen", "address"],
        ),
        (
            "    id: 2",
            "    id: 1",
            &["functions[1].id", "already used by function \"parse\""],
        ),
        (
            "    id: 2",
            "    id: 0",
            &["functions[1].id", "reserved for the gateway"],
        ),
        (
            "    id: 2",
            "    id: 5000",
            &["functions[1].id", "over the limit"],
        ),
        (
            "  - name: transform",
            "  - name: parse",
            &["functions[1].name", "duplicate"],
        ),
        (
            "calls: [transform]",
            "calls: [nobody]",
            &["functions[2].calls[0]", "\"nobody\" is not defined"],
        ),
        (
            "calls: [transform]",
            "calls: [render]",
            &["cannot call itself"],
        ),
        ("instances: 2", "instances: 0", &["functions[1].instances"]),
        (
            "sequence: [parse, transform, render]",
            "sequence: [parse, ghost]",
            &["routes[0].sequence[1]", "\"ghost\" is not defined"],
        ),
        (
            "sequence: [parse, transform, render]",
            "sequence: []",
            &["routes[0].sequence", "at least one"],
        ),
        (
            "    path: /render",
            "    path: render",
            &["routes[0].path", "start with '/'"],
        ),
        (
            "  - method: post",
            "  - method: \"p o s t\"",
            &["routes[0].method"],
        ),
        (
            "    function: render",
            "    function: render\n    sequence: [parse]",
            &["routes[1]", "not both"],
        ),
        (
            "    function: render",
            "",
            &["routes[1]", "needs a function or a sequence"],
        ),
        (
            "  - path: /\n",
            "  - method: POST\n    path: /render\n",
            &["duplicate route POST /render"],
        ),
        ("pool:", "pool: [", &["bad.yaml"]),
    ];
    for (from, to, needles) in cases {
        let msg = error_after(from, to);
        for n in *needles {
            assert!(
                msg.contains(n),
                "editing {from:?} -> {to:?}: {msg:?} lacks {n:?}"
            );
        }
        assert!(
            msg.starts_with("bad.yaml"),
            "{msg:?} does not name the file"
        );
    }
}

#[test]
fn missing_sections_are_reported() {
    let msg = Chain::parse("chain: x\n", "f.yaml")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing field `pool`"), "{msg}");
    let msg = Chain::parse(
        "chain: x\npool: {buffers: 4, buffer_size: 4096}\nfunctions: []\nroutes: []\n",
        "f.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("functions") && msg.contains("at least one function"),
        "{msg}"
    );
}

#[test]
fn poll_routing_is_parsed_and_limits_instances() {
    let poll = GOOD.replace("chain: demo", "chain: demo\nrouting: poll");
    assert_eq!(
        Chain::parse(&poll, "poll.yaml").unwrap().routing,
        RoutingMode::Poll
    );
    assert_eq!("poll".parse::<RoutingMode>(), Ok(RoutingMode::Poll));
    assert_eq!(RoutingMode::Poll.to_string(), "poll");
    let e = Chain::parse(&poll.replace("instances: 2", "instances: 9"), "poll.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("functions[1].instances") && e.contains("poll"),
        "{e}"
    );
    // Other modes allow more.
    Chain::parse(&GOOD.replace("instances: 2", "instances: 9"), "good.yaml").unwrap();
}

#[test]
fn eproxy_is_auto_unless_the_gateway_section_says() {
    assert_eq!(
        Chain::parse(GOOD, "good.yaml").unwrap().eproxy,
        EproxyMode::Auto
    );
    for (word, mode) in [("on", EproxyMode::On), ("off", EproxyMode::Off)] {
        let text = GOOD.replace("timeout: 2s", &format!("timeout: 2s\n  eproxy: {word}"));
        assert_eq!(Chain::parse(&text, "e.yaml").unwrap().eproxy, mode);
    }
    let e = Chain::parse(
        &GOOD.replace("timeout: 2s", "timeout: 2s\n  eproxy: yes-please"),
        "e.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("eproxy") || e.contains("unknown variant"), "{e}");
}

#[test]
fn instances_may_follow_load_within_bounds() {
    let scaled = GOOD.replace(
        "instances: 2",
        "instances: {min: 2, max: 6, target_concurrency: 4, window: 10s}",
    );
    let c = Chain::parse(&scaled, "s.yaml").unwrap();
    let f = &c.functions[1];
    assert_eq!(f.instances, 2, "starts at its minimum");
    let s = f.scaling.unwrap();
    assert_eq!(
        (s.min, s.max, s.target_concurrency, s.window_ms),
        (2, 6, 4, 10_000)
    );
    assert_eq!(s.panic_window(), std::time::Duration::from_secs(1));
    assert_eq!(c.functions[0].scaling, None);
    // Defaults: min 1, target 10, window 60 s.
    let c = Chain::parse(
        &GOOD.replace("instances: 2", "instances: {max: 3}"),
        "d.yaml",
    )
    .unwrap();
    let s = c.functions[1].scaling.unwrap();
    assert_eq!(
        (s.min, s.max, s.target_concurrency, s.window_ms),
        (1, 3, 10, 60_000)
    );
    assert_eq!(c.functions[1].instances, 1);

    for (given, needle) in [
        ("{min: 1}", "missing field `max`"),
        ("{max: 3, colour: red}", "unknown field `colour`"),
        ("{min: 0, max: 3}", "functions[1].instances.min"),
        ("{min: 0, max: 3}", "scale to zero"),
        ("{min: 4, max: 3}", "below min"),
        ("{max: 3, target_concurrency: 0}", "target_concurrency"),
        ("{max: 3, window: 1s}", "outside 6s"),
        ("{max: 65}", "functions[1].instances.max"),
        ("-1", "not a count"),
    ] {
        let e = Chain::parse(
            &GOOD.replace("instances: 2", &format!("instances: {given}")),
            "b.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(needle), "{given}: {e:?} lacks {needle:?}");
    }
    let poll = scaled
        .replace("max: 6", "max: 60")
        .replace("chain: demo", "chain: demo\nrouting: poll");
    let e = Chain::parse(&poll, "p.yaml").unwrap_err().to_string();
    assert!(e.contains("instances.max") && e.contains("poll"), "{e}");
}
