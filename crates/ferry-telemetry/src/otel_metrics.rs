//! Metrics over OTLP: the recorder that hands every recording to the Prometheus recorder and to
//! OpenTelemetry instruments, for operators who collect with an OpenTelemetry collector instead
//! of scraping `/metrics`.
//!
//! ferry records through the `metrics` facade ([`crate::metrics`]). Only one recorder may be
//! installed in a process, so the one installed is [`Fanout`]: the Prometheus recorder (which
//! `/metrics`, `--metrics-push` to a Pushgateway and `--metrics-file` render) and a [`Bridge`]
//! holding the OpenTelemetry meters attached so far — the one `OTEL_EXPORTER_OTLP_ENDPOINT`
//! configures, and the one of a `ferry run --metrics-push …/v1/metrics`. With no meter
//! attached, a registration is the Prometheus recorder's alone.
//!
//! The bridge is ours, not a third-party `metrics`→OpenTelemetry crate, because those pin
//! older opentelemetry lines than the 0.33 the span exporter uses, and two opentelemetry
//! versions in one binary do not share a provider. What it costs: it maps the three kinds the
//! catalogue uses — counters to `u64` counters, gauges to `f64` gauges, histograms to `f64`
//! histograms with the catalogue's buckets — with the catalogue's help text and unit, the
//! same names as on `/metrics`, and the labels as attributes. A gauge's `increment` and
//! `decrement`, and a counter's `absolute`, which OpenTelemetry's synchronous instruments lack,
//! are computed from the last value the bridge saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use crate::metrics::{
    ALL, DELIVERY_BUCKETS, DELIVERY_DURATION_SECONDS, RUN_BUCKETS, RUN_DURATION_SECONDS,
};

/// The process's recorder: Prometheus, and the OpenTelemetry meters attached to `otel`.
#[derive(Debug)]
pub(crate) struct Fanout<P> {
    pub(crate) prometheus: P,
    pub(crate) otel: Arc<Bridge>,
}

impl<P: Recorder> Recorder for Fanout<P> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let prom = self.prometheus.register_counter(key, metadata);
        let otel = self.otel.instruments(key, Kind::Counter);
        if otel.is_empty() {
            return prom;
        }
        Counter::from_arc(Arc::new(Forward {
            prom,
            otel,
            attrs: attributes(key),
            key: key.clone(),
            bridge: self.otel.clone(),
        }))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let prom = self.prometheus.register_gauge(key, metadata);
        let otel = self.otel.instruments(key, Kind::Gauge);
        if otel.is_empty() {
            return prom;
        }
        Gauge::from_arc(Arc::new(Forward {
            prom,
            otel,
            attrs: attributes(key),
            key: key.clone(),
            bridge: self.otel.clone(),
        }))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let prom = self.prometheus.register_histogram(key, metadata);
        let otel = self.otel.instruments(key, Kind::Histogram);
        if otel.is_empty() {
            return prom;
        }
        Histogram::from_arc(Arc::new(Forward {
            prom,
            otel,
            attrs: attributes(key),
            key: key.clone(),
            bridge: self.otel.clone(),
        }))
    }
}

/// The OpenTelemetry side: the meters attached, their instruments by name, and the last
/// value of each gauge (and of each counter set with `absolute`).
#[derive(Debug, Default)]
pub(crate) struct Bridge {
    meters: RwLock<Vec<Arc<Slot>>>,
    last: Mutex<HashMap<Key, f64>>,
}

#[derive(Debug)]
struct Slot {
    meter: Meter,
    instruments: Mutex<HashMap<(String, Kind), Instrument>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
enum Instrument {
    Counter(opentelemetry::metrics::Counter<u64>),
    Gauge(opentelemetry::metrics::Gauge<f64>),
    Histogram(opentelemetry::metrics::Histogram<f64>),
}

impl Bridge {
    /// From now on, every recording also goes to `meter`'s instruments.
    pub(crate) fn attach(&self, meter: Meter) {
        let slot = Arc::new(Slot {
            meter,
            instruments: Mutex::default(),
        });
        self.meters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
    }

    /// The instrument of `key`'s name and `kind` in every attached meter (made on first use).
    fn instruments(&self, key: &Key, kind: Kind) -> Vec<Instrument> {
        let meters = self.meters.read().unwrap_or_else(|p| p.into_inner());
        meters
            .iter()
            .map(|slot| slot.instrument(key.name(), kind))
            .collect()
    }

    /// Remembers `value` as `key`'s last; returns the one before (0 at first).
    fn swap_last(&self, key: &Key, value: f64) -> f64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.insert(key.clone(), value).unwrap_or(0.0)
    }

