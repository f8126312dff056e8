//! Counts as people read them: `1 entry`, `2 entries`, `0 records`.
//!
//! Every message that prints a count of things goes through [`count`], so the CLI, the engine's
//! run errors, the control API and the dashboard agree, and none prints `(1 entries)` or the
//! `record(s)` dodge. It lives here because every crate that talks to people depends on
//! `ferry-spec`.

/// `n` followed by `noun` in the singular when `n` is 1, else in the plural (see [`plural`]):
/// `count(1, "entry")` is `"1 entry"`, `count(3, "dead letter")` is `"3 dead letters"`.
/// Any integer type will do (`usize` lengths, `u64` counters, `i64` columns).
pub fn count<N>(n: N, noun: &str) -> String
where
    N: Copy + std::fmt::Display + TryInto<i128>,
{
    if n.try_into().ok() == Some(1) {
        format!("1 {noun}")
    } else {
        format!("{n} {}", plural(noun))
    }
}

/// The plural of an English noun as ferry uses them; for a phrase, of its last word
/// (`dead letter` → `dead letters`): `entry` → `entries`, `match` → `matches`, `run` → `runs`.
pub fn plural(noun: &str) -> String {
    let lower = noun.to_ascii_lowercase();
    let consonant_y = lower.ends_with('y')
        && !matches!(
            lower.chars().rev().nth(1),
            Some('a' | 'e' | 'i' | 'o' | 'u') | None
        );
    if consonant_y {
        format!("{}ies", &noun[..noun.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut: how
/// messages quote a value that may be long (a record, a page's first bytes, an id someone
/// typed). Bytes, not characters, so a message's size is bounded whatever the script.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The JSON type of a value as a noun for messages: `null`, `a boolean`, `a number`,
/// `a string`, `an array`, `an object`.
pub fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_everything_else_plural() {
        assert_eq!(count(1u64, "entry"), "1 entry");
        assert_eq!(count(0u64, "entry"), "0 entries");
        assert_eq!(count(2u32, "entry"), "2 entries");
        assert_eq!(count(1usize, "record"), "1 record");
        assert_eq!(count(20_000usize, "record"), "20000 records");
        assert_eq!(count(1i64, "dead letter"), "1 dead letter");
        assert_eq!(count(-1i64, "dead letter"), "-1 dead letters");
        assert_eq!(count(5u64, "dead letter"), "5 dead letters");
    }

    #[test]
    fn plurals_of_the_nouns_ferry_counts() {
        for (one, many) in [
            ("run", "runs"),
            ("flow", "flows"),
            ("page", "pages"),
            ("edge", "edges"),
            ("path", "paths"),
            ("case", "cases"),
            ("key", "keys"),
            ("day", "days"),
            ("entry", "entries"),
            ("match", "matches"),
            ("box", "boxes"),
            ("class", "classes"),
            ("promotion", "promotions"),
            ("flow file", "flow files"),
            ("y", "ys"),
        ] {
            assert_eq!(plural(one), many, "{one}");
        }
    }

    #[test]
    fn long_text_is_shortened_on_a_character_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("abcdefghij", 6), "abc…");
        assert_eq!(shorten("ééééé", 7), "éé…");
        assert_eq!(shorten("ééééé", 6), "é…");
        assert!(shorten(&"é".repeat(1000), 48).len() <= 48);
        assert_eq!(shorten("", 0), "");
    }

    #[test]
    fn json_types_read_as_nouns() {
        assert_eq!(json_type(&serde_json::json!([1])), "an array");
        assert_eq!(json_type(&serde_json::json!({})), "an object");
        assert_eq!(json_type(&serde_json::Value::Null), "null");
    }
}
