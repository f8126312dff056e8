//! `ferry sandbox`: the fake source and sink APIs, served for people.

use anyhow::{Context as _, Result};
use ferry_sandbox::{Sandbox, SandboxConfig};

use crate::exit::CliError;

pub async fn serve(listen: &str, records: u64, token_env: Option<String>) -> Result<u8> {
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        CliError::input(format!(
            "--listen `{listen}` is not an address such as 127.0.0.1:8088"
        ))
    })?;
    let source_token =
        match token_env {
            Some(name) => Some(std::env::var(&name).map_err(|_| {
                CliError::input(format!("environment variable `{name}` is not set"))
            })?),
            None => None,
        };
    let sandbox = Sandbox::start_on(
        SandboxConfig {
            records,
            source_token,
            ..SandboxConfig::default()
        },
        addr,
    )
    .await
    .with_context(|| format!("listening on {addr}"))?;
    let base = sandbox.base_url();
    println!("sandbox listening on {base}");
    println!("  source  GET  {base}/api/orders?since=&page_size=");
    println!("  sink    POST|PUT|PATCH {base}/api/sink/...  (Idempotency-Key required)");
    println!("  control {base}/_sandbox/sink/stats, /_sandbox/sink/faults, /_sandbox/source/touch");
    println!(
        "try:  SHOP_URL={base} WMS_URL={base}/api/sink ferry run flows/orders-to-warehouse.yaml"
    );
    println!("press Ctrl-C to stop");
    sandbox.serve_forever().await;
    Ok(0)
}
