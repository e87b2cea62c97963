//! The alias table (host → loaded deployment) and the one handle that swaps it atomically.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::site::Site;
use crate::model::protection::Protection;

/// An immutable snapshot of every routable host. A request reads one snapshot and keeps
/// it, so it is served wholly by one version whatever is swapped in meanwhile.
///
/// PERF: the hosts live in a persistent hash map (HAMT): a change copies O(log n) nodes and
/// shares the rest with the previous table, so a promote costs about the same at a million
/// hosts as at a thousand, and old snapshots held by requests in flight stay valid.
#[derive(Debug, Default)]
pub struct AliasTable {
    /// Increases with every swap; persisted, so it never goes backwards across restarts.
    pub revision: u64,
    hosts: imbl::HashMap<Box<str>, Arc<Site>>,
    /// Skew protection: by production deployment, the former production deployments its
    /// hosts fall back to for fingerprinted files it lacks, newest first.
    skew: imbl::HashMap<Box<str>, Arc<[Fallback]>>,
    /// Protected previews: by project id, the protection of projects that have one on.
    access: imbl::HashMap<Box<str>, Arc<Protection>>,
    /// Expired preview hosts, which answer 410 Gone.
    gone: imbl::HashSet<Box<str>>,
}

/// Every project's protection, replacing a table's (see [`crate::meta::AliasChange`]).
pub type AccessChange = Vec<(String, Protection)>;

/// What one swap changes: hosts routed (`Some`) or unrouted (`None`), production
/// deployments' fallbacks, every project's protection (when given), and hosts that expired
/// (410 Gone from now on).
#[derive(Debug, Default, Clone, Copy)]
pub struct TableChange<'a> {
    /// Hosts and where they route now.
    pub hosts: &'a [(String, Option<Arc<Site>>)],
    /// Fallback changes.
    pub skew: &'a [SkewChange],
    /// The protections, replacing the table's, when they changed.
    pub access: Option<&'a AccessChange>,
    /// Hosts that expired.
    pub expired: &'a [String],
}

/// A former production deployment fallen back to, and until when.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// Its site.
    pub site: Arc<Site>,
    /// When it stops being fallen back to.
    pub until: std::time::SystemTime,
    /// The same, in milliseconds since the epoch (for snapshots).
    pub until_ms: crate::model::Millis,
}

impl Fallback {
    /// A fallback to `site` until `until_ms` (milliseconds since the epoch).
    pub fn new(site: Arc<Site>, until_ms: crate::model::Millis) -> Self {
        Fallback {
            site,
            until: std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(until_ms).unwrap_or(0)),
            until_ms,
        }
    }
}

/// A change of a production deployment's fallbacks: `None` drops them.
pub type SkewChange = (String, Option<Arc<[Fallback]>>);

impl AliasTable {
    /// A table of `hosts` at `revision`. Hosts must already be normalised.
    pub fn new(revision: u64, hosts: impl IntoIterator<Item = (String, Arc<Site>)>) -> Self {
        AliasTable {
            revision,
            hosts: hosts
                .into_iter()
                .map(|(h, s)| (h.into_boxed_str(), s))
                .collect(),
            skew: imbl::HashMap::new(),
            access: imbl::HashMap::new(),
            gone: imbl::HashSet::new(),
        }
    }

    /// This table with the expired preview hosts `gone` (those not routed).
    pub fn with_gone(mut self, gone: &[String]) -> Self {
        for h in gone {
            if !self.hosts.contains_key(h.as_str()) {
                self.gone.insert(h.as_str().into());
            }
        }
        self
    }

    /// Whether a normalised host is an expired preview's (410 Gone).
    pub fn is_gone(&self, host: &str) -> bool {
        !self.gone.is_empty() && self.gone.contains(host)
    }

    /// This table with the protections of `access` (every project that has one on).
    pub fn with_access(mut self, access: Option<&AccessChange>) -> Self {
        if let Some(a) = access {
            self.access = access_map(a);
        }
        self
    }

    /// Whether some project is protected.
    pub fn has_access(&self) -> bool {
        !self.access.is_empty()
    }

