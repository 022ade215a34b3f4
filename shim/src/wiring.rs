//! SPRIGHT wiring: what a container's `spright.io/*` annotations ask for, checked against the
//! manifest its chain's pool-manager publishes, and the bind mounts and environment that follow.
//!
//! Pure logic over the OCI spec and the manifest; the shim applies it just before `runc create`.
//! The spec is handled as JSON and only the parts spright owns are touched, so a spec with
//! fields this build does not know passes through unchanged (a container must run exactly as
//! under runc).

use serde_json::{json, Value};
use spright_core::chain::RoutingMode;
use spright_core::manifest::{Manifest, ManifestError};
use spright_core::rings::rings_path;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CHAIN: &str = "spright.io/chain";
pub const FUNCTION: &str = "spright.io/function";
const PREFIX: &str = "spright.io/";
/// Set by the CRI plugin: "sandbox" for a pod's pause container.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// Where a function container finds the pool (and in poll mode the rings, the SDK looks beside
/// the pool) and its registration socket.
pub const POOL_IN_CONTAINER: &str = "/run/spright/pool";
pub const RINGS_IN_CONTAINER: &str = "/run/spright/pool.rings";
pub const SOCKET_IN_CONTAINER: &str = "/run/spright/function.sock";

/// Why a container's SPRIGHT annotations cannot be honoured. Each message names the
/// annotation and what to do.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error(
        "annotation {FUNCTION}={function:?} needs {CHAIN} too (which chain is it a function of?)"
    )]
    FunctionWithoutChain { function: String },
    #[error("annotation {CHAIN}={chain:?} needs {FUNCTION} too (which of the chain's functions is this?)")]
    ChainWithoutFunction { chain: String },
    #[error("annotation {key}={value:?} is malformed: {problem}")]
    Malformed {
        key: String,
        value: String,
        problem: String,
    },
    #[error("unknown annotation {key} (spright knows {CHAIN} and {FUNCTION})")]
    Unknown { key: String },
    #[error("chain {chain:?} (annotation {CHAIN}) is not running on this node: {source}")]
    NoChain {
        chain: String,
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
    pub function: String,
    pub pool: PathBuf,
    /// The descriptor rings, for a chain in poll mode.
    pub rings: Option<PathBuf>,
    pub socket: PathBuf,
}

/// Reads the annotations and checks them against the chain's manifest under `runtime_root`.
pub fn plan(
    annotations: &HashMap<String, String>,
    runtime_root: &Path,
) -> Result<Plan, WiringError> {
    for key in annotations.keys() {
        if key.starts_with(PREFIX) && key != CHAIN && key != FUNCTION {
            return Err(WiringError::Unknown { key: key.clone() });
        }
    }
    let chain = annotations.get(CHAIN);
    let function = annotations.get(FUNCTION);
    let sandbox = annotations
        .get(CONTAINER_TYPE)
        .is_some_and(|t| t == "sandbox");
    let (chain, function) = match (chain, function) {
        (None, None) => return Ok(Plan::Plain),
        (None, Some(f)) => {
            return Err(WiringError::FunctionWithoutChain {
                function: f.clone(),
            })
        }
        (Some(c), f) => (c, f),
    };
    check_name(CHAIN, chain)?;
    let manifest = Manifest::load(runtime_root, chain).map_err(|source| WiringError::NoChain {
        chain: chain.clone(),
        source,
    })?;
    if sandbox {
        // Pod annotations reach the sandbox too; the function annotation may be per pod.
        if let Some(f) = function {
            check_declared(&manifest, chain, f)?;
        }
        return Ok(Plan::Sandbox {
            chain: chain.clone(),
        });
    }
    let function = function.ok_or_else(|| WiringError::ChainWithoutFunction {
        chain: chain.clone(),
    })?;
    let socket = check_declared(&manifest, chain, function)?;
    check_mountable(chain, &manifest.pool.path, FileKind::Pool, runtime_root)?;
    check_mountable(chain, &socket, FileKind::Socket, runtime_root)?;
    let rings = match manifest.routing {
        RoutingMode::Poll => {
            let rings = rings_path(&manifest.pool.path);
            check_mountable(chain, &rings, FileKind::Rings, runtime_root)?;
            Some(rings)
        }
        RoutingMode::Sockmap | RoutingMode::User => None,
    };
    Ok(Plan::Function(FunctionWiring {
        chain: chain.clone(),
        function: function.clone(),
        pool: manifest.pool.path.clone(),
        rings,
        socket,
    }))
}

#[derive(Clone, Copy)]
enum FileKind {
    Pool,
    Rings,
    Socket,
}

/// What the shim bind-mounts must be what a pool-manager makes: regular files named
/// `spright-<chain>.pool` (and `.pool.rings`), and a socket inside the chain's runtime
/// directory; not a symlink,
/// owned by root. A manifest someone else wrote cannot get other host files mounted.
fn check_mountable(
    chain: &str,
    path: &Path,
    kind: FileKind,
    runtime_root: &Path,
) -> Result<(), WiringError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let suspicious = |problem: &str| WiringError::Suspicious {
        chain: chain.to_owned(),
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let meta = std::fs::symlink_metadata(path).map_err(|_| WiringError::Missing {
        chain: chain.to_owned(),
        path: path.to_owned(),
    })?;
    if meta.file_type().is_symlink() {
        return Err(suspicious("a symbolic link"));
    }
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(suspicious("not owned by the shim's user"));
    }
    match kind {
        FileKind::Pool | FileKind::Rings => {
            if !meta.file_type().is_file() {
                return Err(suspicious("not a regular file"));
            }
            let (name, what) = match kind {
                FileKind::Pool => (format!("spright-{chain}.pool"), "pool"),
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
            let dir = std::fs::canonicalize(runtime_root.join(chain))
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

fn check_name(key: &str, value: &str) -> Result<(), WiringError> {
    let ok = !value.is_empty()
        && value.len() <= 48
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(WiringError::Malformed {
            key: key.to_owned(),
            value: value.to_owned(),
            problem: "names are 1 to 48 lowercase letters, digits and '-'".into(),
        })
    }
}

/// The function's registration socket, if the chain declares it.
fn check_declared(
    manifest: &Manifest,
    chain: &str,
    function: &str,
) -> Result<PathBuf, WiringError> {
    check_name(FUNCTION, function)?;
    manifest
        .function(function)
        .map(|f| f.socket.clone())
        .ok_or_else(|| WiringError::Undeclared {
            chain: chain.to_owned(),
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
    env.push(json!(format!("SPRIGHT_CHAIN={}", wiring.chain)));
    env.push(json!(format!("SPRIGHT_FUNCTION={}", wiring.function)));
    env.push(json!(format!("SPRIGHT_POOL={POOL_IN_CONTAINER}")));
    env.push(json!(format!("SPRIGHT_SOCKET={SOCKET_IN_CONTAINER}")));
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
            d != POOL_IN_CONTAINER && d != RINGS_IN_CONTAINER && d != SOCKET_IN_CONTAINER
        })
        .collect();
    mounts.push(bind(&wiring.pool, POOL_IN_CONTAINER));
    if let Some(rings) = &wiring.rings {
        mounts.push(bind(rings, RINGS_IN_CONTAINER));
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
mod tests;
