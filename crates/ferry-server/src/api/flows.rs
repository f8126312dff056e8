//! Flows, revisions, diffs, deploys, and triggering a run.

use std::collections::BTreeSet;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_engine::governance::Actor;
use ferry_engine::lifecycle;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::views::{FlowView, RevisionView};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::launch::LaunchError;
use crate::state::AppState;

/// Most flow files in one deploy.
pub const MAX_DEPLOY_FLOWS: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvQuery {
    /// The environment; default: the server's.
    env: Option<String>,
}

/// `GET /api/v1/flows?env=`: the flows active in the environment, each with its active
/// revision, newest run and next scheduled run.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EnvQuery>,
) -> Result<Json<Vec<FlowView>>, ApiError> {
    let env = state.pick_env(q.env.as_deref())?;
    let next = state.launcher().next_runs();
    let flows = state.store().flows(&env).await?;
    Ok(Json(
        flows.into_iter().map(|f| FlowView::new(f, &next)).collect(),
    ))
}

/// `GET /api/v1/flows/{flow}`: the flow in every environment it was ever active in, and in the
/// project's environments.
pub async fn show(
    State(state): State<AppState>,
    Path(flow): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store();
    let revisions = store.revisions(&flow).await?;
    if revisions.is_empty() {
        return Err(ApiError::not_found(format!(
            "no flow `{flow}`; GET /api/v1/flows lists them"
        )));
    }
    let mut envs: BTreeSet<String> = state.environments().into_iter().collect();
    for a in store.activations(&flow, None).await? {
        envs.insert(a.env);
    }
    let next = state.launcher().next_runs();
    let mut environments = Vec::new();
    for env in envs {
        let active = store.active_revision(&flow, &env).await?;
        let n = next.iter().find(|n| n.flow == flow && n.env == env);
        environments.push(json!({
            "env": env,
            "active": active.as_ref().map(RevisionView::brief),
            "scheduled": n.is_some(),
            "next_run": n.and_then(|n| n.at),
        }));
    }
    Ok(Json(json!({
        "name": flow,
        "revisions": revisions.len(),
        "latest": revisions.last().map(RevisionView::brief),
        "environments": environments,
    })))
}

/// `GET /api/v1/flows/{flow}/revisions`: every revision, oldest first, without specs.
pub async fn revisions(
    State(state): State<AppState>,
    Path(flow): Path<String>,
) -> Result<Json<Vec<RevisionView>>, ApiError> {
    let revs = state.store().revisions(&flow).await?;
    if revs.is_empty() {
        return Err(ApiError::not_found(format!("no flow `{flow}`")));
    }
    Ok(Json(revs.iter().map(RevisionView::brief).collect()))
}

/// `GET /api/v1/flows/{flow}/revisions/{number}`: one revision with its canonical spec.
pub async fn revision(
    State(state): State<AppState>,
    Path((flow, number)): Path<(String, String)>,
) -> Result<Json<RevisionView>, ApiError> {
    let n = parse_revision(&number)?;
    let r = lifecycle::revision(state.store(), &flow, n)
        .await
        .map_err(not_found_if_refused)?;
    Ok(Json(RevisionView::full(&r)))
}

fn parse_revision(text: &str) -> Result<i64, ApiError> {
    text.trim_start_matches('r')
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ApiError::field(
                "number",
                format!(
                    "`{}` is not a revision number (1, 2, 3…)",
                    crate::extract::shorten(text, 40)
                ),
            )
        })
}

