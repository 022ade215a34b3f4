//! SPRIGHT wiring: what a container's `spright.io/*` annotations ask for, checked against the
//! manifest its chain's pool-manager publishes, and the bind mounts and environment that follow.
//!
//! Pure logic over the OCI spec and the manifest; the shim applies it just before `runc create`.
//! The spec is handled as JSON and only the parts spright owns are touched, so a spec with
//! fields this build does not know passes through unchanged (a container must run exactly as
//! under runc).

use serde_json::{json, Value};
use spright_core::chain::{EproxyMode, RoutingMode};
use spright_core::env;
use spright_core::manifest::{ChainKey, Manifest, ManifestError, REPLICA_SEPARATOR};
use spright_core::rings::rings_path;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CHAIN: &str = "spright.io/chain";
pub const FUNCTION: &str = "spright.io/function";
/// Joins a function pod to one replica of its chain, when several run on the node.
pub const REPLICA: &str = "spright.io/replica";
/// Makes a pod one whole replica of its chain: the named containers are its functions (by
/// container name), the others (pool-manager, gateway) run plain, and the replica is the pod's
/// own (keyed by its UID).
pub const FUNCTIONS: &str = "spright.io/functions";
const PREFIX: &str = "spright.io/";
const KNOWN: [&str; 4] = [CHAIN, FUNCTION, REPLICA, FUNCTIONS];
/// Set by the CRI plugin: "sandbox" for a pod's pause container.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// Set by the CRI plugin on every container of a pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";

/// Where a function container finds the pool (and beside it the load board and, in poll mode,
/// the rings: the SDK looks beside the pool) and its registration socket.
pub const POOL_IN_CONTAINER: &str = "/run/spright/pool";
pub const RINGS_IN_CONTAINER: &str = "/run/spright/pool.rings";
pub const LOAD_IN_CONTAINER: &str = "/run/spright/pool.load";
pub const SOCKET_IN_CONTAINER: &str = "/run/spright/function.sock";

/// Why a container's SPRIGHT annotations cannot be honoured. Each message names the
/// annotation and what to do.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("annotation {key}={value:?} needs {CHAIN} too (which chain is it a function of?)")]
    FunctionWithoutChain { key: String, value: String },
    #[error("annotations {FUNCTIONS} (a pod that is a whole replica of its chain) and {other} (a function pod joining a replica elsewhere) exclude each other")]
    Conflicting { other: &'static str },
    #[error("annotation {FUNCTIONS} needs the CRI annotation {annotation}, which this containerd does not set (containerd 1.7 or later does)")]
    NoCriAnnotation { annotation: &'static str },
    #[error("chain {chain:?} has {count} replicas on this node ({replicas}): say which this function joins with annotation {REPLICA}, or run the chain's functions in its replica pods ({FUNCTIONS})")]
    Ambiguous {
        chain: String,
        count: usize,
        replicas: String,
    },
    #[error("annotation {CHAIN}={chain:?} needs {FUNCTION} too (which of the chain's functions is this?)")]
    ChainWithoutFunction { chain: String },
    #[error("annotation {key}={value:?} is malformed: {problem}")]
    Malformed {
        key: String,
        value: String,
        problem: String,
    },
    #[error(
        "unknown annotation {key} (spright knows {CHAIN}, {FUNCTION}, {REPLICA} and {FUNCTIONS})"
    )]
    Unknown { key: String },
    #[error("chain \"{chain}\" (annotation {CHAIN}) is not running on this node: {source}")]
    NoChain {
        chain: ChainKey,
        source: ManifestError,
    },
    #[error("function {function:?} (annotation {FUNCTION}) is not declared in chain {chain:?}, which has: {declared}")]
    Undeclared {
        chain: String,
        function: String,
        declared: String,
    },
    #[error(
        "chain {chain:?} lists {path} but it does not exist (is its pool-manager still running?)"
    )]
    Missing { chain: String, path: PathBuf },
    #[error("chain {chain:?} lists {path}, which is {problem}; refusing to mount it")]
    Suspicious {
        chain: String,
        path: PathBuf,
        problem: String,
    },
}

