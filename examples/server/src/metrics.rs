//! `/metrics` in the Prometheus/OpenMetrics text format.
//!
//! - `wgm_http_requests_total{method,route,status}` and
//!   `wgm_http_request_duration_seconds{method,route,status}` (histogram): every request,
//!   by its route template (`/api/v1/servers/{server}`, never the raw path);
//! - `wgm_manager_operations_total{operation,outcome}` and
//!   `wgm_manager_operation_duration_seconds{operation}`: every Manager call, `outcome`
//!   being `ok` or the error code;
//! - `wgm_rate_limited_total{scope}`: requests refused by a rate limit;
//! - per peer, as the store holds what agents (and `status`) observed, with the names of
//!   the usual WireGuard exporter: `wireguard_sent_bytes_total`,
//!   `wireguard_received_bytes_total`, `wireguard_latest_handshake_seconds` with labels
//!   `interface`, `public_key`, `allowed_ips`, `name` (only for an authenticated scrape,
//!   and only the peers that principal may read).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Status code.
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpName {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Scope {
    scope: &'static str,
}

/// Labels of a peer's WireGuard metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The server's interface.
    pub interface: String,
    /// The peer's public key (base64).
    pub public_key: String,
    /// Its allowed IPs, comma-separated.
    pub allowed_ips: String,
    /// wgm's name of the peer.
    pub name: String,
}

/// One peer's observed statistics.
#[derive(Clone, Debug)]
pub struct PeerSample {
    /// Labels.
    pub labels: PeerLabels,
    /// Bytes sent to the peer.
    pub sent: u64,
    /// Bytes received from it.
    pub received: u64,
    /// Latest handshake, Unix seconds (0: never).
    pub handshake: i64,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process's metrics (cheap to clone: the families are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    http_requests: Family<HttpLabels, Counter>,
    http_latency: HistogramFamily<HttpLabels>,
    ops: Family<OpLabels, Counter>,
    op_latency: HistogramFamily<OpName>,
    rate_limited: Family<Scope, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency_histogram),
            ops: Family::default(),
            op_latency: Family::new_with_constructor(latency_histogram),
            rate_limited: Family::default(),
        }
    }
}

impl Metrics {
    /// Count one HTTP request.
    pub fn http(&self, labels: &HttpLabels, latency: Duration) {
        self.http_latency
            .get_or_create(labels)
            .observe(latency.as_secs_f64());
        self.http_requests.get_or_create(labels).inc();
    }

    /// Count one Manager operation.
    pub fn manager_op(&self, operation: &'static str, err: Option<&wgm_core::Error>, d: Duration) {
        let outcome = err.map_or("ok", wgm_core::Error::code);
        self.ops
            .get_or_create(&OpLabels { operation, outcome })
            .inc();
        self.op_latency
            .get_or_create(&OpName { operation })
            .observe(d.as_secs_f64());
    }

    /// Count one request refused by the limit of `scope`.
    pub fn rate_limited(&self, scope: &'static str) {
        self.rate_limited.get_or_create(&Scope { scope }).inc();
    }

    /// The text exposition: the process's metrics and `peers`.
    pub fn encode(&self, peers: &[PeerSample]) -> String {
        let mut r = Registry::default();
        r.register(
            "wgm_http_requests",
            "HTTP requests by method, route template and status",
            self.http_requests.clone(),
        );
        r.register(
            "wgm_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            self.http_latency.clone(),
        );
        r.register(
            "wgm_manager_operations",
            "Manager operations by name and outcome (ok or the error code)",
            self.ops.clone(),
        );
        r.register(
            "wgm_manager_operation_duration_seconds",
            "Manager operation latency",
            self.op_latency.clone(),
        );
        r.register(
            "wgm_rate_limited",
            "Requests refused by a rate limit, by scope",
            self.rate_limited.clone(),
        );
        if !peers.is_empty() {
            let sent = Family::<PeerLabels, Counter>::default();
            let received = Family::<PeerLabels, Counter>::default();
            let handshake = Family::<PeerLabels, Gauge>::default();
            for p in peers {
                sent.get_or_create(&p.labels).inc_by(p.sent);
                received.get_or_create(&p.labels).inc_by(p.received);
                handshake.get_or_create(&p.labels).set(p.handshake);
            }
            r.register(
                "wireguard_sent_bytes",
                "Bytes sent to the peer, as last observed on its host",
                sent,
            );
            r.register(
                "wireguard_received_bytes",
                "Bytes received from the peer, as last observed on its host",
                received,
            );
            r.register(
                "wireguard_latest_handshake_seconds",
                "Unix time of the peer's latest handshake, as last observed (0: never)",
                handshake,
            );
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let m = Metrics::default();
        m.http(
            &HttpLabels {
                method: "GET".into(),
                route: "/health".into(),
                status: 200,
            },
            Duration::from_millis(3),
        );
        m.manager_op("server.get", None, Duration::from_millis(1));
        let text = m.encode(&[PeerSample {
            labels: PeerLabels {
                interface: "wg0".into(),
                public_key: "k".into(),
                allowed_ips: "fd00::2/128".into(),
                name: "alice".into(),
            },
            sent: 10,
            received: 20,
            handshake: 1_700_000_000,
        }]);
        for want in [
            "wgm_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1",
            "wgm_http_request_duration_seconds_bucket",
            "wgm_manager_operations_total{operation=\"server.get\",outcome=\"ok\"} 1",
            "wireguard_sent_bytes_total{interface=\"wg0\",public_key=\"k\",allowed_ips=\"fd00::2/128\",name=\"alice\"} 10",
            "wireguard_received_bytes_total{",
            "wireguard_latest_handshake_seconds{",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