/// An unknown flow or revision is 404 here, not 400.
fn not_found_if_refused(e: lifecycle::LifecycleError) -> ApiError {
    match e {
        lifecycle::LifecycleError::Refused(m) => ApiError::not_found(m),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The older side: a revision number.
    a: i64,
    /// The newer side: a revision number; default: the revision active in `env`.
    b: Option<i64>,
    /// The environment whose active revision is `b` by default.
    env: Option<String>,
}

/// `GET /api/v1/flows/{flow}/diff?a=N[&b=M][&env=E]`: what changed between two revisions, by
/// field path.
pub async fn diff(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = state.store();
    let a = lifecycle::revision(store, &flow, q.a)
        .await
        .map_err(not_found_if_refused)?;
    let (b, b_label) = match q.b {
        Some(n) => (
            lifecycle::revision(store, &flow, n)
                .await
                .map_err(not_found_if_refused)?,
            format!("revision {n}"),
        ),
        None => {
            let env = state.pick_env(q.env.as_deref())?;
            let r = lifecycle::active(store, &flow, &env)
                .await
                .map_err(not_found_if_refused)?;
            let label = format!("revision {} (active in {env})", r.number);
            (r, label)
        }
    };
    let a_flow = lifecycle::revision_flow(&a)?;
    let b_flow = lifecycle::revision_flow(&b)?;
    let changes = ferry_spec::diff::diff_flows(&a_flow.flow, &b_flow.flow);
    Ok(Json(json!({
        "flow": flow,
        "a": {"revision": a.number, "hash": a.hash, "label": format!("revision {}", a.number)},
        "b": {"revision": b.number, "hash": b.hash, "label": b_label},
        "changes": changes,
        "text": ferry_spec::diff::render_text(&changes),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// Flow files, as YAML text.
    flows: Vec<String>,
    /// The revision message.
    #[serde(default)]
    message: Option<String>,
    /// The environment to deploy to; default: the server's.
    #[serde(default)]
    env: Option<String>,
    /// Only say what would change.
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/deploy`: validates every flow first (one bad file deploys nothing: 400 with
/// each problem's field path, line and column), then makes each changed flow a new revision,
/// active in the environment, in one transaction. An environment the project protects takes
/// no new content this way (403 naming the edge to promote along).
pub async fn deploy(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<DeployBody>,
) -> Result<Json<Value>, ApiError> {
    let env = state.pick_env(body.env.as_deref())?;
    if body.flows.is_empty() {
        return Err(ApiError::field(
            "flows",
            "flows: give at least one flow file's YAML text",
        ));
    }
    if body.flows.len() > MAX_DEPLOY_FLOWS {
        return Err(ApiError::field(
            "flows",
            format!("flows: at most {MAX_DEPLOY_FLOWS} flow files per deploy"),
        ));
    }
    let mut loaded = Vec::with_capacity(body.flows.len());
    let mut problems = Vec::new();
    let mut first_bad = None;
    for (i, text) in body.flows.iter().enumerate() {
        let label = format!("flows[{i}]");
        match ferry_spec::load_str(text, Some(PathBuf::from(&label))) {
            Ok(f) => loaded.push(f),
            Err(errs) => {
                first_bad.get_or_insert(label.clone());
                for e in errs.0 {
                    problems.push(json!({
                        "field": label,
                        "path": e.path,
                        "line": e.location.map(|l| l.line),
                        "column": e.location.map(|l| l.column),
                        "message": e.message,
                        "text": e.to_string(),
                    }));
                }
            }
        }
    }
    if let Some(field) = first_bad {
        let summary = problems
            .iter()
            .filter_map(|p| p["text"].as_str())
            .take(5)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ApiError::field(
            field,
            format!(
                "nothing deployed: {} in the flow files: {summary}",
                ferry_spec::words::count(problems.len(), "problem")
            ),
        )
        .with_details(Value::Array(problems)));
    }
    let store = state.store();
    let plan = lifecycle::plan(store, &env, &loaded).await?;
    if body.dry_run {
        return Ok(Json(json!({"env": env, "dry_run": true, "plan": plan})));
    }
    let message = body
        .message
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| "deployed through the control API".into());
    let outcomes =
        lifecycle::deploy_all(store, state.project(), &env, &loaded, &message, &actor).await?;
    let deployed: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "flow": o.revision.flow,
                "revision": o.revision.number,
                "hash": o.revision.hash,
                "created": o.created,
            })
        })
        .collect();
    Ok(Json(
        json!({"env": env, "dry_run": false, "plan": plan, "deployed": deployed}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// The revision to make active; default: the flow's newest (a clone's draft).
    #[serde(default)]
    revision: Option<i64>,
    /// The environment; default: the server's.
    #[serde(default)]
    env: Option<String>,
}

/// `POST /api/v1/flows/{flow}/activate`: makes an existing revision (a draft, or one to roll
/// back to) the active one in the environment. Counts as a deploy: in a protected environment
/// only a revision that ran there before may be activated (403 otherwise).
pub async fn activate(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(flow): Path<String>,
    ApiJson(body): ApiJson<ActivateBody>,
) -> Result<Json<Value>, ApiError> {
    let env = state.pick_env(body.env.as_deref())?;
    if state.store().revisions(&flow).await?.is_empty() {
        return Err(ApiError::not_found(format!("no flow `{flow}`")));
    }
    let r = lifecycle::activate(
        state.store(),
        state.project(),
        &flow,
        &env,
        body.revision,
        &actor,
    )
    .await
    .map_err(not_found_if_refused)?;
    Ok(Json(json!({
        "flow": flow,
        "env": env,
        "revision": RevisionView::brief(&r.revision),
        "previous": r.previous,
        "changed": r.changed,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// The environment; default: the server's.
    #[serde(default)]
    env: Option<String>,
}

/// `POST /api/v1/flows/{flow}/runs`: starts a run of the flow's active revision (trigger
/// `manual`) and answers 202 with its id at once.
pub async fn trigger(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    ApiJson(body): ApiJson<TriggerBody>,
) -> Result<Response, ApiError> {
    let env = state.pick_env(body.env.as_deref())?;
    let id = state
        .launcher()
        .trigger(&flow, &env)
        .await
        .map_err(launch_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "run_id": id,
            "flow": flow,
            "env": env,
            "run": format!("/api/v1/runs/{id}"),
        })),
    )
        .into_response())
}

/// A launcher's refusal as an API error.
pub fn launch_error(e: LaunchError) -> ApiError {
    match e {
        LaunchError::NotDeployed { .. } => ApiError::not_found(e.to_string()),
        LaunchError::AlreadyRunning { .. } => ApiError::conflict(e.to_string()),
        LaunchError::Refused(m) => ApiError::bad_request(m),
        LaunchError::Failed(m) => ApiError::internal(m),
    }
}
