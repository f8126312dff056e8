//! `ferry sandbox`: the fake source and sink APIs, served for people, with a banner that says
//! what is served, where the fault controls are, and the command that runs the example flow
//! against them — complete, so it works as printed.

use anyhow::{Context as _, Result};
use ferry_sandbox::{Sandbox, SandboxConfig};

use crate::exit::CliError;

/// The example flow the banner's command runs.
const EXAMPLE_FLOW: &str = "flows/orders-to-warehouse.yaml";

pub async fn serve(listen: &str, records: u64, token_env: Option<String>) -> Result<u8> {
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        CliError::input(format!(
            "--listen `{listen}` is not an address such as 127.0.0.1:8088"
        ))
    })?;
    let source_token =
        match &token_env {
            Some(name) => Some(std::env::var(name).map_err(|_| {
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
    println!(
        "  faults  {base}/_sandbox/sink/faults, /_sandbox/source/faults, /_sandbox/sink/down, ... (`ferry sandbox --help` lists them)"
    );
    println!("  stats   {base}/_sandbox/sink/stats, /_sandbox/source/stats");
    match &token_env {
        Some(name) => println!("the source requires the bearer token in ${name}"),
        None => println!(
            "the source requires no token (the example flow sends its SHOP_TOKEN secret anyway)"
        ),
    }
    println!("try:  {}", try_command(&base, token_env.as_deref()));
    println!("press Ctrl-C to stop");
    sandbox.serve_forever().await;
    Ok(0)
}

/// The command that runs the example flow against the sandbox at `base`, from the workspace
/// root: every variable and secret the flow references is set on it. With `--token-env NAME`
/// the token is passed on from that variable (its value is never printed).
fn try_command(base: &str, token_env: Option<&str>) -> String {
    let token = match token_env {
        Some(name) if is_shell_name(name) => format!("SHOP_TOKEN=\"${name}\""),
        Some(name) => format!("SHOP_TOKEN=<the token in {name}>"),
        None => "SHOP_TOKEN=unused".to_string(),
    };
    format!("SHOP_URL={base} WMS_URL={base}/api/sink {token} ferry run {EXAMPLE_FLOW}")
}

/// A name a POSIX shell expands as `$NAME`.
fn is_shell_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variable and secret the example flow references, as `NAME=` on the command.
    #[test]
    fn the_try_command_sets_everything_the_example_flow_needs() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../",
            "flows/orders-to-warehouse.yaml"
        );
        let flow = ferry_spec::load_file(std::path::Path::new(path)).expect("example flow");
        let (vars, secrets) = ferry_spec::project::references(&flow.flow);
        assert!(!vars.is_empty() && !secrets.is_empty());
        for token_env in [None, Some("SANDBOX_TOKEN")] {
            let cmd = try_command("http://127.0.0.1:8088", token_env);
            for name in vars.iter().chain(&secrets) {
                assert!(
                    cmd.contains(&format!(" {name}=")) || cmd.starts_with(&format!("{name}=")),
                    "{name} missing: {cmd}"
                );
            }
            assert!(cmd.ends_with(&format!("ferry run {EXAMPLE_FLOW}")), "{cmd}");
        }
        assert_eq!(
            try_command("http://h:1", Some("SANDBOX_TOKEN")),
            "SHOP_URL=http://h:1 WMS_URL=http://h:1/api/sink SHOP_TOKEN=\"$SANDBOX_TOKEN\" ferry run flows/orders-to-warehouse.yaml"
        );
        assert!(try_command("http://h:1", Some("a-b")).contains("SHOP_TOKEN=<the token in a-b>"));
    }
}
