//! The chain's runtime directory: claiming it, binding its sockets, publishing the manifest and
//! removing everything again.

use crate::paths::ChainPaths;
use anyhow::{bail, Context};
use slog::{warn, Logger};
use spright_core::chain::{Chain, RoutingMode};
use spright_core::descriptor::ABI_VERSION;
use spright_core::ids::{FnId, GATEWAY};
use spright_core::manifest::{Manifest, ManifestFunction, ManifestPool};
use spright_core::pool::Pool;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::net::UnixListener;

/// Makes the runtime directory ours: refuses if a live pool-manager owns the chain, clears what a
/// dead one left behind.
pub fn claim(paths: &ChainPaths, log: &Logger) -> anyhow::Result<()> {
    if let Ok(text) = std::fs::read_to_string(&paths.manifest) {
        if let Ok(m) = serde_json::from_str::<Manifest>(&text) {
            if process_alive(m.pid) {
                bail!(
                    "chain {:?} already has a pool-manager (pid {}); its manifest is {}",
                    m.chain,
                    m.pid,
                    paths.manifest.display()
                );
            }
        }
    }
    let stale = paths.runtime_dir.exists()
        || paths.pool.exists()
        || paths.rings.exists()
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
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes everything of the chain: manifest, runtime directory, pool and rings files and map
/// pins.
pub fn remove_all(paths: &ChainPaths) {
    let _ = std::fs::remove_file(&paths.manifest);
    let _ = std::fs::remove_dir_all(&paths.runtime_dir);
    let _ = std::fs::remove_file(&paths.pool);
    let _ = std::fs::remove_file(&paths.rings);
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
    chain: &Chain,
    routing: RoutingMode,
    pool: &Pool,
) -> anyhow::Result<()> {
    let layout = pool.layout();
    let manifest = Manifest {
        abi_version: ABI_VERSION,
        chain: chain.name.clone(),
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
