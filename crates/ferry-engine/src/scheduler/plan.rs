//! The pure part of scheduling: when a schedule's ticks fall, when each tick fires (its jitter),
//! and what to do about ticks missed while ferry was down. No clock, no store, no I/O: every
//! function takes the time it reasons about, so the DST and catch-up rules are tested with
//! plain timestamps.
//!
//! # Decisions
//!
//! - **Cron ticks are wall-clock times in the schedule's time zone**, computed by croner, which
//!   follows the Open Cron Pattern Specification on DST days: a fixed-time job (`30 2 * * *`)
//!   whose time falls in the spring-forward gap runs at the first instant after the gap
//!   (03:00), and on the fall-back day it runs once, at the first of the two 02:30s; a job with
//!   a wildcard or stepped hour runs in both halves of the repeated hour, as its pattern says.
//! - **Intervals are absolute and aligned to the Unix epoch**: `every: 15m` ticks at :00, :15,
//!   :30 and :45 UTC. Ticks are then the same in every process and across restarts (which
//!   the catch-up rule and, later, a cluster-wide claim on (flow, tick) rely on), and a DST
//!   change never stretches or shrinks an interval. Wall-clock times are what `cron` is for.
//! - **Jitter is deterministic per tick**: the delay is drawn from a generator seeded by a
//!   seed, the flow, the environment and the tick, so `ferry flows` shows the exact fire time
//!   a scheduler will use, and two schedulers agree on it. It is capped at half the gap to the
//!   following tick, so a jittered tick never passes the next one.
//! - **Catch-up looks at the newest missed tick only**: `run_once` fires one run when the
//!   newest tick missed since the last handled one lies within the catch-up window; however
//!   many ticks were missed, at most one run is made up (RELIABILITY §7: a cap on catch-up
//!   runs).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use ferry_spec::{CatchUp, Overlap, Schedule};

use super::error::ScheduleError;

/// Most missed ticks counted one by one; more are reported as "at least" this many.
pub const MAX_COUNTED_MISSED: u64 = 10_000;

/// A schedule, compiled: ready to answer "when is the next tick".
#[derive(Debug, Clone)]
pub struct Plan {
    kind: Kind,
    tz: Tz,
    jitter: Duration,
    /// What a tick does while the previous run is still going.
    pub overlap: Overlap,
    /// What happens to ticks missed while no scheduler ran.
    pub catch_up: CatchUp,
    /// How old the newest missed tick may be for `run_once` to catch it up.
    pub catch_up_window: Duration,
    /// Failed scheduled runs in a row after which the schedule pauses.
    pub pause_after_failures: Option<u32>,
    description: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<Cron>),
    /// Interval in milliseconds, at least 1.
    Every(i64),
}

/// What to do, at start, about ticks missed since the last one handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUpDecision {
    /// No tick fell between the last handled one and now (or none was ever handled: a
    /// schedule that never ran has missed nothing).
    NothingMissed,
    /// Ticks were missed and the policy drops them.
    Skip(Missed),
    /// Ticks were missed and one run fires now, for the newest of them.
    RunOnce(Missed),
    /// `run_once`, but the newest missed tick is older than the catch-up window: dropped.
    OutsideWindow(Missed),
}

/// Ticks missed between the last handled tick and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// How many (at most [`MAX_COUNTED_MISSED`]; `capped` says when there were more).
    pub count: u64,
    /// True when counting stopped at [`MAX_COUNTED_MISSED`].
    pub capped: bool,
    /// The first missed tick.
    pub first: DateTime<Utc>,
    /// The newest missed tick.
    pub latest: DateTime<Utc>,
}

impl Plan {
    /// Compiles a schedule. The flow validator checks the same things, so a stored revision
    /// fails here only when it was stored by an older, laxer ferry.
    pub fn new(s: &Schedule) -> Result<Plan, ScheduleError> {
        let tz: Tz = s
            .timezone
            .parse()
            .map_err(|_| ScheduleError::TimeZone(s.timezone.clone()))?;
        let (kind, description) = match (&s.cron, &s.every) {
            (Some(expr), None) => {
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(expr)
                    .map_err(|e| ScheduleError::Cron {
                        expr: expr.clone(),
                        reason: e.to_string(),
                    })?;
                (
                    Kind::Cron(Box::new(cron)),
                    format!("cron `{expr}` ({})", s.timezone),
                )
            }
            (None, Some(every)) => {
                let ms = i64::try_from(every.get().as_millis()).unwrap_or(i64::MAX);
                if ms < 1000 {
                    return Err(ScheduleError::Interval(
                        "the interval must be at least 1s".into(),
                    ));
                }
                (Kind::Every(ms), format!("every {}", human(every.get())))
            }
            _ => {
                return Err(ScheduleError::Interval(
                    "give exactly one of `cron` and `every`".into(),
                ));
            }
        };
        Ok(Plan {
            kind,
            tz,
            jitter: s.jitter.map(|j| j.get()).unwrap_or_default(),
            overlap: s.overlap,
            catch_up: s.catch_up,
            catch_up_window: s.catch_up_window().get(),
            pause_after_failures: s.pause_after_failures,
            description,
        })
    }