    /// Whether a raw Host header value names a protected host (the memo serves none).
    pub fn guards(&self, raw_host: &str) -> bool {
        self.has_access()
            && super::host::normalize_host(raw_host).is_some_and(|h| {
                self.site(&h)
                    .is_some_and(|s| self.protection(s, &h).is_some())
            })
    }

    /// The protection a request to `host`, served by `site`, must pass, if any: the
    /// project's, on the deployment's preview host, and on every other host too when it
    /// covers production.
    pub fn protection(&self, site: &Site, host: &str) -> Option<&Protection> {
        // PERF: one emptiness check when no project is protected (the common case).
        if self.access.is_empty() {
            return None;
        }
        let p = self.access.get(&*site.project_id)?;
        (p.production || site.preview_host.as_deref() == Some(host)).then_some(&**p)
    }

    /// This table with the fallbacks of `skew` set (builders of whole tables use it).
    pub fn with_skew(mut self, skew: &[SkewChange]) -> Self {
        apply_skew(&mut self.skew, skew);
        self
    }

    /// The fallbacks of a production deployment's hosts (empty for any other).
    pub fn fallbacks(&self, deployment_id: &str) -> &[Fallback] {
        self.skew.get(deployment_id).map_or(&[], |f| f)
    }

    /// The site a normalised host routes to.
    pub fn site(&self, host: &str) -> Option<&Arc<Site>> {
        self.hosts.get(host)
    }

    /// Every host and its site.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Site>)> {
        self.hosts.iter().map(|(h, s)| (&**h, s))
    }

    /// The table as a routing snapshot (what edge nodes and the store receive).
    pub fn snapshot(&self) -> crate::model::snapshot::RouteSnapshot {
        use crate::model::snapshot::{SnapshotFallback, SnapshotRoute, SnapshotSkew};
        let routes = self
            .iter()
            .map(|(host, site)| SnapshotRoute {
                host: host.to_owned(),
                deployment_id: site.deployment_id.clone(),
                manifest: site.manifest,
            })
            .collect();
        let mut snapshot = crate::model::snapshot::RouteSnapshot::new(self.revision, routes);
        snapshot.skew = self
            .skew
            .iter()
            .map(|(id, fallbacks)| SnapshotSkew {
                deployment_id: id.to_string(),
                fallbacks: fallbacks
                    .iter()
                    .map(|f| SnapshotFallback {
                        deployment_id: f.site.deployment_id.clone(),
                        manifest: f.site.manifest,
                        until: f.until_ms,
                    })
                    .collect(),
            })
            .collect();
        snapshot
            .skew
            .sort_by(|a, b| a.deployment_id.cmp(&b.deployment_id));
        snapshot.access = self
            .access
            .iter()
            .map(|(id, p)| crate::model::snapshot::SnapshotAccess {
                project_id: id.to_string(),
                protection: (**p).clone(),
            })
            .collect();
        snapshot
            .access
            .sort_by(|a, b| a.project_id.cmp(&b.project_id));
        snapshot.gone = self.gone.iter().map(|h| h.to_string()).collect();
        snapshot.gone.sort();
        snapshot
    }

    /// The table's gauges in Prometheus text format (revision and size), for every role's
    /// `/metrics`.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP halo_alias_table_revision Revision of the alias table served.\n\
             # TYPE halo_alias_table_revision gauge\n\
             halo_alias_table_revision {}\n\
             # HELP halo_alias_table_hosts Hosts in the alias table.\n\
             # TYPE halo_alias_table_hosts gauge\n\
             halo_alias_table_hosts {}\n",
            self.revision,
            self.len()
        )
    }

    /// Number of routable hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host is routable.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// This table with `change` applied, at `revision`: a host with a site is routed to
    /// it, a host with `None` is no longer routed.
    pub fn with_changes(&self, revision: u64, change: &TableChange<'_>) -> Self {
        let mut hosts = self.hosts.clone();
        let mut gone = self.gone.clone();
        for (host, site) in change.hosts {
            match site {
                Some(site) => hosts.insert(host.as_str().into(), site.clone()),
                None => hosts.remove(host.as_str()),
            };
            // Routed again, or removed for another reason (its deployment deleted).
            gone.remove(host.as_str());
        }
        for host in change.expired {
            if !hosts.contains_key(host.as_str()) {
                gone.insert(host.as_str().into());
            }
        }
        let mut fallbacks = self.skew.clone();
        apply_skew(&mut fallbacks, change.skew);
        AliasTable {
            revision,
            hosts,
            skew: fallbacks,
            access: change
                .access
                .map_or_else(|| self.access.clone(), access_map),
            gone,
        }
    }
}

