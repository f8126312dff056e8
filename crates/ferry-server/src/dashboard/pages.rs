//! Every dashboard page as a maud template: plain data in, markup out. The handlers in
//! [`super`] read the store and act; these functions only lay out what they were given, so a
//! page can be rendered (and tested) from any records, and every value goes through maud's
//! escaping (see [`super::html`]).

use ferry_spec::words::count;
use ferry_store::{
    DeadLetter, DeadLetterEvent, DlqState, FlowSummary, Promotion, PromotionState, RunRecord,
};
use maud::{Markup, html};
use serde_json::Value;

use super::html::{
    Nav, Notice, badge, duration, json_block, one_line, page, revision_tag, short_code, time,
    url_part,
};

/// The login page, with an optional message.
pub fn login(message: Option<&str>) -> Markup {
    let notice = message.map(Notice::error);
    page(
        "Log in",
        Nav::None,
        false,
        notice.as_ref(),
        html! {
            h1 { "Log in" }
            p {
                "Enter an API token: one from " code { "ferry token create" } ", "
                code { "FERRY_API_TOKEN" } ", or the token " code { "ferry serve" }
                " printed at its first start. What you may do follows the token's role."
            }
            form method="post" action="/login" {
                label {
                    "API token "
                    input type="password" name="token" id="token"
                        autocomplete="current-password" required autofocus;
                }
                " "
                button type="submit" id="login" { "Log in" }
            }
        },
    )
}

/// A request that failed: the reason and a way back.
pub fn failure(reason: &str, back: &str) -> Markup {
    page(
        "Error",
        Nav::None,
        true,
        Some(&Notice::error(reason)),
        html! {
            h1 { "That did not work" }
            p { a href=(back) { "Back" } }
        },
    )
}

/// A request whose token lacks the role it needs.
pub fn forbidden_role(reason: &str) -> Markup {
    page(
        "Refused",
        Nav::None,
        true,
        Some(&Notice::error(format!(
            "{reason}. Log in with a token that has it, or ask an admin (`ferry token create NAME --role ROLE`)."
        ))),
        html! { p { a href="/" { "Back to the overview" } } },
    )
}

/// A form post that did not come from this server's pages.
pub fn forbidden_cross_site() -> Markup {
    page(
        "Refused",
        Nav::None,
        false,
        Some(&Notice::error(
            "This form was not sent from a page of this server (its Origin or Referer does not match), so it was refused. Open the dashboard and try again.",
        )),
        html! { p { a href="/" { "Open the dashboard" } } },
    )
}

/// One flow of the overview: as deployed in an environment, and what its next run is.
#[derive(Debug)]
pub struct FlowRow {
    pub flow: FlowSummary,
    /// "not scheduled", a time, "paused after failed runs (…)".
    pub next_run: String,
}

/// What the overview shows.
#[derive(Debug)]
pub struct Overview {
    /// Pending dead letters counted (at most the cap).
    pub pending_dlq: usize,
    /// Whether the count reached the cap ("more than").
    pub pending_dlq_capped: bool,
    pub pending_promotions: usize,
    pub flows: Vec<FlowRow>,
    pub runs: Vec<RunRecord>,
    /// The workers sharing the store, with whether each is alive.
    pub workers: Vec<(ferry_store::WorkerInfo, bool)>,
}

/// `/`: flows per environment with their active revision, last and next run; recent runs.
pub fn overview(o: &Overview, notice: Option<&Notice>) -> Markup {
    page(
        "Overview",
        Nav::Overview,
        true,
        notice,
        html! {
            h1 { "Overview" }
            p {
                a href="/dlq?status=pending" {
                    @if o.pending_dlq_capped { "more than " }
                    (count(o.pending_dlq, "pending dead letter"))
                }
                " · "
                a href="/promotions" { (count(o.pending_promotions, "promotion")) " waiting for approval" }
            }
            h2 { "Flows" }
            table #flows {
                tr {
                    th { "Flow" } th { "Environment" } th { "Active revision" } th { "Revisions" }
                    th { "Last run" } th { "Next run" } th {}
                }
                @for row in &o.flows {
                    (flow_row(row))
                }
                @if o.flows.is_empty() {
                    tr { td colspan="7" { "No flows are deployed yet (" code { "ferry deploy flows/" } ")." } }
                }
            }
            h2 { "Recent runs" }
            table #runs {
                (run_head())
                @for r in &o.runs {
                    (run_row(r))
                }
                @if o.runs.is_empty() {
                    tr { td colspan="14" { "No runs yet." } }
                }
            }
            h2 { "Workers" }
            table #workers {
                tr {
                    th { "Worker" } th { "State" } th { "Version" } th { "Environments" }
                    th { "Runs in flight" } th { "Started" } th { "Last beat" }
                }
                @for (w, alive) in &o.workers {
                    tr {
                        td { (w.id) }
                        td { (badge(if *alive { "alive" } else { "lost" })) }
                        td { (w.version) }
                        td { (w.envs.join(", ")) }
                        td.n { (w.runs_in_flight) }
                        td { (time(&w.started_at)) }
                        td { (time(&w.heartbeat_at)) }
                    }
                }
                @if o.workers.is_empty() {
                    tr { td colspan="7" { "No " code { "ferry serve" } " has beaten on this state store in the last day." } }
                }
            }
        },
    )
}

