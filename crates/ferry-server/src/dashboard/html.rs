//! The dashboard's HTML toolkit: escaping, the page frame, and small formatters.
//!
//! Every value that did not come from this file's own literals goes through [`esc`] — record
//! contents, error messages and flow names come from sources and operators, and a dead
//! letter's error text is whatever a remote API answered. Pages are plain strings built with
//! `format!`; there is no template engine and no script.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use ferry_store::RunRecord;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '`' => out.push_str("&#96;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes text for a URL path segment or query value.
pub fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;align-items:center}
header a{color:#dfe9f5;text-decoration:none}header a.on{color:#fff;font-weight:600}
header form{margin-left:auto}main{padding:1em 1.2em;max-width:1400px}
table{border-collapse:collapse;width:100%;background:#fff;margin:.4em 0 1.4em}
th,td{border-bottom:1px solid #e3e6ea;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.t{white-space:nowrap}
code,pre{font:12px/1.4 ui-monospace,monospace}pre{background:#fff;border:1px solid #e3e6ea;padding:.6em;overflow:auto;max-height:24em}
.badge{padding:.05em .45em;border-radius:.6em;font-size:12px;background:#e3e6ea}
.succeeded,.replayed,.approved,.active{background:#d4f3dc}.failed,.rejected{background:#fbd9d6}
.running,.pending{background:#fff1c2}.incomplete,.discarded{background:#e6e1f5}
.msg{background:#e7f1ff;border:1px solid #b8d4f8;padding:.5em .8em;margin:.5em 0}
.err{background:#fdecea;border-color:#f5b7b1}
form.inline{display:inline}button{cursor:pointer}input,select,button{font:inherit}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}
";

/// Which navigation entry is highlighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Dlq,
    Promotions,
    None,
}

/// A whole page: the frame, the navigation (with a logout button when `signed_in`), an
/// optional notice, and `body` (already escaped markup).
pub fn page(title: &str, nav: Nav, signed_in: bool, notice: Option<&Notice>, body: &str) -> String {
    let link = |href: &str, label: &str, this: Nav| {
        let class = if nav == this { " class=\"on\"" } else { "" };
        format!("<a href=\"{href}\"{class}>{label}</a>")
    };
    let logout = if signed_in {
        "<form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>"
    } else {
        ""
    };
    let notice = notice.map(Notice::render).unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · ferry</title><style>{STYLE}</style></head><body>\
<header><strong>ferry</strong>{}{}{}{logout}</header><main>{notice}{body}</main></body></html>\n",
        link("/", "Overview", Nav::Overview),
        link("/dlq", "Dead letters", Nav::Dlq),
        link("/promotions", "Promotions", Nav::Promotions),
        title = esc(title),
    )
}

/// A message shown above a page's content (after an action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub text: String,
    pub error: bool,
}

impl Notice {
    pub fn info(text: impl Into<String>) -> Notice {
        Notice {
            text: text.into(),
            error: false,
        }
    }

    pub fn error(text: impl Into<String>) -> Notice {
        Notice {
            text: text.into(),
            error: true,
        }
    }

    fn render(&self) -> String {
        let class = if self.error { "msg err" } else { "msg" };
        format!(
            "<div class=\"{class}\" role=\"status\">{}</div>",
            esc(&self.text)
        )
    }
}

/// A status word in a coloured badge.
pub fn badge(word: &str) -> String {
    let w = esc(word);
    format!("<span class=\"badge {w}\">{w}</span>")
}

/// `r3 · 1a2b3c4d5e6f`: a revision with the start of its hash.
pub fn revision_tag(number: i64, hash: &str) -> String {
    let short: String = hash.chars().take(12).collect();
    format!("r{number} · <code>{}</code>", esc(&short))
}

/// The last 8 hex digits of an id: the random part of a UUIDv7 (its first digits are a
/// timestamp, the same for everything made in the same moment).
pub fn short_id(id: &uuid::Uuid) -> String {
    let s = id.simple().to_string();
    s[s.len() - 8..].to_string()
}

/// A UTC time, to the second.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long a run took (or has been running).
pub fn duration(run: &RunRecord) -> String {
    let end = run.finished_at.unwrap_or_else(Utc::now);
    let ms = (end - run.started_at).num_milliseconds().max(0);
    let text = if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000)
    };
    if run.finished_at.is_none() {
        format!("{text} so far")
    } else {
        text
    }
}

/// Text cut to `max` characters on one line.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::extract::shorten(&flat, max)
}

/// A JSON value, pretty, escaped, in a `<pre>`.
pub fn json_block(v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    format!("<pre>{}</pre>", esc(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_hostile_text() {
        let hostile = r#"<script>alert('x')</script><img src=x onerror="alert(1)">&amp;`"#;
        let out = esc(hostile);
        assert!(!out.contains('<'), "{out}");
        assert!(!out.contains('>'), "{out}");
        assert!(!out.contains('"'), "{out}");
        assert!(!out.contains('\''), "{out}");
        assert!(!out.contains('`'), "{out}");
        assert_eq!(esc(r#"a&b<c>"d'e"#), "a&amp;b&lt;c&gt;&quot;d&#39;e");
        // Already-escaped text is escaped again, never passed through.
        assert_eq!(esc("&lt;"), "&amp;lt;");
        assert_eq!(esc("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn attribute_breakouts_stay_inside_the_attribute() {
        let name = "x\" onmouseover=\"alert(1)";
        let html = format!("<input value=\"{}\">", esc(name));
        assert_eq!(html.matches('"').count(), 2, "{html}");
    }

    #[test]
    fn short_ids_are_the_random_end() {
        let id: uuid::Uuid = "01a20901-6347-7363-9ccc-523bdda10c9d".parse().unwrap();
        assert_eq!(short_id(&id), "dda10c9d");
    }

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(url_part("a b/c?d&e=f"), "a%20b%2Fc%3Fd%26e%3Df");
        assert_eq!(url_part("orders-to_wh.1~"), "orders-to_wh.1~");
        assert_eq!(url_part("\"><script>"), "%22%3E%3Cscript%3E");
    }

    #[test]
    fn the_page_frame_escapes_title_and_notice() {
        let html = page(
            "<b>t</b>",
            Nav::Overview,
            true,
            Some(&Notice::error("<i>bad</i>")),
            "<p>body</p>",
        );
        assert!(html.contains("&lt;b&gt;t&lt;/b&gt; · ferry"));
        assert!(html.contains("&lt;i&gt;bad&lt;/i&gt;"));
        assert!(html.contains("<p>body</p>"));
        assert!(!html.contains("<script"));
        assert!(html.contains("action=\"/logout\""));
    }
}
