//! Where the Task service's events go: containerd's event service, or in tests a recorder.

use async_trait::async_trait;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;
use log::warn;

#[async_trait]
pub trait Events: Send + Sync {
    /// Publishes `event` under `topic`; a failure is logged, never the caller's.
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>);
}

/// containerd's event service, in the shim's namespace.
pub struct ToContainerd {
    pub publisher: RemotePublisher,
    pub namespace: String,
}

#[async_trait]
impl Events for ToContainerd {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = Context::default();
        if let Err(e) = self
            .publisher
            .publish(ctx, topic, &self.namespace, event)
            .await
        {
            warn!("publishing {topic}: {e}");
        }
    }
}
