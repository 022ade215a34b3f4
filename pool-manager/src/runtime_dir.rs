//! The chain's runtime directory: claiming it, binding its sockets, publishing the manifest and
//! removing everything again.

use crate::paths::{ChainPaths, Locations};
use anyhow::{bail, Context};
use slog::{warn, Logger};
use spright_core::chain::{Chain, RoutingMode};
use spright_core::descriptor::ABI_VERSION;
use spright_core::ids::{FnId, GATEWAY};
use spright_core::manifest::{ChainKey, Manifest, ManifestFunction, ManifestPool};
use spright_core::pool::Pool;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::net::UnixListener;

/// The chain's claim on this node: its lock file, held until dropped, then removed.
#[derive(Debug)]
pub struct Claim {
    /// Open for as long as the claim lives: the flock goes with the descriptor.
    _lock: std::fs::File,
    path: std::path::PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Unlinked while still held: a claimer that opened the old file sees it is gone.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes the runtime directory ours: refuses if a live pool-manager owns the chain, clears what a
/// dead one left behind.
///
/// Liveness is the chain's lock file (flock, released by the kernel when its holder dies), not
/// the manifest's pid: pool-managers in containers each have their own PID namespace (every one
/// is pid 1 in its own), so a pid says nothing about another pod's process.
pub fn claim(paths: &ChainPaths, log: &Logger) -> anyhow::Result<Claim> {
    let claim = lock(paths)?;
    let stale = paths.runtime_dir.exists()
        || paths.pool.exists()
        || paths.rings.exists()
        || paths.load.exists()
        || paths.pins.as_ref().is_some_and(|p| p.exists());
    if stale {
        warn!(log, "removing what a previous pool-manager of this chain left behind";
            "runtime_dir" => %paths.runtime_dir.display(), "pool" => %paths.pool.display());
        remove_all(paths);
    }
    std::fs::create_dir_all(&paths.function_dir)
        .with_context(|| format!("creating {}", paths.function_dir.display()))?;
    for dir in [&paths.runtime_dir, &paths.function_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }
    Ok(claim)
}

/// Takes the chain's lock file, or says who holds it.
fn lock(paths: &ChainPaths) -> anyhow::Result<Claim> {
    let key = &paths.key;
    // A lock held with no manifest beside it may be a moment's check (the shim asking whether
    // the chain lives, another pool-manager sweeping dead replicas), not an owner: ask again
    // for a second before calling it one.
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        if let Some(claim) = try_lock(paths)? {
            return Ok(claim);
        }
        if paths.manifest.exists() || std::time::Instant::now() >= patience {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let hint = if key.replica.is_none() {
        "; give each replica of a chain on one node its own replica id (--replica)"
    } else {
        ""
    };
    let owner = std::fs::read_to_string(&paths.manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<Manifest>(&t).ok())
        .map(|m| format!("pid {} in its PID namespace", m.pid))
        .unwrap_or_else(|| "starting".to_owned());
    bail!(
        "chain {key} already has a live pool-manager on this node ({owner}): it holds {}{hint}",
        paths.lock.display()
    )
}

/// Takes the chain's lock file if no live pool-manager holds it (`None` if one does).
fn try_lock(paths: &ChainPaths) -> anyhow::Result<Option<Claim>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    if let Some(parent) = paths.lock.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    loop {
        // 0600: flock needs only an open descriptor, so a file others could open would let
        // them hold the chain's lock.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&paths.lock)
            .with_context(|| format!("opening {}", paths.lock.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(err).with_context(|| format!("locking {}", paths.lock.display()));
        }
        // The holder we waited out may have unlinked the file as it left: lock the one that is
        // at the path now.
        let held = file.metadata()?;
        match std::fs::metadata(&paths.lock) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok(Some(Claim {
                    _lock: file,
                    path: paths.lock.clone(),
                }));
            }
            _ => continue,
        }
    }
}

