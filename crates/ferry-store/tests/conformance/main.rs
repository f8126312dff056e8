//! One conformance suite, run against every backend: each case in `cases.rs` becomes a test
//! in `sqlite::` (a file in a temporary directory) and in `postgres::` (a fresh schema).

mod cases;
mod harness;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::run_case(crate::harness::sqlite().await, crate::cases::$case)
                        .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = crate::harness::postgres(stringify!($case)).await {
                        crate::harness::run_case(backend, crate::cases::$case).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    deploy_numbers_revisions_and_skips_unchanged_hash,
    active_revision_is_per_env,
    concurrent_deploys_get_distinct_numbers,
    flows_lists_active_revisions_with_last_run,
    cursor_set_get_and_clear,
    settle_writes_ledger_dead_letters_counts_and_cursor,
    settle_is_atomic,
    settle_retried_after_a_lost_commit_is_harmless,
    settle_keeps_the_first_ledger_row,
    ledger_rows_read_back_as_written,
    settle_refuses_missing_and_finished_runs,
    settle_of_1000_ledger_rows_is_one_quick_transaction,
    ledger_lookup_handles_100_000_keys,
    runs_are_newest_first_with_counts,
    prune_deletes_only_what_retention_lets_go_of,
    a_tick_is_claimed_once,
    workers_beat_and_stop,
    finish_run_rules,
    fail_stale_runs_marks_only_running_runs_of_that_env,
    dead_letter_filters,
    dead_letter_state_history,
    hostile_values_are_stored_safely_or_refused,
    dead_letter_edit_keeps_the_original_and_records_who,
    discard_needs_a_pending_entry_and_a_reason,
    settle_replay_resolves_and_fails_entries_in_one_transaction,
    a_healthy_store_checks_clean_and_backs_up_or_says_how,
    active_environments_count_the_flows_each_runs,
    ids_with_a_prefix_are_found_in_each_table,
    dashboard_sessions_outlive_the_connection_and_expire,
);
