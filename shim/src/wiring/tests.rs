use super::*;
use serde_json::json;
use spright_core::chain::Chain;
use spright_core::manifest::{ManifestFunction, ManifestPool};

/// A runtime root with chain "shop" (functions cart and ads) published in it (the Task
/// service's tests use it too).
pub(crate) fn runtime_root() -> tempfile::TempDir {
    runtime_root_routing(RoutingMode::Sockmap)
}

fn runtime_root_routing(routing: RoutingMode) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), &ChainKey::chain("shop"), routing);
    root
}

/// Publishes chain "shop" under `key` in `root`, as its pool-manager would.
fn publish(root: &Path, key: &ChainKey, routing: RoutingMode) {
    let dir = spright_core::manifest::runtime_dir(root, key);
    std::fs::create_dir_all(dir.join("fn")).unwrap();
    let chain = Chain::parse(
        "chain: shop\npool: {buffers: 4, buffer_size: 4KiB}\nfunctions: [{name: cart, id: 1}, {name: ads, id: 2}]\nroutes: [{path: /, function: cart}]\n",
        "t",
    )
    .unwrap();
    let pool = spright_core::manifest::pool_file(root, key);
    std::fs::write(&pool, b"").unwrap();
    std::fs::write(spright_core::load::load_path(&pool), b"").unwrap();
    if routing == RoutingMode::Poll {
        std::fs::write(rings_path(&pool), b"").unwrap();
    }
    let functions = ["cart", "ads"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let socket = dir.join("fn").join(format!("{name}.sock"));
            // The socket file stays after the listener is dropped, as a pool-manager's would.
            drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
            ManifestFunction {
                name: name.to_string(),
                id: i as u16 + 1,
                socket,
            }
        })
        .collect();
    drop(std::os::unix::net::UnixListener::bind(dir.join("control.sock")).unwrap());
    let manifest = Manifest {
        abi_version: 1,
        chain: "shop".into(),
        replica: key.replica.clone(),
        routing,
        runtime_dir: dir.clone(),
        pool: ManifestPool {
            path: pool,
            pool_id: 1,
            buffers: 4,
            buffer_size: 4096,
            total_size: 0,
        },
        gateway_socket: dir.join("gateway.sock"),
        control_socket: dir.join("control.sock"),
        functions,
        spec: chain,
        pid: 1,
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
}

/// Holds `key`'s lock as its live pool-manager would, for as long as the file lives.
fn hold(root: &Path, key: &ChainKey) -> std::fs::File {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::File::create(spright_core::manifest::lock_file(root, key)).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    file
}

fn pairs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn no_annotations_is_a_plain_container() {
    let root = runtime_root();
    let other = pairs(&[("io.kubernetes.cri.sandbox-id", "abc")]);
    assert_eq!(plan(&other, root.path()).unwrap(), Plan::Plain);
}

