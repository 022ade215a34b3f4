//! `containerd-shim-spright-v1`: containerd's runtime `io.containerd.spright.v1`.
//!
//! A runc-based shim that runs plain containers exactly as runc does, and wires containers
//! annotated with `spright.io/chain` and `spright.io/function` into their chain: the chain's
//! shared-memory pool and the function's registration socket are bind-mounted, and the SDK's
//! environment is set, before the container starts. One binary serves containerd 1.6 to 2.3:
//! `launch` speaks each version's start protocol and both task API versions.

mod container;
mod launch;
mod options;
mod runc;
mod stdio;
mod task;
mod traffic;
mod wiring;

fn main() {
    std::process::exit(launch::main());
}
