//! The hosting environment, read and checked before anything starts.

use super::HostError;
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Spright,
    Http,
    Grpc,
}

/// What the `SPRIGHT_*` variables ask for.
#[derive(Debug, Clone)]
pub struct Env {
    pub host: Host,
    pub threads: usize,
    /// `SPRIGHT_LISTEN`; always set for the http and grpc hosts.
    pub listen: Option<SocketAddr>,
    /// `SPRIGHT_GATEWAY_URL` without a trailing '/'.
    pub gateway: Option<String>,
    /// `SPRIGHT_PEERS`: (function, host:port).
    pub peers: Vec<(String, String)>,
    pub http_listen: Option<SocketAddr>,
    /// `SPRIGHT_TIMEOUT_MS`: how long a call to another function may take (default 10 s).
    pub call_timeout: std::time::Duration,
}

impl Env {
    pub fn from_env() -> Result<Env, HostError> {
        Env::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var` (tests pass a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Env, HostError> {
        let invalid = |var: &'static str, value: &str, problem: String| HostError::InvalidEnv {
            var,
            value: value.to_owned(),
            problem,
        };
        let host = match var("SPRIGHT_HOST").as_deref() {
            None | Some("") | Some("spright") => Host::Spright,
            Some("http") => Host::Http,
            Some("grpc") => Host::Grpc,
            Some(other) => {
                return Err(invalid(
                    "SPRIGHT_HOST",
                    other,
                    "expected spright, http or grpc".into(),
                ))
            }
        };
        let threads = match var(spright_core::env::THREADS) {
            None => 1,
            Some(t) => match t.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(invalid(
                        spright_core::env::THREADS,
                        &t,
                        "expected a count above 0".into(),
                    ))
                }
            },
        };
        let mut env = Env {
            host,
            threads,
            listen: None,
            gateway: None,
            peers: Vec::new(),
            http_listen: None,
            call_timeout: std::time::Duration::from_secs(10),
        };
        if host == Host::Spright {
            return Ok(env); // the SDK reads its own variables
        }
        let listen = var("SPRIGHT_LISTEN").ok_or(HostError::MissingEnv("SPRIGHT_LISTEN"))?;
        env.listen = Some(address("SPRIGHT_LISTEN", &listen)?);
        if let Some(url) = var("SPRIGHT_GATEWAY_URL") {
            env.gateway = Some(gateway_url(&url)?);
        }
        if let Some(peers) = var("SPRIGHT_PEERS") {
            env.peers = parse_peers(&peers)?;
        }
        if let Some(a) = var("SPRIGHT_HTTP_LISTEN") {
            env.http_listen = Some(address("SPRIGHT_HTTP_LISTEN", &a)?);
        }
        if let Some(ms) = var(spright_core::env::TIMEOUT_MS) {
            let ms: u64 = ms.trim().parse().ok().filter(|&ms| ms > 0).ok_or_else(|| {
                invalid(
                    spright_core::env::TIMEOUT_MS,
                    &ms,
                    "expected milliseconds above 0".into(),
                )
            })?;
            env.call_timeout = std::time::Duration::from_millis(ms);
        }
        Ok(env)
    }
}

fn address(var: &'static str, value: &str) -> Result<SocketAddr, HostError> {
    let problem = match value.to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => return Ok(a),
            None => "names no address".to_owned(),
        },
        Err(e) => format!("expected host:port ({e})"),
    };
    Err(HostError::InvalidEnv {
        var,
        value: value.to_owned(),
        problem,
    })
}

fn gateway_url(value: &str) -> Result<String, HostError> {
    let invalid = |problem: &str| HostError::InvalidEnv {
        var: "SPRIGHT_GATEWAY_URL",
        value: value.to_owned(),
        problem: problem.to_owned(),
    };
    let uri: http::Uri = value.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(invalid("expected http://host:port"));
    }
    if uri.query().is_some() {
        return Err(invalid("a query makes no sense here"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// Parses `name=host:port,name=host:port` (spaces and empty items ignored).
pub fn parse_peers(value: &str) -> Result<Vec<(String, String)>, HostError> {
    let mut peers: Vec<(String, String)> = Vec::new();
    for (i, item) in value.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            continue;
        }
        let problem = match item.split_once('=') {
            None => "is not name=host:port",
            Some((name, _)) if name.trim().is_empty() => "has no name",
            Some((name, _)) if peers.iter().any(|(n, _)| n == name.trim()) => "repeats a name",
            Some((name, addr)) => {
                let addr = addr.trim();
                let valid = addr
                    .parse::<http::uri::Authority>()
                    .is_ok_and(|a| a.port_u16().is_some() && a.as_str() == addr);
                if valid {
                    peers.push((name.trim().to_owned(), addr.to_owned()));
                    continue;
                }
                "does not end in host:port"
            }
        };
        return Err(HostError::InvalidEnv {
            var: "SPRIGHT_PEERS",
            value: value.to_owned(),
            problem: format!("item {} ({item:?}) {problem}", i + 1),
        });
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Env, HostError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn spright_is_the_default_and_needs_nothing_else() {
        let e = env(&[]).unwrap();
        assert_eq!((e.host, e.threads), (Host::Spright, 1));
    }

    #[test]
    fn errors_name_the_variable() {
        let msg = |vars: &[(&str, &str)]| env(vars).unwrap_err().to_string();
        assert!(msg(&[("SPRIGHT_HOST", "knative")]).starts_with("SPRIGHT_HOST="));
        assert_eq!(
            msg(&[("SPRIGHT_HOST", "http")]),
            "SPRIGHT_LISTEN is not set"
        );
        assert!(msg(&[("SPRIGHT_THREADS", "0")]).starts_with("SPRIGHT_THREADS="));
        let base = [("SPRIGHT_HOST", "grpc"), ("SPRIGHT_LISTEN", "127.0.0.1:1")];
        assert!(msg(&[base[0], ("SPRIGHT_LISTEN", "nowhere")]).starts_with("SPRIGHT_LISTEN="));
        let with = |k, v| msg(&[base[0], base[1], (k, v)]);
        assert!(with("SPRIGHT_PEERS", "a=1.2.3.4:5,b").contains("item 2"));
        assert!(with("SPRIGHT_PEERS", "a=x:1,a=y:2").contains("repeats"));
        assert!(with("SPRIGHT_GATEWAY_URL", "ftp://x").starts_with("SPRIGHT_GATEWAY_URL="));
        assert!(with("SPRIGHT_HTTP_LISTEN", ":x").starts_with("SPRIGHT_HTTP_LISTEN="));
    }

    #[test]
    fn a_full_grpc_environment() {
        let e = env(&[
            ("SPRIGHT_HOST", "grpc"),
            ("SPRIGHT_LISTEN", "127.0.0.1:7000"),
            ("SPRIGHT_THREADS", "2"),
            ("SPRIGHT_PEERS", " a=127.0.0.1:7001, b=localhost:7002 ,"),
            ("SPRIGHT_GATEWAY_URL", "http://127.0.0.1:8080/"),
        ])
        .unwrap();
        assert_eq!(e.threads, 2);
        assert_eq!(e.listen, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(e.gateway.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(
            e.peers,
            vec![
                ("a".into(), "127.0.0.1:7001".into()),
                ("b".into(), "localhost:7002".into())
            ]
        );
    }
}
