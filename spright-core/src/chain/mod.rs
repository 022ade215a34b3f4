//! Chain files: parsing, validation and what is derived from them (the allow list).

mod file;
mod units;

pub use file::{
    ChainFile, CpuPlacement, EproxyMode, FunctionSection, GatewaySection, InstancesSection,
    PoolSection, RouteSection, RoutingMode, ScalingSection,
};
pub use units::{parse_bytes, parse_millis, ByteSize, Millis};

use crate::ids::{FnId, GATEWAY, MAX_FUNCTIONS, MAX_INSTANCES};
use crate::pool::PoolSpec;
use crate::rings::POLL_INSTANCES;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A chain file that failed to load; the message names the field and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("cannot read chain file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {field}: {problem}")]
    Invalid {
        origin: String,
        field: String,
        problem: String,
    },
}

/// A function of a validated chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    pub id: FnIdRepr,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub image: Option<String>,
    /// Instances to start with (for a scaled function: its minimum).
    pub instances: u16,
    /// Set when the function's instances follow load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
    pub calls: Vec<u16>,
}

/// A function's autoscaling (`instances: {min, max, target_concurrency, window}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaling {
    pub min: u16,
    pub max: u16,
    pub target_concurrency: u32,
    /// The stable window; the panic window is a tenth of it.
    pub window_ms: u64,
}

impl Scaling {
    /// Knative's bounds on the stable window.
    pub const MIN_WINDOW_MS: u64 = 6_000;
    pub const MAX_WINDOW_MS: u64 = 3_600_000;

    pub fn stable_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.window_ms)
    }

    pub fn panic_window(&self) -> std::time::Duration {
        self.stable_window() / 10
    }
}

/// Function ids as they appear in serialised manifests.
pub type FnIdRepr = u16;

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Upper-case method, or `None` for any.
    pub method: Option<String>,
    pub path: String,
    /// Function ids in order; RPC-style routes have one.
    pub sequence: Vec<u16>,
}

/// A validated chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    pub routing: RoutingMode,
    /// Manifests written before the field existed read as the default.
    #[serde(default)]
    pub cpu_placement: CpuPlacement,
    pub pool: ChainPool,
    pub listen: String,
    /// Manifests written before the field existed read as the default.
    #[serde(default)]
    pub eproxy: EproxyMode,
    pub timeout_ms: u64,
    pub functions: Vec<Function>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPool {
    pub buffers: u32,
    pub buffer_size: u32,
    /// Descriptors one instance (or the gateway) may have queued unread; see
    /// [`ChainPool::default_queue_limit`].
    #[serde(default = "default_queue_limit")]
    pub queue_limit: u32,
}

/// The largest `pool.queue_limit` a chain may set.
pub const MAX_QUEUE_LIMIT: u32 = 65_536;

/// For manifests written before the field existed (the chain file's default depends on the
/// pool; see [`ChainPool::default_queue_limit`]).
fn default_queue_limit() -> u32 {
    256
}

impl ChainPool {
    /// A quarter of the pool: a stalled receiver then holds at most a quarter of the buffers
    /// in its queue (the others keep serving the rest of the chain) and pins about 1 KiB of
    /// kernel memory per queued descriptor; at least 16 so that small pools stay usable, at
    /// most 1024.
    pub fn default_queue_limit(buffers: u32) -> u32 {
        (buffers / 4).clamp(16, 1024)
    }

    pub fn spec(&self) -> PoolSpec {
        PoolSpec {
            buffer_count: self.buffers,
            buffer_size: self.buffer_size,
        }
    }
}

// Chain names become part of file names and the pool header, function names socket names.
pub(crate) use crate::names::check_name;
pub use crate::names::{MAX_CHAIN_NAME, MAX_FUNCTION_NAME};

impl Chain {
    /// Loads and validates a chain file.
    pub fn load(path: &Path) -> Result<Chain, ChainError> {
        let text = std::fs::read_to_string(path).map_err(|source| ChainError::Read {
            path: path.to_owned(),
            source,
        })?;
        Chain::parse(&text, &path.display().to_string())
    }

    /// Parses and validates chain-file text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Chain, ChainError> {
        let file: ChainFile = serde_yaml_ng::from_str(text).map_err(|e| ChainError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        Chain::validate(file, origin)
    }

