//! Damaging a SQLite state file on purpose, the way a failing disk or a copy taken in the middle
//! of a write does, to test what ferry does with a store it cannot trust.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use sqlx::{Connection, SqliteConnection};

/// Bytes overwritten: one page of the default size.
pub const DAMAGE_BYTES: usize = 4096;

/// Overwrites 4 KiB of `table`'s B-tree root page in the SQLite file at `path` with garbage, after
/// moving everything from the write-ahead log into the file. No process may have the file open.
/// Every lookup in the table then meets the damage. Returns the page number overwritten.
pub async fn damage_sqlite_table(path: &Path, table: &str) -> i64 {
    let url = format!("sqlite://{}", path.display());
    let mut conn = SqliteConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .expect("checkpoint");
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut conn)
        .await
        .expect("page size");
    let root: i64 = sqlx::query_scalar("SELECT rootpage FROM sqlite_master WHERE name = ?")
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("no table {table}: {e}"));
    conn.close().await.expect("close");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open the file for writing");
    f.seek(SeekFrom::Start(((root - 1) * page_size) as u64))
        .expect("seek");
    // Not zeros: a zeroed page can read as an empty one.
    let garbage: Vec<u8> = (0..DAMAGE_BYTES).map(|i| (i * 151 + 7) as u8).collect();
    f.write_all(&garbage).expect("write");
    f.sync_all().expect("sync");
    root
}
