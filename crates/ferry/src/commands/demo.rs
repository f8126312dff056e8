//! `ferry demo`: the sandbox, the example flow, a full run and an incremental one.
//!
//! Everything runs in this process on free 127.0.0.1 ports, with state in a fresh SQLite file,
//! so it works on a machine with nothing else installed.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use ferry_env::{RunEnv, Secrets};
use ferry_sandbox::{Sandbox, SandboxConfig};
use ferry_store::{RunStatus, Trigger};
use rand::Rng;

use crate::cli::Output;
use crate::commands::runs::run_loaded;
use crate::context::Ctx;
use crate::exit::CliError;

/// The example flow, built in so the demo runs from any directory.
const EXAMPLE_FLOW: &str = include_str!("../../../../flows/orders-to-warehouse.yaml");
const EXAMPLE_PATH: &str = "flows/orders-to-warehouse.yaml";

pub async fn demo(ctx: &Ctx, records: u64, flow: Option<PathBuf>, progress: bool) -> Result<u8> {
    let text = ctx.output() == Output::Text;
    let token: String = {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:x}", rng.random_range(0..16u8)))
            .collect()
    };
    let sandbox = Sandbox::start(SandboxConfig {
        records,
        source_token: Some(token.clone()),
        ..SandboxConfig::default()
    })
    .await
    .context("starting the sandbox")?;
    let base = sandbox.base_url();

    let loaded = match &flow {
        Some(p) => ferry_spec::load_file(p),
        None if std::path::Path::new(EXAMPLE_PATH).exists() => {
            ferry_spec::load_file(std::path::Path::new(EXAMPLE_PATH))
        }
        None => ferry_spec::load_str(EXAMPLE_FLOW, Some(PathBuf::from(EXAMPLE_PATH))),
    }
    .map_err(|e| CliError::input(e.to_string()))?;

    // A fresh state file per demo, unless a database was named.
    let store = match &ctx.global.database {
        Some(_) => ctx.store().await?,
        None => {
            let dir = ctx.global.state.join("demo");
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("clearing {}", dir.display()))?;
            }
            let url = format!("sqlite:{}", dir.join(crate::context::STATE_FILE).display());
            ferry_store::open(&url)
                .await
                .context("opening the demo state store")?
        }
    };
    let env = RunEnv::new("demo", Secrets::from_map([("SHOP_TOKEN", token.as_str())]))
        .with_var("SHOP_URL", base.clone())
        .with_var("WMS_URL", format!("{base}/api/sink"));

    if text {
        println!("sandbox   source and sink APIs on {base} ({records} orders)");
        println!(
            "state     {}",
            if ctx.global.database.is_some() {
                ctx.database_url()
            } else {
                ctx.global
                    .state
                    .join("demo")
                    .join(crate::context::STATE_FILE)
                    .display()
                    .to_string()
            }
        );
    }
    let d = ferry_engine::deploy(
        &store,
        &loaded,
        "demo",
        "deployed by `ferry demo`",
        &crate::context::author(),
    )
    .await?;
    if text {
        println!(
            "deployed  {} revision {} ({})\n",
            loaded.flow.name,
            d.revision.number,
            &d.revision.hash[..12]
        );
        println!("== run 1: full sync");
    }
    let first = run_loaded(
        ctx,
        store.clone(),
        env.clone(),
        loaded.clone(),
        d.revision.number,
        Trigger::Demo,
        progress,
    )
    .await?;
    if first.status != RunStatus::Succeeded {
        return Ok(1);
    }

    // Some orders change at the source; the next run picks up only those.
    let changed: Vec<u64> = (1..=records).filter(|i| i % 97 == 0).collect();
    sandbox.source().touch(&changed);
    if text {
        println!(
            "\n== run 2: incremental sync after {} orders changed at the source",
            changed.len()
        );
    }
    let second = run_loaded(
        ctx,
        store.clone(),
        env,
        loaded.clone(),
        d.revision.number,
        Trigger::Demo,
        progress,
    )
    .await?;

    let stats = sandbox.sink().stats();
    if text {
        println!(
            "\nsink      {}, {} applied, {}, {} applied twice",
            ferry_spec::words::count(stats.requests, "request"),
            ferry_spec::words::count(stats.applied, "record"),
            ferry_spec::words::count(stats.duplicate_requests, "duplicate request"),
            sandbox
                .sink()
                .applied()
                .iter()
                .filter(|a| a.times_applied > 1)
                .count()
        );
        println!("\nnext:");
        println!(
            "  ferry --state {} runs              # both runs, tagged with revision {}",
            ctx.global.state.join("demo").display(),
            d.revision.number
        );
        println!("  ferry validate flows/               # check flow files");
        println!("  ferry test flows/                   # run the flow's test cases offline");
        println!(
            "  ferry sandbox                       # serve the sandbox and run flows against it yourself"
        );
    }
    sandbox.shutdown().await;
    Ok(if second.status == RunStatus::Succeeded {
        0
    } else {
        1
    })
}
