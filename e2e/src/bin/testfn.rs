//! A function for tests, whose behaviour the request path picks:
//! `/echo` (default) echoes the body, `/sleep?ms=N` echoes after N ms, `/block?ms=N` stalls the
//! instance's thread for N ms then echoes, `/fail` returns an error, `/crash` exits
//! mid-request, `/panic` panics in the handler, `/call?to=F` calls F with the body,
//! `/big?bytes=N` answers N bytes, `/whoami` names the function, instance and pid,
//! `/fanout?to=F&n=N` makes N calls to F's `/gather?n=G` together (G is `group`, N by default),
//! and `/gather?n=G&wait_ms=W` answers only once G gathers are in this instance at once (each
//! fails after W ms, 5000 by default; a group that timed out stays part-filled, so a test uses
//! a failing group size once).

use spright_sdk::{Context, Error, Request, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Barrier;

/// One barrier per group size that `/gather` is asked for.
static GATHERINGS: Mutex<Option<HashMap<usize, Arc<Barrier>>>> = Mutex::new(None);

fn number(req: &Request, name: &str, default: u64) -> u64 {
    req.query_param(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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
        "panic" => panic!("deliberate panic"),
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
        "fanout" => {
            let to = req.query_param("to").unwrap_or("").to_owned();
            let n = number(&req, "n", 2);
            let group = number(&req, "group", n);
            let wait_ms = number(&req, "wait_ms", 5000);
            let target = format!("/gather?n={group}&wait_ms={wait_ms}");
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..n {
                let (ctx, to, target) = (ctx.clone(), to.clone(), target.clone());
                calls.spawn(async move { ctx.call(&to, "POST", &target, b"").await });
            }
            let mut answers = Vec::new();
            while let Some(call) = calls.join_next().await {
                let reply = call??;
                let body = String::from_utf8_lossy(reply.body()).into_owned();
                if reply.status() != 200 {
                    return Err(format!("a call answered {}: {body}", reply.status()).into());
                }
                answers.push(body);
            }
            answers.sort();
            ctx.respond(200, "text/plain", answers.join("\n").as_bytes())
        }
        "gather" => {
            let n = number(&req, "n", 2) as usize;
            let wait = Duration::from_millis(number(&req, "wait_ms", 5000));
            let barrier = GATHERINGS
                .lock()
                .unwrap()
                .get_or_insert_with(HashMap::new)
                .entry(n)
                .or_insert_with(|| Arc::new(Barrier::new(n)))
                .clone();
            match tokio::time::timeout(wait, barrier.wait()).await {
                Ok(_) => ctx.respond(200, "text/plain", format!("{n} together").as_bytes()),
                Err(_) => Err(format!("{n} calls did not arrive together within {wait:?}").into()),
            }
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