/// What to do with a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No SPRIGHT annotations: a plain runc container.
    Plain,
    /// A pod sandbox of a SPRIGHT pod: checked, but it gets nothing (functions are its
    /// containers).
    Sandbox { chain: String },
    /// A function: bind mounts and environment to add.
    Function(FunctionWiring),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionWiring {
    pub chain: String,
    /// The replica of the chain joined, when it has several on the node.
    pub replica: Option<String>,
    pub function: String,
    pub pool: PathBuf,
    /// The descriptor rings, for a chain in poll mode.
    pub rings: Option<PathBuf>,
    /// The chain's load board (none from a pool-manager that keeps none: the function then
    /// reports no load, and works as before).
    pub load: Option<PathBuf>,
    pub socket: PathBuf,
    /// The chain's control socket, where EPROXY's counts of the container's own traffic are
    /// handed over; none when the chain says `gateway.eproxy: off`, or for a replica pod's
    /// function.
    pub control: Option<ControlSocket>,
    /// Whether counting the container's own traffic is wanted (auto), required (on) or not.
    pub eproxy: EproxyMode,
}

/// A chain's control socket as checked: its real path, and the socket itself (device and
/// inode), which is all the shim will connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSocket {
    pub path: PathBuf,
    pub id: (u64, u64),
}

/// Reads the annotations and checks them against the chain's manifest under `runtime_root`.
pub fn plan(
    annotations: &HashMap<String, String>,
    runtime_root: &Path,
) -> Result<Plan, WiringError> {
    for key in annotations.keys() {
        if key.starts_with(PREFIX) && !KNOWN.contains(&key.as_str()) {
            return Err(WiringError::Unknown { key: key.clone() });
        }
    }
    let sandbox = annotations
        .get(CONTAINER_TYPE)
        .is_some_and(|t| t == "sandbox");
    let Some(chain) = annotations.get(CHAIN) else {
        return match [FUNCTION, FUNCTIONS, REPLICA]
            .into_iter()
            .find_map(|k| Some((k, annotations.get(k)?)))
        {
            Some((key, value)) => Err(WiringError::FunctionWithoutChain {
                key: key.to_owned(),
                value: value.clone(),
            }),
            None => Ok(Plan::Plain),
        };
    };
    check_name(CHAIN, chain)?;
    if let Some(list) = annotations.get(FUNCTIONS) {
        return plan_replica_pod(annotations, runtime_root, chain, list, sandbox);
    }
    let key = match annotations.get(REPLICA) {
        Some(id) => ChainKey::replica(chain, id).map_err(|problem| WiringError::Malformed {
            key: REPLICA.to_owned(),
            value: id.clone(),
            problem,
        })?,
        None => the_replica_on_this_node(runtime_root, chain)?,
    };
    let manifest = load(runtime_root, &key)?;
    let function = annotations.get(FUNCTION);
    check_key(&manifest, &key)?;
    if sandbox {
        // Pod annotations reach the sandbox too; the function annotation may be per pod.
        if let Some(f) = function {
            check_declared(&manifest, f)?;
        }
        return Ok(Plan::Sandbox {
            chain: chain.clone(),
        });
    }
    let function = function.ok_or_else(|| WiringError::ChainWithoutFunction {
        chain: chain.clone(),
    })?;
    wire_function(runtime_root, &manifest, function)
}

/// Whether creating this container should wait for its chain to be published: a function in a
/// replica pod is started beside its own pool-manager, which may not be ready yet.
pub fn waits_for_its_chain(annotations: &HashMap<String, String>) -> bool {
    annotations.contains_key(FUNCTIONS)
        && annotations
            .get(CONTAINER_TYPE)
            .is_none_or(|t| t != "sandbox")
}

