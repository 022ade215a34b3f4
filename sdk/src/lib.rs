//! The spright function SDK.
//!
//! A function is a [`Handler`]: it gets a [`Request`] whose body is read in place from the
//! chain's shared-memory pool, and returns a [`Response`] written into a pool buffer. With the
//! [`Context`] it can call other functions of the chain and await their replies. What happens
//! to the response (next function of a sequence, back to a caller, or to the gateway) is the
//! runtime's business, not the handler's.
//!
//! ```no_run
//! use spright_sdk::{Context, Error, Request, Response};
//!
//! async fn shout(req: Request, ctx: Context) -> Result<Response, Error> {
//!     let text = req.text().unwrap_or("").to_uppercase();
//!     ctx.respond(200, "text/plain", text.as_bytes())
//! }
//!
//! fn main() -> Result<(), spright_sdk::SdkError> {
//!     spright_sdk::run(shout)
//! }
//! ```
//!
//! The runner (`spright up`) and the containerd shim start functions with `SPRIGHT_SOCKET`
//! (the function's registration socket) and `SPRIGHT_POOL` set; the SDK needs nothing else.

mod error;
mod function;
mod lease;
pub mod member;
mod message;
pub mod rpc;
pub mod runtime;
mod sender;

pub use error::{CallError, SdkError};
pub use function::{run, serve, serve_member, BodyWriter, Context, Error, Handler};
pub use lease::Lease;
pub use message::{Message, Reply, Request, Response};
pub use sender::Sender;
