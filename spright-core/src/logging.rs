//! Structured logging for spright's processes (slog): human-readable text on a terminal, one
//! JSON object per line for log collectors. Everything goes to stderr.

use slog::{o, Drain, Level, Logger};

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// A logger for `component`, at `level` and above. The level can also come from
/// `SPRIGHT_LOG` (error, warn, info, debug, trace).
pub fn logger(component: &'static str, format: LogFormat) -> Logger {
    let level = std::env::var("SPRIGHT_LOG")
        .ok()
        .and_then(|l| Level::from_str(&l).ok())
        .unwrap_or(Level::Info);
    let drain = match format {
        LogFormat::Text => {
            let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
            let d = slog_term::FullFormat::new(decorator).build().fuse();
            slog_async::Async::new(d).chan_size(4096).build().fuse()
        }
        LogFormat::Json => {
            let d = slog_json::Json::default(std::io::stderr()).fuse();
            slog_async::Async::new(d).chan_size(4096).build().fuse()
        }
    };
    Logger::root(
        drain.filter_level(level).fuse(),
        o!("component" => component),
    )
}
