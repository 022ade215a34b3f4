use super::*;
use spright_core::chain::Chain;
use spright_core::manifest::{ManifestFunction, ManifestPool};

/// A runtime root with chain "shop" (functions cart and ads) published in it.
fn runtime_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shop");
    std::fs::create_dir_all(dir.join("fn")).unwrap();
    let chain = Chain::parse(
        "chain: shop\npool: {buffers: 4, buffer_size: 4KiB}\nfunctions: [{name: cart, id: 1}, {name: ads, id: 2}]\nroutes: [{path: /, function: cart}]\n",
        "t",
    )
    .unwrap();
    let pool = root.path().join("spright-shop.pool");
    std::fs::write(&pool, b"").unwrap();
    let functions = ["cart", "ads"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let socket = dir.join("fn").join(format!("{name}.sock"));
            std::fs::write(&socket, b"").unwrap();
            ManifestFunction {
                name: name.to_string(),
                id: i as u16 + 1,
                socket,
            }
        })
        .collect();
    let manifest = Manifest {
        abi_version: 1,
        chain: "shop".into(),
        routing: Default::default(),
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
    root
}

fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn no_annotations_is_a_plain_container() {
    let root = runtime_root();
    let other = annotations(&[("io.kubernetes.cri.sandbox-id", "abc")]);
    assert_eq!(plan(&other, root.path()).unwrap(), Plan::Plain);
}

#[test]
fn a_declared_function_gets_the_pool_the_socket_and_the_environment() {
    let root = runtime_root();
    let p = plan(
        &annotations(&[(CHAIN, "shop"), (FUNCTION, "ads")]),
        root.path(),
    )
    .unwrap();
    let Plan::Function(w) = p else {
        panic!("{p:?}")
    };
    assert_eq!(w.socket, root.path().join("shop/fn/ads.sock"));

    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_env(Some(vec!["PATH=/bin".into(), "SPRIGHT_POOL=/old".into()]));
    spec.set_process(Some(process));
    apply(&mut spec, &w);
    apply(&mut spec, &w); // idempotent: no duplicate mounts or variables

    let mounts = spec.mounts().clone().unwrap();
    let ours: Vec<_> = mounts
        .iter()
        .filter(|m| m.destination().starts_with("/run/spright"))
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    let pool = ours
        .iter()
        .find(|m| m.destination().to_str() == Some(POOL_IN_CONTAINER))
        .unwrap();
    assert_eq!(
        pool.source().as_deref(),
        Some(root.path().join("spright-shop.pool").as_path())
    );
    assert_eq!(pool.typ().as_deref(), Some("bind"));
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert_eq!(
        env,
        vec![
            "PATH=/bin".to_string(),
            "SPRIGHT_CHAIN=shop".into(),
            "SPRIGHT_FUNCTION=ads".into(),
            format!("SPRIGHT_POOL={POOL_IN_CONTAINER}"),
            format!("SPRIGHT_SOCKET={SOCKET_IN_CONTAINER}"),
        ]
    );
}

#[test]
fn a_sandbox_is_checked_but_not_wired() {
    let root = runtime_root();
    let a = annotations(&[(CHAIN, "shop"), (CONTAINER_TYPE, "sandbox")]);
    assert_eq!(
        plan(&a, root.path()).unwrap(),
        Plan::Sandbox {
            chain: "shop".into()
        }
    );
    let a = annotations(&[(CHAIN, "nope"), (CONTAINER_TYPE, "sandbox")]);
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
        (&[(CHAIN, "shop"), (FUNCTION, "search")], "function \"search\" (annotation spright.io/function) is not declared in chain \"shop\", which has: cart, ads"),
    ];
    for (pairs, needle) in cases {
        let err = plan(&annotations(pairs), root.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{pairs:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn a_chain_whose_files_are_gone_is_refused() {
    let root = runtime_root();
    std::fs::remove_file(root.path().join("shop/fn/cart.sock")).unwrap();
    let err = plan(
        &annotations(&[(CHAIN, "shop"), (FUNCTION, "cart")]),
        root.path(),
    )
    .unwrap_err();
    assert!(matches!(err, WiringError::Missing { .. }), "{err}");
}
