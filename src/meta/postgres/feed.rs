//! The change feed of a PostgreSQL database shared by several replicas: one connection of
//! its own that `LISTEN`s on the `halo` channel, which every committing transaction that
//! moves the alias table or logs progress `NOTIFY`s (delivered at commit). After every
//! (re)connect it reads the current revision, so a notification missed while disconnected
//! is caught up.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use crate::meta::Feed;

/// The channel every notification goes to.
pub(super) const CHANNEL: &str = "halo";

/// Payload of a notification: `revision:<n>` or `events`.
pub(super) fn revision_payload(revision: u64) -> String {
    format!("revision:{revision}")
}

/// Follows the database until every receiver of `tx` is gone.
pub(super) async fn follow(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    tx: watch::Sender<Feed>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            () = tx.closed() => return,
            connected = listen(&config, tls.clone(), &tx) => {
                match connected {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, "metadata change feed lost; reconnecting");
                    }
                }
            }
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: `LISTEN`, catch up, then forward notifications until it drops.
async fn listen(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    tx: &watch::Sender<Feed>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = config.connect(tls).await?;
    let (notes, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if notes.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "metadata change feed connection ended");
                    return;
                }
            }
        }
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // Catch up on what happened while not listening.
        let revision: i64 = client
            .query_one(
                "SELECT value FROM counters WHERE name = 'alias_revision'",
                &[],
            )
            .await?
            .get(0);
        tx.send_modify(|f| {
            f.revision = f.revision.max(revision as u64);
            f.events += 1;
        });
        while let Some(payload) = rx.recv().await {
            apply(tx, &payload);
        }
        Ok(())
    }
    .await;
    driver.abort();
    result
}

fn apply(tx: &watch::Sender<Feed>, payload: &str) {
    match payload.strip_prefix("revision:").map(str::parse::<u64>) {
        Some(Ok(revision)) => {
            tx.send_if_modified(|f| {
                let newer = revision > f.revision;
                f.revision = f.revision.max(revision);
                newer
            });
        }
        _ => tx.send_modify(|f| f.events += 1),
    }
}