#[test]
fn a_declared_function_gets_the_pool_the_socket_and_the_environment() {
    let root = runtime_root();
    let p = plan(&pairs(&[(CHAIN, "shop"), (FUNCTION, "ads")]), root.path()).unwrap();
    let Plan::Function(w) = p else {
        panic!("{p:?}")
    };
    assert_eq!(w.socket, root.path().join("shop/fn/ads.sock"));

    let mut spec = json!({
        "ociVersion": "1.1.0",
        "process": {"args": ["/bin/ads"], "env": ["PATH=/bin", "SPRIGHT_POOL=/old"]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "someFutureField": {"kept": true},
    });
    apply(&mut spec, &w);
    apply(&mut spec, &w); // idempotent: no duplicate mounts or variables

    let mounts = spec["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 4, "{mounts:?}");
    let load = mounts
        .iter()
        .find(|m| m["destination"] == LOAD_IN_CONTAINER)
        .unwrap();
    assert_eq!(
        load["source"],
        json!(root.path().join("spright-shop.pool.load"))
    );
    // The SDK finds the load board beside the pool it is given.
    assert_eq!(
        spright_core::load::load_path(Path::new(POOL_IN_CONTAINER)),
        Path::new(LOAD_IN_CONTAINER)
    );
    let pool = mounts
        .iter()
        .find(|m| m["destination"] == POOL_IN_CONTAINER)
        .unwrap();
    assert_eq!(pool["source"], json!(root.path().join("spright-shop.pool")));
    assert_eq!(pool["type"], "bind");
    assert!(pool["options"]
        .as_array()
        .unwrap()
        .contains(&json!("nosuid")));
    assert_eq!(
        spec["process"]["env"],
        json!([
            "PATH=/bin",
            "SPRIGHT_CHAIN=shop",
            "SPRIGHT_FUNCTION=ads",
            format!("SPRIGHT_POOL={POOL_IN_CONTAINER}"),
            format!("SPRIGHT_SOCKET={SOCKET_IN_CONTAINER}"),
        ])
    );
    assert_eq!(
        spec["someFutureField"],
        json!({"kept": true}),
        "unknown fields survive"
    );
}

#[test]
fn a_function_of_a_poll_chain_also_gets_the_rings_beside_the_pool() {
    let root = runtime_root_routing(RoutingMode::Poll);
    let p = plan(&pairs(&[(CHAIN, "shop"), (FUNCTION, "ads")]), root.path()).unwrap();
    let Plan::Function(w) = p else {
        panic!("{p:?}")
    };
    let mut spec = json!({"process": {"args": ["/bin/ads"]}, "mounts": []});
    apply(&mut spec, &w);
    apply(&mut spec, &w);
    let mounts = spec["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 4, "{mounts:?}");
    let rings = mounts
        .iter()
        .find(|m| m["destination"] == RINGS_IN_CONTAINER)
        .unwrap();
    assert_eq!(
        rings["source"],
        json!(root.path().join("spright-shop.pool.rings"))
    );
    // The SDK finds the rings beside the pool it is given.
    assert_eq!(
        rings_path(Path::new(POOL_IN_CONTAINER)),
        Path::new(RINGS_IN_CONTAINER)
    );

    // No rings file, no wiring.
    std::fs::remove_file(root.path().join("spright-shop.pool.rings")).unwrap();
    let e = plan(&pairs(&[(CHAIN, "shop"), (FUNCTION, "ads")]), root.path()).unwrap_err();
    assert!(e.to_string().contains("pool.rings"), "{e}");
}

#[test]
fn a_sandbox_is_checked_but_not_wired() {
    let root = runtime_root();
    let a = pairs(&[(CHAIN, "shop"), (CONTAINER_TYPE, "sandbox")]);
    assert_eq!(
        plan(&a, root.path()).unwrap(),
        Plan::Sandbox {
            chain: "shop".into()
        }
    );
    let a = pairs(&[(CHAIN, "nope"), (CONTAINER_TYPE, "sandbox")]);
    assert!(matches!(
        plan(&a, root.path()),
        Err(WiringError::NoChain { .. })
    ));
}

#[test]
fn bad_annotations_say_which_and_why() {
    let root = runtime_root();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[(FUNCTION, "ads")], "needs spright.io/chain"),
        (&[(CHAIN, "shop")], "needs spright.io/function"),
        (&[(CHAIN, "Shop!"), (FUNCTION, "ads")], "spright.io/chain=\"Shop!\" is malformed"),
        (&[(CHAIN, "shop"), (FUNCTION, "")], "spright.io/function=\"\" is malformed"),
        (&[(CHAIN, "shop"), (FUNCTION, "ads"), ("spright.io/fn", "x")], "unknown annotation spright.io/fn"),
        (&[(CHAIN, "ghost"), (FUNCTION, "ads")], "chain \"ghost\" (annotation spright.io/chain) is not running"),
        (&[(FUNCTIONS, "cart")], "spright.io/functions=\"cart\" needs spright.io/chain"),
        (&[(REPLICA, "r1")], "spright.io/replica=\"r1\" needs spright.io/chain"),
        (&[(CHAIN, "shop"), (FUNCTION, "ads"), (REPLICA, "R1")], "spright.io/replica=\"R1\" is malformed"),
        (&[(CHAIN, "shop"), (FUNCTION, "ads"), (REPLICA, "r9")], "chain \"shop@r9\" (annotation spright.io/chain) is not running"),
        (&[(CHAIN, "shop"), (FUNCTIONS, "cart"), (FUNCTION, "cart")], "spright.io/functions (a pod that is a whole replica of its chain) and spright.io/function"),
        (&[(CHAIN, "shop"), (FUNCTIONS, "cart"), (REPLICA, "r1")], "and spright.io/replica"),
        (&[(CHAIN, "shop"), (FUNCTIONS, "cart,,ads")], "spright.io/functions=\"cart,,ads\" is malformed: \"\""),
        (&[(CHAIN, "shop"), (FUNCTIONS, "cart,cart")], "\"cart\" is listed twice"),
        (&[(CHAIN, "shop"), (FUNCTIONS, "cart")], "needs the CRI annotation io.kubernetes.cri.container-name"),
        (&[(CHAIN, "shop"), (FUNCTIONS, "cart"), (CONTAINER_NAME, "cart")], "needs the CRI annotation io.kubernetes.cri.sandbox-uid"),
        (&[(CHAIN, "shop"), (FUNCTION, "search")], "function \"search\" (annotation spright.io/function) is not declared in chain \"shop\", which has: cart, ads"),
    ];
    for (given, needle) in cases {
        let err = plan(&pairs(given), root.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{given:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn files_a_pool_manager_would_not_make_are_not_mounted() {
    let root = runtime_root();
    // The pool replaced by a symbolic link to some other host file.
    let pool = root.path().join("spright-shop.pool");
    std::fs::remove_file(&pool).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &pool).unwrap();
    let err = plan(&pairs(&[(CHAIN, "shop"), (FUNCTION, "cart")]), root.path()).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    std::fs::remove_file(&pool).unwrap();
    std::fs::write(&pool, b"").unwrap();

    // A "socket" that is a plain file.
    let socket = root.path().join("shop/fn/ads.sock");
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, b"").unwrap();
    let err = plan(&pairs(&[(CHAIN, "shop"), (FUNCTION, "ads")]), root.path()).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
}

#[test]
fn the_load_board_is_mounted_only_when_it_is_the_chains_and_left_out_when_absent() {
    let root = runtime_root();
    let load = root.path().join("spright-shop.pool.load");
    std::fs::remove_file(&load).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &load).unwrap();
    let err = plan(&pairs(&[(CHAIN, "shop"), (FUNCTION, "cart")]), root.path()).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    // A pool-manager that keeps no board: the function is wired without one.
    std::fs::remove_file(&load).unwrap();
    let Plan::Function(w) =
        plan(&pairs(&[(CHAIN, "shop"), (FUNCTION, "cart")]), root.path()).unwrap()
    else {
        panic!("not a function")
    };
    assert_eq!(w.load, None);
}

#[test]
fn a_chain_whose_files_are_gone_is_refused() {
    let root = runtime_root();
    std::fs::remove_file(root.path().join("shop/fn/cart.sock")).unwrap();
    let err = plan(&pairs(&[(CHAIN, "shop"), (FUNCTION, "cart")]), root.path()).unwrap_err();
    assert!(matches!(err, WiringError::Missing { .. }), "{err}");
}

#[test]
fn annotations_are_read_from_any_spec() {
    let spec =
        json!({"ociVersion": "1.0.2", "annotations": {"spright.io/chain": "shop", "x": "y"}});
    assert_eq!(
        annotations(&spec).get(CHAIN).map(String::as_str),
        Some("shop")
    );
    // A value this oci-spec build rejects does not hide the annotations.
    let odd = json!({"ociVersion": "1.0.2", "linux": {"namespaces": [{"type": "time-travel"}]},
                     "annotations": {"spright.io/chain": "shop"}});
    assert_eq!(
        annotations(&odd).get(CHAIN).map(String::as_str),
        Some("shop")
    );
}

/// The CRI annotations of container `name` in the pod with UID `uid`.
fn in_pod<'a>(uid: &'a str, name: &'a str, more: &[(&'a str, &'a str)]) -> HashMap<String, String> {
    let mut a = vec![
        (CONTAINER_TYPE, "container"),
        (CONTAINER_NAME, name),
        (SANDBOX_UID, uid),
    ];
    a.extend_from_slice(more);
    pairs(&a)
}

#[test]
fn a_replica_pod_wires_its_listed_containers_into_its_own_replica() {
    let root = tempfile::tempdir().unwrap();
    let uid = "0f8c7d62-3b9e-4c8a-9a43-5d2f2f4b7e10";
    let pod = [(CHAIN, "shop"), (FUNCTIONS, "cart, ads")];
    // The sandbox comes first, before the replica's pool-manager runs: nothing to check.
    let mut sandbox = in_pod(uid, "", &pod);
    sandbox.insert(CONTAINER_TYPE.into(), "sandbox".into());
    assert_eq!(
        plan(&sandbox, root.path()).unwrap(),
        Plan::Sandbox {
            chain: "shop".into()
        }
    );
    // A function container before the pool-manager has published: the caller may wait.
    let cart = in_pod(uid, "cart", &pod);
    assert!(waits_for_its_chain(&cart));
    assert!(!waits_for_its_chain(&sandbox));
    assert!(matches!(
        plan(&cart, root.path()),
        Err(WiringError::NoChain { .. })
    ));

    let key = ChainKey::replica("shop", uid).unwrap();
    publish(root.path(), &key, RoutingMode::Sockmap);
    // Another replica of the chain on the node changes nothing for this pod.
    publish(
        root.path(),
        &ChainKey::replica("shop", "other").unwrap(),
        RoutingMode::Sockmap,
    );
    let Plan::Function(w) = plan(&cart, root.path()).unwrap() else {
        panic!("cart is a function")
    };
    assert_eq!(w.function, "cart");
    assert_eq!(w.replica.as_deref(), Some(uid));
    assert_eq!(
        w.socket,
        root.path().join(format!("shop@{uid}/fn/cart.sock"))
    );
    assert_eq!(w.pool, root.path().join(format!("spright-shop@{uid}.pool")));
    // The pod's network is the whole replica's (its gateway's too): not counted as cart's.
    assert_eq!(w.control, None);
    let mut spec = json!({"process": {"args": ["/bin/cart"]}});
    apply(&mut spec, &w);
    let env = spec["process"]["env"].as_array().unwrap();
    assert!(
        env.contains(&json!(format!("SPRIGHT_REPLICA={uid}"))),
        "{env:?}"
    );

    // The pod's other containers (its pool-manager and gateway) run plain.
    assert_eq!(
        plan(&in_pod(uid, "gateway", &pod), root.path()).unwrap(),
        Plan::Plain
    );
    // A listed container the chain does not declare is refused by name.
    let err = plan(
        &in_pod(uid, "search", &[(CHAIN, "shop"), (FUNCTIONS, "search")]),
        root.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("\"search\"") && err.contains("cart, ads"),
        "{err}"
    );
}

#[test]
fn a_function_pod_joins_the_one_replica_on_its_node_or_the_one_it_names() {
    let root = tempfile::tempdir().unwrap();
    let ads = pairs(&[(CHAIN, "shop"), (FUNCTION, "ads")]);
    let r1 = ChainKey::replica("shop", "r1").unwrap();
    publish(root.path(), &r1, RoutingMode::Sockmap);
    let _r1 = hold(root.path(), &r1);
    // A replica killed outright left its directory behind: it is not live, so not joined.
    let dead = ChainKey::replica("shop", "dead").unwrap();
    publish(root.path(), &dead, RoutingMode::Sockmap);
    // Nor does a stray directory that names no replica get in the way.
    std::fs::create_dir_all(root.path().join("shop@Not_A_Replica")).unwrap();
    // Another chain's replica is no concern of this one.
    std::fs::create_dir_all(root.path().join("shopping@r9")).unwrap();
    std::fs::write(root.path().join("shopping@r9/manifest.json"), b"{}").unwrap();
    let Plan::Function(w) = plan(&ads, root.path()).unwrap() else {
        panic!("ads is a function")
    };
    assert_eq!(w.replica.as_deref(), Some("r1"));

    let r2 = ChainKey::replica("shop", "r2").unwrap();
    publish(root.path(), &r2, RoutingMode::Sockmap);
    let _r2 = hold(root.path(), &r2);
    let err = plan(&ads, root.path()).unwrap_err().to_string();
    assert!(
        err.contains("chain \"shop\" has 2 replicas on this node (shop@r1, shop@r2)")
            && err.contains(REPLICA),
        "{err}"
    );
    let mut named = ads.clone();
    named.insert(REPLICA.into(), "r2".into());
    // The chain run once per node, beside replicas, is the one a function pod joins unasked.
    publish(root.path(), &ChainKey::chain("shop"), RoutingMode::Sockmap);
    let Plan::Function(w) = plan(&ads, root.path()).unwrap() else {
        panic!("ads is a function")
    };
    assert_eq!(
        (w.replica, w.socket),
        (None, root.path().join("shop/fn/ads.sock"))
    );
    let Plan::Function(w) = plan(&named, root.path()).unwrap() else {
        panic!("ads is a function")
    };
    assert_eq!(w.socket, root.path().join("shop@r2/fn/ads.sock"));
}

#[test]
fn one_replicas_manifest_cannot_mount_anothers_files() {
    let root = tempfile::tempdir().unwrap();
    let one = ChainKey::replica("shop", "r1").unwrap();
    let two = ChainKey::replica("shop", "r2").unwrap();
    publish(root.path(), &one, RoutingMode::Sockmap);
    publish(root.path(), &two, RoutingMode::Sockmap);
    // r2's manifest rewritten to name r1's pool: it is not r2's pool file.
    let path = root.path().join("shop@r2/manifest.json");
    let mut m: Manifest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m.pool.path = spright_core::manifest::pool_file(root.path(), &one);
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let named = pairs(&[(CHAIN, "shop"), (FUNCTION, "ads"), (REPLICA, "r2")]);
    let err = plan(&named, root.path()).unwrap_err().to_string();
    assert!(err.contains("not the chain's pool file"), "{err}");

    // r2's manifest replaced by r1's, wholesale (its key, pool and socket): the key it was
    // found under is not the one it names.
    let r1 = std::fs::read(root.path().join("shop@r1/manifest.json")).unwrap();
    std::fs::write(&path, r1).unwrap();
    let err = plan(&named, root.path()).unwrap_err().to_string();
    assert!(err.contains("a manifest of chain shop@r1"), "{err}");
    let pod = in_pod("r2", "ads", &[(CHAIN, "shop"), (FUNCTIONS, "ads")]);
    let err = plan(&pod, root.path()).unwrap_err().to_string();
    assert!(err.contains("a manifest of chain shop@r1"), "{err}");
}

#[test]
fn the_control_socket_is_given_only_when_eproxy_may_count_and_must_be_the_chains() {
    let root = runtime_root();
    let ads = pairs(&[(CHAIN, "shop"), (FUNCTION, "ads")]);
    let Plan::Function(w) = plan(&ads, root.path()).unwrap() else {
        panic!("a function")
    };
    let control = root.path().join("shop/control.sock");
    let checked = w.control.expect("the control socket");
    assert_eq!(checked.path, std::fs::canonicalize(&control).unwrap());
    let meta = std::fs::metadata(&control).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(checked.id, (meta.dev(), meta.ino()));

    // A symbolic link to it is refused.
    let link = root.path().join("shop/link.sock");
    std::os::unix::fs::symlink(&control, &link).unwrap();
    let mut manifest_json: Value =
        serde_json::from_slice(&std::fs::read(root.path().join("shop/manifest.json")).unwrap())
            .unwrap();
    let real_control = manifest_json["control_socket"].clone();
    manifest_json["control_socket"] = json!(link);
    std::fs::write(
        root.path().join("shop/manifest.json"),
        serde_json::to_vec(&manifest_json).unwrap(),
    )
    .unwrap();
    let e = plan(&ads, root.path()).unwrap_err();
    assert!(e.to_string().contains("which is a symbolic link"), "{e}");
    manifest_json["control_socket"] = real_control;
    std::fs::write(
        root.path().join("shop/manifest.json"),
        serde_json::to_vec(&manifest_json).unwrap(),
    )
    .unwrap();
    assert_eq!(w.eproxy, EproxyMode::Auto);

    // Not a socket: someone else's file, not the pool-manager's control socket.
    std::fs::remove_file(&control).unwrap();
    std::fs::write(&control, b"").unwrap();
    let e = plan(&ads, root.path()).unwrap_err();
    assert!(
        e.to_string()
            .contains("control.sock, which is not a socket"),
        "{e}"
    );

    // gateway.eproxy: off: not looked at, and nothing is counted.
    let manifest_path = root.path().join("shop/manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["spec"]["eproxy"] = json!("off");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let Plan::Function(w) = plan(&ads, root.path()).unwrap() else {
        panic!("a function")
    };
    assert_eq!((w.control, w.eproxy), (None, EproxyMode::Off));
}