    /// `every 2s` or ``cron `0 * * * *` (UTC)``: for listings and logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The first tick strictly after `t`; `None` when the pattern never matches again (a
    /// cron for February 30th, say).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(ms) => {
                let now = t.timestamp_millis();
                let next = now.div_euclid(*ms).checked_add(1)?.checked_mul(*ms)?;
                DateTime::from_timestamp_millis(next)
            }
            Kind::Cron(cron) => cron
                .find_next_occurrence(&t.with_timezone(&self.tz), false)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
        }
    }

    /// The newest tick at or before `t`; `None` when there is none.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(ms) => {
                let now = t.timestamp_millis();
                DateTime::from_timestamp_millis(now.div_euclid(*ms).checked_mul(*ms)?)
            }
            Kind::Cron(cron) => cron
                .find_previous_occurrence(&t.with_timezone(&self.tz), true)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
        }
    }

    /// The delay added to `tick`: drawn from a generator seeded by `seed`, flow, environment
    /// and tick; at most the configured jitter and less than half the gap to the next tick.
    pub fn jitter(&self, seed: u64, flow: &str, env: &str, tick: DateTime<Utc>) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        let gap = self
            .next_after(tick)
            .and_then(|n| (n - tick).to_std().ok())
            .unwrap_or(self.jitter);
        let bound = self.jitter.min(gap / 2);
        let mut x = seed ^ fnv1a(flow.as_bytes()) ^ fnv1a(env.as_bytes()).rotate_left(21);
        x ^= (tick.timestamp_millis() as u64).rotate_left(42);
        let r = splitmix64(&mut x);
        // 53 random bits as a fraction in [0, 1).
        let fraction = (r >> 11) as f64 / (1u64 << 53) as f64;
        bound.mul_f64(fraction)
    }

    /// When `tick` fires: the tick plus its jitter.
    pub fn fire_time(
        &self,
        seed: u64,
        flow: &str,
        env: &str,
        tick: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let j = self.jitter(seed, flow, env, tick);
        tick + TimeDelta::from_std(j).unwrap_or_default()
    }

    /// The ticks after `last_handled` up to `now`, and what the catch-up policy does about them.
    pub fn catch_up(
        &self,
        last_handled: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> CatchUpDecision {
        let Some(last) = last_handled else {
            return CatchUpDecision::NothingMissed;
        };
        let Some(first) = self.next_after(last).filter(|f| *f <= now) else {
            return CatchUpDecision::NothingMissed;
        };
        let latest = self.latest_at_or_before(now).unwrap_or(first).max(first);
        let (count, capped) = self.count_between(first, latest);
        let missed = Missed {
            count,
            capped,
            first,
            latest,
        };
        match self.catch_up {
            CatchUp::Skip => CatchUpDecision::Skip(missed),
            CatchUp::RunOnce => {
                let window = TimeDelta::from_std(self.catch_up_window).unwrap_or(TimeDelta::MAX);
                if now - latest <= window {
                    CatchUpDecision::RunOnce(missed)
                } else {
                    CatchUpDecision::OutsideWindow(missed)
                }
            }
        }
    }

    /// Ticks from `first` to `last`, both included, counted up to [`MAX_COUNTED_MISSED`].
    fn count_between(&self, first: DateTime<Utc>, last: DateTime<Utc>) -> (u64, bool) {
        if let Kind::Every(ms) = self.kind {
            let n = (last.timestamp_millis() - first.timestamp_millis()) / ms + 1;
            let n = u64::try_from(n).unwrap_or(1);
            return (n.min(MAX_COUNTED_MISSED), n > MAX_COUNTED_MISSED);
        }
        let mut count = 1;
        let mut t = first;
        while let Some(n) = self.next_after(t).filter(|n| *n <= last) {
            if count == MAX_COUNTED_MISSED {
                return (count, true);
            }
            count += 1;
            t = n;
        }
        (count, false)
    }
}

