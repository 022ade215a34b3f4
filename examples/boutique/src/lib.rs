//! The Online Boutique (Google's microservices demo) as spright functions: ten services
//! calling each other RPC style, with messages that are read in place from the chain's pool.
//! The services are plain [`spright_sdk::rpc::Service`] values, so other hosts can run the very
//! same logic (the Knative-style and gRPC-style baselines do, which is how the benchmark
//! compares data planes); [`proto`] is where a gRPC host plugs in the messages' protobuf form.

pub mod data;
pub mod model;
pub mod proto;
pub mod services;
