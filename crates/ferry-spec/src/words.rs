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
}
