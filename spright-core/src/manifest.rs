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
/// Joins a chain's name and a replica id in a [`ChainKey`]; neither can hold it.
pub const REPLICA_SEPARATOR: char = '@';
/// A replica id is at most this long (a Kubernetes pod UID is 36).
pub const MAX_REPLICA_ID: usize = 64;

/// Names one running copy of a chain on a node. Its runtime directory (`<root>/<key>`), pool file
/// (`spright-<key>.pool`), map pins and lock are all named by the key, so two replicas of one
/// chain on a node never share one. A chain run once per node needs no replica id and is keyed by
/// its name alone (`demo`); a replica is `demo@<id>` (in Kubernetes, the chain pod's UID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainKey {
    pub chain: String,
    pub replica: Option<String>,
}

impl ChainKey {
    /// The chain run once per node, keyed by its name.
    pub fn chain(name: &str) -> ChainKey {
        ChainKey {
            chain: name.to_owned(),
            replica: None,
        }
    }

    /// A replica of `chain`, checking both (a chain name, and an id of 1 to 64 lowercase
    /// letters, digits and '-').
    pub fn replica(chain: &str, id: &str) -> Result<ChainKey, String> {
        crate::chain::check_name(chain, crate::chain::MAX_CHAIN_NAME)
            .map_err(|p| format!("chain name {p}"))?;
        check_replica_id(id)?;
        Ok(ChainKey {
            chain: chain.to_owned(),
            replica: Some(id.to_owned()),
        })
    }

    /// Reads `chain` or `chain@replica`, checking both parts.
    pub fn parse(key: &str) -> Result<ChainKey, String> {
        let (chain, replica) = match key.split_once(REPLICA_SEPARATOR) {
            Some((c, r)) => (c, Some(r)),
            None => (key, None),
        };
        match replica {
            Some(id) => ChainKey::replica(chain, id),
            None => {
                crate::chain::check_name(chain, crate::chain::MAX_CHAIN_NAME)
                    .map_err(|p| format!("chain name {p}"))?;
                Ok(ChainKey::chain(chain))
            }
        }
    }
}

impl std::fmt::Display for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.replica {
            Some(r) => write!(f, "{}{REPLICA_SEPARATOR}{r}", self.chain),
            None => f.write_str(&self.chain),
        }
    }
}

/// A replica id: 1 to [`MAX_REPLICA_ID`] lowercase letters, digits and '-', not leading with '-'.
pub fn check_replica_id(id: &str) -> Result<(), String> {
    crate::chain::check_name(id, MAX_REPLICA_ID).map_err(|p| format!("replica id {p}"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub abi_version: u8,
    pub chain: String,
    /// The replica of the chain this is, when several may share a node (see [`ChainKey`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
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
    #[error("chain \"{chain}\" has no manifest at {path} (is its pool-manager running?)")]
    Missing { chain: ChainKey, path: PathBuf },
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

/// The runtime directory of a running chain under `root`.
pub fn runtime_dir(root: &Path, key: &ChainKey) -> PathBuf {
    root.join(key.to_string())
}

/// The lock file a running chain's pool-manager holds (flock) for as long as it lives: beside
/// the runtime directory, under `root`.
pub fn lock_file(root: &Path, key: &ChainKey) -> PathBuf {
    root.join(format!("{key}.lock"))
}

/// Whether a live pool-manager holds `key`'s lock. Asked with a shared lock taken and dropped
/// at once, so it never keeps a starting pool-manager out for longer than an instant.
pub fn is_live(root: &Path, key: &ChainKey) -> bool {
    use std::os::unix::io::AsRawFd;
    let Ok(file) = std::fs::File::open(lock_file(root, key)) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; closing the file releases it.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    !free
}

/// The pool file of a running chain, in `dir`; its descriptor rings (poll mode) are beside it.
pub fn pool_file(dir: &Path, key: &ChainKey) -> PathBuf {
    dir.join(format!("spright-{key}.pool"))
}

impl Manifest {
    pub fn path_in(runtime_dir: &Path) -> PathBuf {
        runtime_dir.join(MANIFEST_FILE)
    }

    /// Reads the manifest of a running chain under the runtime root.
    pub fn load(root: &Path, key: &ChainKey) -> Result<Manifest, ManifestError> {
        let path = Manifest::path_in(&runtime_dir(root, key));
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ManifestError::Missing {
                    chain: key.clone(),
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

    /// The key of the running chain this manifest describes.
    pub fn key(&self) -> ChainKey {
        ChainKey {
            chain: self.chain.clone(),
            replica: self.replica.clone(),
        }
    }

    pub fn function(&self, name: &str) -> Option<&ManifestFunction> {
        self.functions.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_as_written() {
        for text in ["demo", "demo@0f8c7d62-3b9e-4c8a-9a43-5d2f2f4b7e10", "a-1@r"] {
            assert_eq!(ChainKey::parse(text).unwrap().to_string(), text);
        }
        let key = ChainKey::parse("demo@r1").unwrap();
        assert_eq!(
            (key.chain.as_str(), key.replica.as_deref()),
            ("demo", Some("r1"))
        );
        assert_eq!(ChainKey::parse("demo").unwrap().replica, None);
    }

    #[test]
    fn a_bad_key_names_its_bad_part() {
        for (text, part) in [
            ("Demo", "chain name"),
            ("demo@", "replica id"),
            ("demo@A", "replica id"),
            ("demo@r@s", "replica id"),
            ("demo@../x", "replica id"),
            ("@r", "chain name"),
        ] {
            let err = ChainKey::parse(text).unwrap_err();
            assert!(err.starts_with(part), "{text}: {err}");
        }
        assert!(ChainKey::replica("demo", &"a".repeat(MAX_REPLICA_ID + 1)).is_err());
        assert!(ChainKey::replica("demo", &"a".repeat(MAX_REPLICA_ID)).is_ok());
        assert!(
            ChainKey::replica("../x", "r").is_err(),
            "the chain name is checked too"
        );
    }

    #[test]
    fn each_replica_has_its_own_files() {
        let root = Path::new("/run/spright");
        let one = ChainKey::replica("demo", "r1").unwrap();
        let two = ChainKey::replica("demo", "r2").unwrap();
        let plain = ChainKey::chain("demo");
        assert_eq!(runtime_dir(root, &plain), Path::new("/run/spright/demo"));
        assert_eq!(runtime_dir(root, &one), Path::new("/run/spright/demo@r1"));
        assert_ne!(pool_file(root, &one), pool_file(root, &two));
        assert_ne!(pool_file(root, &one), pool_file(root, &plain));
    }
}
