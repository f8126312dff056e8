//! The dashboard's HTML toolkit: the page frame and the small pieces every page uses (status
//! badges, revision tags, JSON blocks), as [maud](https://maud.lambda.xyz) markup, plus plain
//! text formatters.
//!
//! Record contents, error messages, reasons and names come from sources, remote APIs and
//! operators, so no page may ever write them out as markup. With maud every value spliced into
//! a template — `(value)` in element content or in an attribute — is escaped by the compiler's
//! generated code; nothing here (or in [`super::pages`]) writes unescaped text, and a test
//! keeps it that way: `PreEscaped`, maud's one way around the escaping, appears in no file of
//! the dashboard. There is no script on any page.

use chrono::{DateTime, Utc};
use ferry_store::RunRecord;
use maud::{DOCTYPE, Markup, html};

/// Percent-encodes text for a URL path segment or query value, as flow URL templates do.
pub fn url_part(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, ferry_spec::template::URL_ESCAPE).to_string()
}

/// The pages' one stylesheet: a constant, inline (the content security policy allows inline
/// style and nothing else). It holds none of `<`, `>`, `&`, `"`, so escaping leaves it as is.
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
/// optional notice, and `body`.
pub fn page(
    title: &str,
    nav: Nav,
    signed_in: bool,
    notice: Option<&Notice>,
    body: Markup,
) -> Markup {
    let link = |href: &str, label: &str, this: Nav| {
        html! { a href=(href) class=[(nav == this).then_some("on")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ferry" }
                style { (STYLE) }
            }
            body {
                header {
                    strong { "ferry" }
                    (link("/", "Overview", Nav::Overview))
                    (link("/dlq", "Dead letters", Nav::Dlq))
                    (link("/promotions", "Promotions", Nav::Promotions))
                    @if signed_in {
                        form method="post" action="/logout" {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    @if let Some(n) = notice { (n.render()) }
                    (body)
                }
            }
        }
    }
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

    fn render(&self) -> Markup {
        let class = if self.error { "msg err" } else { "msg" };
        html! { div class=(class) role="status" { (self.text) } }
    }
}

/// A status word in a coloured badge.
pub fn badge(word: &str) -> Markup {
    html! { span class={ "badge " (word) } { (word) } }
}

/// `r3 · 1a2b3c4d5e6f`: a revision with the start of its hash.
pub fn revision_tag(number: i64, hash: &str) -> Markup {
    let short: String = hash.chars().take(12).collect();
    html! { "r" (number) " · " code { (short) } }
}

/// A run, dead letter or promotion id as a link's text: its short form in `<code>`.
pub fn short_code(id: &uuid::Uuid) -> Markup {
    html! { code { (short_id(id)) } }
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

/// A JSON value, pretty, in a `<pre>`.
pub fn json_block(v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = r#"<script>alert('x')</script><img src=x onerror="alert(1)">&amp;"#;

    #[test]
    fn spliced_text_is_escaped_in_content_and_attributes() {
        let out = badge(HOSTILE).into_string();
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.contains("<img"), "{out}");
        // The class attribute is closed only by its own quote.
        assert_eq!(out.matches('"').count(), 2, "{out}");
        assert!(
            out.contains("&lt;script&gt;alert('x')&lt;/script&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;"),
            "{out}"
        );
        // Already-escaped text is escaped again, never passed through.
        assert_eq!(
            html! { (r#"a&b<c>"d'e &lt;"#) }.into_string(),
            "a&amp;b&lt;c&gt;&quot;d'e &amp;lt;"
        );
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
            html! { p { "body" } },
        )
        .into_string();
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains("&lt;b&gt;t&lt;/b&gt; · ferry"), "{html}");
        assert!(html.contains("&lt;i&gt;bad&lt;/i&gt;"), "{html}");
        assert!(html.contains("<p>body</p>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("action=\"/logout\""), "{html}");
        assert!(
            html.contains("<a href=\"/\" class=\"on\">Overview</a>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"/dlq\">Dead letters</a>"), "{html}");
    }

    #[test]
    fn the_dashboard_never_bypasses_escaping() {
        // maud's one way to write text unescaped; none of the dashboard's files may use it.
        let bypass = ["Pre", "Escaped"].concat();
        for (file, text) in [
            ("html.rs", include_str!("html.rs")),
            ("pages.rs", include_str!("pages.rs")),
            ("mod.rs", include_str!("mod.rs")),
        ] {
            let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
            for (n, line) in code.enumerate() {
                assert!(
                    !line.contains(&bypass),
                    "dashboard/{file}, code line {n}: writes unescaped markup; splice values with (value) instead"
                );
            }
        }
    }
}
