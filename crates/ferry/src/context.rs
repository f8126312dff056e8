//! What every command needs: the state store, the run environment, the output format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use ferry_env::{RunEnv, Secrets};
use ferry_server::{EnvSource, ProjectEnv};
use ferry_spec::Project;
use ferry_store::StateStore;

use crate::cli::{Global, Output};
use crate::exit::CliError;

/// File name of the embedded state database inside the state directory.
pub const STATE_FILE: &str = "state.db";
/// File name of the project file, looked for in the working directory and in folders given to
/// `ferry validate`.
pub const PROJECT_FILE: &str = "ferry.yaml";

pub struct Ctx {
    pub global: Global,
}

impl Ctx {
    pub fn output(&self) -> Output {
        self.global.output
    }

    /// The database URL in use.
    pub fn database_url(&self) -> String {
        match &self.global.database {
            Some(u) => u.clone(),
            None => format!("sqlite:{}", self.global.state.join(STATE_FILE).display()),
        }
    }

    pub async fn store(&self) -> Result<Arc<dyn StateStore>> {
        let url = self.database_url();
        ferry_store::open(&url)
            .await
            .with_context(|| format!("opening the state store {}", redact(&url)))
    }

    /// Where the project file in effect is: --project, else `./ferry.yaml` when it exists.
    pub fn project_path(&self) -> Option<PathBuf> {
        match &self.global.project {
            Some(p) => Some(p.clone()),
            None => {
                let p = PathBuf::from(PROJECT_FILE);
                p.exists().then_some(p)
            }
        }
    }

    /// The project file in effect (see [`Ctx::project_path`]), or none. A project file that
    /// cannot be read or has problems is an error listing every problem: a command never goes
    /// on as if a broken `ferry.yaml` were not there.
    pub fn project(&self) -> Result<Option<Project>> {
        let Some(path) = self.project_path() else {
            return Ok(None);
        };
        match ferry_spec::load_project_file(&path) {
            Ok(project) => Ok(Some(project)),
            Err(e) => Err(CliError::input(format!(
                "the project file {} is broken: fix it (`ferry validate {}` lists every problem) or name another with --project\n{}",
                path.display(),
                path.display(),
                e.0.iter()
                    .map(|p| format!("  {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
            .into()),
        }
    }

    /// The project file, checking that it defines --env (when it defines environments).
    pub fn project_for_env(&self) -> Result<Option<Project>> {
        let Some(project) = self.project()? else {
            return Ok(None);
        };
        let path = self
            .global
            .project
            .clone()
            .unwrap_or_else(|| PathBuf::from(PROJECT_FILE));
        if !project.environments.is_empty() && project.environment(&self.global.env).is_none() {
            return Err(CliError::input(format!(
                "environment `{}` is not defined in {}: it defines {}",
                self.global.env,
                path.display(),
                project
                    .environments
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
        Ok(Some(project))
    }

    /// The variables and secrets of --env as every command builds them (the same layering as
    /// the control API: [`ProjectEnv`]): the project's variables, then those a promotion edge
    /// set for a flow's active revision, then --var; secrets from --secrets, else the process
    /// environment.
    pub fn project_env(&self) -> Result<ProjectEnv> {
        Ok(ProjectEnv::new(
            self.secrets()?,
            self.project_for_env()?,
            self.var_overrides()?,
        ))
    }

    /// The environment one flow runs in (see [`Ctx::project_env`]); names nothing sets come
    /// from the process environment.
    pub async fn flow_env(&self, store: &Arc<dyn StateStore>, flow: &str) -> Result<RunEnv> {
        self.project_env()?
            .run_env(store, flow, &self.global.env)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// The environment flows run in: --var values, then the process environment; secrets from
    /// --secrets, then the process environment.
    pub fn run_env(&self) -> Result<RunEnv> {
        let mut env = RunEnv::new(self.global.env.clone(), self.secrets()?);
        for (k, v) in self.var_overrides()? {
            env.set_var(k, v);
        }
        Ok(env)
    }

    fn secrets(&self) -> Result<Secrets> {
        Ok(match &self.global.secrets {
            Some(p) => Secrets::from_file(p).map_err(|e| CliError::input(e.to_string()))?,
            None => Secrets::from_process_env(),
        })
    }

    /// The --var NAME=VALUE pairs.
    fn var_overrides(&self) -> Result<BTreeMap<String, String>> {
        self.global
            .vars
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                    .ok_or_else(|| {
                        CliError::input(format!("--var `{kv}` is not NAME=VALUE")).into()
                    })
            })
            .collect()
    }
}

/// A database URL without its password.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Flow files named by paths: files as given, folders searched (not recursively) for
/// `*.yaml` / `*.yml`, sorted.
pub fn flow_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading folder {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| is_flow_file(f))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(CliError::input(format!(
                    "{}: no .yaml or .yml flow files in this folder",
                    p.display()
                ))
                .into());
            }
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(CliError::input(format!("{}: no such file or folder", p.display())).into());
        }
    }
    Ok(out)
}

fn is_flow_file(p: &Path) -> bool {
    p.is_file()
        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        && !is_project_file(p)
}

/// True for a file called `ferry.yaml`: a project file, not a flow.
pub fn is_project_file(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()) == Some(PROJECT_FILE)
}

/// Who acts on the command line: an admin (the CLI is the operator's shell on the state
/// store's machine) named after [`author`].
pub fn actor() -> ferry_engine::governance::Actor {
    ferry_engine::governance::Actor::cli(&author())
}

/// The OS user, for revision authorship.
pub fn author() -> String {
    std::env::var("FERRY_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