    /// Adds `delta` to `key`'s last value; returns the new one.
    fn add_to_last(&self, key: &Key, delta: f64) -> f64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let v = last.entry(key.clone()).or_insert(0.0);
        *v += delta;
        *v
    }
}

impl Slot {
    fn instrument(&self, name: &str, kind: Kind) -> Instrument {
        let mut made = self.instruments.lock().unwrap_or_else(|p| p.into_inner());
        made.entry((name.to_string(), kind))
            .or_insert_with(|| self.make(name, kind))
            .clone()
    }

    fn make(&self, name: &str, kind: Kind) -> Instrument {
        let name = name.to_string();
        let def = ALL.iter().find(|m| m.name == name);
        let help = def.map_or("", |m| m.help);
        let unit = if name.ends_with("_seconds") { "s" } else { "" };
        match kind {
            Kind::Counter => Instrument::Counter(
                self.meter
                    .u64_counter(name)
                    .with_description(help)
                    .with_unit(unit)
                    .build(),
            ),
            Kind::Gauge => Instrument::Gauge(
                self.meter
                    .f64_gauge(name)
                    .with_description(help)
                    .with_unit(unit)
                    .build(),
            ),
            Kind::Histogram => {
                let buckets = if name == DELIVERY_DURATION_SECONDS {
                    Some(DELIVERY_BUCKETS)
                } else if name == RUN_DURATION_SECONDS {
                    Some(RUN_BUCKETS)
                } else {
                    None
                };
                let mut h = self
                    .meter
                    .f64_histogram(name)
                    .with_description(help)
                    .with_unit(unit);
                if let Some(b) = buckets {
                    h = h.with_boundaries(b.to_vec());
                }
                Instrument::Histogram(h.build())
            }
        }
    }
}

fn attributes(key: &Key) -> Vec<KeyValue> {
    key.labels()
        .map(|l| KeyValue::new(l.key().to_string(), l.value().to_string()))
        .collect()
}

/// One registered series: its Prometheus handle and its OpenTelemetry instruments.
struct Forward<P> {
    prom: P,
    otel: Vec<Instrument>,
    attrs: Vec<KeyValue>,
    key: Key,
    bridge: Arc<Bridge>,
}

impl CounterFn for Forward<Counter> {
    fn increment(&self, value: u64) {
        self.prom.increment(value);
        for i in &self.otel {
            if let Instrument::Counter(c) = i {
                c.add(value, &self.attrs);
            }
        }
    }

    fn absolute(&self, value: u64) {
        self.prom.absolute(value);
        let before = self.bridge.swap_last(&self.key, value as f64);
        // A counter only goes up; a smaller absolute value (a reordered caller) adds nothing.
        let delta = (value as f64 - before).max(0.0) as u64;
        for i in &self.otel {
            if let Instrument::Counter(c) = i {
                c.add(delta, &self.attrs);
            }
        }
    }
}

impl Forward<Gauge> {
    fn record(&self, value: f64) {
        for i in &self.otel {
            if let Instrument::Gauge(g) = i {
                g.record(value, &self.attrs);
            }
        }
    }
}

impl GaugeFn for Forward<Gauge> {
    fn increment(&self, value: f64) {
        self.prom.increment(value);
        self.record(self.bridge.add_to_last(&self.key, value));
    }

    fn decrement(&self, value: f64) {
        self.prom.decrement(value);
        self.record(self.bridge.add_to_last(&self.key, -value));
    }

    fn set(&self, value: f64) {
        self.prom.set(value);
        self.bridge.swap_last(&self.key, value);
        self.record(value);
    }
}