    fn validate(file: ChainFile, origin: &str) -> Result<Chain, ChainError> {
        let invalid = |field: String, problem: String| ChainError::Invalid {
            origin: origin.to_owned(),
            field,
            problem,
        };
        check_name(&file.chain, MAX_CHAIN_NAME).map_err(|p| invalid("chain".into(), p))?;

        let buffer_size = u32::try_from(file.pool.buffer_size.0).map_err(|_| {
            invalid(
                "pool.buffer_size".into(),
                format!("{} bytes is too large", file.pool.buffer_size.0),
            )
        })?;
        let queue_limit = file
            .pool
            .queue_limit
            .unwrap_or(ChainPool::default_queue_limit(file.pool.buffers));
        if !(1..=MAX_QUEUE_LIMIT).contains(&queue_limit) {
            return Err(invalid(
                "pool.queue_limit".into(),
                format!("{queue_limit} is not within 1..={MAX_QUEUE_LIMIT}"),
            ));
        }
        let pool = ChainPool {
            buffers: file.pool.buffers,
            buffer_size,
            queue_limit,
        };
        pool.spec()
            .validate()
            .map_err(|p| invalid("pool".into(), p))?;

        if file.gateway.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "gateway.listen".into(),
                format!("{:?} is not an address:port", file.gateway.listen),
            ));
        }
        if file.gateway.timeout.0 == 0 {
            return Err(invalid(
                "gateway.timeout".into(),
                "must be above zero".into(),
            ));
        }

        if file.functions.is_empty() {
            return Err(invalid(
                "functions".into(),
                "a chain needs at least one function".into(),
            ));
        }
        let mut ids: BTreeMap<String, u16> = BTreeMap::new();
        let mut seen_ids: BTreeMap<u16, String> = BTreeMap::new();
        for (i, f) in file.functions.iter().enumerate() {
            let at = |k: &str| format!("functions[{i}].{k}");
            check_name(&f.name, MAX_FUNCTION_NAME).map_err(|p| invalid(at("name"), p))?;
            if f.name == "gateway" {
                return Err(invalid(at("name"), "\"gateway\" is reserved".into()));
            }
            if f.id == GATEWAY.0 {
                return Err(invalid(at("id"), "0 is reserved for the gateway".into()));
            }
            if f.id >= MAX_FUNCTIONS {
                return Err(invalid(
                    at("id"),
                    format!(
                        "{} is over the limit (ids are 1..={})",
                        f.id,
                        MAX_FUNCTIONS - 1
                    ),
                ));
            }
            if ids.insert(f.name.clone(), f.id).is_some() {
                return Err(invalid(
                    at("name"),
                    format!("duplicate function name {:?}", f.name),
                ));
            }
            if let Some(other) = seen_ids.insert(f.id, f.name.clone()) {
                return Err(invalid(
                    at("id"),
                    format!("id {} is already used by function {other:?}", f.id),
                ));
            }
            let (most, field) = match &f.instances {
                InstancesSection::Fixed(n) => (*n, at("instances")),
                InstancesSection::Scaled(sc) => {
                    let at = |field: &str| format!("functions[{i}].instances.{field}");
                    if sc.min == 0 {
                        return Err(invalid(
                            at("min"),
                            "0 is not allowed: a request would find no instance (scale to zero is not supported; the default is 1)".into(),
                        ));
                    }
                    if sc.min > sc.max {
                        return Err(invalid(
                            at("max"),
                            format!("{} is below min ({})", sc.max, sc.min),
                        ));
                    }
                    if sc.target_concurrency == 0 {
                        return Err(invalid(
                            at("target_concurrency"),
                            "must be at least 1".into(),
                        ));
                    }
                    if !(Scaling::MIN_WINDOW_MS..=Scaling::MAX_WINDOW_MS).contains(&sc.window.0) {
                        return Err(invalid(
                            at("window"),
                            format!("{} ms is outside 6s..=1h", sc.window.0),
                        ));
                    }
                    (sc.max, at("max"))
                }
            };
            if most == 0 || most > MAX_INSTANCES {
                return Err(invalid(
                    field,
                    format!("{most} is outside 1..={MAX_INSTANCES}"),
                ));
            }
            if file.routing == RoutingMode::Poll && most > POLL_INSTANCES {
                return Err(invalid(
                    field,
                    format!("{most} is over {POLL_INSTANCES}, the most poll routing serves"),
                ));
            }
            if let Some(cmd) = &f.command {
                if cmd.is_empty() || cmd[0].is_empty() {
                    return Err(invalid(at("command"), "an empty command cannot run".into()));
                }
            }
        }
        let resolve = |name: &str, field: String| {
            ids.get(name)
                .copied()
                .ok_or_else(|| invalid(field, format!("function {name:?} is not defined")))
        };

        let mut functions = Vec::with_capacity(file.functions.len());
        for (i, f) in file.functions.iter().enumerate() {
            let mut calls = Vec::new();
            for (j, c) in f.calls.iter().enumerate() {
                let id = resolve(c, format!("functions[{i}].calls[{j}]"))?;
                if id == f.id {
                    return Err(invalid(
                        format!("functions[{i}].calls[{j}]"),
                        "a function cannot call itself".into(),
                    ));
                }
                calls.push(id);
            }
            functions.push(Function {
                name: f.name.clone(),
                id: f.id,
                command: f.command.clone(),
                env: f.env.clone(),
                image: f.image.clone(),
                instances: match &f.instances {
                    InstancesSection::Fixed(n) => *n,
                    InstancesSection::Scaled(sc) => sc.min,
                },
                scaling: match &f.instances {
                    InstancesSection::Fixed(_) => None,
                    InstancesSection::Scaled(sc) => Some(Scaling {
                        min: sc.min,
                        max: sc.max,
                        target_concurrency: sc.target_concurrency,
                        window_ms: sc.window.0,
                    }),
                },
                calls,
            });
        }

        if file.routes.is_empty() {
            return Err(invalid(
                "routes".into(),
                "a chain needs at least one route".into(),
            ));
        }
        let mut routes = Vec::with_capacity(file.routes.len());
        let mut seen_routes = BTreeSet::new();
        for (i, r) in file.routes.iter().enumerate() {
            let at = |k: &str| format!("routes[{i}].{k}");
            if !r.path.starts_with('/') {
                return Err(invalid(
                    at("path"),
                    format!("{:?} must start with '/'", r.path),
                ));
            }
            if r.path.contains(char::is_whitespace) {
                return Err(invalid(
                    at("path"),
                    format!("{:?} contains whitespace", r.path),
                ));
            }
            let method = match &r.method {
                None => None,
                Some(m) => {
                    let up = m.to_ascii_uppercase();
                    if up.is_empty() || !up.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(invalid(
                            at("method"),
                            format!("{m:?} is not an HTTP method"),
                        ));
                    }
                    Some(up)
                }
            };
            let sequence = match (&r.function, &r.sequence) {
                (Some(f), None) => vec![resolve(f, at("function"))?],
                (None, Some(seq)) => {
                    if seq.is_empty() {
                        return Err(invalid(
                            at("sequence"),
                            "must name at least one function".into(),
                        ));
                    }
                    if seq.len() > 32 {
                        return Err(invalid(
                            at("sequence"),
                            "is longer than 32 functions".into(),
                        ));
                    }
                    seq.iter()
                        .enumerate()
                        .map(|(j, f)| resolve(f, format!("routes[{i}].sequence[{j}]")))
                        .collect::<Result<Vec<_>, _>>()?
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        format!("routes[{i}]"),
                        "give either function or sequence, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        format!("routes[{i}]"),
                        "needs a function or a sequence".into(),
                    ))
                }
            };
            if !seen_routes.insert((method.clone(), r.path.clone())) {
                return Err(invalid(
                    format!("routes[{i}]"),
                    format!(
                        "duplicate route {} {}",
                        method.as_deref().unwrap_or("(any method)"),
                        r.path
                    ),
                ));
            }
            routes.push(Route {
                method,
                path: r.path.clone(),
                sequence,
            });
        }
        if routes.len() > u16::MAX as usize {
            return Err(invalid("routes".into(), "too many routes".into()));
        }

        Ok(Chain {
            name: file.chain,
            routing: file.routing,
            cpu_placement: file.cpu_placement,
            pool,
            listen: file.gateway.listen,
            eproxy: file.gateway.eproxy,
            timeout_ms: file.gateway.timeout.0,
            functions,
            routes,
        })
    }

    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    pub fn function_by_id(&self, id: FnId) -> Option<&Function> {
        self.functions.iter().find(|f| f.id == id.0)
    }

    /// The name of function `id` ("gateway" for 0).
    pub fn name_of(&self, id: FnId) -> &str {
        if id == GATEWAY {
            return "gateway";
        }
        self.function_by_id(id)
            .map(|f| f.name.as_str())
            .unwrap_or("?")
    }

    /// The (source, destination) pairs the router lets through. Derived, never written by hand:
    /// - the gateway to the first function of every route;
    /// - each function of a sequence to the next one;
    /// - every function to the gateway (final replies and error replies);
    /// - a caller to each function it declares in `calls`, and the callee back (its reply).
    pub fn allow_list(&self) -> BTreeSet<(u16, u16)> {
        let mut allow = BTreeSet::new();
        for r in &self.routes {
            allow.insert((GATEWAY.0, r.sequence[0]));
            for pair in r.sequence.windows(2) {
                allow.insert((pair[0], pair[1]));
            }
        }
        for f in &self.functions {
            allow.insert((f.id, GATEWAY.0));
            for &c in &f.calls {
                allow.insert((f.id, c));
                allow.insert((c, f.id));
            }
        }
        allow
    }
}

#[cfg(test)]
mod tests;
