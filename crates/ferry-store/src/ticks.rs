//! What both backends share about tick claims.

/// How long a tick's claim is kept: far longer than any tick can be late (a scheduler drops
/// ticks it fell behind on), short enough that the table stays small.
pub(crate) const CLAIMS_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(7);
