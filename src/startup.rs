//! Builds the application: opens the database, binds the listener (port 0 works and
//! the real port is reported), mounts every surface and starts the workers.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::config::{Settings, Source};
use crate::db::{Database, DbError};
use crate::domain::{Clock, SystemClock};
use crate::jobs::expiry::ExpiryWorker;
use crate::providers::Providers;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// What to start besides the settings.
pub struct Options {
    pub providers: Providers,
    pub clock: Arc<dyn Clock>,
    /// Tests turn the background loops off and drive `try_run_once` themselves.
    pub run_jobs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            providers: Providers::none(),
            clock: Arc::new(SystemClock),
            run_jobs: true,
        }
    }
}

pub struct Application {
    address: SocketAddr,
    server: Server,
    state: AppState,
    run_jobs: bool,
}

impl Application {
    pub fn build(mut settings: Settings, options: Options) -> Result<Application, StartupError> {
        let db = Database::open(&settings.database_path())?;
        let bind = settings.server.bind;
        let listener = TcpListener::bind(bind).map_err(|e| StartupError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?;
        let address = listener.local_addr().map_err(|e| StartupError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?;
        if settings.source_of("server.public_url") == Some(&Source::Default) {
            settings.server.public_url = format!("http://{address}");
        }
        let state = AppState {
            db,
            settings: Arc::new(settings),
            providers: options.providers,
            clock: options.clock,
        };
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(crate::http::default_headers())
                .wrap(from_fn(crate::telemetry::log_request))
                .configure(crate::http::configure)
                .default_service(web::to(crate::http::not_found))
        })
        .workers(2)
        .listen(listener)
        .map_err(|e| StartupError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?
        .run();
        Ok(Application {
            address,
            server,
            state,
            run_jobs: options.run_jobs,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the server stops (Ctrl-C / SIGTERM). Workers end with it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let mut workers = Vec::new();
        if self.run_jobs {
            let expiry = ExpiryWorker::new(self.state.clone());
            workers.push(tokio::spawn(expiry.run()));
        }
        let result = self.server.await;
        for worker in workers {
            worker.abort();
        }
        result
    }
}
