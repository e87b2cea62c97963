//! The PostgreSQL promote, in two round trips: `BEGIN`, the revision lock and the promote
//! in one flight ([`super::pipeline`]); the commit's writes, the phase event, the
//! idempotency claim and `COMMIT` in the next. It was six round trips (five for the
//! transaction, one for the event in a transaction of its own), and a round trip costs
//! more here than any of these statements does in the server.

use deadpool_postgres::Object;
use futures_util::future::{OptionFuture, join3, join4};
use tokio_postgres::types::ToSql;

use super::aliases::{self, Changes};
use super::pipeline::Pipelined;
use super::rows::LOCK_REVISION;
use super::{CLAIM, EVENT, feed};
use crate::meta::{Actor, AliasChange, Deployment, IdemClaim, Logged, MetaError};
use crate::model::now_millis;

/// [`crate::meta::MetaStore::promote`] on connection `c`.
pub(super) async fn promote(
    c: Object,
    id: &str,
    actor: &Actor,
    idem: Option<&IdemClaim>,
    logged: Option<Logged>,
) -> Result<(AliasChange, Deployment), MetaError> {
    // Every statement of a flight is prepared before it (from the connection's cache after
    // its first use), so each goes out when first polled, in order.
    let lock = c.prepare_cached(LOCK_REVISION).await?;
    let promote = c.prepare_cached(&aliases::PROMOTE).await?;
    let event = c.prepare_cached(EVENT).await?;
    let claim = match idem {
        Some(_) => Some(c.prepare_cached(CLAIM).await?),
        None => None,
    };
    let tx = Pipelined::new(c);
    let now = now_millis();
    let (begun, locked, row) = join3(
        tx.client().batch_execute("BEGIN"),
        tx.client().query_one(&lock, &[]),
        tx.client()
            .query_opt(&promote, &aliases::promote_params(&id, &now)),
    )
    .await;
    let between = async {
        // The first error is what failed; the statements after it found the transaction
        // aborted.
        begun?;
        let revision = locked?.get::<_, i64>(0) as u64;
        let mut changes = Changes::default();
        let (d, latest) = aliases::promoted(row?, id, now, "promote", &mut changes)?;
        // The promote's read found what the writes depend on: this sends nothing.
        let written = aliases::written(changes, tx.client(), revision, actor).await?;
        let statement = match &written {
            Some(_) => Some(tx.client().prepare_cached(&aliases::COMMIT).await?),
            None => None,
        };
        Ok::<_, MetaError>((revision, d, latest, written, statement))
    };
    let (revision, d, latest, written, statement) = match between.await {
        Ok(v) => v,
        Err(e) => {
            tx.rollback().await;
            return Err(e);
        }
    };
    let writes = written.as_ref().map(|w| w.params());
    let effect = format!("promote:{id}");
    let claimed_at = now_millis();
    let claim_params = idem.map(|c| -> [&(dyn ToSql + Sync); 5] {
        [&c.token_id, &c.key, &c.fingerprint, &claimed_at, &effect]
    });
    // Made last, so that a duration in it runs until the commit is sent.
    let logged = logged.map(|l| (l.kind, (l.data)().to_string(), now_millis()));
    let event_params = logged
        .as_ref()
        .map(|(kind, data, at)| -> [&(dyn ToSql + Sync); 5] {
            [&id, at, kind, data, &feed::CHANNEL]
        });
    let (wrote, appended, claimed, committed) = join4(
        OptionFuture::from(
            statement
                .as_ref()
                .zip(writes.as_ref())
                .map(|(s, p)| tx.client().query(s, p)),
        ),
        OptionFuture::from(
            event_params
                .as_ref()
                .map(|p| tx.client().query_one(&event, p)),
        ),
        OptionFuture::from(
            claim
                .as_ref()
                .zip(claim_params.as_ref())
                .map(|(s, p)| tx.client().execute(s, p)),
        ),
        tx.client().batch_execute("COMMIT"),
    )
    .await;
    // `COMMIT` was answered (with a rollback, after an error): the transaction is over.
    // Otherwise the connection is dropped with it, and its outcome is unknown, as for
    // any commit whose answer was lost.
    if committed.is_ok() {
        tx.ended();
    }
    let mut change = match (written, wrote) {
        (Some(w), Some(rows)) => w.checked(rows)?,
        _ => AliasChange::at(revision),
    };
    appended.transpose()?;
    claimed.transpose()?;
    committed?;
    change.promotions = Some((d.project_id.clone(), latest));
    Ok((change, d))
}
