//! Which runs are alive: every run says which process runs it (`host:pid`) and beats a
//! heartbeat while it runs, so a new run can tell a run left `running` by a dead process
//! (SIGKILL, power loss) from one another process is running right now.
//!
//! A run is dead when its process is on this host and no longer exists (known at once), or
//! when its last heartbeat is older than [`STALE_AFTER`] (any host). Dead runs are marked
//! failed, which also releases their key claims, so their records can be sent by the next
//! run without waiting. Live runs of the same flow are left alone: their key claims keep the
//! two runs from sending one key twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_store::{StateStore, StoreError};
use uuid::Uuid;

/// How often a running run beats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A run whose last heartbeat is older than this is taken for dead.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// `host:pid` of this process.
pub fn owner() -> String {
    format!("{}:{}", host(), std::process::id())
}

/// This host's name, read once per process.
pub fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into())
    })
}

/// Whether `owner` names a process of this host that no longer exists. Unknown (another
/// host, no `/proc`): false — the heartbeat age decides then.
fn gone(owner: &str) -> bool {
    let Some((h, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    if h != host() || !std::path::Path::new("/proc/self").exists() {
        return false;
    }
    match pid.parse::<u32>() {
        Ok(pid) if pid == std::process::id() => false,
        Ok(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}

/// The runs of (flow, env) in flight in a live process, of any worker.
pub async fn live_runs(
    store: &Arc<dyn StateStore>,
    flow: &str,
    env: &str,
) -> Result<usize, StoreError> {
    Ok(store
        .running_runs(flow, env)
        .await?
        .iter()
        .filter(|r| !dead(r))
        .count())
}

/// True when a beat at `at` is recent enough for its process (a run, a worker) to be taken
/// for alive: within [`STALE_AFTER`].
pub fn beat_is_fresh(at: chrono::DateTime<Utc>) -> bool {
    let stale_before = Utc::now()
        - chrono::Duration::from_std(STALE_AFTER).unwrap_or_else(|_| chrono::Duration::minutes(1));
    at >= stale_before
}

/// True when the process running `r` is gone, or its heartbeat is stale.
fn dead(r: &ferry_store::RunningRun) -> bool {
    !beat_is_fresh(r.alive_at) || r.owner.as_deref().is_some_and(gone)
}

/// Marks the dead runs of (flow, env) failed; returns how many.
pub async fn reap(store: &Arc<dyn StateStore>, flow: &str, env: &str) -> Result<u64, StoreError> {
    let dead_ids: Vec<Uuid> = store
        .running_runs(flow, env)
        .await?
        .into_iter()
        .filter(dead)
        .map(|r| r.id)
        .collect();
    if dead_ids.is_empty() {
        return Ok(0);
    }
    let n = store
        .fail_runs(
            &dead_ids,
            "the process running it stopped before it finished",
        )
        .await?;
    if n > 0 {
        tracing::warn!(
            flow,
            env,
            runs = n,
            "Marked runs left running by a dead process as failed"
        );
    }
    Ok(n)
}

/// A run's heartbeat task; dropping it stops the beats (the run ended).
pub struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Beats for `run_id` now and then every [`HEARTBEAT_EVERY`] until the returned
/// [`Heartbeat`] is dropped.
pub async fn start_heartbeat(
    store: Arc<dyn StateStore>,
    run_id: Uuid,
) -> Result<Heartbeat, StoreError> {
    let me = owner();
    store.heartbeat(run_id, &me).await?;
    Ok(Heartbeat(tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = store.heartbeat(run_id, &me).await {
                tracing::warn!(error = %e, "Heartbeat failed; retrying");
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_not_gone_and_a_dead_pid_is() {
        assert!(!gone(&owner()));
        // pid 0 never names a process in /proc (and u32::MAX is beyond any pid_max)
        assert!(gone(&format!("{}:{}", host(), u32::MAX)));
        assert!(!gone("some-other-host:1"));
        assert!(!gone("garbage"));
    }
}
