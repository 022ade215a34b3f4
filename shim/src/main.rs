//! `containerd-shim-spright-v1`: containerd's runtime `io.containerd.spright.v1`.
//!
//! A runc-based shim (task API v2) that runs plain containers exactly as runc does, and wires
//! containers annotated with `spright.io/chain` and `spright.io/function` into their chain: the
//! chain's shared-memory pool and the function's registration socket are bind-mounted, and the
//! SDK's environment is set, before the container starts.

mod container;
mod options;
mod runc;
mod service;
mod stdio;
mod task;
mod wiring;

#[tokio::main]
async fn main() {
    containerd_shim::asynchronous::run::<service::Service>("io.containerd.spright.v1", None).await;
}
