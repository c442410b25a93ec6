//! The Prometheus metrics the daemon exports, in one registry owned by `App` (no globals).

use std::time::Duration;

use http::StatusCode;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Request body bytes received.
    pub bytes_in: IntCounter,
    /// Response body bytes sent (object bodies).
    pub bytes_out: IntCounter,
    /// Byte ranges served (one per part of a multipart response).
    pub ranges_served: IntCounter,
    /// Reads that found stored bytes not matching their hash tree.
    pub verification_failures: IntCounter,
    /// Requests being served.
    pub in_flight: IntGauge,
    /// Live objects in the store.
    pub store_objects: IntGauge,
    /// Bytes of live objects in the store.
    pub store_bytes: IntGauge,
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "dataserver_http_requests_total",
                "HTTP requests by API (native, s3), route and status",
            ),
            &["api", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "dataserver_http_request_duration_seconds",
                "Time to the response head, by API and route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["api", "route"],
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let metrics = Self {
            bytes_in: counter(
                "dataserver_http_received_bytes_total",
                "Request body bytes received",
            ),
            bytes_out: counter("dataserver_http_sent_bytes_total", "Object bytes sent"),
            ranges_served: counter("dataserver_ranges_served_total", "Byte ranges served"),
            verification_failures: counter(
                "dataserver_verification_failures_total",
                "Reads that found bytes not matching their BLAKE3 tree",
            ),
            in_flight: gauge(
                "dataserver_http_requests_in_flight",
                "Requests being served",
            ),
            store_objects: gauge("dataserver_store_objects", "Live objects"),
            store_bytes: gauge("dataserver_store_bytes", "Bytes of live objects"),
            requests,
            latency,
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.requests.clone()),
            Box::new(metrics.latency.clone()),
            Box::new(metrics.bytes_in.clone()),
            Box::new(metrics.bytes_out.clone()),
            Box::new(metrics.ranges_served.clone()),
            Box::new(metrics.verification_failures.clone()),
            Box::new(metrics.in_flight.clone()),
            Box::new(metrics.store_objects.clone()),
            Box::new(metrics.store_bytes.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        metrics
    }

    /// Counts a finished request of `api` (`native` or `s3`).
    pub fn observe(&self, api: &str, route: &str, status: StatusCode, elapsed: Duration) {
        self.requests
            .with_label_values(&[api, route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[api, route])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("encoding to memory cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
