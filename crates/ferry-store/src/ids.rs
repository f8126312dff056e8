//! Short ids: the first hex digits of a run, dead-letter or promotion id, as git takes the start
//! of a commit hash.
//!
//! Ids are UUIDs (v7, so their first digits are a time stamp and ids made close together share
//! a long prefix). People copy them from listings and would rather type `01a2469f-40cb` than
//! the whole of it. An [`IdPrefix`] is the checked form of what was typed; it stands for the
//! closed range of UUIDs that start with it ([`IdPrefix::range`]), which both backends answer
//! with a range scan of the table's primary key ([`crate::StateStore::ids_with_prefix`]) rather
//! than by listing every id.

use std::fmt;

use uuid::Uuid;

/// Fewest hex digits a prefix must have: fewer would match most of a busy store.
pub const MIN_ID_PREFIX: usize = 4;

/// The tables whose rows have UUID ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A run (`ferry runs`).
    Run,
    /// A dead-letter entry (`ferry dlq list`).
    DeadLetter,
    /// A promotion (`ferry promotions`).
    Promotion,
}

impl IdKind {
    /// What the id names, for messages: `run`, `dead letter`, `promotion`.
    pub fn noun(self) -> &'static str {
        match self {
            IdKind::Run => "run",
            IdKind::DeadLetter => "dead letter",
            IdKind::Promotion => "promotion",
        }
    }

    /// The command that lists ids of this kind.
    pub fn listing(self) -> &'static str {
        match self {
            IdKind::Run => "ferry runs",
            IdKind::DeadLetter => "ferry dlq list",
            IdKind::Promotion => "ferry promotions",
        }
    }

    /// The table, for the backends' SQL (a fixed name, never input).
    pub(crate) fn table(self) -> &'static str {
        match self {
            IdKind::Run => "runs",
            IdKind::DeadLetter => "dead_letters",
            IdKind::Promotion => "promotions",
        }
    }
}

/// The first 4 to 32 hex digits of an id, lower-case, without hyphens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPrefix(String);

/// Why a text is not an id or the start of one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a {noun} id: give the id, or at least its first {MIN_ID_PREFIX} hex digits, as `{listing}` shows it"
)]
pub struct IdPrefixError {
    /// What was given.
    pub text: String,
    noun: &'static str,
    listing: &'static str,
}

impl IdPrefix {
    /// Reads what was typed: hex digits, hyphens anywhere (`01a2469f-40cb`), surrounding
    /// spaces ignored, any case; at least [`MIN_ID_PREFIX`] and at most 32 digits.
    pub fn parse(text: &str, kind: IdKind) -> Result<IdPrefix, IdPrefixError> {
        let digits: String = text
            .trim()
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let ok = (MIN_ID_PREFIX..=32).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_hexdigit());
        if ok {
            Ok(IdPrefix(digits))
        } else {
            Err(IdPrefixError {
                text: text.chars().take(80).collect(),
                noun: kind.noun(),
                listing: kind.listing(),
            })
        }
    }

    /// The whole id, when all 32 digits were given.
    pub fn full(&self) -> Option<Uuid> {
        (self.0.len() == 32)
            .then(|| Uuid::parse_str(&self.0).ok())
            .flatten()
    }

    /// The smallest and the largest id that start with this prefix.
    pub fn range(&self) -> (Uuid, Uuid) {
        let pad = |fill: char| {
            let mut s = self.0.clone();
            while s.len() < 32 {
                s.push(fill);
            }
            // 32 hex digits always parse.
            Uuid::parse_str(&s).unwrap_or(Uuid::nil())
        };
        (pad('0'), pad('f'))
    }
}

impl fmt::Display for IdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_hex_digits_with_hyphens_anywhere() {
        let p = IdPrefix::parse(" 01A2469F-40cb ", IdKind::Run).unwrap();
        assert_eq!(p.to_string(), "01a2469f40cb");
        assert_eq!(p.full(), None);
        let (lo, hi) = p.range();
        assert_eq!(lo.to_string(), "01a2469f-40cb-0000-0000-000000000000");
        assert_eq!(hi.to_string(), "01a2469f-40cb-ffff-ffff-ffffffffffff");
        let id = "01a2469f-40cb-7474-bbb4-f55b7155911d";
        let whole = IdPrefix::parse(id, IdKind::Run).unwrap();
        assert_eq!(whole.full().unwrap().to_string(), id);
        assert_eq!(
            whole.range(),
            (whole.full().unwrap(), whole.full().unwrap())
        );
    }

    #[test]
    fn anything_else_is_refused_with_what_to_give() {
        for bad in [
            "",
            "01a",
            "0-1-a",
            "xyz12",
            "01a2469f40cb7474bbb4f55b7155911d0",
            "é1234",
        ] {
            let err = IdPrefix::parse(bad, IdKind::DeadLetter).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "`{bad}` is not a dead letter id: give the id, or at least its first 4 hex digits, as `ferry dlq list` shows it"
                )
            );
        }
    }
}
