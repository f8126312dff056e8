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
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::api::views::{
    Activated, DeployAnswer, Deployed, Diff, DiffSide, FlowDetail, FlowInEnvironment, FlowProblem,
    FlowView, PlanStep, RevisionView, Triggered, changes,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::launch::LaunchError;
use crate::state::AppState;

/// Most flow files in one deploy.
pub const MAX_DEPLOY_FLOWS: usize = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EnvQuery {
    /// The environment; default: the server's.
    env: Option<String>,
}

/// Flows active in an environment
///
/// Each with its active revision, newest run and next scheduled run.
#[utoipa::path(
    get,
    path = "/api/v1/flows",
    operation_id = "listFlows",
    tag = "flows",
    params(EnvQuery),
    responses(
        (status = 200, description = "the flows, by name", body = Vec<FlowView>),
        (status = 400, description = "an environment the project does not define", body = ApiError),
    )
)]
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

/// One flow in every environment
///
/// The flow in every environment it was ever active in, and in the project's environments.
#[utoipa::path(
    get,
    path = "/api/v1/flows/{flow}",
    operation_id = "showFlow",
    tag = "flows",
    params(("flow" = String, Path, description = "The flow's name.")),
    responses(
        (status = 200, description = "the flow", body = FlowDetail),
        (status = 404, description = "no such flow", body = ApiError),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(flow): Path<String>,
) -> Result<Json<FlowDetail>, ApiError> {
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
        environments.push(FlowInEnvironment {
            active: active.as_ref().map(RevisionView::brief),
            scheduled: n.is_some(),
            next_run: n.and_then(|n| n.at),
            env,
        });
    }
    Ok(Json(FlowDetail {
        revisions: revisions.len(),
        latest: revisions.last().map(RevisionView::brief),
        environments,
        name: flow,
    }))
}

/// Every revision of a flow
///
/// Oldest first, without specs.
#[utoipa::path(
    get,
    path = "/api/v1/flows/{flow}/revisions",
    operation_id = "listRevisions",
    tag = "flows",
    params(("flow" = String, Path, description = "The flow's name.")),
    responses(
        (status = 200, description = "the revisions", body = Vec<RevisionView>),
        (status = 404, description = "no such flow", body = ApiError),
    )
)]
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

/// One revision with its canonical spec
#[utoipa::path(
    get,
    path = "/api/v1/flows/{flow}/revisions/{number}",
    operation_id = "showRevision",
    tag = "flows",
    params(
        ("flow" = String, Path, description = "The flow's name."),
        ("number" = String, Path, description = "The revision number: `3` or `r3`."),
    ),
    responses(
        (status = 200, description = "the revision, with `spec`", body = RevisionView),
        (status = 400, description = "`number` is not a revision number", body = ApiError),
        (status = 404, description = "no such flow or revision", body = ApiError),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The older side: a revision number.
    a: i64,
    /// The newer side: a revision number; default: the revision active in `env`.
    b: Option<i64>,
    /// The environment whose active revision is `b` by default.
    env: Option<String>,
}

