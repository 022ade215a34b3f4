use super::*;
use containerd_shim::api;
use containerd_shim::protos::protobuf::Message;

fn legacy_inputs() -> LegacyInputs {
    LegacyInputs {
        id: "c1".into(),
        namespace: "default".into(),
        grpc_address: "/run/containerd/containerd.sock".into(),
        publish_binary: "/usr/bin/containerd".into(),
        debug: false,
        ttrpc_address: Some("/run/containerd/containerd.sock.ttrpc".into()),
    }
}

fn runc_options(systemd: bool) -> Any {
    let mut o = api::Options::new();
    o.systemd_cgroup = systemd;
    let mut any = Any::new();
    any.type_url = "containerd.runc.v1.Options".into();
    any.value = o.write_to_bytes().unwrap();
    any
}

fn extension(any: &Any) -> Vec<u8> {
    let any_bytes = any.write_to_bytes().unwrap();
    let mut extension = Vec::new();
    let mut e = CodedOutputStream::vec(&mut extension);
    e.write_bytes(1, &any_bytes).unwrap();
    e.flush().unwrap();
    drop(e);
    extension
}

/// A `BootstrapParams` as containerd 2.3 writes it (field order and types of bootstrap.proto).
fn bootstrap_params(log_level: i32, options: Option<&Any>, socket_dir: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = CodedOutputStream::vec(&mut out);
        w.write_string(1, "c23").unwrap();
        w.write_string(2, "k8s.io").unwrap();
        if log_level != 0 {
            w.write_int32(3, log_level).unwrap();
        }
        w.write_string(4, "v2.3.7").unwrap();
        w.write_string(5, "/run/containerd/containerd.sock.ttrpc")
            .unwrap();
        w.write_string(6, "/run/containerd/containerd.sock")
            .unwrap();
        w.write_string(7, "/usr/local/bin/containerd").unwrap();
        // An extension of another kind first (containerd may add more): skipped.
        let mut other = Any::new();
        other.type_url = "containerd.io/nri.v1.PluginConfig".into();
        w.write_bytes(8, &extension(&other)).unwrap();
        w.write_bytes(8, b"\x0a\x02\xff\xff").unwrap(); // one this build cannot read
        if let Some(any) = options {
            w.write_bytes(8, &extension(any)).unwrap();
        }
        if let Some(dir) = socket_dir {
            w.write_string(9, dir).unwrap();
        }
        // A field a later containerd might add: skipped.
        w.write_string(42, "from the future").unwrap();
        w.flush().unwrap();
    }
    out
}

#[test]
fn empty_stdin_is_the_legacy_protocol() {
    let r = read_start_request(&[], &legacy_inputs()).unwrap();
    assert_eq!(r.protocol, Protocol::Legacy);
    assert_eq!(r.id, "c1");
    assert_eq!(r.ttrpc_address, "/run/containerd/containerd.sock.ttrpc");
    assert_eq!(r.options, None);
}

#[test]
fn runtime_options_on_stdin_are_the_legacy_protocol() {
    let any = runc_options(true);
    let r = read_start_request(&any.write_to_bytes().unwrap(), &legacy_inputs()).unwrap();
    assert_eq!(r.protocol, Protocol::Legacy);
    assert_eq!(r.options, Some(any));
}

#[test]
fn legacy_start_needs_containerds_flags_and_ttrpc_address() {
    let mut inputs = legacy_inputs();
    inputs.ttrpc_address = None;
    assert_eq!(
        read_start_request(&[], &inputs),
        Err(HandshakeError::LegacyIncomplete("TTRPC_ADDRESS"))
    );
    let mut inputs = legacy_inputs();
    inputs.namespace.clear();
    assert_eq!(
        read_start_request(&[], &inputs),
        Err(HandshakeError::LegacyIncomplete("-namespace"))
    );
}

#[test]
fn bootstrap_params_are_read_in_full() {
    let any = runc_options(true);
    let stdin = bootstrap_params(-4, Some(&any), Some("/run/c23/s"));
    // The legacy flags may be absent or stale: the bootstrap message wins.
    let r = read_start_request(&stdin, &LegacyInputs::default()).unwrap();
    assert_eq!(r.protocol, Protocol::Bootstrap);
    assert_eq!(r.id, "c23");
    assert_eq!(r.namespace, "k8s.io");
    assert_eq!(r.containerd_version.as_deref(), Some("v2.3.7"));
    assert_eq!(r.ttrpc_address, "/run/containerd/containerd.sock.ttrpc");
    assert_eq!(r.grpc_address, "/run/containerd/containerd.sock");
    assert_eq!(r.containerd_binary, "/usr/local/bin/containerd");
    assert!(r.debug, "log level debug (-4) turns debug on");
    assert_eq!(r.socket_dir.as_deref(), Some("/run/c23/s"));
    assert_eq!(r.options, Some(any));
}

#[test]
fn bootstrap_params_without_options_or_debug() {
    let r = read_start_request(&bootstrap_params(0, None, None), &legacy_inputs()).unwrap();
    assert_eq!(r.protocol, Protocol::Bootstrap);
    assert!(!r.debug);
    assert_eq!(r.options, None);
    assert_eq!(r.socket_dir, None);
    // Warn (4) is not debug.
    let r = read_start_request(&bootstrap_params(4, None, None), &legacy_inputs()).unwrap();
    assert!(!r.debug);
}

#[test]
fn bootstrap_params_without_an_address_name_what_is_missing() {
    let mut out = Vec::new();
    {
        let mut w = CodedOutputStream::vec(&mut out);
        w.write_string(1, "c23").unwrap();
        w.write_string(2, "k8s.io").unwrap();
        w.write_string(4, "v2.3.7").unwrap();
        w.flush().unwrap();
    }
    assert_eq!(
        read_start_request(&out, &legacy_inputs()),
        Err(HandshakeError::BootstrapIncomplete("ttrpc address"))
    );
}

#[test]
fn garbage_on_stdin_is_an_unknown_protocol_not_a_guess() {
    for garbage in [
        &b"{\"instance_id\": \"c1\"}"[..],
        &[0x0a, 0x05, b'a'][..], // a length past the end
        &[0xff; 12][..],         // a varint that never ends
    ] {
        let err = read_start_request(garbage, &legacy_inputs()).unwrap_err();
        assert!(
            matches!(err, HandshakeError::UnknownProtocol { len, .. } if len == garbage.len()),
            "{garbage:?}: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("neither runtime options") && message.contains("2.3"),
            "{message}"
        );
    }
}

#[test]
fn the_bootstrap_result_is_what_containerd_parses() {
    let bytes = bootstrap_result("unix:///run/containerd/s/abc");
    let fields = parse_fields(&bytes).unwrap();
    assert!(matches!(fields[0], (1, Wire::Varint(3))));
    assert!(
        matches!(fields[1], (2, Wire::Bytes(a)) if a == b"unix:///run/containerd/s/abc"),
        "{fields:?}"
    );
    assert!(matches!(fields[2], (3, Wire::Bytes(b"ttrpc"))));
}

#[test]
fn a_plain_address_is_not_mistaken_for_protobuf() {
    // containerd 2.3 first tries to read the answer as a BootstrapResult and falls back to a
    // plain address; the legacy answer must fail the first reading.
    assert!(parse_fields(b"unix:///run/containerd/s/0123456789abcdef").is_err());
}
