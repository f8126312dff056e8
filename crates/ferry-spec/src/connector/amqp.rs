//! RabbitMQ (AMQP 0-9-1) as a source (a queue consumed with manual acknowledgements) and as a
//! destination (publishes to an exchange, with publisher confirms), with the settings only AMQP
//! has.
//!
//! The broker URL usually carries a user name and password, so `url` is a setting like an HTTP
//! header: a template that may use `{{ env.NAME }}`, or `{ secret: NAME }` for the whole URL.
//! A password written into the flow file is refused (a flow file is stored with every
//! revision). Every default below is left out of the canonical form, so a setting added later
//! with its default does not change the revision hash of flows that do not write it.

use serde::{Deserialize, Serialize};

use crate::connector::Setting;
use crate::flow::{Jitter, MAX_CONCURRENCY, Param, RetrySpec};
use crate::template::Root;
use crate::units::{ByteSize, Dur};
use crate::validate::{Checker, check_retry};

/// Default `source.amqp.prefetch`: messages the broker may have unacknowledged on the channel.
pub const DEFAULT_PREFETCH: u16 = 256;
/// Default `source.amqp.idle`: a run ends once the queue delivered nothing for this long.
pub const DEFAULT_IDLE: Dur = Dur::from_secs(2);
/// Default `source.amqp.max_message_bytes`: a larger message is dead-lettered, not mapped.
pub const DEFAULT_MAX_MESSAGE_BYTES: ByteSize = ByteSize(1 << 20);
/// Default `destination.amqp.concurrency`: publishes waiting for their confirm at once.
pub const DEFAULT_AMQP_CONCURRENCY: u32 = 128;
/// Default `destination.amqp.timeout`: longest wait for a publish's confirm.
pub const DEFAULT_CONFIRM_TIMEOUT: Dur = Dur::from_secs(30);
/// Default `source.amqp.serve.records`: under `ferry serve`, a run ends after this many records.
pub const DEFAULT_SERVE_RECORDS: u64 = 10_000;
/// Default `source.amqp.serve.period`: under `ferry serve`, a run ends this long after its first
/// record.
pub const DEFAULT_SERVE_PERIOD: Dur = Dur::from_secs(60);
/// AMQP 0-9-1 short strings (queue, exchange, routing key) hold at most 255 bytes.
pub const MAX_SHORT_STRING: usize = 255;

/// A queue of a RabbitMQ broker, consumed with manual acknowledgements: a message is
/// acknowledged only once its record is settled and the outcome committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSource {
    /// Broker URL (`amqp://host:5672/vhost`, `amqps://…`): a template (`{{ env.AMQP_URL }}`)
    /// or `{ secret: NAME }` when it carries a password.
    pub url: Param,
    /// The queue consumed.
    pub queue: String,
    /// Declare the queue (durable) before consuming, and bind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declare: Option<Declare>,
    /// Messages the broker may hand over before the first is acknowledged (default 256); also
    /// the largest batch.
    #[serde(
        default = "default_prefetch",
        skip_serializing_if = "is_default_prefetch"
    )]
    pub prefetch: u16,
    /// `ferry run` ends once the queue delivered nothing for this long (default 2s).
    #[serde(default = "default_idle", skip_serializing_if = "is_default_idle")]
    pub idle: Dur,
    /// Largest message body mapped (default 1 MiB); a larger one is dead-lettered and
    /// acknowledged.
    #[serde(
        default = "default_max_message_bytes",
        skip_serializing_if = "is_default_max_message_bytes"
    )]
    pub max_message_bytes: ByteSize,
    /// Reconnecting after the connection or channel was lost, through the same retry layer as
    /// deliveries (default [`default_reconnect`]: 8 attempts, 250 ms to 5 s, full jitter, at
    /// most 1 minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// How `ferry serve` cuts the continuous consumption of a flow without a schedule into
    /// runs (default: every 10 000 records or 60 s after a run's first record).
    #[serde(default, skip_serializing_if = "ServeCut::is_default")]
    pub serve: ServeCut,
}