impl HistogramFn for Forward<Histogram> {
    fn record(&self, value: f64) {
        self.prom.record(value);
        for i in &self.otel {
            if let Instrument::Histogram(h) = i {
                h.record(value, &self.attrs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    use super::*;

    fn provider() -> (SdkMeterProvider, InMemoryMetricExporter) {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        (provider, exporter)
    }

    /// A data point: metric name, sorted attributes, value (a histogram's: its count).
    type Point = (String, Vec<(String, String)>, f64);

    /// Every data point exported last.
    fn points(exporter: &InMemoryMetricExporter) -> Vec<Point> {
        let all: Vec<ResourceMetrics> = exporter.get_finished_metrics().unwrap();
        let last = all.last().expect("an export");
        let mut out = Vec::new();
        for scope in last.scope_metrics() {
            for m in scope.metrics() {
                let name = m.name().to_string();
                let attrs = |it: &mut dyn Iterator<Item = &KeyValue>| {
                    let mut v: Vec<(String, String)> = it
                        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                        .collect();
                    v.sort();
                    v
                };
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            out.push((name.clone(), attrs(&mut p.attributes()), p.value() as f64));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                        for p in g.data_points() {
                            out.push((name.clone(), attrs(&mut p.attributes()), p.value()));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        for p in h.data_points() {
                            assert_eq!(p.bounds().collect::<Vec<_>>(), DELIVERY_BUCKETS);
                            out.push((name.clone(), attrs(&mut p.attributes()), p.count() as f64));
                        }
                    }
                    other => panic!("{name}: unexpected data {other:?}"),
                }
            }
        }
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_kind_reaches_both_sides() {
        let prometheus = PrometheusBuilder::new().build_recorder();
        let scrape = prometheus.handle();
        let bridge = Arc::new(Bridge::default());
        let fanout = Fanout {
            prometheus,
            otel: bridge.clone(),
        };
        let (provider, exporter) = provider();
        bridge.attach(provider.meter("ferry"));
        metrics::with_local_recorder(&fanout, || {
            metrics::counter!("ferry_records_total", "flow" => "f", "outcome" => "delivered")
                .increment(3);
            metrics::counter!("ferry_records_total", "flow" => "f", "outcome" => "delivered")
                .increment(2);
            metrics::counter!("ferry_retries_total", "flow" => "f").absolute(7);
            metrics::counter!("ferry_retries_total", "flow" => "f").absolute(9);
            metrics::gauge!("ferry_dlq_depth", "flow" => "f", "env" => "dev").set(4.0);
            metrics::gauge!("ferry_dlq_depth", "flow" => "f", "env" => "dev").increment(2.0);
            metrics::gauge!("ferry_dlq_depth", "flow" => "f", "env" => "dev").decrement(1.0);
            metrics::histogram!("ferry_delivery_duration_seconds", "flow" => "f").record(0.02);
            metrics::histogram!("ferry_delivery_duration_seconds", "flow" => "f").record(0.3);
        });
        provider.force_flush().unwrap();
        assert_eq!(
            points(&exporter),
            vec![
                (
                    "ferry_delivery_duration_seconds".into(),
                    labels(&[("flow", "f")]),
                    2.0
                ),
                (
                    "ferry_dlq_depth".into(),
                    labels(&[("env", "dev"), ("flow", "f")]),
                    5.0
                ),
                (
                    "ferry_records_total".into(),
                    labels(&[("flow", "f"), ("outcome", "delivered")]),
                    5.0
                ),
                ("ferry_retries_total".into(), labels(&[("flow", "f")]), 9.0),
            ]
        );
        // the Prometheus side saw the same
        let text = scrape.render();
        for line in [
            r#"ferry_records_total{flow="f",outcome="delivered"} 5"#,
            r#"ferry_retries_total{flow="f"} 9"#,
            r#"ferry_dlq_depth{flow="f",env="dev"} 5"#,
            r#"ferry_delivery_duration_seconds_count{flow="f"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        provider.shutdown().unwrap();
    }

    #[test]
    fn without_a_meter_the_prometheus_handle_is_returned_as_is() {
        let prometheus = PrometheusBuilder::new().build_recorder();
        let scrape = prometheus.handle();
        let fanout = Fanout {
            prometheus,
            otel: Arc::new(Bridge::default()),
        };
        metrics::with_local_recorder(&fanout, || {
            metrics::gauge!("ferry_dlq_depth", "flow" => "f", "env" => "dev").set(3.0);
        });
        assert!(
            scrape
                .render()
                .contains(r#"ferry_dlq_depth{flow="f",env="dev"} 3"#)
        );
        // nothing was forwarded, so nothing was remembered for forwarding
        assert!(fanout.otel.last.lock().unwrap().is_empty());
    }

    #[test]
    fn instruments_carry_the_catalogue_help_and_unit() {
        let bridge = Bridge::default();
        let (provider, exporter) = provider();
        bridge.attach(provider.meter("ferry"));
        let key = Key::from_parts("ferry_run_duration_seconds", vec![]);
        for i in bridge.instruments(&key, Kind::Histogram) {
            if let Instrument::Histogram(h) = i {
                h.record(3.0, &[]);
            }
        }
        provider.force_flush().unwrap();
        let all = exporter.get_finished_metrics().unwrap();
        let m = all
            .last()
            .unwrap()
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == "ferry_run_duration_seconds")
            .expect("exported");
        assert_eq!(m.unit(), "s");
        assert_eq!(m.description(), "Run duration by status.");
        let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() else {
            panic!("a histogram")
        };
        let p = h.data_points().next().unwrap();
        assert_eq!(p.bounds().collect::<Vec<_>>(), RUN_BUCKETS);
    }
}
