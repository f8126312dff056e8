//! The source's records: a pure function of `(seed, id)` plus the two fields a touch changes
//! (`changed_at` and `version`).
//!
//! Nothing is stored per record: a page of 100 orders is generated on demand in microseconds,
//! so a sandbox with a million records costs only its index (see [`super::index`]). The data
//! is shaped to exercise a field map: mixed-case emails with stray spaces, decimal strings,
//! unix timestamps, quantities that are sometimes numeric strings, a few drafts to filter.

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

use crate::rng::{SplitMix, seed_of};

/// Unix time of 2024-01-01T00:00:00Z; record `i` is first changed at this plus `i` seconds.
pub(crate) const EPOCH_UNIX: i64 = 1_704_067_200;

const FIRST_NAMES: [&str; 12] = [
    "Ann", "Bob", "Chloe", "Dario", "Emma", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira",
    "Luca",
];
const LAST_NAMES: [&str; 12] = [
    "Smith", "Meyer", "Rossi", "Dubois", "Novak", "Silva", "Jansen", "Berg", "Costa", "Weber",
    "Lopez", "Khan",
];

/// One source order, in the field order the API answers with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Order {
    pub(crate) id: u64,
    pub(crate) number: String,
    pub(crate) state: &'static str,
    pub(crate) changed_at: String,
    pub(crate) created: i64,
    pub(crate) buyer: Buyer,
    pub(crate) total: String,
    pub(crate) currency: &'static str,
    pub(crate) shipping: &'static str,
    pub(crate) items: Vec<Item>,
    pub(crate) version: u32,
}

/// The buyer of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Buyer {
    pub(crate) email: String,
    pub(crate) first: &'static str,
    pub(crate) last: &'static str,
}

/// One order line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Item {
    pub(crate) sku: String,
    pub(crate) qty: Qty,
    pub(crate) price: String,
}

/// A quantity: usually a JSON integer, sometimes a numeric string (as real APIs do).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum Qty {
    Int(u32),
    Text(String),
}

/// Formats unix seconds as RFC 3339 UTC with second precision, e.g. `2024-01-01T00:00:05Z`.
pub(crate) fn rfc3339(unix: i64) -> String {
    match DateTime::from_timestamp(unix, 0) {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Secs, true),
        // Unreachable for the times the sandbox produces (2024 plus at most a few billion
        // seconds); a plain number keeps the answer well-formed regardless.
        None => unix.to_string(),
    }
}

fn cents(value: u64) -> String {
    format!("{}.{:02}", value / 100, value % 100)
}

/// Generates record `id` as it looks at `changed_at` (unix seconds) in `version`.
/// Everything but those two fields depends only on `(seed, id)`.
pub(crate) fn generate(seed: u64, id: u64, changed_at: i64, version: u32) -> Order {
    let mut rng = SplitMix::new(seed_of(&[seed, id]));
    let state = match rng.below(100) {
        0..=4 => "draft",
        5..=54 => "paid",
        _ => "shipped",
    };
    let first = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
    let last = LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize];
    let email = match rng.below(4) {
        0 => format!(" {first}.{last}{id}@Example.com "),
        1 => format!("{first}.{last}{id}@Example.com "),
        _ => format!("{first}.{last}{id}@Example.com"),
    };
    let currency = if rng.below(3) == 0 { "usd" } else { "eur" };
    let shipping = if rng.below(5) == 0 {
        "express"
    } else {
        "standard"
    };
    let item_count = 1 + rng.below(3);
    let mut total_cents = 0u64;
    let items = (0..item_count)
        .map(|_| {
            let sku = format!("S-{}", 1 + rng.below(500));
            let qty = 1 + rng.below(5) as u32;
            let price_cents = 100 + rng.below(4900);
            total_cents += u64::from(qty) * price_cents;
            let qty = if rng.below(5) == 0 {
                Qty::Text(qty.to_string())
            } else {
                Qty::Int(qty)
            };
            Item {
                sku,
                qty,
                price: cents(price_cents),
            }
        })
        .collect();
    let first_changed = EPOCH_UNIX.saturating_add_unsigned(id);
    let created = first_changed - rng.below(3600) as i64;
    Order {
        id,
        number: format!("A-{id}"),
        state,
        changed_at: rfc3339(changed_at),
        created,
        buyer: Buyer { email, first, last },
        total: cents(total_cents),
        currency,
        shipping,
        items,
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_shape_matches_the_documented_contract() {
        let order = generate(42, 7, EPOCH_UNIX + 7, 1);
        let value = serde_json::to_value(&order).expect("serialise");
        assert_eq!(value["id"], 7);
        assert_eq!(value["number"], "A-7");
        assert_eq!(value["changed_at"], "2024-01-01T00:00:07Z");
        assert!(value["created"].is_i64());
        assert!(["paid", "shipped", "draft"].contains(&value["state"].as_str().unwrap_or("")));
        assert!(["eur", "usd"].contains(&value["currency"].as_str().unwrap_or("")));
        assert!(["express", "standard"].contains(&value["shipping"].as_str().unwrap_or("")));
        let email = value["buyer"]["email"].as_str().unwrap_or("");
        assert!(email.trim().ends_with("7@Example.com"), "{email}");
        let total = value["total"].as_str().unwrap_or("");
        assert_eq!(total.split('.').nth(1).map(str::len), Some(2), "{total}");
        let items = value["items"].as_array().expect("items");
        assert!((1..=3).contains(&items.len()));
        for item in items {
            assert!(item["sku"].as_str().unwrap_or("").starts_with("S-"));
            assert!(item["qty"].is_u64() || item["qty"].is_string());
        }
        assert_eq!(value["version"], 1);
    }

    #[test]
    fn generation_is_deterministic_and_seed_dependent() {
        let a = generate(42, 100, EPOCH_UNIX + 100, 1);
        let b = generate(42, 100, EPOCH_UNIX + 100, 1);
        assert_eq!(a, b);
        let others: Vec<Order> = (1..50)
            .map(|seed| generate(seed, 100, EPOCH_UNIX + 100, 1))
            .collect();
        assert!(
            others
                .iter()
                .any(|o| o.buyer != a.buyer || o.items != a.items)
        );
        // A touch changes only changed_at and version.
        let touched = generate(42, 100, EPOCH_UNIX + 5000, 2);
        assert_eq!(touched.items, a.items);
        assert_ne!(touched.changed_at, a.changed_at);
        assert_eq!(touched.version, 2);
    }

    #[test]
    fn mix_of_values_is_realistic() {
        let orders: Vec<Order> = (1..=2000).map(|id| generate(42, id, 0, 1)).collect();
        let drafts = orders.iter().filter(|o| o.state == "draft").count();
        assert!((50..=150).contains(&drafts), "drafts {drafts}");
        assert!(orders.iter().any(|o| o.buyer.email.starts_with(' ')));
        assert!(orders.iter().any(|o| !o.buyer.email.ends_with(' ')));
        assert!(
            orders
                .iter()
                .flat_map(|o| &o.items)
                .any(|i| matches!(i.qty, Qty::Text(_)))
        );
        assert!(orders.iter().any(|o| o.currency == "usd"));
        assert!(orders.iter().any(|o| o.shipping == "express"));
    }

    #[test]
    fn rfc3339_formats_seconds_in_utc() {
        assert_eq!(rfc3339(EPOCH_UNIX), "2024-01-01T00:00:00Z");
        assert_eq!(rfc3339(EPOCH_UNIX + 86_401), "2024-01-02T00:00:01Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
