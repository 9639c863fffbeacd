//! `axum-cachex-proxy`: the axum-cachex HTTP cache as a standalone caching
//! reverse proxy in front of one upstream, a shared cache as RFC 9111
//! describes it. Run with `--help` for the options and an example.

mod admin;
mod app;
mod backend;
mod cli;
mod config;
mod forward;

use std::{net::SocketAddr, process::ExitCode};

use axum::Router;
use axum_cachex::Registry;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::{cli::Cli, config::Settings, forward::Forwarder};

/// Why the proxy stopped before serving.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Backend(#[from] backend::BackendSpecError),
    #[error("invalid cache configuration")]
    Cache(#[from] axum_cachex::CacheLayerConfigError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the upstream has no host")]
    Upstream,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), StartError> {
    let settings = Settings::load(cli)?;
    let backend = backend::from_spec(&settings.backend)?;
    let registry = Registry::new();
    let forwarder = Forwarder::new(
        &settings.upstream,
        settings.rewrite_host,
        settings.upstream_timeout,
    )
    .ok_or(StartError::Upstream)?;
    let proxy = app::build(&settings, forwarder, backend.clone(), &registry)?;
    let listener = bind(settings.listen).await?;
    tracing::info!(
        listen = %settings.listen,
        upstream = %settings.upstream,
        backend = backend.name(),
        rules = settings.rules.len(),
        "axum-cachex-proxy serving"
    );
    if let Some(addr) = settings.admin {
        let admin = admin::router(settings.admin_token.clone(), &registry, backend);
        let listener = bind(addr).await?;
        tracing::info!(admin = %addr, token = settings.admin_token.is_some(), "admin routes serving");
        tokio::spawn(serve(listener, admin));
    }
    serve(listener, proxy).await;
    tracing::info!("axum-cachex-proxy stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// Serves until SIGTERM or Ctrl-C, then lets requests in flight finish.
async fn serve(listener: TcpListener, router: Router) {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(error) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown())
        .await
    {
        tracing::error!(%error, "server failed");
    }
}

async fn shutdown() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: draining requests in flight");
}
