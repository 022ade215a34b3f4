//! SPRIGHT wiring: what a container's `spright.io/*` annotations ask for, checked against the
//! manifest its chain's pool-manager publishes, and the bind mounts and environment that follow.
//!
//! Pure logic over the OCI spec and the manifest; the shim applies it just before `runc create`.

use oci_spec::runtime::{Mount, MountBuilder, Spec};
use spright_core::manifest::{Manifest, ManifestError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CHAIN: &str = "spright.io/chain";
pub const FUNCTION: &str = "spright.io/function";
const PREFIX: &str = "spright.io/";
/// Set by the CRI plugin: "sandbox" for a pod's pause container.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// Where a function container finds the pool and its registration socket.
pub const POOL_IN_CONTAINER: &str = "/run/spright/pool";
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
    for path in [&manifest.pool.path, &socket] {
        if !path.exists() {
            return Err(WiringError::Missing {
                chain: chain.clone(),
                path: path.clone(),
            });
        }
    }
    Ok(Plan::Function(FunctionWiring {
        chain: chain.clone(),
        function: function.clone(),
        pool: manifest.pool.path.clone(),
        socket,
    }))
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

fn bind(source: &Path, destination: &str) -> Mount {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(vec!["bind".to_string(), "rw".to_string()])
        .build()
        .expect("all mount fields set")
}

/// Replaces any SPRIGHT_* variables in `env` by the SDK's environment for `wiring`.
pub fn set_env(env: Vec<String>, wiring: &FunctionWiring) -> Vec<String> {
    let mut env: Vec<String> = env
        .into_iter()
        .filter(|e| !e.starts_with("SPRIGHT_"))
        .collect();
    env.push(format!("SPRIGHT_CHAIN={}", wiring.chain));
    env.push(format!("SPRIGHT_FUNCTION={}", wiring.function));
    env.push(format!("SPRIGHT_POOL={POOL_IN_CONTAINER}"));
    env.push(format!("SPRIGHT_SOCKET={SOCKET_IN_CONTAINER}"));
    env
}

/// Adds the SDK's environment to an exec's process spec (OCI JSON), so that tools run in a
/// function's container see what the function sees.
pub fn apply_to_exec(process_json: &[u8], wiring: &FunctionWiring) -> Result<Vec<u8>, String> {
    let mut process: oci_spec::runtime::Process =
        serde_json::from_slice(process_json).map_err(|e| format!("exec process spec: {e}"))?;
    let env = set_env(process.env().clone().unwrap_or_default(), wiring);
    process.set_env(Some(env));
    serde_json::to_vec(&process).map_err(|e| e.to_string())
}

/// Adds the pool and the socket as bind mounts and the SDK's environment to `spec`.
pub fn apply(spec: &mut Spec, wiring: &FunctionWiring) {
    let mut mounts: Vec<Mount> = spec
        .mounts()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            let d = m.destination().to_string_lossy();
            d != POOL_IN_CONTAINER && d != SOCKET_IN_CONTAINER
        })
        .collect();
    mounts.push(bind(&wiring.pool, POOL_IN_CONTAINER));
    mounts.push(bind(&wiring.socket, SOCKET_IN_CONTAINER));
    spec.set_mounts(Some(mounts));

    if let Some(process) = spec.process_mut() {
        let env = set_env(process.env().clone().unwrap_or_default(), wiring);
        process.set_env(Some(env));
    }
}

#[cfg(test)]
mod tests;
