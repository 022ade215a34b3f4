//! Demo chain, step 1: text in, words out (one per line). Reads the request body in place in
//! the pool and writes its output straight into a new pool buffer.

use spright_sdk::{Context, Error, Request, Response};

async fn parse(req: Request, ctx: Context) -> Result<Response, Error> {
    ctx.respond_write(200, "text/plain", |out| {
        spright_demo_chain::parse(req.body(), out)
    })
}

fn main() -> Result<(), spright_sdk::SdkError> {
    spright_sdk::run(parse)
}
