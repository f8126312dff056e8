//! Secret redaction for everything ferry writes about itself: log lines and exported spans.
//!
//! Secrets are references in flow files and are resolved at run time; `ferry-connect` registers
//! every value it resolves with [`register`]. From then on every log line written through
//! [`RedactingWriter`] and every span exported over OTLP has each registered value replaced by
//! `[redacted]` — also in the forms a value takes on its way into a message: URL-encoded (a
//! token in a query string), JSON-escaped (a JSON log line) and `Debug`-escaped (a `?field`).
//!
//! This is the last line of defence, not the first: code still keeps secrets out of messages
//! (`SecretValue` prints `[redacted]`, URLs are shown with secret parameters masked). It catches
//! what code cannot see coming — a destination echoing a token in an error body, an API putting
//! a key into its `next` link, a library logging a URL at debug level.
//!
//! Cost: one Aho-Corasick scan of each log line, over an automaton rebuilt only when a new
//! value is registered. Values shorter than [`MIN_SECRET_LEN`] are not registered: redacting
//! every `x` of every log line would make the logs unreadable, and such a value protects
//! nothing anyway.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Arc, OnceLock, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use tracing_subscriber::fmt::MakeWriter;

/// What a secret is replaced by.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this many bytes are not registered (see the module docs).
pub const MIN_SECRET_LEN: usize = 4;

/// The patterns to replace and their automaton. Immutable: registering builds a new one.
#[derive(Debug, Default)]
struct Patterns {
    values: Vec<String>,
    automaton: Option<AhoCorasick>,
}

fn registry() -> &'static RwLock<Arc<Patterns>> {
    static REGISTRY: OnceLock<RwLock<Arc<Patterns>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn current() -> Arc<Patterns> {
    match registry().read() {
        Ok(p) => Arc::clone(&p),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    }
}

/// Registers a secret value: from now on it is redacted from logs and exported spans, in every
/// form [`forms`] lists. Registering a value twice is harmless.
pub fn register(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let new: Vec<String> = forms(value);
    let mut guard = match registry().write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if new.iter().all(|f| guard.values.contains(f)) {
        return;
    }
    let mut values = guard.values.clone();
    for f in new {
        if !values.contains(&f) {
            values.push(f);
        }
    }
    // Leftmost-longest: when the raw value and an escaped form overlap, the longer one wins and
    // nothing of either is left behind.
    let automaton = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&values)
        .ok();
    *guard = Arc::new(Patterns { values, automaton });
}

/// The forms a value can take in a log line or span: as is, in its two URL encodings
/// ([`url_forms`]), JSON-escaped and `Debug`-escaped.
pub fn forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    let mut add = |f: String| {
        if f.len() >= MIN_SECRET_LEN && !out.contains(&f) {
            out.push(f);
        }
    };
    for f in url_forms(value) {
        add(f);
    }
    if let Ok(json) = serde_json::to_string(value) {
        add(json[1..json.len() - 1].to_string());
    }
    let debug = format!("{value:?}");
    add(debug[1..debug.len() - 1].to_string());
    out
}

/// A value as it appears in a URL ferry sends: percent-encoded as flow URL templates encode
/// placeholders (RFC 3986, `ferry_spec::template::URL_ESCAPE`), and as reqwest and `url` write
/// query parameters (`application/x-www-form-urlencoded`: space as `+`, `*` kept, `~` encoded).
/// Both come from the crates that do the sending, so redaction looks for exactly those bytes.
pub fn url_forms(value: &str) -> [String; 2] {
    [
        percent_encoding::utf8_percent_encode(value, ferry_spec::template::URL_ESCAPE).to_string(),
        form_urlencoded::byte_serialize(value.as_bytes()).collect(),
    ]
}

/// `text` with every registered secret replaced by `[redacted]`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let patterns = current();
    match &patterns.automaton {
        Some(ac) if ac.is_match(text) => {
            let mut out = String::with_capacity(text.len());
            ac.replace_all_with(text, &mut out, |_, _, dst| {
                dst.push_str(REDACTED);
                true
            });
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(text),
    }
}

/// `bytes` with every registered secret replaced by `[redacted]`.
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let patterns = current();
    match &patterns.automaton {
        Some(ac) if ac.is_match(bytes) => {
            let mut out = Vec::with_capacity(bytes.len());
            ac.replace_all_with_bytes(bytes, &mut out, |_, _, dst| {
                dst.extend_from_slice(REDACTED.as_bytes());
                true
            });
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(bytes),
    }
}

/// A [`MakeWriter`] that redacts secrets from what the inner writer receives.
///
/// The formatter writes one event through one writer; the writer buffers it and redacts the
/// whole line at once when it is flushed or dropped, so a secret split over two `write` calls
/// is still found.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingWriter<M> {
    inner: M,
}

impl<M> RedactingWriter<M> {
    pub fn new(inner: M) -> Self {
        RedactingWriter { inner }
    }
}

impl<'a, M> MakeWriter<'a> for RedactingWriter<M>
where
    M: MakeWriter<'a>,
{
    type Writer = Redacting<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting {
            buf: Vec::new(),
            inner: self.inner.make_writer(),
        }
    }
}

/// One event being written; see [`RedactingWriter`].
#[derive(Debug)]
pub struct Redacting<W: Write> {
    buf: Vec<u8>,
    inner: W,
}

impl<W: Write> Redacting<W> {
    fn drain(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        self.inner.write_all(&redact_bytes(&buf))
    }
}

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for Redacting<W> {
    fn drop(&mut self) {
        // Nowhere to report a failed log write to.
        let _ = self.drain();
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_redacted_in_every_form() {
        register("hunter2/pa ss+word\"q");
        let line = "GET /x?k=hunter2%2Fpa+ss%2Bword%22q failed: \"hunter2/pa ss+word\\\"q\" \
                    and hunter2%2Fpa%20ss%2Bword%22q and hunter2/pa ss+word\"q";
        let out = redact(line);
        assert!(!out.contains("hunter2"), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 4, "{out}");
    }

    #[test]
    fn url_forms_are_what_a_flow_sends() {
        use ferry_spec::template::{Encoding, Template, Var};
        let secret = "p@ss w/rd~*+é&=";
        // A placeholder in a URL template, as the HTTP connectors render it.
        let t = Template::parse("https://h/x/{{ source.s }}").unwrap();
        let lookup = |_: &Var| Some(Cow::Borrowed(secret));
        let url = t.render(Encoding::Url, lookup).unwrap();
        // A query parameter, as `url` (and so reqwest) writes it.
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("k", secret)
            .finish();
        let [template_form, query_form] = url_forms(secret);
        assert_eq!(url, format!("https://h/x/{template_form}"));
        assert_eq!(query, format!("k={query_form}"));
        assert_ne!(template_form, query_form);
    }

    #[test]
    fn short_values_are_not_registered_and_unrelated_text_is_untouched() {
        register("abc");
        assert_eq!(redact("abcdef"), "abcdef");
        assert!(matches!(redact("nothing secret here"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_writer_redacts_a_value_split_over_writes() {
        register("split-secret-value");
        let sink = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, d: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(d);
                Ok(d.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let s2 = sink.clone();
        let make = RedactingWriter::new(move || Shared(s2.clone()));
        {
            let mut w = make.make_writer();
            w.write_all(b"token split-sec").unwrap();
            w.write_all(b"ret-value end\n").unwrap();
        }
        let got = String::from_utf8(sink.lock().unwrap().clone()).unwrap();
        assert_eq!(got, "token [redacted] end\n");
    }
}
