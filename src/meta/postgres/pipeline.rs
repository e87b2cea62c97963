//! A transaction sent in flights, for the promote, whose cost is mostly round trips: the
//! statements of one flight go out together and cost one round trip between them.
//!
//! tokio-postgres pipelines the requests of futures polled together, and puts each on the
//! wire when its future is first polled: at once for a prepared statement or a simple
//! query (a statement not yet prepared would first wait for its preparation). So every
//! statement of a flight is prepared before it, and `futures_util::future::join*`, which
//! polls its futures in order, sends them in order. The server runs them in that order,
//! each after the one before, as if awaited one by one.

use deadpool_postgres::Object;

/// A transaction on a pooled connection whose `BEGIN` was sent in a flight, so it is no
/// [`tokio_postgres::Transaction`]. It ends with [`Pipelined::ended`] once its `COMMIT` or
/// `ROLLBACK` was answered, or with [`Pipelined::rollback`]. Dropped before either (an
/// error in between, a request canceled mid-flight), its connection leaves the pool rather
/// than go back with the transaction open; closing it rolls the transaction back.
pub(super) struct Pipelined {
    c: Option<Object>,
}

impl Pipelined {
    /// A transaction to begin on `c` (the caller's first flight sends `BEGIN`).
    pub(super) fn new(c: Object) -> Self {
        Self { c: Some(c) }
    }

    /// The connection, to send the transaction's statements on.
    pub(super) fn client(&self) -> &Object {
        // Only `ended`, `rollback` and `drop` take it, and each consumes `self`.
        self.c
            .as_ref()
            .expect("a pipelined transaction's connection")
    }

    /// The transaction's `COMMIT` (or `ROLLBACK`) was answered: the connection goes back
    /// to the pool.
    pub(super) fn ended(mut self) {
        self.c.take();
    }

    /// Rolls back (one round trip) and gives the connection back to the pool; should the
    /// rollback fail, the connection is closed instead.
    pub(super) async fn rollback(mut self) {
        if let Some(c) = self.c.take()
            && c.batch_execute("ROLLBACK").await.is_err()
        {
            drop(Object::take(c));
        }
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        if let Some(c) = self.c.take() {
            drop(Object::take(c));
        }
    }
}
