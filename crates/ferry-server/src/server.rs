//! Binding and running the server: [`Server::bind`] resolves the token and opens the socket
//! (so a caller learns the port of `127.0.0.1:0`), [`Server::run`] serves until the shutdown
//! future resolves, then stops the launcher's runs cleanly.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::auth::{ApiToken, token_hash_path};
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::routes::router;
use crate::state::{AppState, Services};

/// A bound control server, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
}

impl Server {
    /// Checks the config, resolves the API token (generating, storing and printing one at the
    /// first start when none was given), and binds the listen address.
    pub async fn bind(config: ServerConfig, services: Services) -> Result<Server, ServerError> {
        config.validate()?;
        let (token, generated) = ApiToken::resolve(&config.token, &config.state_dir)?;
        if let Some(t) = generated {
            // Printed once, to the terminal only: never logged.
            eprintln!(
                "ferry: generated an API token for the control API and dashboard; it is shown only now, and only its sha256 is kept ({}):\n\n    {t}\n\nSet FERRY_API_TOKEN to choose your own; delete that file and restart to get a new one.\n",
                token_hash_path(&config.state_dir).display()
            );
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr()?;
        let state = AppState::new(&config, services, token);
        tracing::info!(%addr, env = %config.env, "Control server listening");
        Ok(Server {
            listener,
            addr,
            state,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (the same the handlers see).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, lets requests in flight finish, then asks the launcher
    /// to stop its runs.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let app = router(self.state.clone());
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        self.state.launcher().shutdown().await;
        tracing::info!(addr = %self.addr, "Control server stopped");
        result.map_err(ServerError::Io)
    }
}

/// Binds and serves until `shutdown` resolves: [`Server::bind`] then [`Server::run`].
pub async fn serve(
    config: ServerConfig,
    services: Services,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(config, services).await?.run(shutdown).await
}
