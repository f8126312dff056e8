//! `ferry token create|list|revoke`: named tokens for the control API and the dashboard.
//!
//! The CLI works on the state store directly, as the operator's shell on its machine (an
//! admin); the work is `ferry_server::tokens`, the same the API's `/api/v1/tokens` does.

use anyhow::Result;
use ferry_store::StoreError;
use serde_json::json;

use crate::cli::{Output, TokenCommand};
use crate::context::{Ctx, author};
use crate::exit::CliError;

fn input_error(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::InvalidInput { .. } | StoreError::AlreadyExists { .. } => {
            CliError::input(e.to_string()).into()
        }
        e => anyhow::Error::new(e),
    }
}

pub async fn token(ctx: &Ctx, command: TokenCommand) -> Result<u8> {
    let store = ctx.store().await?;
    match command {
        TokenCommand::Create { name, role } => {
            let (info, token) = ferry_server::tokens::create(&store, &name, role.into(), &author())
                .await
                .map_err(input_error)?;
            if ctx.output() == Output::Json {
                let v = json!({"name": info.name, "role": info.role, "created_at": info.created_at, "token": token});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{token}");
                eprintln!(
                    "token `{}` with the {} role; it is shown only now (only its sha256 is kept). Requests with it act as `api:{}`.",
                    info.name, info.role, info.name
                );
            }
        }
        TokenCommand::List => {
            let list = store.tokens().await?;
            if ctx.output() == Output::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!(
                    "no named tokens (the server's own admin token, `admin`, is FERRY_API_TOKEN or the one in api-token.sha256)"
                );
            } else {
                println!(
                    "{:<24} {:<9} {:<20} {:<12} LAST USED",
                    "NAME", "ROLE", "CREATED", "BY"
                );
                for t in list {
                    println!(
                        "{:<24} {:<9} {:<20} {:<12} {}",
                        t.name,
                        t.role.as_str(),
                        t.created_at.format("%Y-%m-%d %H:%M:%S"),
                        t.created_by,
                        t.last_used_at.map_or_else(
                            || "never".to_string(),
                            |at| at.format("%Y-%m-%d %H:%M:%S").to_string()
                        )
                    );
                }
            }
        }
        TokenCommand::Revoke { name } => {
            if !ferry_server::tokens::revoke(&store, &name, &author())
                .await
                .map_err(input_error)?
            {
                return Err(CliError::input(format!(
                    "no token named `{name}` (`ferry token list` shows them)"
                ))
                .into());
            }
            if ctx.output() == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"revoked": name}))?
                );
            } else {
                println!("token `{name}` revoked: requests with it are refused from now on");
            }
        }
    }
    Ok(0)
}
