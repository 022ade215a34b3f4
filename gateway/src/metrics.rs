//! `/metrics` in Prometheus text format: the gateway's own request counters and latency
//! histograms, pool occupancy read from the pool's headers, and the router's per-function
//! counters (SPROXY's per-CPU map, through the pool-manager's control socket).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use spright_core::protocol::{FunctionLoad, RouterStats};
use spright_sdk::runtime::Runtime;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabel, Histogram>,
    /// The router's counters as of the last scrape.
    pub router: Arc<Mutex<Option<RouterStats>>>,
}

#[derive(Debug)]
struct ChainCollector {
    runtime: Arc<Runtime>,
    router: Arc<Mutex<Option<RouterStats>>>,
}

impl Collector for ChainCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.runtime.pool().stats();
        {
            let mut m = encoder.encode_descriptor(
                "spright_pool_buffers",
                "Buffers of the chain's pool by state",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in [
                ("free", stats.free),
                ("in_transit", stats.in_transit),
                ("held", stats.held),
            ] {
                let labels = [("state", state)];
                ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        ConstGauge::new(stats.total as i64).encode(encoder.encode_descriptor(
            "spright_pool_capacity_buffers",
            "Buffers in the chain's pool",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(self.runtime.in_flight() as i64).encode(encoder.encode_descriptor(
            "spright_gateway_in_flight_requests",
            "Requests sent into the chain and not answered yet",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(self.runtime.rejected()).encode(encoder.encode_descriptor(
            "spright_gateway_rejected_descriptors",
            "Descriptors the gateway rejected (forged, stale or from another pool)",
            None,
            MetricType::Counter,
        )?)?;
        let router = self.router.lock().unwrap();
        let Some(router) = router.as_ref() else {
            return Ok(());
        };
        type Pick = fn(&spright_core::protocol::FunctionStats) -> u64;
        let families: [(&str, &str, Pick); 4] = [
            (
                "spright_function_sent_descriptors",
                "Descriptors a function sent that the router delivered",
                |f| f.sent,
            ),
            (
                "spright_function_sent_bytes",
                "Bytes of descriptors a function sent that the router delivered",
                |f| f.sent_bytes,
            ),
            (
                "spright_function_received_descriptors",
                "Descriptors the router delivered to a function",
                |f| f.received,
            ),
            (
                "spright_function_refused_descriptors",
                "Descriptors a function sent that the router refused",
                |f| f.refused,
            ),
        ];
        for (name, help, pick) in families {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for f in &router.functions {
                let labels = [("function", f.name.as_str())];
                ConstCounter::new(pick(f)).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "spright_function_instances",
                "Registered instances of a function",
                None,
                MetricType::Gauge,
            )?;
            for f in &router.functions {
                let labels = [("function", f.name.as_str())];
                ConstGauge::new(f.instances as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "spright_function_queued_descriptors",
                "Descriptors queued unread at a function's instances (bounded by pool.queue_limit each)",
                None,
                MetricType::Gauge,
            )?;
            for f in &router.functions {
                let labels = [("function", f.name.as_str())];
                ConstGauge::new(f.queued as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        encode_load(&mut encoder, &router.functions)?;
        encode_eproxy(&mut encoder, &router.eproxy)?;
        encode_function_eproxy(&mut encoder, &router.function_eproxy)?;
        ConstCounter::new(router.malformed).encode(encoder.encode_descriptor(
            "spright_router_malformed_messages",
            "Sends on function sockets that were not one descriptor",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(router.overflow).encode(encoder.encode_descriptor(
            "spright_router_overflow_refusals",
            "Refusals not handed back because their sender left twice its queue limit unread",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

/// The scaling signal, named after Knative autoscaler's figures, per function (the gateway's
/// are the whole chain's: every routed request until it is answered).
fn encode_load(
    encoder: &mut DescriptorEncoder<'_>,
    functions: &[spright_core::protocol::FunctionStats],
) -> Result<(), std::fmt::Error> {
    let loaded: Vec<(&str, FunctionLoad)> = functions
        .iter()
        .filter_map(|f| f.load.map(|l| (f.name.as_str(), l)))
        .collect();
    if loaded.is_empty() {
        return Ok(());
    }
    {
        let mut m = encoder.encode_descriptor(
            "spright_function_requests_in_flight",
            "Requests a function's instances are handling now",
            None,
            MetricType::Gauge,
        )?;
        for (name, l) in &loaded {
            ConstGauge::new(l.in_flight as i64).encode(m.encode_family(&[("function", *name)])?)?;
        }
    }
    {
        let mut m = encoder.encode_descriptor(
            "spright_function_requests_completed",
            "Requests a function's instances finished handling",
            None,
            MetricType::Counter,
        )?;
        for (name, l) in &loaded {
            ConstCounter::new(l.completed).encode(m.encode_family(&[("function", *name)])?)?;
        }
    }
    type Pick = fn(&FunctionLoad) -> f64;
    let gauges: [(&str, &str, Pick); 4] = [
        (
            "spright_function_stable_request_concurrency",
            "Mean requests in flight at a function over its stable window (60 s, or its own)",
            |l| l.stable_concurrency,
        ),
        (
            "spright_function_panic_request_concurrency",
            "Mean requests in flight at a function over its panic window (a tenth of the stable one)",
            |l| l.panic_concurrency,
        ),
        (
            "spright_function_stable_requests_per_second",
            "Requests a function finished per second over its stable window",
            |l| l.stable_requests_per_second,
        ),
        (
            "spright_function_panic_requests_per_second",
            "Requests a function finished per second over its panic window",
            |l| l.panic_requests_per_second,
        ),
    ];
    for (metric, help, pick) in gauges {
        let mut m = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
        for (name, l) in &loaded {
            ConstGauge::new(pick(l)).encode(m.encode_family(&[("function", *name)])?)?;
        }
    }
    Ok(())
}

/// EPROXY's counts of the gateway's external traffic, per interface and direction.
fn encode_eproxy(
    encoder: &mut DescriptorEncoder<'_>,
    traffic: &[spright_core::protocol::TrafficCounters],
) -> Result<(), std::fmt::Error> {
    if traffic.is_empty() {
        return Ok(());
    }
    type Pick = fn(&spright_core::protocol::TrafficCounters) -> u64;
    let families: [(&str, &str, Pick); 2] = [
        (
            "spright_eproxy_packets",
            "Packets of the gateway's external traffic EPROXY counted, by interface and direction (in: to the gateway)",
            |t| t.packets,
        ),
        (
            "spright_eproxy_bytes",
            "IP bytes of the gateway's external traffic EPROXY counted, by interface and direction (in: to the gateway)",
            |t| t.bytes,
        ),
    ];
    for (name, help, pick) in families {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for t in traffic {
            let labels = [
                ("interface", t.interface.as_str()),
                ("direction", t.direction.as_str()),
            ];
            ConstCounter::new(pick(t)).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// EPROXY's counts of function containers' own traffic, per container, interface and
/// direction.
fn encode_function_eproxy(
    encoder: &mut DescriptorEncoder<'_>,
    traffic: &[spright_core::protocol::FunctionTraffic],
) -> Result<(), std::fmt::Error> {
    if traffic.is_empty() {
        return Ok(());
    }
    type Pick = fn(&spright_core::protocol::TrafficCounters) -> u64;
    let families: [(&str, &str, Pick); 2] = [
        (
            "spright_function_eproxy_packets",
            "IP packets EPROXY counted on function containers' own interfaces, by function, containerd namespace, container, interface and direction (in: received)",
            |t| t.packets,
        ),
        (
            "spright_function_eproxy_bytes",
            "IP bytes EPROXY counted on function containers' own interfaces, by function, containerd namespace, container, interface and direction (in: received)",
            |t| t.bytes,
        ),
    ];
    for (name, help, pick) in families {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for t in traffic {
            let labels = [
                ("function", t.function.as_str()),
                ("namespace", t.namespace.as_str()),
                ("container", t.container.as_str()),
                ("interface", t.counters.interface.as_str()),
                ("direction", t.counters.direction.as_str()),
            ];
            ConstCounter::new(pick(&t.counters)).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Metrics {
    pub fn new(runtime: Arc<Runtime>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "spright_http_requests",
            "HTTP requests answered, by route and status code",
            requests.clone(),
        );
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~3.3 s
            Histogram::new(exponential_buckets(0.00005, 2.0, 17))
        });
        registry.register(
            "spright_http_request_duration_seconds",
            "Time from request headers to response, by route",
            latency.clone(),
        );
        let router = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(ChainCollector {
            runtime,
            router: router.clone(),
        }));
        Metrics {
            registry,
            requests,
            latency,
            router,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
