//! Where a chain's pool-manager puts things on the host.

use spright_core::manifest::{
    self, ChainKey, CONTROL_SOCKET, FUNCTION_SOCKET_DIR, GATEWAY_SOCKET, MANIFEST_FILE,
};
use std::path::PathBuf;

/// Host locations, with defaults that suit a root pool-manager.
#[derive(Debug, Clone)]
pub struct Locations {
    /// Parent of per-chain runtime directories (`/run/spright`).
    pub runtime_root: PathBuf,
    /// Where pool files are created (`/dev/shm`).
    pub pool_dir: PathBuf,
    /// Parent of per-chain map pins (`/sys/fs/bpf/spright`); `None` disables pinning.
    pub pin_root: Option<PathBuf>,
}

impl Default for Locations {
    fn default() -> Self {
        Locations {
            runtime_root: PathBuf::from(manifest::DEFAULT_RUNTIME_ROOT),
            pool_dir: PathBuf::from("/dev/shm"),
            pin_root: Some(PathBuf::from("/sys/fs/bpf/spright")),
        }
    }
}

/// The concrete paths of one running chain, all named by its key.
#[derive(Debug, Clone)]
pub struct ChainPaths {
    pub key: ChainKey,
    pub runtime_dir: PathBuf,
    pub manifest: PathBuf,
    pub control: PathBuf,
    pub gateway: PathBuf,
    pub function_dir: PathBuf,
    pub pool: PathBuf,
    /// The descriptor rings of poll mode, beside the pool.
    pub rings: PathBuf,
    /// The load board, beside the pool.
    pub load: PathBuf,
    pub pins: Option<PathBuf>,
    /// Held (flock) by the chain's live pool-manager: `<runtime_root>/<key>.lock`, beside the
    /// runtime directory so clearing that directory leaves the lock alone.
    pub lock: PathBuf,
}

impl ChainPaths {
    pub fn new(loc: &Locations, key: &ChainKey) -> ChainPaths {
        let runtime_dir = manifest::runtime_dir(&loc.runtime_root, key);
        let pool = manifest::pool_file(&loc.pool_dir, key);
        ChainPaths {
            manifest: runtime_dir.join(MANIFEST_FILE),
            control: runtime_dir.join(CONTROL_SOCKET),
            gateway: runtime_dir.join(GATEWAY_SOCKET),
            function_dir: runtime_dir.join(FUNCTION_SOCKET_DIR),
            pool: pool.clone(),
            rings: spright_core::rings::rings_path(&pool),
            load: spright_core::load::load_path(&pool),
            pins: loc.pin_root.as_ref().map(|p| p.join(key.to_string())),
            lock: manifest::lock_file(&loc.runtime_root, key),
            key: key.clone(),
            runtime_dir,
        }
    }

    pub fn function_socket(&self, name: &str) -> PathBuf {
        self.function_dir.join(format!("{name}.sock"))
    }
}