/// Removes what dead replicas left on the node, of any chain: a replica's pool-manager killed
/// outright (SIGKILL, OOM) cannot clean up, and a replica id (a pod UID) never comes back to
/// clear its own leftovers. A replica is dead when nobody holds its lock.
pub fn sweep_dead_replicas(loc: &Locations, key: &ChainKey, log: &Logger) {
    let Ok(entries) = std::fs::read_dir(&loc.runtime_root) else {
        return;
    };
    let mut seen = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let name = name.strip_suffix(".lock").unwrap_or(&name).to_owned();
        if name.contains(spright_core::manifest::REPLICA_SEPARATOR) && name != key.to_string() {
            seen.insert(name);
        }
    }
    for name in seen {
        let Ok(other) = ChainKey::parse(&name) else {
            continue;
        };
        let paths = ChainPaths::new(loc, &other);
        match try_lock(&paths) {
            Ok(Some(claim)) => {
                warn!(log, "removing what a dead replica of this chain left behind";
                    "replica" => %other, "runtime_dir" => %paths.runtime_dir.display());
                remove_all(&paths);
                drop(claim);
            }
            Ok(None) => {}
            Err(e) => warn!(log, "cannot check a replica of this chain"; "replica" => %other,
                "error" => format!("{e:#}")),
        }
    }
}

/// Removes everything of the chain: manifest, runtime directory, pool, rings and load files and
/// map pins.
pub fn remove_all(paths: &ChainPaths) {
    let _ = std::fs::remove_file(&paths.manifest);
    let _ = std::fs::remove_dir_all(&paths.runtime_dir);
    let _ = std::fs::remove_file(&paths.pool);
    let _ = std::fs::remove_file(&paths.rings);
    let _ = std::fs::remove_file(&paths.load);
    if let Some(pins) = &paths.pins {
        spright_ebpf::Sproxy::remove_pins(pins);
    }
}

pub struct Listeners {
    pub functions: Vec<(FnId, UnixListener)>,
    pub control: UnixListener,
}

fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Binds the gateway's, every function's and the control socket.
pub fn bind_sockets(paths: &ChainPaths, chain: &Chain, mode: u32) -> anyhow::Result<Listeners> {
    let mut functions = vec![(GATEWAY, bind(&paths.gateway, mode)?)];
    for f in &chain.functions {
        functions.push((FnId(f.id), bind(&paths.function_socket(&f.name), mode)?));
    }
    Ok(Listeners {
        functions,
        control: bind(&paths.control, mode)?,
    })
}