/// Under `ferry serve`, a flow that consumes a queue and has no schedule runs continuously: one
/// run after another, each ending after `records` records or `period` after its first record
/// (and at every change of the active revision), so that runs, their counts and their revision
/// tags keep their meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeCut {
    /// A run ends once it read this many records (the batch that reaches it is read whole).
    #[serde(
        default = "default_serve_records",
        skip_serializing_if = "is_default_serve_records"
    )]
    pub records: u64,
    /// A run ends this long after its first record arrived.
    #[serde(
        default = "default_serve_period",
        skip_serializing_if = "is_default_serve_period"
    )]
    pub period: Dur,
}

impl Default for ServeCut {
    fn default() -> Self {
        ServeCut {
            records: DEFAULT_SERVE_RECORDS,
            period: DEFAULT_SERVE_PERIOD,
        }
    }
}

impl ServeCut {
    fn is_default(&self) -> bool {
        *self == ServeCut::default()
    }
}

/// How the broker is reconnected to when `source.amqp.retry` is not set.
pub fn default_reconnect() -> RetrySpec {
    RetrySpec {
        attempts: 8,
        initial: Dur::from_millis(250),
        max: Dur::from_secs(5),
        jitter: Jitter::Full,
        max_elapsed: Dur::from_secs(60),
    }
}

impl AmqpSource {
    /// The reconnect settings in effect.
    pub fn retry(&self) -> RetrySpec {
        self.retry.clone().unwrap_or_else(default_reconnect)
    }
}

/// The queue is declared durable before it is consumed, and bound to exchanges.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declare {
    /// Bindings made after the declaration (the exchanges must exist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
}

/// One binding of the declared queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The exchange bound to.
    pub exchange: String,
    /// The binding's routing key (default empty: what a fanout exchange needs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub routing_key: String,
}

/// Publishes to an exchange of a RabbitMQ broker: persistent messages, publisher confirms, and
/// `mandatory`, so a record counts as delivered only once the broker confirmed it and routed
/// it to a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSink {
    /// Broker URL: a template (`{{ env.AMQP_URL }}`) or `{ secret: NAME }`.
    pub url: Param,
    /// The exchange published to (empty: the default exchange, where the routing key is the
    /// queue's name).
    pub exchange: String,
    /// Routing key template; may use `record`, `source`, `key` and `env`.
    pub routing_key: String,
    /// A message no queue takes is returned and counts as failed (default true). Turned off,
    /// the broker drops such messages and they count as delivered.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub mandatory: bool,
    /// Messages are written to disk by the broker (delivery mode 2; default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub persistent: bool,
    /// Idempotency key template (default `{{ flow.name }}-{{ key }}-{{ hash }}`); it is the
    /// message's `message_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Publishes waiting for their confirm at once (default 128).
    #[serde(
        default = "default_amqp_concurrency",
        skip_serializing_if = "is_default_amqp_concurrency"
    )]
    pub concurrency: u32,
    /// Longest wait for a confirm; an attempt that waits longer is retried (default 30s).
    #[serde(
        default = "default_confirm_timeout",
        skip_serializing_if = "is_default_confirm_timeout"
    )]
    pub timeout: Dur,
}

fn default_prefetch() -> u16 {
    DEFAULT_PREFETCH
}
fn is_default_prefetch(v: &u16) -> bool {
    *v == DEFAULT_PREFETCH
}
fn default_idle() -> Dur {
    DEFAULT_IDLE
}
fn is_default_idle(v: &Dur) -> bool {
    *v == DEFAULT_IDLE
}
fn default_serve_records() -> u64 {
    DEFAULT_SERVE_RECORDS
}
fn is_default_serve_records(v: &u64) -> bool {
    *v == DEFAULT_SERVE_RECORDS
}
fn default_serve_period() -> Dur {
    DEFAULT_SERVE_PERIOD
}
fn is_default_serve_period(v: &Dur) -> bool {
    *v == DEFAULT_SERVE_PERIOD
}
fn default_max_message_bytes() -> ByteSize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn is_default_max_message_bytes(v: &ByteSize) -> bool {
    *v == DEFAULT_MAX_MESSAGE_BYTES
}
fn default_amqp_concurrency() -> u32 {
    DEFAULT_AMQP_CONCURRENCY
}
fn is_default_amqp_concurrency(v: &u32) -> bool {
    *v == DEFAULT_AMQP_CONCURRENCY
}
fn default_confirm_timeout() -> Dur {
    DEFAULT_CONFIRM_TIMEOUT
}
fn is_default_confirm_timeout(v: &Dur) -> bool {
    *v == DEFAULT_CONFIRM_TIMEOUT
}
fn yes() -> bool {
    true
}
fn is_true(v: &bool) -> bool {
    *v
}

