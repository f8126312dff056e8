//! What the AMQP source and sink share: the broker's address resolved from the flow's `url`
//! setting, connecting, telling transient trouble from permanent, and a message's properties
//! and headers as JSON.
//!
//! The URL usually carries a password. It is resolved once (from `{{ env.NAME }}` or a secret),
//! registered with the log redactor, and kept out of every message: errors name the broker as
//! `host:port/vhost` ([`Broker::shown`]), never the URL.

use std::str::FromStr;

use ferry_env::RunEnv;
use ferry_resilience::ErrorClass;
use ferry_spec::Param;
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Map, Value, json};

use crate::error::ConnectError;
use crate::http::auth::render_env;

/// A broker, ready to connect to.
#[derive(Clone)]
pub(crate) struct Broker {
    uri: AMQPUri,
    shown: String,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Broker {
    /// Resolves the `url` setting at `field` (`source.amqp.url`).
    pub(crate) fn resolve(
        url: &Param,
        env: &RunEnv,
        field: &'static str,
    ) -> Result<Broker, ConnectError> {
        let text = match url {
            Param::Template(t) => render_env(t, env, field)?,
            Param::Secret(s) => env.secrets.resolve(s)?.expose().to_string(),
        };
        let uri = AMQPUri::from_str(text.trim()).map_err(|_| ConnectError::BadBrokerUrl {
            field,
            // The parser's message may quote the URL, and with it the password.
            reason: "not an amqp:// or amqps:// URL (`amqp://user:password@host:5672/vhost`)"
                .into(),
        })?;
        if !uri.authority.userinfo.password.is_empty() {
            ferry_telemetry::redact::register(&uri.authority.userinfo.password);
        }
        let vhost = if uri.vhost.is_empty() {
            "/"
        } else {
            &uri.vhost
        };
        let shown =
            format!("{}:{}{vhost}", uri.authority.host, uri.authority.port).replace("//", "/");
        Ok(Broker { uri, shown })
    }

    /// The broker as messages name it: `host:port/vhost`, without credentials.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// Opens a connection (one attempt: retrying is the caller's stack's job).
    pub(crate) async fn connect(&self) -> Result<Connection, BrokerError> {
        Connection::connect_uri(self.uri.clone(), ConnectionProperties::default())
            .await
            .map_err(|e| BrokerError::from_lapin("connect", &e))
    }
}

/// One failed exchange with the broker, classified.
#[derive(Debug, Clone)]
pub(crate) struct BrokerError {
    pub(crate) class: ErrorClass,
    pub(crate) reason: String,
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl ferry_resilience::Classify for BrokerError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

impl BrokerError {
    pub(crate) fn transient(reason: impl Into<String>) -> BrokerError {
        BrokerError {
            class: ErrorClass::Transient,
            reason: reason.into(),
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> BrokerError {
        BrokerError {
            class: ErrorClass::Permanent,
            reason: reason.into(),
        }
    }

    /// A lapin error during `what`: the broker refusing (access refused, a queue or exchange
    /// not found, a precondition failed) is permanent; lost connections, I/O and every other
    /// state are transient.
    pub(crate) fn from_lapin(what: &str, e: &lapin::Error) -> BrokerError {
        use lapin::ErrorKind;
        use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
        let reason = format!(
            "{what}: {}",
            ferry_telemetry::redact::redact(&e.to_string())
        );
        let permanent = match e.kind() {
            ErrorKind::ProtocolError(p) => matches!(
                p.kind(),
                AMQPErrorKind::Soft(
                    AMQPSoftError::ACCESSREFUSED
                        | AMQPSoftError::NOTFOUND
                        | AMQPSoftError::PRECONDITIONFAILED
                ) | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::COMMANDINVALID)
            ),
            ErrorKind::InvalidProtocolVersion(_) => true,
            _ => false,
        };
        if permanent {
            BrokerError::permanent(reason)
        } else {
            BrokerError::transient(reason)
        }
    }
}

/// An AMQP field value as JSON: numbers as numbers, strings as text, byte strings as text
/// when they are UTF-8 (else `{ "base64": … }`), tables as objects, arrays as arrays.
pub(crate) fn value_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => {
            serde_json::Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number)
        }
        AMQPValue::Double(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            // value × 10^-scale, written exactly as text.
            let digits = d.value.to_string();
            let scale = usize::from(d.scale);
            if scale == 0 {
                Value::String(digits)
            } else {
                let padded = format!("{digits:0>width$}", width = scale + 1);
                let (int, frac) = padded.split_at(padded.len() - scale);
                Value::String(format!("{int}.{frac}"))
            }
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => bytes_json(s.as_bytes()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::ByteArray(b) => bytes_json(b.as_slice()),
        AMQPValue::Void => Value::Null,
    }
}

/// Bytes as text when they are UTF-8, else `{ "base64": … }`.
pub(crate) fn bytes_json(b: &[u8]) -> Value {
    use base64::Engine as _;
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// A field table as a JSON object.
pub(crate) fn table_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), value_json(v)))
            .collect(),
    )
}

