//! The systems spright is measured against, running the very same functions.
//!
//! A function is a [`spright_sdk::rpc::Service`]; its binary's `main` calls [`run`], and the
//! environment decides how it is hosted:
//!
//! - `SPRIGHT_HOST` unset or `spright`: on spright's shared-memory data plane
//!   ([`spright_sdk::run`]);
//! - `http`: as a Knative-style function container, HTTP/1.1 with JSON messages, calling other
//!   functions through the gateway;
//! - `grpc`: as a gRPC service (like the original Online Boutique), protobuf messages over
//!   HTTP/2, calling its peers directly.
//!
//! The `spright-baseline` binary ([`launch`]) starts a whole chain file either way: behind
//! nginx sidecars and an activator-like gateway (Knative), or as gRPC services.

pub mod host;
pub mod launch;
pub mod routes;

mod httpx;

pub use host::{run, HostError};
