//! Functions as typed methods (RPC style, like gRPC services) whose messages are
//! fixed-layout structs: under spright a request is written once into a pool buffer and the
//! callee reads it in place, with no serialisation. The same [`Service`] can be hosted over
//! HTTP/JSON or gRPC/protobuf (see the `spright-baselines` crate), which is how the benchmarks
//! compare data planes on identical function logic.
//!
//! ```no_run
//! use spright_sdk::rpc::{Arg, Cx, Method, Service, Str, Wire};
//!
//! #[repr(C)]
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, serde::Serialize, serde::Deserialize)]
//! struct Name { name: Str<32> }
//! impl Wire for Name {}
//!
//! struct Greet;
//! impl Method for Greet {
//!     const SERVICE: &'static str = "greeter";
//!     const NAME: &'static str = "Greet";
//!     type Req = Name;
//!     type Resp = Name;
//! }
//!
//! fn main() -> Result<(), spright_sdk::SdkError> {
//!     let service = Service::new("greeter").method::<Greet, _, _>(|req: Arg<Name>, _cx: Cx| async move {
//!         Ok(Name { name: Str::truncated(&format!("hello {}", req.name)) })
//!     });
//!     spright_sdk::run(service)
//! }
//! ```

mod call;
mod service;
mod wire;

pub use call::{Arg, BoxFuture, Codec, Cx, Method, Remote, WireError, RPC_METHOD};
pub use service::{HttpRequest, HttpResponse, ServeError, Service};
pub use wire::{Empty, List, Str, TooLong, Wire};

/// Waits for several calls made together, failing on the first error:
/// `let (a, b) = try_join!(cx.call::<A>(&x), cx.call::<B>(&y))?;` (tokio's macro, so that
/// functions need no runtime crate of their own).
pub use tokio::try_join;
