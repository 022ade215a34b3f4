//! The files behind shared memory (the pool, poll mode's rings): created exclusively with the
//! chain's mode, or opened read-write to be mapped.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `path`, which must not exist yet (`AlreadyExists` otherwise), with `mode`.
pub(crate) fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Opens `path` read-write, to be mapped shared.
pub(crate) fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}