/// The checks of a broker URL: a template over `env` starting with `amqp://` or `amqps://` (or
/// with a placeholder) and no password written in; or a secret reference.
fn check_url(c: &mut Checker, at: &str, url: &Param) {
    match url {
        Param::Secret(s) => c.secret(at, s),
        Param::Template(text) => {
            let Some(t) = c.template(at, text, &[Root::Env]) else {
                return;
            };
            let starts_with_var = t.as_str().trim_start().starts_with("{{");
            if !starts_with_var && !text.starts_with("amqp://") && !text.starts_with("amqps://") {
                c.err(
                    at,
                    "not an amqp:// or amqps:// URL (or a template starting with one, e.g. `{{ env.AMQP_URL }}`)",
                );
            }
            if literal_password(text) {
                c.err(
                    at,
                    "the URL carries a password (`user:password@host`): write `url: { secret: NAME }` with the whole URL in the secret, or take it from `{{ env.NAME }}`, so the password never appears in logs or revisions",
                );
            }
        }
    }
}

/// True when the literal part of a URL has `user:password@` in its authority.
fn literal_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.contains(':') && !userinfo.contains("{{"),
        None => false,
    }
}

/// A queue, exchange or routing key name: at most 255 bytes, no control characters.
fn check_name(c: &mut Checker, at: &str, name: &str, may_be_empty: bool) {
    if name.is_empty() && !may_be_empty {
        c.err(at, "must not be empty");
    } else if name.len() > MAX_SHORT_STRING {
        c.err(
            at,
            format!("at most {MAX_SHORT_STRING} bytes (AMQP short string)"),
        );
    } else if name.chars().any(char::is_control) {
        c.err(at, "must not contain control characters");
    }
}

/// The checks of an AMQP source that its types cannot make.
pub(crate) fn validate_source(c: &mut Checker, src: &AmqpSource) {
    let p = "source.amqp";
    check_url(c, &format!("{p}.url"), &src.url);
    check_name(c, &format!("{p}.queue"), &src.queue, false);
    if let Some(d) = &src.declare {
        for (i, b) in d.bindings.iter().enumerate() {
            check_name(
                c,
                &format!("{p}.declare.bindings[{i}].exchange"),
                &b.exchange,
                false,
            );
            check_name(
                c,
                &format!("{p}.declare.bindings[{i}].routing_key"),
                &b.routing_key,
                true,
            );
        }
    }
    if src.prefetch == 0 {
        c.err(
            format!("{p}.prefetch"),
            "must be 1 or more (0 would let the broker send without limit)",
        );
    }
    if src.idle.get().is_zero() {
        c.err(format!("{p}.idle"), "must be more than 0s");
    }
    if src.max_message_bytes.0 == 0 {
        c.err(format!("{p}.max_message_bytes"), "must be more than 0");
    }
    if let Some(r) = &src.retry {
        check_retry(c, &format!("{p}.retry"), r);
    }
    if src.serve.records == 0 {
        c.err(format!("{p}.serve.records"), "must be 1 or more");
    }
    if src.serve.period.get().is_zero() {
        c.err(format!("{p}.serve.period"), "must be more than 0s");
    }
}

