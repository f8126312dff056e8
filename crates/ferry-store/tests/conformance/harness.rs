//! Backends for the conformance suite: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL schema that is dropped afterwards.
//!
//! PostgreSQL is expected at `FERRY_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Without a server there, the PostgreSQL tests
//! skip loudly — or fail under CI (`ferry_testkit`).

use std::future::Future;
use std::sync::Arc;

use ferry_store::StateStore;

use sqlx::{Connection, PgConnection};

/// A store under test and what to clean up after it.
pub struct Backend {
    pub store: Arc<dyn StateStore>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Schema { base_url: String, schema: String },
}

/// A fresh SQLite store in a temporary directory.
pub async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("state").join("ferry.db");
    let store = ferry_store::open(path.to_str().expect("utf-8 temp path"))
        .await
        .expect("open SQLite store");
    Backend {
        store,
        cleanup: Cleanup::Dir(dir),
    }
}

/// The PostgreSQL server of the tests, or `None` (after a loud skip message; a failure under CI)
/// when there is none.
pub fn pg_base_url(test: &str) -> Option<String> {
    ferry_testkit::postgres_url(test)
}

/// A store in a fresh schema `ferry_test_<random>`, or `None` when PostgreSQL tests are skipped.
pub async fn postgres(test: &str) -> Option<Backend> {
    let base_url = pg_base_url(test)?;
    let schema = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base_url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {base_url} ({e}). Start it \
             (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)"
        )
    });
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create test schema");
    let _ = admin.close().await;
    let sep = if base_url.contains('?') { '&' } else { '?' };
    let url = format!("{base_url}{sep}options[search_path]={schema}");
    let store = ferry_store::open(&url)
        .await
        .expect("open PostgreSQL store");
    Some(Backend {
        store,
        cleanup: Cleanup::Schema { base_url, schema },
    })
}

impl Backend {
    /// Closes the store and removes its data.
    pub async fn finish(self) {
        drop(self.store);
        match self.cleanup {
            Cleanup::Dir(dir) => drop(dir),
            Cleanup::Schema { base_url, schema } => match PgConnection::connect(&base_url).await {
                Ok(mut admin) => {
                    if let Err(e) =
                        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                            .execute(&mut admin)
                            .await
                    {
                        eprintln!("could not drop test schema {schema}: {e}");
                    }
                    let _ = admin.close().await;
                }
                Err(e) => eprintln!("could not drop test schema {schema}: {e}"),
            },
        }
    }
}

/// Runs one conformance case against a backend, cleans up even if the case panics, then
/// re-raises the panic.
pub async fn run_case<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Arc<dyn StateStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(case(backend.store.clone())).await;
    backend.finish().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("conformance case did not finish: {e}"),
        }
    }
}
