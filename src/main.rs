//! The `halo` command: parses the command line, sets up logging, and calls the library.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use halo::config::{Config, ServeArgs};
use tokio_util::sync::CancellationToken;

/// Halo: deploy static sites into a content-addressed store, served by a Host-routed edge.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control-plane API and the edge in one process.
    Serve(ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HALO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::resolve(&args)?;
            tokio::runtime::Runtime::new()?.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let api = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding the API to {}", config.api_listen))?;
    let edge = tokio::net::TcpListener::bind(config.edge_listen)
        .await
        .with_context(|| format!("binding the edge to {}", config.edge_listen))?;
    let shutdown = CancellationToken::new();
    let server = halo::server::Server::start(&config, api, edge, shutdown.clone()).await?;
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    server.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