/// The checks of an AMQP destination that its types cannot make.
pub(crate) fn validate_sink(c: &mut Checker, sink: &AmqpSink) {
    let p = "destination.amqp";
    check_url(c, &format!("{p}.url"), &sink.url);
    check_name(c, &format!("{p}.exchange"), &sink.exchange, true);
    c.template(
        &format!("{p}.routing_key"),
        &sink.routing_key,
        &[Root::Env, Root::Record, Root::Source, Root::Key],
    );
    if sink.exchange.is_empty() && sink.routing_key.trim().is_empty() {
        c.err(
            format!("{p}.routing_key"),
            "with the default exchange (`exchange: \"\"`) the routing key is the queue's name and must not be empty",
        );
    }
    if let Some(k) = &sink.idempotency_key {
        c.idempotency_key(&format!("{p}.idempotency_key"), k);
    }
    if sink.concurrency == 0 || sink.concurrency > MAX_CONCURRENCY {
        c.err(
            format!("{p}.concurrency"),
            format!("from 1 to {MAX_CONCURRENCY} publishes in flight"),
        );
    }
    if sink.timeout.get().is_zero() {
        c.err(format!("{p}.timeout"), "must be more than 0s");
    }
}

fn url_setting(url: &Param) -> Setting<'_> {
    match url {
        Param::Template(t) => Setting::Template(t),
        Param::Secret(s) => Setting::Secret(s),
    }
}

pub(crate) fn source_settings(src: &AmqpSource) -> Vec<Setting<'_>> {
    vec![url_setting(&src.url)]
}

pub(crate) fn sink_settings(sink: &AmqpSink) -> Vec<Setting<'_>> {
    vec![url_setting(&sink.url), Setting::Template(&sink.routing_key)]
}

