//! The systems spright is measured against, running the very same functions.
//!
//! A function is a [`spright_sdk::rpc::Service`]. [`run`] hosts one the way the environment
//! asks:
//!
//! - `SPRIGHT_HOST` unset or `spright`: on spright's shared-memory data plane
//!   ([`spright_sdk::run`]);
//! - `http`: as a Knative-style function container, HTTP/1.1 with JSON messages, calling other
//!   functions through the gateway;
//! - `grpc`: as a gRPC service (like the original Online Boutique), protobuf messages over
//!   HTTP/2, calling its peers directly.
//!
//! The example workloads know nothing of this crate: their binaries run on spright alone.
//! `spright-baseline-host <workload> <service>` ([`workloads`]) hosts their services through
//! [`run`], and the `spright-baseline` binary ([`launch`]) starts a whole chain file either
//! way, behind nginx sidecars and an activator-like gateway (Knative) or as gRPC services,
//! running that host wherever the chain names a workload's binary. Other functions (such as
//! `spright-baseline-testfn`) call [`run`] themselves.

pub mod host;
pub mod launch;
pub mod routes;
pub mod workloads;

mod httpx;

pub use host::{run, HostError};
