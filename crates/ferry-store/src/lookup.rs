//! What both backends' lookups for the command line share (`{sqlite,postgres}/lookup.rs`).

use crate::model::EnvFlows;

/// `(env, count)` rows as [`EnvFlows`], sorted by name in byte order (the same on every
/// backend; PostgreSQL's collation may differ).
pub(crate) fn env_flows(rows: Vec<(String, i64)>) -> Vec<EnvFlows> {
    let mut envs: Vec<EnvFlows> = rows
        .into_iter()
        .map(|(env, flows)| EnvFlows {
            env,
            flows: u64::try_from(flows).unwrap_or(0),
        })
        .collect();
    envs.sort_by(|a, b| a.env.cmp(&b.env));
    envs
}
