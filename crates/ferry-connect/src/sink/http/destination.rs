//! Which destination an HTTP target belongs to: breakers, rate limits and retry budgets are
//! shared per destination (scheme, host and port), by every run in the process.
//!
//! Working this out is on every record's path, so the common case is read without the full URL
//! parser: a run keeps the last destination and reuses it while targets share their
//! `scheme://authority` ([`origin`]), and [`destination_key`] reads an ordinary
//! `http(s)://host[:port]/…` by hand, leaving anything unusual to the parser.

/// A URL's `scheme://authority`: everything before the path, query or fragment. Two URLs that
/// share it share their destination.
pub fn origin(url: &str) -> &str {
    // A `://` counts as the scheme's only before any path, query or fragment.
    let start = match url.find("://") {
        Some(i) if authority_end(&url[..i]) == i => i + 3,
        _ => 0,
    };
    &url[..start + authority_end(&url[start..])]
}

/// Where the authority that starts `rest` ends: at its path, query or fragment.
fn authority_end(rest: &str) -> usize {
    rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())
}

/// The destination a URL belongs to: scheme, host and port. Breakers, rate limits and retry
/// budgets are shared per destination.
pub fn destination_key(url: &str) -> String {
    if let Some(key) = plain_destination(url) {
        return key;
    }
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_string(),
    }
}

/// The destination of an ordinary `http(s)://host[:port]/…` URL, read without the full URL
/// parser (which cost as much per request as the rest of the delivery bookkeeping): a host of
/// lower-case letters, digits, dots and dashes, no user info, no IPv6 literal, and a numeric
/// last label only as a dotted quad written the way the parser would write it. Anything else
/// is `None` and goes through the parser.
fn plain_destination(url: &str) -> Option<String> {
    let (scheme, default_port, rest) = if let Some(r) = url.strip_prefix("http://") {
        ("http", 80u16, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        ("https", 443u16, r)
    } else {
        return None;
    };
    let authority = &rest[..authority_end(rest)];
    let (host, port) = match authority.split_once(':') {
        Some((h, "")) => (h, default_port),
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse::<u16>().ok()?),
        Some(_) => return None,
        None => (authority, default_port),
    };
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    if host.is_empty() || host.ends_with('.') || !host.bytes().all(plain) {
        return None;
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.starts_with(|c: char| c.is_ascii_digit()) {
        // Numeric hosts have other spellings (`127.1`, `0x7f.0.0.1`, `127.000.0.1`): only the
        // dotted quad, which is what the standard parser accepts (no leading zeros).
        host.parse::<std::net::Ipv4Addr>().ok()?;
    }
    Some(format!("{scheme}://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut gives what the URL parser gives, or leaves the URL to it.
    #[test]
    fn plain_destinations_match_the_url_parser() {
        let parsed = |u: &str| {
            let u = url::Url::parse(u).unwrap();
            format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            )
        };
        for url in [
            "http://127.0.0.1:8080/api/sink/v2/orders/A-1",
            "https://wms.example.com/v2/orders?x=1",
            "http://wms.example.com:80/",
            "http://wms.example.com:080/x",
            "https://a-b.c:/x",
            "http://host#frag",
            "http://host\\path",
        ] {
            assert_eq!(plain_destination(url), Some(parsed(url)), "{url}");
            assert_eq!(destination_key(url), parsed(url), "{url}");
        }
        // Left to the parser: other spellings of a host, user info, IPv6, odd ports.
        for url in [
            "http://127.1/x",
            "http://0x7f.0.0.1/x",
            "http://127.000.0.1/x",
            "http://1.2.3.4.5/x",
            "http://WMS.example.com/x",
            "http://user:pw@host/x",
            "http://[::1]:8080/x",
            "http://host:99999/x",
            "http://host.:80/x",
            "http://h%41st/x",
            "ftp://host/x",
        ] {
            assert_eq!(plain_destination(url), None, "{url}");
        }
        assert_eq!(destination_key("http://127.1/x"), "http://127.0.0.1:80");
        assert_eq!(
            destination_key("http://WMS.example.com/x"),
            "http://wms.example.com:80"
        );
        assert_eq!(destination_key("not a url"), "not a url");
    }

    #[test]
    fn origins_end_where_the_path_query_or_fragment_starts() {
        assert_eq!(origin("http://h:1/a/b?c#d"), "http://h:1");
        assert_eq!(origin("https://h?x=1"), "https://h");
        assert_eq!(origin("http://h#f"), "http://h");
        assert_eq!(origin("http://h\\p"), "http://h");
        assert_eq!(origin("http://h"), "http://h");
        assert_eq!(origin("not a url/x"), "not a url");
        assert_eq!(origin(""), "");
        assert_eq!(origin("http://h/a?next=http://o/b"), "http://h");
        assert_eq!(origin("h/a?next=http://o/b"), "h");
    }
}
