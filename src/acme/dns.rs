//! DNS-01 for the platform wildcard (`*.{domain}` and `{domain}`): the TXT record is set
//! and removed by an executable the operator names — `HOOK add|remove <fqdn> <value>`, the
//! shape of lego's exec provider and certbot's manual hooks — so any DNS provider works;
//! before the CA is asked to validate, the record is looked up until it is visible
//! (bounded), since providers take a while to publish.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

/// Longest a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `hook add|remove fqdn value`; an error names the hook's exit status and stderr.
pub async fn run_hook(hook: &Path, action: &str, fqdn: &str, value: &str) -> Result<(), String> {
    let run = tokio::process::Command::new(hook)
        .args([action, fqdn, value])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(HOOK_TIMEOUT, run)
        .await
        .map_err(|_| format!("dns hook {action} timed out after {HOOK_TIMEOUT:?}"))?
        .map_err(|e| format!("dns hook {}: {e}", hook.display()))?;
    if !out.status.success() {
        return Err(format!(
            "dns hook {action} {fqdn} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A resolver for propagation checks: the system's, or one name server (`ip:port`).
pub fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    // Every look-up asks again: a cached "not yet" must not hide the record once it is up.
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

/// Waits until `fqdn` has a TXT record `value`, for at most `timeout`.
pub async fn wait_for_txt(
    resolver: &TokioResolver,
    fqdn: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(found) = resolver.txt_lookup(fqdn).await
            && found.answers().iter().any(|r| match &r.data {
                RData::TXT(txt) => txt.txt_data.concat() == value.as_bytes(),
                _ => false,
            })
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the TXT record for {fqdn} was not visible after {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
