//! Demo chain, step 3: counts in, an HTML page out. On `/count` it is the entry of an RPC-style
//! route instead: it calls `parse` and `transform` itself, then renders.

use spright_sdk::{Context, Error, Request, Response};

async fn render(req: Request, ctx: Context) -> Result<Response, Error> {
    if req.path().starts_with("/count") {
        let words = ctx.call("parse", "POST", "/parse", req.body()).await?;
        let counts = ctx
            .call("transform", "POST", "/transform", words.body())
            .await?;
        return ctx.respond_write(200, "text/html; charset=utf-8", |out| {
            spright_demo_chain::render(counts.body(), out)
        });
    }
    ctx.respond_write(200, "text/html; charset=utf-8", |out| {
        spright_demo_chain::render(req.body(), out)
    })
}

fn main() -> Result<(), spright_sdk::SdkError> {
    spright_sdk::run(render)
}
