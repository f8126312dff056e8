//! `ferry api-token [--rotate]`: where the control API's token comes from, and a new one.

use anyhow::Result;
use serde_json::json;

use crate::cli::Output;
use crate::context::Ctx;

pub fn api_token(ctx: &Ctx, rotate: bool) -> Result<u8> {
    let state_dir = &ctx.global.state;
    let path = ferry_server::auth::token_hash_path(state_dir);
    let from_env = matches!(
        ferry_server::TokenSource::from_env(),
        ferry_server::TokenSource::Given(_)
    );
    if rotate {
        let token = ferry_server::auth::rotate_token(state_dir)?;
        if ctx.output() == Output::Json {
            let v = json!({"token": token, "stored": path, "env_overrides": from_env});
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("{token}");
            eprintln!(
                "a new API token; it is shown only now, and only its sha256 is kept ({}). Restart `ferry serve` to use it.",
                path.display()
            );
            if from_env {
                eprintln!(
                    "note: {} is set, and a set token wins over the stored one",
                    ferry_server::TOKEN_ENV
                );
            }
        }
        return Ok(0);
    }
    let (source, text) = if from_env {
        (
            "env",
            format!(
                "the API token comes from {} (nothing is stored)",
                ferry_server::TOKEN_ENV
            ),
        )
    } else if path.exists() {
        (
            "stored",
            format!(
                "a generated token's sha256 is stored in {}; the token itself is kept nowhere. Lost it? `ferry api-token --rotate` makes a new one",
                path.display()
            ),
        )
    } else {
        (
            "none",
            "no token yet: `ferry serve` generates one at its first start and prints it once; or set FERRY_API_TOKEN, or run `ferry api-token --rotate`".to_string(),
        )
    };
    if ctx.output() == Output::Json {
        let v = json!({"source": source, "stored": path});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{text}");
    }
    Ok(0)
}