/// Writes the manifest atomically: its presence means the chain is ready.
pub fn publish_manifest(
    paths: &ChainPaths,
    key: &ChainKey,
    chain: &Chain,
    routing: RoutingMode,
    pool: &Pool,
) -> anyhow::Result<()> {
    let layout = pool.layout();
    let manifest = Manifest {
        abi_version: ABI_VERSION,
        chain: chain.name.clone(),
        replica: key.replica.clone(),
        routing,
        runtime_dir: paths.runtime_dir.clone(),
        pool: ManifestPool {
            path: paths.pool.clone(),
            pool_id: pool.pool_id(),
            buffers: layout.buffer_count,
            buffer_size: layout.buffer_size,
            total_size: layout.total_size,
        },
        gateway_socket: paths.gateway.clone(),
        control_socket: paths.control.clone(),
        functions: chain
            .functions
            .iter()
            .map(|f| ManifestFunction {
                name: f.name.clone(),
                id: f.id,
                socket: paths.function_socket(&f.name),
            })
            .collect(),
        spec: chain.clone(),
        pid: std::process::id(),
    };
    let tmp = paths.runtime_dir.join(".manifest.json.tmp");
    let text = serde_json::to_string_pretty(&manifest)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, &paths.manifest)
        .with_context(|| format!("publishing {}", paths.manifest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locations_in(dir: &Path) -> Locations {
        let loc = Locations {
            runtime_root: dir.join("run"),
            pool_dir: dir.join("shm"),
            pin_root: None,
        };
        std::fs::create_dir_all(&loc.pool_dir).unwrap();
        loc
    }

    fn paths_in(dir: &Path) -> ChainPaths {
        ChainPaths::new(&locations_in(dir), &ChainKey::chain("c1"))
    }

    /// What a pool-manager killed outright leaves: runtime directory, manifest, pool, lock.
    fn leave_behind(paths: &ChainPaths) {
        std::fs::create_dir_all(&paths.function_dir).unwrap();
        std::fs::write(&paths.manifest, r#"{"chain": "c1", "pid": 1}"#).unwrap();
        std::fs::write(&paths.pool, b"left behind").unwrap();
        std::fs::write(&paths.lock, b"").unwrap();
    }

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[test]
    fn one_live_claim_per_chain_and_its_lock_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths_in(dir.path());
        let first = claim(&paths, &log()).expect("first claim");
        let mode = std::fs::metadata(&paths.lock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner may open the lock");
        let err = claim(&paths, &log()).expect_err("a second claim while the first lives");
        assert!(format!("{err:#}").contains("live pool-manager"), "{err:#}");
        drop(first);
        assert!(
            !paths.lock.exists(),
            "the lock file is removed with the claim"
        );
        let _again = claim(&paths, &log()).expect("claim after the first is gone");
    }

    #[test]
    fn a_dead_owner_whose_pid_is_alive_elsewhere_is_cleared() {
        // A pool-manager in a container was pid 1 in its own PID namespace, and pid 1 is alive
        // here too: the pid says nothing; the lock nobody holds says the owner is gone.
        let dir = tempfile::tempdir().unwrap();
        let paths = paths_in(dir.path());
        leave_behind(&paths);
        let _claim = claim(&paths, &log()).expect("claim over a dead owner");
        assert!(!paths.manifest.exists(), "the stale manifest is cleared");
        assert!(!paths.pool.exists(), "the stale pool is cleared");
    }

    #[test]
    fn replicas_of_one_chain_claim_apart() {
        let dir = tempfile::tempdir().unwrap();
        let loc = locations_in(dir.path());
        let one = ChainPaths::new(&loc, &ChainKey::replica("c1", "r1").unwrap());
        let two = ChainPaths::new(&loc, &ChainKey::replica("c1", "r2").unwrap());
        let _one = claim(&one, &log()).expect("first replica");
        let _two = claim(&two, &log()).expect("a second replica beside the first");
        for (a, b) in [
            (&one.runtime_dir, &two.runtime_dir),
            (&one.pool, &two.pool),
            (&one.lock, &two.lock),
        ] {
            assert_ne!(a, b);
        }
    }

    #[test]
    fn a_dead_replica_is_swept_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let loc = locations_in(dir.path());
        let live = ChainPaths::new(&loc, &ChainKey::replica("c1", "live").unwrap());
        let dead = ChainPaths::new(&loc, &ChainKey::replica("c1", "dead").unwrap());
        let other_chain = ChainPaths::new(&loc, &ChainKey::replica("c2", "dead").unwrap());
        let _live = claim(&live, &log()).unwrap();
        std::fs::write(&live.manifest, b"{}").unwrap();
        leave_behind(&dead);
        leave_behind(&other_chain);
        let me = ChainKey::replica("c1", "new").unwrap();
        let _me = claim(&ChainPaths::new(&loc, &me), &log()).unwrap();
        sweep_dead_replicas(&loc, &me, &log());
        // A replica id never comes back: the dead replicas of any chain are swept.
        for gone in [
            &dead.runtime_dir,
            &dead.pool,
            &dead.lock,
            &other_chain.runtime_dir,
            &other_chain.pool,
        ] {
            assert!(!gone.exists(), "{} is swept", gone.display());
        }
        assert!(
            live.manifest.exists() && live.lock.exists(),
            "a live replica is kept"
        );
        assert!(
            spright_core::manifest::is_live(&loc.runtime_root, &live.key),
            "and still held"
        );
        assert!(
            !spright_core::manifest::is_live(&loc.runtime_root, &dead.key),
            "a swept replica is not live"
        );
    }
}