fn flow_row(row: &FlowRow) -> Markup {
    let f = &row.flow;
    html! {
        tr {
            td { (f.name) }
            td { (f.env) }
            td { (revision_tag(f.active.number, &f.active.hash)) }
            td.n { (f.revisions) }
            td {
                @match &f.last_run {
                    Some(r) => {
                        (badge(r.status.as_str())) " "
                        a href={ "/runs/" (r.id) } { (time(&r.started_at)) }
                    }
                    None => "never",
                }
            }
            td { (row.next_run) }
            td {
                form.inline method="post" action={ "/flows/" (url_part(&f.name)) "/run" } {
                    input type="hidden" name="env" value=(f.env);
                    button type="submit" { "Run now" }
                }
            }
        }
    }
}

fn run_head() -> Markup {
    html! {
        tr {
            th { "Run" } th { "Flow" } th { "Env" } th { "Revision" } th { "Trigger" } th { "Status" }
            th { "Fetched" } th { "Delivered" } th { "Skipped" } th { "Filtered" } th { "DLQ" }
            th { "Started" } th { "Duration" } th { "Worker" }
        }
    }
}

fn run_row(r: &RunRecord) -> Markup {
    let c = &r.counts;
    html! {
        tr {
            td { a href={ "/runs/" (r.id) } { (short_code(&r.id)) } }
            td { (r.flow) }
            td { (r.env) }
            td { (revision_tag(r.revision, &r.hash)) }
            td { (r.trigger.as_str()) }
            td { (badge(r.status.as_str())) }
            td.n { (c.fetched) }
            td.n { (c.delivered) }
            td.n { (c.skipped) }
            td.n { (c.filtered) }
            td.n { (c.dead_lettered) }
            td.t { (time(&r.started_at)) }
            td.n { (duration(r)) }
            td { (r.owner.as_deref().unwrap_or("")) }
        }
    }
}

/// `/runs/{id}`: a run and the dead letters it made.
pub fn run(r: &RunRecord, dead: &[DeadLetter], notice: Option<&Notice>) -> Markup {
    let c = &r.counts;
    let cursor = |v: &Option<Value>| match v {
        Some(v) => html! { code { (v.to_string()) } },
        None => html! { "—" },
    };
    page(
        "Run",
        Nav::Overview,
        true,
        notice,
        html! {
            h1 { "Run " code { (r.id) } }
            dl {
                dt { "Flow" } dd { (r.flow) " in " (r.env) }
                dt { "Revision" } dd { (revision_tag(r.revision, &r.hash)) }
                dt { "Trigger" } dd { (r.trigger.as_str()) }
                dt { "Status" } dd { (badge(r.status.as_str())) }
                dt { "Started" } dd { (time(&r.started_at)) }
                dt { "Finished" } dd { (r.finished_at.map(|t| time(&t)).unwrap_or_else(|| "—".into())) }
                dt { "Duration" } dd { (duration(r)) }
                dt { "Cursor before" } dd { (cursor(&r.cursor_before)) }
                dt { "Cursor after" } dd { (cursor(&r.cursor_after)) }
                @if let Some(e) = &r.error {
                    dt { "Error" } dd { (e) }
                }
            }
            h2 { "Counts" }
            table #counts {
                tr {
                    th { "Fetched" } th { "Delivered" } th { "Skipped" } th { "Filtered" }
                    th { "Dead-lettered" } th { "Handed back" }
                }
                tr {
                    td.n { (c.fetched) }
                    td.n { (c.delivered) }
                    td.n { (c.skipped) }
                    td.n { (c.filtered) }
                    td.n { (c.dead_lettered) }
                    td.n { (c.handed_back) }
                }
            }
            h2 { "Dead letters from this run (" (dead.len()) ")" }
            (dlq_table(dead))
        },
    )
}