/// `2s`, `15m`, `1h30m`, `250ms`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= size {
            out.push_str(&format!("{}{unit}", s / size));
            s %= size;
        }
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use ferry_spec::Dur;

    use super::*;

    fn schedule(cron: Option<&str>, every: Option<u64>, tz: &str) -> Schedule {
        Schedule {
            cron: cron.map(str::to_string),
            every: every.map(Dur::from_secs),
            timezone: tz.to_string(),
            overlap: Overlap::Skip,
            catch_up: CatchUp::Skip,
            jitter: None,
            catch_up_window: None,
            pause_after_failures: None,
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    /// Every tick in [from, to).
    fn ticks(plan: &Plan, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from - TimeDelta::milliseconds(1);
        while let Some(n) = plan.next_after(t).filter(|n| *n < to) {
            out.push(n);
            t = n;
        }
        out
    }

    #[test]
    fn intervals_are_aligned_to_the_epoch() {
        let p = Plan::new(&schedule(None, Some(900), "UTC")).unwrap();
        assert_eq!(
            p.next_after(utc(2025, 1, 1, 10, 7, 3)),
            Some(utc(2025, 1, 1, 10, 15, 0))
        );
        assert_eq!(
            p.next_after(utc(2025, 1, 1, 10, 15, 0)),
            Some(utc(2025, 1, 1, 10, 30, 0))
        );
        assert_eq!(
            p.latest_at_or_before(utc(2025, 1, 1, 10, 15, 0)),
            Some(utc(2025, 1, 1, 10, 15, 0))
        );
        assert_eq!(p.describe(), "every 15m");
        // the time zone does not move an interval, not even on a DST day
        let berlin = Plan::new(&schedule(None, Some(3600), "Europe/Berlin")).unwrap();
        let day = ticks(
            &berlin,
            utc(2025, 3, 30, 0, 0, 0),
            utc(2025, 3, 31, 0, 0, 0),
        );
        assert_eq!(day.len(), 24);
    }

    #[test]
    fn cron_reads_its_time_zone_and_optional_seconds() {
        let p = Plan::new(&schedule(Some("0 9 * * *"), None, "America/New_York")).unwrap();
        // 09:00 in New York in January is 14:00 UTC
        assert_eq!(
            p.next_after(utc(2025, 1, 15, 0, 0, 0)),
            Some(utc(2025, 1, 15, 14, 0, 0))
        );
        let s = Plan::new(&schedule(Some("*/10 * * * * *"), None, "UTC")).unwrap();
        assert_eq!(
            s.next_after(utc(2025, 1, 1, 0, 0, 3)),
            Some(utc(2025, 1, 1, 0, 0, 10))
        );
        assert_eq!(p.describe(), "cron `0 9 * * *` (America/New_York)");
    }

    /// RELIABILITY T10, DST part: a fixed-time job runs once on both DST days; an hourly job
    /// follows the wall clock (23 and 25 ticks).
    #[test]
    fn a_fixed_time_job_runs_once_on_both_dst_days() {
        let p = Plan::new(&schedule(Some("30 2 * * *"), None, "Europe/Berlin")).unwrap();
        // spring forward, 2025-03-30: 02:00 CET → 03:00 CEST; 02:30 does not exist and the
        // job runs at the first instant after the gap, 03:00 CEST = 01:00 UTC
        let spring = ticks(&p, utc(2025, 3, 29, 22, 0, 0), utc(2025, 3, 30, 22, 0, 0));
        assert_eq!(spring, [utc(2025, 3, 30, 1, 0, 0)]);
        // fall back, 2025-10-26: 03:00 CEST → 02:00 CET; 02:30 happens twice, the job runs at
        // the first, 02:30 CEST = 00:30 UTC
        let fall = ticks(&p, utc(2025, 10, 25, 22, 0, 0), utc(2025, 10, 26, 23, 0, 0));
        assert_eq!(fall, [utc(2025, 10, 26, 0, 30, 0)]);
        // the days around are ordinary
        let week = ticks(&p, utc(2025, 10, 22, 0, 0, 0), utc(2025, 10, 30, 0, 0, 0));
        assert_eq!(week.len(), 8);

        let hourly = Plan::new(&schedule(Some("0 * * * *"), None, "Europe/Berlin")).unwrap();
        let spring = ticks(
            &hourly,
            utc(2025, 3, 29, 23, 0, 0),
            utc(2025, 3, 30, 22, 0, 0),
        );
        assert_eq!(spring.len(), 23);
        let fall = ticks(
            &hourly,
            utc(2025, 10, 25, 22, 0, 0),
            utc(2025, 10, 26, 23, 0, 0),
        );
        assert_eq!(fall.len(), 25);
    }

    #[test]
    fn jitter_is_deterministic_bounded_and_below_half_the_gap() {
        let mut s = schedule(None, Some(60), "UTC");
        s.jitter = Some(Dur::from_secs(50));
        let p = Plan::new(&s).unwrap();
        let tick = utc(2025, 1, 1, 0, 0, 0);
        let a = p.jitter(7, "orders", "prod", tick);
        assert_eq!(a, p.jitter(7, "orders", "prod", tick));
        let mut seen = std::collections::BTreeSet::new();
        let mut t = tick;
        for _ in 0..500 {
            let j = p.jitter(7, "orders", "prod", t);
            assert!(
                j < Duration::from_secs(30),
                "{j:?}: half the 60 s gap at most"
            );
            seen.insert(j.as_millis() / 1000);
            t = p.next_after(t).unwrap();
        }
        assert!(seen.len() > 20, "jitter spreads: {seen:?}");
        assert_ne!(
            p.jitter(7, "orders", "prod", tick),
            p.jitter(7, "invoices", "prod", tick)
        );
        let plain = Plan::new(&schedule(None, Some(60), "UTC")).unwrap();
        assert_eq!(plain.fire_time(7, "orders", "prod", tick), tick);
    }

    /// RELIABILITY T10, catch-up part: down 2 h on a 1-minute schedule.
    #[test]
    fn catch_up_after_two_hours_down_on_a_one_minute_schedule() {
        let mut s = schedule(Some("* * * * *"), None, "UTC");
        let last = utc(2025, 6, 1, 10, 0, 0);
        let now = utc(2025, 6, 1, 12, 0, 30);
        let skip = Plan::new(&s).unwrap();
        let missed = Missed {
            count: 120,
            capped: false,
            first: utc(2025, 6, 1, 10, 1, 0),
            latest: utc(2025, 6, 1, 12, 0, 0),
        };
        assert_eq!(
            skip.catch_up(Some(last), now),
            CatchUpDecision::Skip(missed)
        );
        s.catch_up = CatchUp::RunOnce;
        let once = Plan::new(&s).unwrap();
        assert_eq!(
            once.catch_up(Some(last), now),
            CatchUpDecision::RunOnce(missed)
        );
        // nothing handled yet: nothing missed; handled the newest tick: nothing missed
        assert_eq!(once.catch_up(None, now), CatchUpDecision::NothingMissed);
        assert_eq!(
            once.catch_up(Some(utc(2025, 6, 1, 12, 0, 0)), now),
            CatchUpDecision::NothingMissed
        );
        // a run that started a little after its tick (launch latency, jitter) still counts
        // for that tick
        assert_eq!(
            once.catch_up(Some(utc(2025, 6, 1, 12, 0, 2)), now),
            CatchUpDecision::NothingMissed
        );
        // a daily job missed 5 h ago with a 1 h window is dropped
        let mut daily = schedule(Some("0 7 * * *"), None, "UTC");
        daily.catch_up = CatchUp::RunOnce;
        let daily = Plan::new(&daily).unwrap();
        let d = daily.catch_up(Some(utc(2025, 5, 31, 7, 0, 0)), now);
        assert!(
            matches!(d, CatchUpDecision::OutsideWindow(m) if m.count == 1),
            "{d:?}"
        );
        // an interval counts arithmetically and caps
        let mut fast = schedule(None, Some(1), "UTC");
        fast.catch_up = CatchUp::RunOnce;
        let fast = Plan::new(&fast).unwrap();
        match fast.catch_up(Some(last), now) {
            CatchUpDecision::RunOnce(m) => {
                assert!(!m.capped);
                assert_eq!(m.count, 2 * 3600 + 30);
                assert_eq!(m.latest, utc(2025, 6, 1, 12, 0, 30));
            }
            other => panic!("{other:?}"),
        }
        match fast.catch_up(Some(utc(2025, 5, 31, 0, 0, 0)), now) {
            CatchUpDecision::RunOnce(m) => {
                assert!(m.capped);
                assert_eq!(m.count, MAX_COUNTED_MISSED);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_impossible_date_has_no_next_tick() {
        let p = Plan::new(&schedule(Some("0 0 30 2 *"), None, "UTC")).unwrap();
        assert_eq!(p.next_after(utc(2025, 1, 1, 0, 0, 0)), None);
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(Plan::new(&schedule(Some("nope"), None, "UTC")).is_err());
        assert!(Plan::new(&schedule(Some("* * * * *"), None, "Nowhere/City")).is_err());
        assert!(Plan::new(&schedule(None, None, "UTC")).is_err());
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(86_400)), "1d");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
    }
}
