//! The Online Boutique (Google's microservices demo) as spright functions: ten services
//! calling each other RPC style, with messages that are read in place from the chain's pool.
//! The same services run Knative-style and gRPC-style under `spright-baselines`, which is how
//! the benchmark compares data planes on identical logic.

pub mod data;
pub mod model;
mod proto;
pub mod services;

pub use proto::pb;