/// What the map reads as `$meta` of a delivered message: where it was routed, whether it is a
/// redelivery, its properties that are set, and its headers (`{}` when it has none).
pub(crate) fn message_meta(
    exchange: &str,
    routing_key: &str,
    redelivered: bool,
    p: &BasicProperties,
) -> Value {
    let mut m = Map::new();
    m.insert("exchange".into(), Value::String(exchange.to_string()));
    m.insert("routing_key".into(), Value::String(routing_key.to_string()));
    m.insert("redelivered".into(), Value::Bool(redelivered));
    let texts = [
        ("message_id", p.message_id()),
        ("correlation_id", p.correlation_id()),
        ("content_type", p.content_type()),
        ("content_encoding", p.content_encoding()),
        ("reply_to", p.reply_to()),
        ("expiration", p.expiration()),
        ("type", p.kind()),
        ("user_id", p.user_id()),
        ("app_id", p.app_id()),
    ];
    for (name, v) in texts {
        if let Some(v) = v {
            m.insert(name.into(), Value::String(v.as_str().to_string()));
        }
    }
    if let Some(t) = p.timestamp() {
        m.insert("timestamp".into(), json!(t));
    }
    if let Some(n) = p.priority() {
        m.insert("priority".into(), json!(n));
    }
    if let Some(n) = p.delivery_mode() {
        m.insert("delivery_mode".into(), json!(n));
    }
    m.insert(
        "headers".into(),
        p.headers()
            .as_ref()
            .map_or(Value::Object(Map::new()), table_json),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{DecimalValue, FieldArray, LongString, ShortString};

    #[test]
    fn field_values_become_json() {
        let mut t = FieldTable::default();
        t.insert(ShortString::from("n"), AMQPValue::LongInt(-3));
        t.insert(
            ShortString::from("s"),
            AMQPValue::LongString(LongString::from("text")),
        );
        t.insert(
            ShortString::from("bin"),
            AMQPValue::LongString(LongString::from(vec![0xff_u8, 0xfe])),
        );
        t.insert(
            ShortString::from("d"),
            AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 5 }),
        );
        t.insert(
            ShortString::from("a"),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Boolean(true),
                AMQPValue::Void,
            ])),
        );
        t.insert(ShortString::from("nan"), AMQPValue::Double(f64::NAN));
        assert_eq!(
            table_json(&t),
            json!({"n": -3, "s": "text", "bin": {"base64": "//4="}, "d": "0.05",
                "a": [true, null], "nan": null})
        );
    }

    #[test]
    fn meta_has_routing_properties_and_headers() {
        let mut h = FieldTable::default();
        h.insert(
            ShortString::from("tenant"),
            AMQPValue::LongString("acme".into()),
        );
        let p = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_headers(h);
        let m = message_meta("ex", "orders.eu", true, &p);
        assert_eq!(
            m,
            json!({"exchange": "ex", "routing_key": "orders.eu", "redelivered": true,
                "message_id": "m-1", "headers": {"tenant": "acme"}})
        );
    }

    #[test]
    fn a_broker_is_shown_without_its_password() {
        let env = RunEnv::isolated("t", ferry_env::Secrets::default())
            .with_var("U", "amqp://guest:s3cr3t-pw@127.0.0.1:5673/%2f");
        let b = Broker::resolve(
            &Param::Template("{{ env.U }}".into()),
            &env,
            "source.amqp.url",
        )
        .expect("resolves");
        assert_eq!(b.shown(), "127.0.0.1:5673/");
        assert!(!format!("{b:?}").contains("s3cr3t"));
        let env = RunEnv::isolated("t", ferry_env::Secrets::default())
            .with_var("U", "http://guest:s3cr3t-pw@h/");
        let e = Broker::resolve(
            &Param::Template("{{ env.U }}".into()),
            &env,
            "source.amqp.url",
        )
        .expect_err("refused");
        let text = e.to_string();
        assert!(
            text.contains("source.amqp.url") && !text.contains("s3cr3t"),
            "{text}"
        );
    }
}
