//! Demo chain, step 2: words in, "count word" lines out, most frequent first.

use spright_sdk::{Context, Error, Request, Response};

async fn transform(req: Request, ctx: Context) -> Result<Response, Error> {
    ctx.respond_write(200, "text/plain", |out| {
        spright_demo_chain::transform(req.body(), out)
    })
}

fn main() -> Result<(), spright_sdk::SdkError> {
    spright_sdk::run(transform)
}
