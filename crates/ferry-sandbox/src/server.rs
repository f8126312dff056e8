//! [`Sandbox`]: the running HTTP server, its routes and its lifecycle (start, shutdown, serve
//! until Ctrl-C).
//!
//! One axum router serves the source, the sink and the control endpoints on one port. Each
//! group has its own body cap (32 MiB for the sink, 1 MiB for everything else). The server runs
//! on the caller's tokio runtime as a spawned task; dropping the [`Sandbox`] signals a graceful
//! shutdown, [`Sandbox::shutdown`] also waits for it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::SandboxConfig;
use crate::respond;
use crate::sink::SinkState;
use crate::source::SourceState;

/// Body cap of the sink (32 MiB).
pub const SINK_BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Body cap of the control endpoints and `POST /oauth/token` (1 MiB).
pub const CONTROL_BODY_LIMIT: usize = 1024 * 1024;
/// How long [`Sandbox::shutdown`] waits for requests in flight before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) source: SourceState,
    pub(crate) sink: SinkState,
    /// `http://host:port` of the bound address, for absolute links when `Host` is unusable.
    pub(crate) base_url: Arc<str>,
}

async fn not_found() -> Response {
    respond::error(
        StatusCode::NOT_FOUND,
        "no such endpoint; the sandbox serves GET /api/orders, POST /oauth/token, \
         POST|PUT|PATCH /api/sink/<any path> and /_sandbox/...",
    )
}

async fn method_not_allowed() -> Response {
    respond::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not accept that method",
    )
}

/// The full router.
pub(crate) fn router(state: AppState) -> Router {
    let sink = Router::new()
        .route("/api/sink/{*path}", any(crate::sink::http::sink))
        .layer(DefaultBodyLimit::max(SINK_BODY_LIMIT));
    let rest = Router::new()
        .route("/api/orders", get(crate::source::http::list_orders))
        .route("/oauth/token", post(crate::source::http::oauth_token))
        .merge(crate::control::routes())
        .layer(DefaultBodyLimit::max(CONTROL_BODY_LIMIT));
    sink.merge(rest)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The address clients use: a wildcard bind is reached over loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// A running sandbox: the fake source and sink on one HTTP port.
///
/// Dropping it or calling [`Sandbox::shutdown`] stops the server.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    base_url: String,
    source: SourceState,
    sink: SinkState,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Starts a sandbox on `127.0.0.1` with a free port.
    pub async fn start(config: SandboxConfig) -> io::Result<Sandbox> {
        Sandbox::start_on(config, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    /// Starts a sandbox on `addr`. Fails with `InvalidInput` when the config is out of range
    /// (see [`SandboxConfig::validate`]) and with the bind error when the address is taken.
    pub async fn start_on(config: SandboxConfig, addr: SocketAddr) -> io::Result<Sandbox> {
        config.validate()?;
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let addr = reachable(bound);
        let base_url = format!("http://{addr}");
        let source = SourceState::new(&config);
        let sink = SinkState::new();
        let state = AppState {
            source: source.clone(),
            sink: sink.clone(),
            base_url: Arc::from(base_url.as_str()),
        };
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let listener = listener.tap_io(|tcp| {
            // Small request/response pairs: never wait for Nagle's algorithm.
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
            // A dropped sender means the Sandbox was dropped: shut down too.
            let _ = shutdown_rx.await;
        });
        let task = tokio::spawn(async move {
            if let Err(err) = server.await {
                tracing::error!(error = %err, "Sandbox server stopped with an error");
            }
        });
        tracing::info!(
            addr = %bound,
            records = config.records,
            seed = config.seed,
            "Sandbox listening"
        );
        Ok(Sandbox {
            addr,
            base_url,
            source,
            sink,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// The address clients connect to (loopback when bound to a wildcard address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The source's controls.
    pub fn source(&self) -> &SourceState {
        &self.source
    }

    /// The sink's controls.
    pub fn sink(&self) -> &SinkState {
        &self.sink
    }

    /// Stops accepting connections and waits up to 5 s for requests in flight, then stops.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }

    /// Serves until Ctrl-C, then shuts down (for `ferry sandbox`).
    pub async fn serve_forever(mut self) {
        let Some(mut task) = self.task.take() else {
            return;
        };
        tokio::select! {
            signal = tokio::signal::ctrl_c() => {
                match signal {
                    Ok(()) => tracing::info!("Sandbox stopping on Ctrl-C"),
                    Err(err) => {
                        tracing::warn!(error = %err, "Sandbox cannot listen for Ctrl-C; serving until killed");
                        let _ = (&mut task).await;
                        return;
                    }
                }
            }
            _ = &mut task => return,
        }
        self.task = Some(task);
        self.shutdown().await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_reached_over_loopback() {
        let v4: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert_eq!(reachable(v4).to_string(), "127.0.0.1:8080");
        let v6: SocketAddr = "[::]:8080".parse().expect("addr");
        assert_eq!(reachable(v6).to_string(), "[::1]:8080");
        let fixed: SocketAddr = "127.0.0.2:1".parse().expect("addr");
        assert_eq!(reachable(fixed), fixed);
    }

    #[tokio::test]
    async fn bad_config_is_refused_before_binding() {
        let err = Sandbox::start(SandboxConfig {
            max_page_size: 0,
            ..SandboxConfig::default()
        })
        .await
        .expect_err("invalid");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("max_page_size"));
    }
}
