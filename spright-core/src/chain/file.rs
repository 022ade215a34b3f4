//! The chain file as written by users (YAML), before validation.

use super::units::{ByteSize, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How descriptors move between function sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// SPROXY in the kernel: sk_msg redirection through a sockhash (needs BPF privilege in the
    /// pool-manager only).
    #[default]
    Sockmap,
    /// The pool-manager relays descriptors in user space (no BPF needed anywhere).
    User,
    /// D-SPRIGHT: descriptors go through busy-polled rings in shared memory; no sockets and
    /// no router on the data path, at the price of a polling core per process.
    Poll,
}

impl std::str::FromStr for RoutingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sockmap" | "kernel" => Ok(RoutingMode::Sockmap),
            "user" | "userspace" => Ok(RoutingMode::User),
            "poll" => Ok(RoutingMode::Poll),
            other => Err(format!(
                "unknown routing mode {other:?} (expected \"sockmap\", \"user\" or \"poll\")"
            )),
        }
    }
}

impl std::fmt::Display for RoutingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoutingMode::Sockmap => "sockmap",
            RoutingMode::User => "user",
            RoutingMode::Poll => "poll",
        })
    }
}

/// Where the chain's processes may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuPlacement {
    /// The pool-manager keeps the gateway and the functions on one CPU while they use little
    /// of it (a hop then wakes a process on the same CPU, not across CPUs) and gives them back
    /// every CPU they may use when the load grows. Not in poll mode.
    #[default]
    Adaptive,
    /// Processes stay where the kernel's scheduler puts them.
    Off,
}

/// Whether the pool-manager counts the gateway's traffic with EPROXY (a tc program on the
/// interfaces the gateway listens on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EproxyMode {
    /// Counted where BPF can be loaded; elsewhere the chain runs without, with a warning.
    #[default]
    Auto,
    /// Counted, or the chain does not start.
    On,
    /// Not counted.
    Off,
}

impl std::fmt::Display for EproxyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EproxyMode::Auto => "auto",
            EproxyMode::On => "on",
            EproxyMode::Off => "off",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainFile {
    /// The chain's name: lowercase letters, digits and '-'.
    pub chain: String,
    #[serde(default)]
    pub routing: RoutingMode,
    #[serde(default)]
    pub cpu_placement: CpuPlacement,
    pub pool: PoolSection,
    #[serde(default)]
    pub gateway: GatewaySection,
    pub functions: Vec<FunctionSection>,
    pub routes: Vec<RouteSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Number of buffers.
    pub buffers: u32,
    /// Bytes per buffer ("64KiB", "1MiB" or a number).
    pub buffer_size: ByteSize,
    /// Descriptors one instance may have queued unread before senders to it are refused as
    /// busy (default: a quarter of the buffers, within 16..=1024).
    #[serde(default)]
    pub queue_limit: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Address the gateway listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Deadline for a whole request through the chain ("5s", "500ms").
    #[serde(default = "default_timeout")]
    pub timeout: Millis,
    /// EPROXY: auto (default), on or off.
    #[serde(default)]
    pub eproxy: EproxyMode,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: default_listen(),
            timeout: default_timeout(),
            eproxy: EproxyMode::default(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_timeout() -> Millis {
    Millis(10_000)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSection {
    pub name: String,
    pub id: u16,
    /// argv for the embedded runner.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Extra environment for the embedded runner.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container image, for containerd deployments.
    #[serde(default)]
    pub image: Option<String>,
    /// Instances the embedded runner starts: a number, or `{min, max, target_concurrency,
    /// window}` for as many as the load needs.
    #[serde(default)]
    pub instances: InstancesSection,
    /// Functions this one may call (and hear replies from).
    #[serde(default)]
    pub calls: Vec<String>,
}

fn one() -> u16 {
    1
}

/// `instances:` as written.
#[derive(Debug, Clone)]
pub enum InstancesSection {
    Fixed(u16),
    Scaled(ScalingSection),
}

// By hand rather than untagged, so that a malformed map says what is wrong with it (a missing
// max, an unknown field) instead of "did not match any variant".
impl<'de> Deserialize<'de> for InstancesSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = InstancesSection;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of instances, or {min, max, target_concurrency, window}")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u16::try_from(v)
                    .map(InstancesSection::Fixed)
                    .map_err(|_| E::custom(format!("{v} instances is too many")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} instances is not a count")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                ScalingSection::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(InstancesSection::Scaled)
            }
        }
        d.deserialize_any(Visit)
    }
}

impl Default for InstancesSection {
    fn default() -> Self {
        InstancesSection::Fixed(1)
    }
}

/// Instances that follow load, as Knative's autoscaler sizes a revision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingSection {
    /// Fewest instances, kept however idle (at least 1: no cold start on the request path).
    #[serde(default = "one")]
    pub min: u16,
    pub max: u16,
    /// Requests in flight one instance should carry.
    #[serde(default = "default_target_concurrency")]
    pub target_concurrency: u32,
    /// The stable window the concurrency is averaged over; the panic window is a tenth of it.
    #[serde(default = "default_window")]
    pub window: Millis,
}

fn default_target_concurrency() -> u32 {
    10
}

fn default_window() -> Millis {
    Millis(60_000)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// HTTP method; absent means any.
    #[serde(default)]
    pub method: Option<String>,
    /// Path prefix, starting with '/'. The longest matching prefix wins.
    pub path: String,
    /// The entry function of an RPC-style route.
    #[serde(default)]
    pub function: Option<String>,
    /// A fixed sequence of functions; the last one answers.
    #[serde(default)]
    pub sequence: Option<Vec<String>>,
}
