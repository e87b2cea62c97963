//! Fault points for crash tests: with `HALO_FAULT_POINT=<name>` in its environment, the
//! process aborts (no unwinding, no cleanup: like SIGKILL) when it reaches the point of that
//! name. Unset, a point costs one load of a value read once.
//!
//! Points: `idempotency.after_effect` (a mutating request's effect has committed, its
//! response is not yet stored or sent); `build.before_ready` (a build's manifest is stored,
//! the deployment is not yet ready: another replica must finish it).

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process here if `name` is the armed fault point.
pub fn point(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var("HALO_FAULT_POINT").ok());
    if armed.as_deref() == Some(name) {
        tracing::error!(point = name, "fault point reached: aborting");
        std::process::abort();
    }
}
