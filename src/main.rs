//! The `halo` command: parses the command line, sets up logging, and calls the library.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use halo::cli::Command;
use halo::cli::client::ClientArgs;
use halo::config::Config;
use tokio_util::sync::CancellationToken;

/// Halo: deploy static sites into a content-addressed store, served by a Host-routed edge.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HALO_LOG").unwrap_or_else(|_| {
                // The server logs its life at info; the client only speaks when asked.
                tracing_subscriber::EnvFilter::new(if serving { "info" } else { "warn" })
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => Config::resolve(&args)
            .map_err(anyhow::Error::from)
            .and_then(|config| runtime.block_on(serve(config))),
        command => runtime.block_on(async {
            tokio::select! {
                r = halo::cli::run(command, &cli.client) => r.map_err(anyhow::Error::from),
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: the server keeps every file already uploaded; run the same command again to finish");
                    std::process::exit(130);
                }
            }
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
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
