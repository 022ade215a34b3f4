//! The manifest a pool-manager publishes for its chain, at `<runtime dir>/manifest.json`.
//!
//! It is how everything else finds the chain: the gateway and the SDK read the socket paths,
//! the shim checks annotations against it and learns what to bind-mount.

use crate::chain::{Chain, RoutingMode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default parent of per-chain runtime directories.
pub const DEFAULT_RUNTIME_ROOT: &str = "/run/spright";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const GATEWAY_SOCKET: &str = "gateway.sock";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const FUNCTION_SOCKET_DIR: &str = "fn";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub abi_version: u8,
    pub chain: String,
    pub routing: RoutingMode,
    pub runtime_dir: PathBuf,
    pub pool: ManifestPool,
    pub gateway_socket: PathBuf,
    pub control_socket: PathBuf,
    pub functions: Vec<ManifestFunction>,
    /// The validated chain the manifest was made from.
    pub spec: Chain,
    /// The pool-manager's pid (for diagnostics).
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPool {
    pub path: PathBuf,
    pub pool_id: u64,
    pub buffers: u32,
    pub buffer_size: u32,
    pub total_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFunction {
    pub name: String,
    pub id: u16,
    /// The unix socket an instance connects to in order to register.
    pub socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("chain {chain:?} has no manifest at {path} (is its pool-manager running?)")]
    Missing { chain: String, path: PathBuf },
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {path} is malformed: {source}")]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The runtime directory of a chain under `root`.
pub fn runtime_dir(root: &Path, chain: &str) -> PathBuf {
    root.join(chain)
}

impl Manifest {
    pub fn path_in(runtime_dir: &Path) -> PathBuf {
        runtime_dir.join(MANIFEST_FILE)
    }

    /// Reads the manifest of `chain` under the runtime root.
    pub fn load(root: &Path, chain: &str) -> Result<Manifest, ManifestError> {
        let path = Manifest::path_in(&runtime_dir(root, chain));
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ManifestError::Missing {
                    chain: chain.to_owned(),
                    path: path.clone(),
                }
            } else {
                ManifestError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        serde_json::from_str(&text).map_err(|source| ManifestError::Malformed { path, source })
    }

    pub fn function(&self, name: &str) -> Option<&ManifestFunction> {
        self.functions.iter().find(|f| f.name == name)
    }
}
