//! The change feed of a PostgreSQL database shared by several replicas: one connection of
//! its own that `LISTEN`s on the `halo` channel, which every committing transaction that
//! moves the alias table or logs progress `NOTIFY`s (delivered at commit). After every
//! (re)connect it reads the current revision, so a notification missed while disconnected
//! is caught up.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use crate::meta::{AliasChange, Feed, Route};

/// The channel every notification goes to.
pub(super) const CHANNEL: &str = "halo";

/// PostgreSQL refuses payloads of 8000 bytes or more.
const PAYLOAD_MAX: usize = 7_900;

/// An alias change as a notification carries it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Carried {
    revision: u64,
    routes: Vec<(String, String)>,
    removed: Vec<String>,
    /// A promote's project and latest promotions (absent from replicas before it; they
    /// read them instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promotions: Option<(String, Vec<(String, i64)>)>,
}

/// Payload of a notification: `change:<json>` (the change of one revision), or
/// `revision:<n>` when the change is too large to carry; `events` otherwise.
pub(super) fn change_payload(change: &AliasChange) -> String {
    if change.access.is_some() {
        return format!("revision:{}", change.revision);
    }
    let carried = Carried {
        revision: change.revision,
        routes: change
            .routes
            .iter()
            .map(|r| (r.host.clone(), r.deployment_id.clone()))
            .collect(),
        removed: change.removed.clone(),
        promotions: change.promotions.clone(),
    };
    match serde_json::to_string(&carried) {
        Ok(json) if json.len() + 7 <= PAYLOAD_MAX => format!("change:{json}"),
        _ => format!("revision:{}", change.revision),
    }
}

fn parse_change(json: &str) -> Option<AliasChange> {
    let c: Carried = serde_json::from_str(json).ok()?;
    Some(AliasChange {
        revision: c.revision,
        routes: c
            .routes
            .into_iter()
            .map(|(host, deployment_id)| Route {
                host,
                deployment_id,
            })
            .collect(),
        removed: c.removed,
        access: None,
        gone: Vec::new(),
        promotions: c.promotions,
    })
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
    let (revision, change) = if let Some(json) = payload.strip_prefix("change:") {
        match parse_change(json) {
            Some(c) => (c.revision, Some(std::sync::Arc::new(c))),
            None => {
                tracing::warn!("unreadable alias change notification; ignored");
                return;
            }
        }
    } else if let Some(Ok(revision)) = payload.strip_prefix("revision:").map(str::parse) {
        (revision, None)
    } else {
        tx.send_modify(|f| f.events += 1);
        return;
    };
    tx.send_if_modified(|f| {
        let newer = revision > f.revision;
        if newer {
            f.revision = revision;
            f.change = change;
        }
        newer
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_round_trips_and_a_large_one_names_only_its_revision() {
        let mut change = AliasChange {
            revision: 7,
            routes: vec![Route {
                host: "a.halo.test".into(),
                deployment_id: "dpl_1".into(),
            }],
            removed: vec!["b.halo.test".into()],
            access: None,
            gone: Vec::new(),
            promotions: Some(("prj_1".into(), vec![("dpl_1".into(), 1_700_000_000_000)])),
        };
        let p = change_payload(&change);
        assert_eq!(
            parse_change(p.strip_prefix("change:").unwrap()),
            Some(change.clone())
        );
        // Protections are read back, never carried.
        let protected = AliasChange {
            access: Some(Vec::new()),
            ..change.clone()
        };
        assert_eq!(change_payload(&protected), "revision:7");
        change.removed = (0..500).map(|i| format!("host-{i}.halo.test")).collect();
        assert_eq!(change_payload(&change), "revision:7");
    }
}
