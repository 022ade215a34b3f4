//! Finding the programs a chain runs: spright's own binaries and the functions' commands.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Where `spright`'s sibling binaries are.
pub struct Binaries {
    dir: Option<PathBuf>,
}

impl Binaries {
    /// Looks next to the running executable first, then on PATH.
    pub fn locate() -> Binaries {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned));
        Binaries { dir }
    }

    /// The path of `name`: beside `spright` if there, else `name` for a PATH lookup.
    pub fn find(&self, name: &str) -> PathBuf {
        if let Some(dir) = &self.dir {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
        PathBuf::from(name)
    }

    /// The program of a function's command: a path with '/' is relative to the chain file's
    /// directory; a bare name is looked up beside `spright`, then on PATH.
    pub fn program(&self, command: &str, chain_dir: &Path) -> anyhow::Result<PathBuf> {
        if command.contains('/') {
            let p = chain_dir.join(command);
            if !p.is_file() {
                bail!("command {} does not exist", p.display());
            }
            return Ok(p);
        }
        let found = self.find(command);
        if found.is_absolute() || on_path(command) {
            return Ok(found);
        }
        bail!("command {command:?} is neither beside spright nor on PATH")
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// The directory a chain file's relative paths are relative to.
pub fn chain_dir(chain_file: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(chain_file).context("resolving the chain file's path")?;
    Ok(abs
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("/")))
}
