//! The function the baseline tests launch, one of two services chosen by argv:
//! - `shout` serves `Upper` (upper-cases a text; fails on "fail");
//! - `echo` has an HTTP entry: `GET /pid` answers its process id, `POST /size` the body's
//!   length, anything else `echo: ` and the body upper-cased by a call to `shout`.

use bytemuck::{Pod, Zeroable};
use prost::Message;
use serde::{Deserialize, Serialize};
use spright_sdk::rpc::{Arg, Cx, HttpRequest, HttpResponse, Method, Service, Str, Wire};

/// A short text, in place under spright.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Serialize, Deserialize)]
struct Text {
    text: Str<64>,
}

/// `Text`'s protobuf form, for the gRPC host.
#[derive(Clone, PartialEq, prost::Message)]
struct TextProto {
    #[prost(string, tag = "1")]
    text: String,
}

impl Wire for Text {
    fn encode_proto(&self) -> Option<Vec<u8>> {
        let text = self.text.as_str().to_owned();
        Some(TextProto { text }.encode_to_vec())
    }

    fn decode_proto(bytes: &[u8]) -> Option<Result<Self, String>> {
        let decoded = TextProto::decode(bytes).map_err(|e| e.to_string());
        Some(decoded.and_then(|p| {
            let text = Str::new(&p.text).map_err(|e| format!("text: {e}"))?;
            Ok(Text { text })
        }))
    }
}

struct Upper;

impl Method for Upper {
    const SERVICE: &'static str = "shout";
    const NAME: &'static str = "Upper";
    type Req = Text;
    type Resp = Text;
}

fn shout() -> Service {
    Service::new("shout").method::<Upper, _, _>(|req: Arg<Text>, _cx: Cx| async move {
        let text = req.text.as_str();
        if text == "fail" {
            return Err("asked to fail".into());
        }
        Ok(Text {
            text: Str::truncated(&text.to_uppercase()),
        })
    })
}

fn echo() -> Service {
    Service::new("echo").http(|req: HttpRequest, cx: Cx| async move {
        match req.path() {
            "/pid" => {
                let pid = std::process::id().to_string();
                return Ok(HttpResponse::new(200, "text/plain", pid));
            }
            "/size" => {
                let size = req.body().len().to_string();
                return Ok(HttpResponse::new(200, "text/plain", size));
            }
            _ => {}
        }
        let text = String::from_utf8_lossy(req.body());
        let request = Text {
            text: Str::truncated(text.trim()),
        };
        let reply = cx.call::<Upper>(&request).await?;
        let body = format!("echo: {}", reply.text);
        Ok(HttpResponse::new(200, "text/plain", body))
    })
}

fn main() -> anyhow::Result<()> {
    let service = match std::env::args().nth(1).as_deref() {
        Some("echo") => echo(),
        Some("shout") => shout(),
        other => anyhow::bail!("usage: spright-baseline-testfn echo|shout (got {other:?})"),
    };
    spright_baselines::run(service)
}
