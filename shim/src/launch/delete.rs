//! `delete`: containerd calls it in the bundle of a container whose shim server died (killed,
//! or gone while containerd was down), to remove what the server would have.

use super::serve::Reaper;
use super::LaunchError;
use crate::runc::{Runc, Runtime};
use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::Flags;
use std::io::Write;

pub fn delete(flags: &Flags) -> Result<(), LaunchError> {
    let runtime = tokio::runtime::Runtime::new().map_err(LaunchError::io("starting tokio"))?;
    let response = runtime.block_on(async {
        super::serve::set_subreaper()?;
        // runc is waited for through the exit monitor, so something must reap it.
        tokio::spawn(Reaper::install()?.reap_only());
        let bundle = if flags.bundle.is_empty() {
            std::env::current_dir().map_err(LaunchError::io("the bundle directory"))?
        } else {
            flags.bundle.clone().into()
        };
        let runc = Runc::new(&flags.namespace);
        let _ = runc.delete(&flags.id, &bundle, true).await;
        let rootfs = bundle.join("rootfs");
        let _ = containerd_shim::mount::umount_recursive(rootfs.to_str(), libc::MNT_DETACH);
        // containerd reports this pid in the task's exit and delete events.
        let pid = std::fs::read_to_string(bundle.join("init.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        Ok::<_, LaunchError>(DeleteResponse {
            pid,
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(containerd_shim::util::timestamp()?),
            ..Default::default()
        })
    })?;
    let bytes = response
        .write_to_bytes()
        .map_err(|e| LaunchError::Other(format!("encoding the delete response: {e}")))?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(LaunchError::io("answering containerd on stdout"))
}
