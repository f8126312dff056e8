//! The `schedule` block: what is accepted, what is refused and with which field path, and that
//! the new optional keys leave the hash of existing flows alone.

use ferry_spec::{CatchUp, DEFAULT_CATCH_UP_WINDOW, Dur, load_str};

const MINIMAL: &str = r#"
name: mini
source:
  http:
    url: "http://127.0.0.1:1/api"
destination:
  http:
    url: "http://127.0.0.1:2/in"
"#;

fn with_schedule(schedule: &str) -> String {
    format!("{MINIMAL}schedule: {schedule}\n")
}

/// The field paths of every problem of a flow that must be refused.
fn refused(schedule: &str) -> String {
    let e =
        load_str(&with_schedule(schedule), Some("f.yaml".into())).expect_err("should be refused");
    e.to_string()
}

#[test]
fn cron_interval_and_every_new_key_are_accepted() {
    let f = load_str(
        &with_schedule(
            r#"{ cron: "30 2 * * *", timezone: Europe/Berlin, overlap: queue, catch_up: run_once,
                 catch_up_window: 30m, jitter: 10s, pause_after_failures: 3 }"#,
        ),
        None,
    )
    .unwrap();
    let s = f.flow.schedule.unwrap();
    assert_eq!(s.catch_up, CatchUp::RunOnce);
    assert_eq!(s.catch_up_window(), Dur::from_secs(1800));
    assert_eq!(s.pause_after_failures, Some(3));

    let f = load_str(&with_schedule("{ every: 2s }"), None).unwrap();
    let s = f.flow.schedule.unwrap();
    assert_eq!(s.every, Some(Dur::from_secs(2)));
    assert_eq!(s.catch_up_window(), DEFAULT_CATCH_UP_WINDOW);

    // six fields: seconds first
    load_str(&with_schedule(r#"{ cron: "*/5 * * * * *" }"#), None).unwrap();
}

#[test]
fn bad_schedules_name_their_field() {
    assert!(refused(r#"{ cron: "61 * * * *" }"#).contains("schedule.cron"));
    assert!(refused(r#"{ cron: "0 * * * *", timezone: Mars/Base }"#).contains("schedule.timezone"));
    assert!(refused("{ every: 500ms }").contains("schedule.every"));
    assert!(refused(r#"{ cron: "0 * * * *", every: 1h }"#).contains("exactly one"));
    assert!(refused("{ every: 10s, jitter: 10s }").contains("schedule.jitter"));
    assert!(refused("{ every: 1m, catch_up_window: 1h }").contains("schedule.catch_up_window"));
    assert!(
        refused("{ every: 1m, catch_up: run_once, catch_up_window: 0s }")
            .contains("schedule.catch_up_window")
    );
    assert!(
        refused("{ every: 1m, pause_after_failures: 0 }").contains("schedule.pause_after_failures")
    );
    assert!(refused("{ every: 1m, pause_after: 3 }").contains("pause_after"));
}

#[test]
fn leaving_the_new_keys_out_keeps_the_canonical_form() {
    let f = load_str(&with_schedule(r#"{ cron: "0 * * * *" }"#), None).unwrap();
    assert!(!f.canonical.contains("catch_up_window"), "{}", f.canonical);
    assert!(
        !f.canonical.contains("pause_after_failures"),
        "{}",
        f.canonical
    );
}
