//! The shim process's lifecycle, as containerd drives it: `start` (find or spawn the shim of
//! the container's group), serving the Task service, and `delete` (clean up after a shim that
//! died).

use crate::runc::Runc;
use crate::task::TaskService;
use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::util::write_str_to_file;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts};
use std::sync::Arc;

/// Annotations that put containers in one shim, as the runc v2 shim groups them: one shim per
/// pod (CRI's sandbox id), or per explicit group.
const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

pub struct Service {
    namespace: String,
    id: String,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for Service {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // containerd starts the shim in the container's bundle. The spec is read as plain
        // JSON: a field this build does not know must not stop a container from starting.
        let annotations = std::fs::read("config.json")
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok())
            .map(|spec| crate::wiring::annotations(&spec))
            .unwrap_or_default();
        let grouping = GROUP_LABELS
            .iter()
            .find_map(|l| annotations.get(*l).cloned())
            .unwrap_or_else(|| opts.id.clone());
        let address = spawn(opts, &grouping, Vec::new()).await?;
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // The shim serving this container died: remove what it left.
        let bundle = std::env::current_dir().map_err(|err| Error::IoError {
            context: "bundle directory".into(),
            err,
        })?;
        let runc = Runc::new(&self.namespace);
        let _ = runc.delete(&self.id, &bundle, true).await;
        let rootfs = bundle.join("rootfs");
        let _ = containerd_shim::mount::umount_recursive(rootfs.to_str(), libc::MNT_DETACH);
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: containerd_shim::protos::protobuf::MessageField::some(
                containerd_shim::util::timestamp()?,
            ),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        TaskService::new(&self.namespace, publisher, self.exit.clone())
    }
}
