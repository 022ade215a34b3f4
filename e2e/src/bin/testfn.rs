//! A function for tests, whose behaviour the request path picks:
//! `/echo` (default) echoes the body, `/sleep?ms=N` echoes after N ms, `/block?ms=N` stalls the
//! instance's thread for N ms then echoes, `/fail` returns an
//! error, `/crash` exits mid-request, `/call?to=F` calls F with the body, `/big?bytes=N`
//! answers N bytes, `/whoami` names the function, instance and pid.

use spright_sdk::{Context, Error, Request, Response};
use std::time::Duration;

async fn handle(req: Request, ctx: Context) -> Result<Response, Error> {
    let op = req.path().rsplit('/').next().unwrap_or("echo").to_owned();
    match op.as_str() {
        "sleep" => {
            let ms: u64 = req
                .query_param("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            echo(&req, &ctx)
        }
        "block" => {
            // Stalls the instance's only thread: descriptors queue up unread in its socket.
            let ms: u64 = req
                .query_param("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            std::thread::sleep(Duration::from_millis(ms));
            echo(&req, &ctx)
        }
        "fail" => Err("deliberate failure".into()),
        "crash" => std::process::exit(3),
        "call" => {
            let to = req.query_param("to").unwrap_or("").to_owned();
            let reply = ctx.call(&to, "POST", "/echo", req.body()).await?;
            let mut body = format!("{} via {}: ", reply.status(), ctx.function()).into_bytes();
            body.extend_from_slice(reply.body());
            ctx.respond(200, "text/plain", &body)
        }
        "big" => {
            let n: usize = req
                .query_param("bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            ctx.respond_with(200, "application/octet-stream", |room| {
                if n > room.len() {
                    return n; // does not fit: the SDK turns this into an error
                }
                room[..n].fill(b'x');
                n
            })
        }
        "whoami" => ctx.respond(
            200,
            "text/plain",
            format!(
                "{} {} {}",
                ctx.function(),
                ctx.instance(),
                std::process::id()
            )
            .as_bytes(),
        ),
        _ => echo(&req, &ctx),
    }
}

fn echo(req: &Request, ctx: &Context) -> Result<Response, Error> {
    let ct = req
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .to_owned();
    ctx.respond(200, &ct, req.body())
}

fn main() -> Result<(), spright_sdk::SdkError> {
    spright_sdk::run(handle)
}
