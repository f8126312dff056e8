//! Ids on the command line: a whole run, dead-letter or promotion id, or its first hex digits
//! (at least 4), as git takes the start of a commit hash.
//!
//! A prefix is looked up in the state store ([`StateStore::ids_with_prefix`], a range scan of
//! the table's key), never by listing everything: one id starting with it is the id, several
//! are an error listing them, none is an error naming the listing command. A whole id is taken
//! as it is; the command then says when nothing has it.

use std::sync::Arc;

use anyhow::Result;
use ferry_spec::words::count;
use ferry_store::{IdKind, IdPrefix, StateStore};
use uuid::Uuid;

use crate::context::Ctx;
use crate::exit::CliError;

/// Most candidates an ambiguous prefix lists.
const SHOWN: u32 = 10;

/// Reads `text` as an id of `kind` or the start of one; `Ok(Err(prefix))` when it is a prefix
/// to look up.
fn parse(kind: IdKind, text: &str) -> Result<std::result::Result<Uuid, IdPrefix>> {
    let prefix = IdPrefix::parse(text, kind).map_err(|e| CliError::input(e.to_string()))?;
    Ok(match prefix.full() {
        Some(id) => Ok(id),
        None => Err(prefix),
    })
}

/// The id `text` names: the whole id, or the one id of `kind` that starts with it.
pub async fn resolve_in(store: &Arc<dyn StateStore>, kind: IdKind, text: &str) -> Result<Uuid> {
    let prefix = match parse(kind, text)? {
        Ok(id) => return Ok(id),
        Err(prefix) => prefix,
    };
    let found = store.ids_with_prefix(kind, &prefix, SHOWN + 1).await?;
    match found.as_slice() {
        [id] => Ok(*id),
        [] => Err(CliError::input(format!(
            "no {} id starts with `{}` (`{}` lists them)",
            kind.noun(),
            text.trim(),
            kind.listing()
        ))
        .into()),
        many => {
            let shown: Vec<String> = many
                .iter()
                .take(SHOWN as usize)
                .map(Uuid::to_string)
                .collect();
            let how_many = if many.len() > SHOWN as usize {
                format!("more than {}", count(SHOWN, &format!("{} id", kind.noun())))
            } else {
                count(many.len(), &format!("{} id", kind.noun()))
            };
            Err(CliError::input(format!(
                "`{}` is ambiguous: {how_many} start with it: {}; give more of the id",
                text.trim(),
                shown.join(", ")
            ))
            .into())
        }
    }
}

/// [`resolve_in`] for every text; opens the state store only when one of them is a prefix.
pub async fn resolve(ctx: &Ctx, kind: IdKind, texts: &[String]) -> Result<Vec<Uuid>> {
    let mut parsed = Vec::with_capacity(texts.len());
    for text in texts {
        parsed.push(parse(kind, text)?);
    }
    if parsed.iter().all(std::result::Result::is_ok) {
        return Ok(parsed
            .into_iter()
            .filter_map(std::result::Result::ok)
            .collect());
    }
    let store = ctx.store().await?;
    let mut ids = Vec::with_capacity(texts.len());
    for text in texts {
        ids.push(resolve_in(&store, kind, text).await?);
    }
    Ok(ids)
}