/// What changed between two revisions
///
/// By field path, from revision `a` to revision `b` (default: the one active in `env`).
#[utoipa::path(
    get,
    path = "/api/v1/flows/{flow}/diff",
    operation_id = "diffRevisions",
    tag = "flows",
    params(("flow" = String, Path, description = "The flow's name."), DiffQuery),
    responses(
        (status = 200, description = "the changes", body = Diff),
        (status = 400, description = "a bad query parameter", body = ApiError),
        (status = 404, description = "no such flow or revision", body = ApiError),
    )
)]
pub async fn diff(
    State(state): State<AppState>,
    Path(flow): Path<String>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Json<Diff>, ApiError> {
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
    let found = ferry_spec::diff::diff_flows(&a_flow.flow, &b_flow.flow);
    let text = ferry_spec::diff::render_text(&found);
    Ok(Json(Diff {
        flow,
        a: DiffSide {
            revision: a.number,
            hash: a.hash,
            label: format!("revision {}", a.number),
        },
        b: DiffSide {
            revision: b.number,
            hash: b.hash,
            label: b_label,
        },
        changes: changes(found),
        text,
    }))
}

/// A deploy: flow files as YAML text.
#[derive(Debug, Deserialize, ToSchema)]
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

/// Deploy flow files
///
/// Validates every flow first (one bad file deploys nothing: 400 with each problem's field
/// path, line and column in `details`, as `FlowProblem`s), then makes each changed flow a new
/// revision, active in the environment, in one transaction. An environment the project
/// protects takes no new content this way (403 naming the edge to promote along).
#[utoipa::path(
    post,
    path = "/api/v1/deploy",
    operation_id = "deploy",
    tag = "flows",
    request_body = DeployBody,
    responses(
        (status = 200, description = "deployed (or, with `dry_run`, what would be)", body = DeployAnswer),
        (status = 400, description = "a flow file has problems (`details`: `FlowProblem`s) or the body is wrong", body = ApiError),
        (status = 413, description = "the body is larger than the server accepts", body = ApiError),
        (status = 415, description = "the body is not JSON", body = ApiError),
    )
)]
pub async fn deploy(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<DeployBody>,
) -> Result<Json<DeployAnswer>, ApiError> {
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
                    problems.push(FlowProblem {
                        field: label.clone(),
                        path: e.path.clone(),
                        line: e.location.map(|l| l.line),
                        column: e.location.map(|l| l.column),
                        message: e.message.clone(),
                        text: e.to_string(),
                    });
                }
            }
        }
    }
    if let Some(field) = first_bad {
        let summary = problems
            .iter()
            .map(|p| p.text.as_str())
            .take(5)
            .collect::<Vec<_>>()
            .join("; ");
        let message = format!(
            "nothing deployed: {} in the flow files: {summary}",
            ferry_spec::words::count(problems.len(), "problem")
        );
        let details = serde_json::to_value(&problems).unwrap_or(Value::Null);
        return Err(ApiError::field(field, message).with_details(details));
    }
    let store = state.store();
    let plan = lifecycle::plan(store, &env, &loaded).await?;
    let plan: Vec<PlanStep> = plan.into_iter().map(PlanStep::from).collect();
    if body.dry_run {
        return Ok(Json(DeployAnswer {
            env,
            dry_run: true,
            plan,
            deployed: None,
        }));
    }
    let message = body
        .message
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| "deployed through the control API".into());
    let outcomes =
        lifecycle::deploy_all(store, state.project(), &env, &loaded, &message, &actor).await?;
    let deployed = outcomes
        .into_iter()
        .map(|o| Deployed {
            flow: o.revision.flow,
            revision: o.revision.number,
            hash: o.revision.hash,
            created: o.created,
        })
        .collect();
    Ok(Json(DeployAnswer {
        env,
        dry_run: false,
        plan,
        deployed: Some(deployed),
    }))
}

/// Which revision to activate, where.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// The revision to make active; default: the flow's newest (a clone's draft).
    #[serde(default)]
    revision: Option<i64>,
    /// The environment; default: the server's.
    #[serde(default)]
    env: Option<String>,
}

/// Activate an existing revision
///
/// Makes an existing revision (a draft, or one to roll back to) the active one in the
/// environment. Counts as a deploy: in a protected environment only a revision that ran there
/// before may be activated (403 otherwise).
#[utoipa::path(
    post,
    path = "/api/v1/flows/{flow}/activate",
    operation_id = "activateRevision",
    tag = "flows",
    params(("flow" = String, Path, description = "The flow's name.")),
    request_body = ActivateBody,
    responses(
        (status = 200, description = "activated (`changed: false` when it already was)", body = Activated),
        (status = 400, description = "the body is wrong", body = ApiError),
        (status = 404, description = "no such flow or revision", body = ApiError),
    )
)]
pub async fn activate(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(flow): Path<String>,
    ApiJson(body): ApiJson<ActivateBody>,
) -> Result<Json<Activated>, ApiError> {
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
    Ok(Json(Activated::new(flow, env, r)))
}

/// Where to run a flow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// The environment; default: the server's.
    #[serde(default)]
    env: Option<String>,
}

/// Start a run
///
/// Starts a run of the flow's active revision (trigger `manual`) and answers 202 with its id
/// at once; follow it at `run`.
#[utoipa::path(
    post,
    path = "/api/v1/flows/{flow}/runs",
    operation_id = "triggerRun",
    tag = "flows",
    params(("flow" = String, Path, description = "The flow's name.")),
    request_body = TriggerBody,
    responses(
        (status = 202, description = "the run started", body = Triggered),
        (status = 400, description = "the body is wrong, or the run was refused", body = ApiError),
        (status = 404, description = "the flow is not active in the environment", body = ApiError),
        (status = 409, description = "a run of the flow is already going in the environment", body = ApiError),
    )
)]
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
        Json(Triggered {
            run_id: id,
            run: format!("/api/v1/runs/{id}"),
            flow,
            env,
        }),
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