fn access_map(a: &AccessChange) -> imbl::HashMap<Box<str>, Arc<Protection>> {
    a.iter()
        .filter(|(_, p)| p.is_on())
        .map(|(id, p)| (id.as_str().into(), Arc::new(p.clone())))
        .collect()
}

fn apply_skew(map: &mut imbl::HashMap<Box<str>, Arc<[Fallback]>>, skew: &[SkewChange]) {
    for (id, fallbacks) in skew {
        match fallbacks {
            Some(f) if !f.is_empty() => map.insert(id.as_str().into(), f.clone()),
            _ => map.remove(id.as_str()),
        };
    }
}

/// Owns the current table. Readers `load` it once per request; writers swap in a whole new
/// table, so several hosts moved by one change move together.
#[derive(Debug, Default)]
pub struct TableHandle {
    current: ArcSwap<AliasTable>,
}

impl TableHandle {
    /// A handle serving `table`.
    pub fn new(table: AliasTable) -> Self {
        TableHandle {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// The current snapshot (cheap; no lock).
    pub fn load(&self) -> Guard<Arc<AliasTable>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`, for holding across awaits.
    pub fn snapshot(&self) -> Arc<AliasTable> {
        self.current.load_full()
    }

    /// Installs a whole table, whatever its revision (start-up, before serving).
    pub fn replace(&self, table: AliasTable) {
        self.current.store(Arc::new(table));
    }

    /// Installs a whole table if it is newer than the current one; returns whether it was.
    /// Edge nodes following the control plane use this, so they never go backwards.
    pub fn replace_if_newer(&self, table: AliasTable) -> bool {
        let table = Arc::new(table);
        let mut applied = false;
        self.current.rcu(|old| {
            applied = table.revision > old.revision;
            if applied { table.clone() } else { old.clone() }
        });
        applied
    }

    /// Applies `changes` as one swap to `revision`. A revision not newer than the current
    /// one is ignored, so the table never goes backwards. Returns whether it was applied.
    pub fn apply(&self, revision: u64, changes: &[(String, Option<Arc<Site>>)]) -> bool {
        self.apply_with_skew(revision, changes, &[])
    }

    /// [`TableHandle::apply`], with production deployments' fallbacks changed in the
    /// same swap.
    pub fn apply_with_skew(
        &self,
        revision: u64,
        changes: &[(String, Option<Arc<Site>>)],
        skew: &[SkewChange],
    ) -> bool {
        self.apply_change(
            revision,
            &TableChange {
                hosts: changes,
                skew,
                ..TableChange::default()
            },
        )
    }

    /// Applies `change` as one swap to `revision` (see [`TableHandle::apply`]).
    pub fn apply_change(&self, revision: u64, change: &TableChange<'_>) -> bool {
        let mut applied = false;
        self.current.rcu(|old| {
            if revision <= old.revision {
                applied = false;
                return old.clone();
            }
            applied = true;
            Arc::new(old.with_changes(revision, change))
        });
        if !applied {
            tracing::warn!(revision, "stale alias-table change ignored");
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Manifest;

    fn site(id: &str) -> Arc<Site> {
        let m = Manifest::new(id.into(), "prj".into(), "t".into(), Default::default());
        Arc::new(Site::from_new_manifest(m))
    }

    #[test]
    fn apply_swaps_all_hosts_at_once_and_never_goes_back() {
        let h = TableHandle::new(AliasTable::new(1, [("a.x".to_owned(), site("dpl_1"))]));
        let before = h.snapshot();
        let v2 = site("dpl_2");
        assert!(h.apply(
            2,
            &[("a.x".into(), Some(v2.clone())), ("b.x".into(), Some(v2))]
        ));
        let now = h.load();
        assert_eq!(now.revision, 2);
        assert_eq!(now.site("a.x").unwrap().deployment_id, "dpl_2");
        assert_eq!(now.site("b.x").unwrap().deployment_id, "dpl_2");
        // A reader holding the old snapshot still sees the old version, unchanged.
        assert_eq!(before.site("a.x").unwrap().deployment_id, "dpl_1");
        assert!(before.site("b.x").is_none());
        assert!(!h.apply(2, &[("a.x".into(), Some(site("dpl_3")))]));
        assert_eq!(h.load().site("a.x").unwrap().deployment_id, "dpl_2");
        assert!(h.apply(3, &[("b.x".into(), None)]));
        assert!(h.load().site("b.x").is_none() && h.load().site("a.x").is_some());
        assert!(!h.replace_if_newer(AliasTable::new(1, [("a.x".to_owned(), site("dpl_old"))])));
        assert_eq!(h.load().revision, 3);
        assert!(h.replace_if_newer(AliasTable::new(5, [("c.x".to_owned(), site("dpl_5"))])));
        assert_eq!((h.load().revision, h.load().len()), (5, 1));
    }

    #[test]
    fn fallbacks_travel_in_snapshots_and_swap_with_their_change() {
        let (old, new) = (site("dpl_old"), site("dpl_new"));
        let h = TableHandle::new(AliasTable::new(1, [("a.x".to_owned(), old.clone())]));
        let skew: Vec<SkewChange> = vec![
            ("dpl_old".into(), None),
            (
                "dpl_new".into(),
                Some(vec![Fallback::new(old.clone(), 1_234)].into()),
            ),
        ];
        assert!(h.apply_with_skew(2, &[("a.x".into(), Some(new))], &skew));
        let t = h.load();
        assert_eq!(t.fallbacks("dpl_new")[0].site.deployment_id, "dpl_old");
        assert!(t.fallbacks("dpl_old").is_empty());
        let snap = t.snapshot();
        let back = crate::model::snapshot::RouteSnapshot::from_bytes(&snap.to_bytes()).unwrap();
        assert_eq!(back.skew.len(), 1);
        assert_eq!(back.skew[0].deployment_id, "dpl_new");
        assert_eq!(
            (
                back.skew[0].fallbacks[0].deployment_id.as_str(),
                back.skew[0].fallbacks[0].until
            ),
            ("dpl_old", 1_234)
        );
        // A snapshot without fallbacks reads as before (no `skew` key).
        let plain = AliasTable::new(3, [("a.x".to_owned(), old)]).snapshot();
        assert!(
            !String::from_utf8(plain.to_bytes())
                .unwrap()
                .contains("skew")
        );
    }

    #[test]
    fn expired_hosts_are_gone_until_routed_again_or_deleted() {
        let h = TableHandle::new(AliasTable::new(1, [("p.x".to_owned(), site("dpl_1"))]));
        let expired = ["p.x".to_owned()];
        assert!(h.apply_change(
            2,
            &TableChange {
                hosts: &[("p.x".into(), None)],
                expired: &expired,
                ..TableChange::default()
            }
        ));
        assert!(h.load().is_gone("p.x") && h.load().site("p.x").is_none());
        let back =
            crate::model::snapshot::RouteSnapshot::from_bytes(&h.load().snapshot().to_bytes())
                .unwrap();
        assert_eq!(back.gone, ["p.x"]);
        // Another change leaves it gone; routing the host again ends it.
        assert!(h.apply(3, &[("q.x".into(), Some(site("dpl_2")))]));
        assert!(h.load().is_gone("p.x"));
        assert!(h.apply(4, &[("p.x".into(), Some(site("dpl_2")))]));
        assert!(!h.load().is_gone("p.x"));
        // A whole table says which hosts are gone, never a routed one.
        let t = AliasTable::new(5, [("q.x".to_owned(), site("dpl_2"))])
            .with_gone(&["p.x".into(), "q.x".into()]);
        assert!(t.is_gone("p.x") && !t.is_gone("q.x"));
    }
}
