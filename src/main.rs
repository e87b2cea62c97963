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
    let serving = matches!(
        cli.command,
        Command::Serve(_) | Command::Api(_) | Command::Edge(_)
    );
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
            .and_then(|config| runtime.block_on(serve(config, true))),
        Command::Api(args) => Config::resolve(&args)
            .map_err(anyhow::Error::from)
            .and_then(|config| runtime.block_on(serve(config, false))),
        Command::Edge(args) => Config::resolve(&args.serve)
            .map_err(anyhow::Error::from)
            .and_then(|config| runtime.block_on(edge_node(config, &args, cli.client.token.clone()))),
        Command::Meta { command } => runtime.block_on(halo::cli::meta(command)),
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

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} to {addr}"))
}

/// `serve` (API and edge) or `api` (API alone).
async fn serve(config: Config, with_edge: bool) -> anyhow::Result<()> {
    let api = bind(config.api_listen, "API").await?;
    let edge = match with_edge {
        true => Some(bind(config.edge_listen, "edge").await?),
        false => None,
    };
    let tls = match (with_edge, config.tls_listen) {
        (true, Some(addr)) => Some(bind(addr, "edge TLS listener").await?),
        _ => None,
    };
    let shutdown = CancellationToken::new();
    let server =
        halo::server::Server::start_with_tls(&config, api, edge, tls, shutdown.clone()).await?;
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    server.wait().await;
    Ok(())
}

/// `edge`: a stand-alone edge node.
async fn edge_node(
    config: Config,
    args: &halo::cli::EdgeArgs,
    token: Option<String>,
) -> anyhow::Result<()> {
    let edge_listener = bind(config.edge_listen, "edge").await?;
    let admin_listener = bind(args.admin_listen, "admin listener").await?;
    let store = halo::server::open_store(&config)?;
    let shutdown = CancellationToken::new();
    let mut edge = halo::edge::Edge::new(
        std::sync::Arc::default(),
        store.clone(),
        halo::edge::cache::BlobCache::new(config.cache_bytes),
    );
    edge.country_header = config.country_header.clone();
    edge.proxier = halo::edge::proxy::Proxier::new(config.proxy);
    let tls = match config.tls_listen {
        Some(addr) => Some((
            bind(addr, "edge TLS listener").await?,
            halo::server::edge_tls(&config, &store, &mut edge, &shutdown)?,
        )),
        None => None,
    };
    let edge = std::sync::Arc::new(edge);
    let follow = halo::edge::follow::FollowConfig {
        control_plane: args.control_plane.clone(),
        token,
        poll: std::time::Duration::from_secs(args.poll_secs.max(1)),
    };
    let node = halo::edge::node::EdgeNode::start(
        edge,
        follow,
        edge_listener,
        admin_listener,
        tls,
        config.edge.clone(),
        shutdown.clone(),
    )
    .await?;
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    node.wait().await;
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