/// The broker URL a promotion's `rewrite_host` may change, when it is written in the file.
pub(crate) fn urls_mut(url: &mut Param) -> Vec<&mut String> {
    match url {
        Param::Template(t) => vec![t],
        Param::Secret(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = r#"
name: q
source:
  amqp:
    url: "{{ env.AMQP_URL }}"
    queue: orders
destination:
  amqp:
    url: { secret: AMQP_URL }
    exchange: out
    routing_key: "orders.{{ record.kind }}"
"#;

    fn problems(text: &str) -> String {
        crate::load_str(text, Some("f.yaml".into()))
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn a_flow_from_a_queue_to_an_exchange_loads_with_its_defaults() {
        let f = crate::load_str(FLOW, None).expect("loads");
        let src = f.flow.source.amqp().expect("amqp source");
        assert_eq!(src.prefetch, DEFAULT_PREFETCH);
        assert_eq!(src.idle, DEFAULT_IDLE);
        assert_eq!(src.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        let dst = f.flow.destination.amqp().expect("amqp destination");
        assert!(dst.mandatory && dst.persistent);
        assert_eq!(f.flow.destination.concurrency(), DEFAULT_AMQP_CONCURRENCY);
        assert_eq!(f.flow.destination.path(), "destination.amqp");
    }

    /// Defaults are not written into the canonical form: writing them out keeps the hash.
    #[test]
    fn defaults_written_out_keep_the_revision_hash() {
        let plain = crate::load_str(FLOW, None).expect("loads");
        assert!(!plain.canonical.contains("prefetch"), "{}", plain.canonical);
        assert!(
            !plain.canonical.contains("mandatory"),
            "{}",
            plain.canonical
        );
        let spelled = FLOW
            .replace(
                "    queue: orders\n",
                "    queue: orders\n    prefetch: 256\n    idle: 2s\n    max_message_bytes: 1MiB\n    serve: { records: 10000, period: 60s }\n",
            )
            .replace(
                "    exchange: out\n",
                "    exchange: out\n    mandatory: true\n    persistent: true\n    concurrency: 128\n    timeout: 30s\n",
            );
        assert_ne!(spelled, FLOW);
        let spelled = crate::load_str(&spelled, None).expect("loads");
        assert_eq!(plain.hash, spelled.hash);
        let changed = crate::load_str(
            &FLOW.replace("queue: orders", "queue: orders\n    prefetch: 10"),
            None,
        )
        .expect("loads");
        assert_ne!(plain.hash, changed.hash);
    }

    #[test]
    fn a_misspelt_setting_is_refused_with_its_path() {
        let e = problems(&FLOW.replace("queue: orders", "queue: orders\n    prefetsh: 5"));
        assert!(e.contains("prefetsh"), "{e}");
        assert!(e.contains("source.amqp"), "{e}");
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        let cases = [
            ("queue: orders", "queue: \"\"", "source.amqp.queue"),
            (
                "queue: orders",
                "queue: orders\n    prefetch: 0",
                "source.amqp.prefetch",
            ),
            (
                "queue: orders",
                "queue: orders\n    idle: 0s",
                "source.amqp.idle",
            ),
            (
                "queue: orders",
                "queue: orders\n    max_message_bytes: 0",
                "source.amqp.max_message_bytes",
            ),
            (
                "queue: orders",
                "queue: orders\n    serve: { records: 0 }",
                "source.amqp.serve.records",
            ),
            (
                "queue: orders",
                "queue: orders\n    serve: { period: 0s }",
                "source.amqp.serve.period",
            ),
            (
                "queue: orders",
                "queue: orders\n    declare: { bindings: [ { exchange: \"\" } ] }",
                "source.amqp.declare.bindings[0].exchange",
            ),
            (
                "url: \"{{ env.AMQP_URL }}\"",
                "url: \"amqp://guest:hunter2@127.0.0.1/\"",
                "source.amqp.url",
            ),
            (
                "url: \"{{ env.AMQP_URL }}\"",
                "url: \"http://127.0.0.1/\"",
                "source.amqp.url",
            ),
            (
                "url: \"{{ env.AMQP_URL }}\"",
                "url: \"{{ record.x }}\"",
                "source.amqp.url",
            ),
            (
                "routing_key: \"orders.{{ record.kind }}\"",
                "routing_key: \"orders.{{ record.kind\"",
                "destination.amqp.routing_key",
            ),
            (
                "routing_key: \"orders.{{ record.kind }}\"",
                "routing_key: \"{{ cursor }}\"",
                "destination.amqp.routing_key",
            ),
            (
                "exchange: out",
                "exchange: out\n    concurrency: 0",
                "destination.amqp.concurrency",
            ),
            (
                "exchange: out",
                "exchange: out\n    idempotency_key: same",
                "destination.amqp.idempotency_key",
            ),
            (
                "url: { secret: AMQP_URL }",
                "url: { secret: \"9 bad\" }",
                "destination.amqp.url",
            ),
        ];
        for (from, to, field) in cases {
            let text = FLOW.replace(from, to);
            assert_ne!(text, FLOW, "{to}");
            let e = problems(&text);
            assert!(e.contains(field), "{to}: {e}");
        }
        let long = "q".repeat(300);
        let e = problems(&FLOW.replace("queue: orders", &format!("queue: {long}")));
        assert!(e.contains("source.amqp.queue") && e.contains("255"), "{e}");
        let e = problems(&FLOW.replace("exchange: out", "exchange: \"\"").replace(
            "routing_key: \"orders.{{ record.kind }}\"",
            "routing_key: \"\"",
        ));
        assert!(e.contains("destination.amqp.routing_key"), "{e}");
    }

    /// A password never reaches an error message, even when it is refused.
    #[test]
    fn a_refused_password_is_not_echoed() {
        let e = problems(&FLOW.replace(
            "url: \"{{ env.AMQP_URL }}\"",
            "url: \"amqp://guest:hunter2@127.0.0.1/\"",
        ));
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn literal_passwords_are_found_in_the_authority_only() {
        assert!(literal_password("amqp://guest:guest@127.0.0.1:5672/%2f"));
        assert!(!literal_password("amqp://guest@127.0.0.1:5672/%2f"));
        assert!(!literal_password("amqp://127.0.0.1:5672/a:b@c"));
        assert!(!literal_password("amqp://{{ env.U }}:{{ env.P }}@h/"));
        assert!(!literal_password("{{ env.AMQP_URL }}"));
        assert!(!literal_password("amqp://"));
    }
}
