//! What can go wrong around schedules, with what the operator should do about it.

use ferry_store::StoreError;

/// A schedule that cannot be planned. The flow validator refuses the same things, so this
/// shows up only for revisions stored by an older ferry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule.cron: `{expr}` is not a cron expression: {reason}")]
    Cron { expr: String, reason: String },
    #[error("schedule.timezone: `{0}` is not an IANA time zone (e.g. `Europe/Berlin`)")]
    TimeZone(String),
    #[error("schedule: {0}")]
    Interval(String),
}

/// Errors of the scheduler's operator surface (`ferry resume`, next fire times).
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "flow `{flow}` has no active revision in environment `{env}`: deploy it first (`ferry deploy`)"
    )]
    NotDeployed { flow: String, env: String },
    #[error(
        "flow `{flow}` (revision {revision}) has no schedule in environment `{env}`: add a `schedule:` block and deploy it"
    )]
    NoSchedule {
        flow: String,
        env: String,
        revision: i64,
    },
    #[error("flow `{flow}`: stored revision {revision} cannot be read: {reason}")]
    BadRevision {
        flow: String,
        revision: i64,
        reason: String,
    },
    #[error("flow `{flow}` revision {revision}: {source}")]
    Schedule {
        flow: String,
        revision: i64,
        #[source]
        source: ScheduleError,
    },
}