/// A container of a pod that is one whole replica of its chain.
fn plan_replica_pod(
    annotations: &HashMap<String, String>,
    runtime_root: &Path,
    chain: &str,
    list: &str,
    sandbox: bool,
) -> Result<Plan, WiringError> {
    for other in [FUNCTION, REPLICA] {
        if annotations.contains_key(other) {
            return Err(WiringError::Conflicting { other });
        }
    }
    let functions = function_list(list)?;
    if sandbox {
        // The replica's pool-manager is one of the pod's containers: nothing runs yet.
        return Ok(Plan::Sandbox {
            chain: chain.to_owned(),
        });
    }
    let name = annotations
        .get(CONTAINER_NAME)
        .ok_or(WiringError::NoCriAnnotation {
            annotation: CONTAINER_NAME,
        })?;
    if !functions.contains(&name.as_str()) {
        return Ok(Plan::Plain);
    }
    let uid = annotations
        .get(SANDBOX_UID)
        .ok_or(WiringError::NoCriAnnotation {
            annotation: SANDBOX_UID,
        })?;
    let key = ChainKey::replica(chain, uid).map_err(|problem| WiringError::Malformed {
        key: SANDBOX_UID.to_owned(),
        value: uid.clone(),
        problem,
    })?;
    let manifest = load(runtime_root, &key)?;
    check_key(&manifest, &key)?;
    let mut plan = wire_function(runtime_root, &manifest, name)?;
    if let Plan::Function(w) = &mut plan {
        // The pod's interfaces carry the whole replica's traffic, its gateway's, which EPROXY
        // counts at the gateway: not a function's own.
        w.control = None;
    }
    Ok(plan)
}

/// A manifest must describe the chain it was found for: the key it names decides which
/// files are checked as the chain's own, so one replica's manifest could otherwise get another
/// replica's (or chain's) pool and socket mounted.
fn check_key(manifest: &Manifest, key: &ChainKey) -> Result<(), WiringError> {
    if &manifest.key() == key {
        return Ok(());
    }
    Err(WiringError::Suspicious {
        chain: key.to_string(),
        path: Manifest::path_in(&manifest.runtime_dir),
        problem: format!("a manifest of chain {}", manifest.key()),
    })
}

/// The value of `spright.io/functions`: container names, comma separated, each once.
fn function_list(list: &str) -> Result<Vec<&str>, WiringError> {
    let malformed = |problem: String| WiringError::Malformed {
        key: FUNCTIONS.to_owned(),
        value: list.to_owned(),
        problem,
    };
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    for (i, name) in names.iter().enumerate() {
        check_name(FUNCTIONS, name)
            .map_err(|_| malformed(format!("{name:?}: a list of container names, each 1 to 48 lowercase letters, digits and '-', separated by ','")))?;
        if names[..i].contains(name) {
            return Err(malformed(format!("{name:?} is listed twice")));
        }
    }
    Ok(names)
}