fn dlq_table(entries: &[DeadLetter]) -> Markup {
    html! {
        table #dlq {
            tr {
                th { "Entry" } th { "Flow" } th { "Env" } th { "State" } th { "Stage" } th { "Error class" }
                th { "Revision" } th { "Attempts" } th { "Created" } th { "Error" } th {}
            }
            @for e in entries {
                tr {
                    td { a href={ "/dlq/" (e.id) } { (short_code(&e.id)) } }
                    td { (e.flow) }
                    td { (e.env) }
                    td { (badge(e.state.as_str())) }
                    td { (e.stage.as_str()) }
                    td { (e.error_class) }
                    td.n { "r" (e.revision) }
                    td.n { (e.attempts.len()) }
                    td.t { (time(&e.created_at)) }
                    td { (one_line(&e.error, 120)) }
                    td {
                        @if e.state == DlqState::Pending {
                            form.inline method="post" action={ "/dlq/" (e.id) "/replay" } {
                                button.replay type="submit" { "Replay" }
                            }
                        }
                    }
                }
            }
            @if entries.is_empty() {
                tr { td colspan="11" { "No dead letters match." } }
            }
        }
    }
}

/// A `<select>` whose options are `(value, label)`; the one equal to `current` (or the empty
/// one when there is no current value) is selected.
fn select(name: &str, current: Option<&str>, options: &[(String, String)]) -> Markup {
    html! {
        select name=(name) {
            @for (value, label) in options {
                @let selected = current == Some(value.as_str()) || (current.is_none() && value.is_empty());
                option value=(value) selected[selected] { (label) }
            }
        }
    }
}

/// The DLQ page's filter form: what can be chosen, and what was.
#[derive(Debug)]
pub struct DlqFilters<'a> {
    pub flows: Vec<String>,
    pub envs: Vec<String>,
    pub flow: Option<&'a str>,
    pub env: Option<&'a str>,
    pub status: Option<&'a str>,
    pub error_class: Option<&'a str>,
}

/// `/dlq`: entries with filters; pending ones can be replayed from the list. `page_size` is
/// the most one page lists.
pub fn dlq(
    filters: &DlqFilters<'_>,
    entries: &[DeadLetter],
    page_size: u32,
    notice: Option<&Notice>,
) -> Markup {
    let with_any = |label: &str, values: &mut dyn Iterator<Item = String>| {
        let mut out = vec![(String::new(), label.to_string())];
        out.extend(values.map(|v| (v.clone(), v)));
        out
    };
    let flows = with_any("any flow", &mut filters.flows.iter().cloned());
    let envs = with_any("any environment", &mut filters.envs.iter().cloned());
    let states = with_any(
        "any state",
        &mut DlqState::ALL.iter().map(|s| s.as_str().to_string()),
    );
    let n = entries.len();
    page(
        "Dead letters",
        Nav::Dlq,
        true,
        notice,
        html! {
            h1 { "Dead letters" }
            form method="get" action="/dlq" #filters {
                (select("flow", filters.flow, &flows)) " "
                (select("env", filters.env, &envs)) " "
                (select("status", filters.status, &states)) " "
                input type="text" name="error_class" placeholder="error class"
                    value=(filters.error_class.unwrap_or(""));
                " "
                button type="submit" { "Filter" }
                " "
                a href="/dlq" { "Clear" }
            }
            p {
                (n) " entr" (if n == 1 { "y" } else { "ies" })
                " (newest first"
                @if n as u32 >= page_size { ", the first " (page_size) }
                ")"
            }
            (dlq_table(entries))
        },
    )
}

