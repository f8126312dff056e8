//! What both backends share about the workers table.

/// A worker silent for this long is removed by the next beat of any worker.
pub(crate) const WORKERS_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The environments of a worker as stored (a JSON array of names).
pub(crate) fn envs_text(envs: &[String]) -> String {
    serde_json::Value::from(envs.to_vec()).to_string()
}

/// The environments of a worker from their stored JSON; a broken value is named.
pub(crate) fn envs_from(op: &'static str, text: &str) -> crate::error::Result<Vec<String>> {
    let v = crate::codec::parse_json(op, "workers.envs", text)?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