/// The copy of `chain` a function pod that names no replica joins: the chain run once per node
/// (keyed by its name alone) if it runs, else its one replica here. Replicas beside it are pods
/// of their own (`spright.io/functions`) and wire their own functions; between several
/// replicas a function pod must say which (`spright.io/replica`).
fn the_replica_on_this_node(runtime_root: &Path, chain: &str) -> Result<ChainKey, WiringError> {
    let plain = ChainKey::chain(chain);
    if Manifest::path_in(&spright_core::manifest::runtime_dir(runtime_root, &plain)).is_file() {
        return Ok(plain);
    }
    let prefix = format!("{chain}{REPLICA_SEPARATOR}");
    // Live replicas only: one killed outright leaves its directory until it is swept.
    let mut found: Vec<ChainKey> = std::fs::read_dir(runtime_root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix))
        .filter_map(|name| ChainKey::parse(&name).ok())
        .filter(|key| spright_core::manifest::is_live(runtime_root, key))
        .collect();
    found.sort_by_key(ChainKey::to_string);
    match found.len() {
        0 => Ok(plain),
        1 => Ok(found.remove(0)),
        count => Err(WiringError::Ambiguous {
            chain: chain.to_owned(),
            count,
            replicas: found
                .iter()
                .map(ChainKey::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn load(runtime_root: &Path, key: &ChainKey) -> Result<Manifest, WiringError> {
    Manifest::load(runtime_root, key).map_err(|source| WiringError::NoChain {
        chain: key.clone(),
        source,
    })
}

/// The mounts and environment of `function` of a running chain.
fn wire_function(
    runtime_root: &Path,
    manifest: &Manifest,
    function: &str,
) -> Result<Plan, WiringError> {
    let key = manifest.key();
    let socket = check_declared(manifest, function)?;
    check_mountable(&key, &manifest.pool.path, FileKind::Pool, runtime_root)?;
    check_mountable(&key, &socket, FileKind::Socket, runtime_root)?;
    let rings = match manifest.routing {
        RoutingMode::Poll => {
            let rings = rings_path(&manifest.pool.path);
            check_mountable(&key, &rings, FileKind::Rings, runtime_root)?;
            Some(rings)
        }
        RoutingMode::Sockmap | RoutingMode::User => None,
    };
    let load = spright_core::load::load_path(&manifest.pool.path);
    let load = match std::fs::symlink_metadata(&load) {
        Err(_) => None,
        Ok(_) => {
            check_mountable(&key, &load, FileKind::Load, runtime_root)?;
            Some(load)
        }
    };
    let eproxy = manifest.spec.eproxy;
    let control = match eproxy {
        EproxyMode::Off => None,
        EproxyMode::Auto | EproxyMode::On => {
            // The shim connects to it as root, handing over a BPF map: only a pool-manager's.
            Some(check_control_socket(
                &key,
                &manifest.control_socket,
                runtime_root,
            )?)
        }
    };
    Ok(Plan::Function(FunctionWiring {
        chain: key.chain.clone(),
        replica: key.replica.clone(),
        function: function.to_owned(),
        pool: manifest.pool.path.clone(),
        rings,
        load,
        socket,
        control,
        eproxy,
    }))
}

#[derive(Clone, Copy)]
enum FileKind {
    Pool,
    Rings,
    Load,
    Socket,
}

/// What the shim bind-mounts must be what a pool-manager makes: regular files named
/// `spright-<key>.pool` (and `.pool.rings`, `.pool.load`), and a socket inside the chain's runtime
/// directory; not a symlink, owned by root. A manifest someone else wrote cannot get other host
/// files mounted.
fn check_mountable(
    key: &ChainKey,
    path: &Path,
    kind: FileKind,
    runtime_root: &Path,
) -> Result<(), WiringError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let chain = key.to_string();
    let suspicious = |problem: &str| WiringError::Suspicious {
        chain: chain.clone(),
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let meta = std::fs::symlink_metadata(path).map_err(|_| WiringError::Missing {
        chain: chain.clone(),
        path: path.to_owned(),
    })?;
    if meta.file_type().is_symlink() {
        return Err(suspicious("a symbolic link"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(suspicious("not owned by the shim's user"));
    }
    match kind {
        FileKind::Pool | FileKind::Rings | FileKind::Load => {
            if !meta.file_type().is_file() {
                return Err(suspicious("not a regular file"));
            }
            let (name, what) = match kind {
                FileKind::Pool => (format!("spright-{chain}.pool"), "pool"),
                FileKind::Load => (format!("spright-{chain}.pool.load"), "load board"),
                _ => (format!("spright-{chain}.pool.rings"), "rings"),
            };
            if path.file_name() != Some(std::ffi::OsStr::new(&name)) {
                return Err(suspicious(&format!("not the chain's {what} file")));
            }
        }
        FileKind::Socket => {
            if !meta.file_type().is_socket() {
                return Err(suspicious("not a socket"));
            }
            let dir = std::fs::canonicalize(spright_core::manifest::runtime_dir(runtime_root, key))
                .map_err(|_| suspicious("outside the chain's runtime directory"))?;
            let real = std::fs::canonicalize(path)
                .map_err(|_| suspicious("outside the chain's runtime directory"))?;
            if !real.starts_with(&dir) {
                return Err(suspicious("outside the chain's runtime directory"));
            }
        }
    }
    Ok(())
}

/// The control socket must be what a pool-manager makes: a socket inside the chain's runtime
/// directory, not a symlink, owned by the shim's user. Checked on the file itself (opened
/// without following a link), whose identity is kept for the connect.
fn check_control_socket(
    key: &ChainKey,
    path: &Path,
    runtime_root: &Path,
) -> Result<ControlSocket, WiringError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let chain = key.to_string();
    let suspicious = |problem: &str| WiringError::Suspicious {
        chain: chain.clone(),
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|_| WiringError::Missing {
            chain: chain.clone(),
            path: path.to_owned(),
        })?;
    let meta = opened.metadata().map_err(|_| suspicious("unreadable"))?;
    // O_PATH with O_NOFOLLOW opens a link itself.
    if meta.file_type().is_symlink() {
        return Err(suspicious("a symbolic link"));
    }
    if !meta.file_type().is_socket() {
        return Err(suspicious("not a socket"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(suspicious("not owned by the shim's user"));
    }
    let outside = || suspicious("outside the chain's runtime directory");
    let dir = std::fs::canonicalize(spright_core::manifest::runtime_dir(runtime_root, key))
        .map_err(|_| outside())?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", opened.as_raw_fd()))
        .map_err(|_| outside())?;
    if !real.starts_with(&dir) {
        return Err(outside());
    }
    Ok(ControlSocket {
        path: real,
        id: (meta.dev(), meta.ino()),
    })
}

fn check_name(key: &str, value: &str) -> Result<(), WiringError> {
    spright_core::names::check_name(value, spright_core::names::MAX_FUNCTION_NAME).map_err(
        |problem| WiringError::Malformed {
            key: key.to_owned(),
            value: value.to_owned(),
            problem,
        },
    )
}

/// The function's registration socket, if the chain declares it.
fn check_declared(manifest: &Manifest, function: &str) -> Result<PathBuf, WiringError> {
    check_name(FUNCTION, function)?;
    manifest
        .function(function)
        .map(|f| f.socket.clone())
        .ok_or_else(|| WiringError::Undeclared {
            chain: manifest.key().to_string(),
            function: function.to_owned(),
            declared: manifest
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The annotations of an OCI spec, read with `oci-spec`; should the spec hold something this
/// build of oci-spec does not know, they are taken from the plain JSON instead, so such a
/// container still runs as it would under runc.
pub fn annotations(spec: &Value) -> HashMap<String, String> {
    match serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone()) {
        Ok(parsed) => parsed.annotations().clone().unwrap_or_default(),
        Err(_) => json_annotations(spec),
    }
}

fn json_annotations(spec: &Value) -> HashMap<String, String> {
    spec.get("annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn bind(source: &Path, destination: &str) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["bind", "rw", "nosuid", "nodev", "noexec"],
    })
}

/// Replaces any SPRIGHT_* variables of a process (JSON) by the SDK's environment.
fn set_env(process: &mut Value, wiring: &FunctionWiring) {
    let mut env: Vec<Value> = process
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.as_str().is_some_and(|e| e.starts_with("SPRIGHT_")))
        .collect();
    env.push(json!(format!("{}={}", env::CHAIN, wiring.chain)));
    if let Some(replica) = &wiring.replica {
        env.push(json!(format!("{}={replica}", env::REPLICA)));
    }
    env.push(json!(format!("{}={}", env::FUNCTION, wiring.function)));
    env.push(json!(format!("{}={POOL_IN_CONTAINER}", env::POOL)));
    env.push(json!(format!("{}={SOCKET_IN_CONTAINER}", env::SOCKET)));
    if let Some(p) = process.as_object_mut() {
        p.insert("env".into(), Value::Array(env));
    }
}

/// Adds the pool (and rings) and the socket as bind mounts and the SDK's environment to an OCI spec
/// (JSON). Applying it twice changes nothing more.
pub fn apply(spec: &mut Value, wiring: &FunctionWiring) {
    let Some(root) = spec.as_object_mut() else {
        return;
    };
    let mut mounts: Vec<Value> = root
        .get("mounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            let d = m.get("destination").and_then(Value::as_str).unwrap_or("");
            ![
                POOL_IN_CONTAINER,
                RINGS_IN_CONTAINER,
                LOAD_IN_CONTAINER,
                SOCKET_IN_CONTAINER,
            ]
            .contains(&d)
        })
        .collect();
    mounts.push(bind(&wiring.pool, POOL_IN_CONTAINER));
    if let Some(rings) = &wiring.rings {
        mounts.push(bind(rings, RINGS_IN_CONTAINER));
    }
    if let Some(load) = &wiring.load {
        mounts.push(bind(load, LOAD_IN_CONTAINER));
    }
    mounts.push(bind(&wiring.socket, SOCKET_IN_CONTAINER));
    root.insert("mounts".into(), Value::Array(mounts));
    if let Some(process) = root.get_mut("process") {
        set_env(process, wiring);
    }
}

/// Adds the SDK's environment to an exec's process spec (OCI JSON), so that tools run in a
/// function's container see what the function sees.
pub fn apply_to_exec(process_json: &[u8], wiring: &FunctionWiring) -> Result<Vec<u8>, String> {
    let mut process: Value =
        serde_json::from_slice(process_json).map_err(|e| format!("exec process spec: {e}"))?;
    set_env(&mut process, wiring);
    serde_json::to_vec(&process).map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