/// `/dlq/{id}`: everything about one entry, with replay and discard while it is pending.
pub fn dlq_entry(e: &DeadLetter, history: &[DeadLetterEvent], notice: Option<&Notice>) -> Markup {
    page(
        "Dead letter",
        Nav::Dlq,
        true,
        notice,
        html! {
            h1 { "Dead letter " code { (e.id) } }
            dl {
                dt { "Flow" } dd { (e.flow) " in " (e.env) }
                dt { "State" }
                dd #state {
                    (badge(e.state.as_str()))
                    @if let Some(n) = &e.state_note { " — " (n) }
                }
                dt { "Run" }
                dd { a href={ "/runs/" (e.run_id) } { code { (e.run_id) } } " (revision r" (e.revision) ")" }
                dt { "Stage" } dd { (e.stage.as_str()) }
                dt { "Error class" } dd { (e.error_class) }
                dt { "Error" } dd { (e.error) }
                dt { "Idempotency key" } dd { code { (e.key.as_deref().unwrap_or("(none)")) } }
                dt { "Created" } dd { (time(&e.created_at)) }
                dt { "Updated" } dd { (time(&e.updated_at)) }
            }
            @if e.state == DlqState::Pending {
                h2 { "Act" }
                form.inline method="post" action={ "/dlq/" (e.id) "/replay" } {
                    button type="submit" #replay { "Replay with the active revision" }
                }
                " "
                form.inline method="post" action={ "/dlq/" (e.id) "/discard" } {
                    input type="text" name="reason" placeholder="why it will never be delivered"
                        required size="40";
                    " "
                    button type="submit" #discard { "Discard" }
                }
            }
            h2 { "Source record" }
            (json_block(&e.source_record))
            @if let Some(v) = &e.edited_record {
                h2 { "Edited record (replays use this)" }
                (json_block(v))
            }
            h2 { "Mapped record" }
            @match &e.mapped_record {
                Some(v) => (json_block(v)),
                None => p { "Mapping did not get that far." },
            }
            h2 { "Attempts (" (e.attempts.len()) ")" }
            table #attempts {
                tr { th { "At" } th { "Status" } th { "Error" } }
                @for a in &e.attempts {
                    tr {
                        td { (time(&a.at)) }
                        td {
                            @match a.status {
                                Some(s) => { "HTTP " (s) }
                                None => "no response",
                            }
                        }
                        td { (a.error) }
                    }
                }
            }
            h2 { "History (" (history.len()) ")" }
            table #history {
                tr { th { "At" } th { "Action" } th { "State" } th { "By" } th { "Run" } th { "Note" } }
                @for h in history {
                    tr {
                        td { (time(&h.at)) }
                        td { (h.action.as_str()) }
                        td { (h.from.as_str()) " → " (h.to.as_str()) }
                        td { (h.actor.as_deref().unwrap_or("—")) }
                        td {
                            @if let Some(r) = h.run_id {
                                a href={ "/runs/" (r) } { (short_code(&r)) }
                            }
                        }
                        td { (h.note) }
                    }
                }
            }
        },
    )
}

/// Most decided promotions the promotions page lists.
pub const RECENT_DECISIONS: usize = 30;

/// `/promotions`: pending promotions with approve and reject; recent decisions. `all` is
/// newest first.
pub fn promotions(all: &[Promotion], notice: Option<&Notice>) -> Markup {
    let pending: Vec<&Promotion> = all
        .iter()
        .filter(|p| p.state == PromotionState::Pending)
        .collect();
    let decided: Vec<&Promotion> = all
        .iter()
        .filter(|p| p.state != PromotionState::Pending)
        .take(RECENT_DECISIONS)
        .collect();
    let head = |last: &str| {
        html! {
            tr {
                th { "Promotion" } th { "Flow" } th { "From → to" } th { "Source" } th { "Revision" }
                th { "State" } th { "Requested by" } th { "At" } th { (last) }
            }
        }
    };
    page(
        "Promotions",
        Nav::Promotions,
        true,
        notice,
        html! {
            h1 { "Promotions" }
            h2 { "Waiting for approval" }
            table #pending {
                (head(""))
                @for p in &pending { (promotion_row(p, true)) }
                @if pending.is_empty() {
                    tr { td colspan="9" { "Nothing is waiting." } }
                }
            }
            h2 { "Recent decisions" }
            table #decided {
                (head("Decided"))
                @for p in &decided { (promotion_row(p, false)) }
                @if decided.is_empty() {
                    tr { td colspan="9" { "None yet." } }
                }
            }
        },
    )
}

fn promotion_row(p: &Promotion, actions: bool) -> Markup {
    html! {
        tr {
            td { (short_code(&p.id)) }
            td { (p.flow) }
            td { (p.from_env) " → " (p.to_env) }
            td.n { "r" (p.source_revision) }
            td.n { "r" (p.revision) }
            td { (badge(p.state.as_str())) }
            td { (p.requested_by) }
            td.t { (time(&p.created_at)) }
            td {
                @if actions {
                    form.inline method="post" action={ "/promotions/" (p.id) "/approve" } {
                        button.approve type="submit" { "Approve" }
                    }
                    " "
                    form.inline method="post" action={ "/promotions/" (p.id) "/reject" } {
                        input type="text" name="reason" placeholder="reason" required size="24";
                        " "
                        button.reject type="submit" { "Reject" }
                    }
                } @else {
                    (p.decided_by.as_deref().unwrap_or("—")) " "
                    (p.decided_at.map(|t| time(&t)).unwrap_or_default())
                    @if let Some(r) = p.reason.as_ref().filter(|r| !r.is_empty()) {
                        ": " (r)
                    }
                }
            }
        }
    }
}
