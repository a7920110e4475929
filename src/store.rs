//! Persistence of runtime intent (the `Overlay`) and the audit log, behind the `Store` trait,
//! and membership in a group of nameservers sharing one store, behind the `Cluster` trait.
//! `SledStore` (in `store/sled.rs`) keeps intent on local disk and is no cluster;
//! `EtcdStore` (in `store/etcd.rs`, feature `etcd`) is both. `Backend` is what `app` opens;
//! `StoreView` is the admin API's read access; `merged_health` is the shared-health vote.
//! Only this module names sled or etcd: nothing backend-specific crosses the traits.

#[cfg(feature = "etcd")]
mod etcd;
mod sled;

#[cfg(feature = "etcd")]
pub use self::etcd::EtcdStore;
pub use self::sled::SledStore;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::model::{AuditRecord, Health, HealthMap, Overlay, ProbeKey};

/// What a store holds: the intent layer and the generation of the last commit (0 when new).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
    pub overlay: Overlay,
    pub generation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store.
    #[error("the state store {path} is in use by another process: {detail}")]
    Locked { path: String, detail: String },
    /// The store cannot be read; weir must not start with an empty layer silently.
    #[error(
        "the state store {path} is corrupt ({detail}); start with --reset-state to move it aside and begin empty"
    )]
    Corrupt { path: String, detail: String },
    /// The change was based on another generation than the stored one (If-Match).
    #[error("the state is at generation {actual}, the change was based on {expected}")]
    Conflict { expected: u64, actual: u64 },
    /// The file system holding the store is full: nothing was written.
    #[error("no space left on the state store {path} ({detail}); nothing was changed")]
    Full { path: String, detail: String },
    #[error("state store {path}: {detail}")]
    Io { path: String, detail: String },
    /// The shared store cannot be reached (or has no quorum): nothing was written.
    #[error("the shared state store is unavailable: {0}")]
    Unavailable(String),
}

/// One nameserver as the store knows it, for change status (`GET /v1/changes/{generation}`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    pub node_id: String,
    /// The generation it serves; None when it is a member whose lease expired (gone).
    pub generation: Option<u64>,
    /// When it last reported, Unix seconds (0 if never).
    pub updated: u64,
}

/// How the connection to a shared store is doing, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub connected: bool,
    /// Unix milliseconds of the last request a quorum answered (0 = never).
    pub last_contact_ms: u64,
}

/// What following a shared store brings the writer.
#[derive(Debug)]
pub enum Followed {
    /// The stored intent at a generation.
    State(Stored),
    /// Another node's health report changed (shared health): recompute the health served.
    PeerHealth,
}

/// Probe results by probe target ("ip:port/kind"), as one node sees them (shared health).
pub type HealthReport = HashMap<String, Health>;

/// A place to keep runtime intent. Designed so a shared backend (etcd, for several nameservers)
/// can implement it: every commit gets the next generation, a commit is conditional on the
/// generation it was based on, and `changes_since` lets a follower replay from a generation on.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The stored layer and generation (empty and 0 for a new store).
    fn load(&self) -> Result<Stored, StoreError>;
    /// Replaces the overlay and appends `audit` (their `generation` fields are set to the new
    /// generation) atomically, if and only if the stored generation is `expected`
    /// (else `Conflict`). When it returns Ok the change is durable. Returns the new generation,
    /// which is above `expected` (sled: `expected + 1`; etcd: the commit's revision).
    fn commit(
        &self,
        expected: u64,
        overlay: &Overlay,
        audit: Vec<AuditRecord>,
    ) -> Result<u64, StoreError>;
    /// Audit records, newest first, only `pool`'s if given, at most `limit`.
    fn audit(&self, pool: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// Audit records with a generation above `after`, oldest first: the change feed. Only
    /// `pool`'s if given, at most `limit`. Reads records lazily and stops at `limit`, so a
    /// small page of a long log costs a small page (issue 12).
    fn changes_page(
        &self,
        after: u64,
        pool: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Every audit record with a generation above `after`, oldest first.
    fn changes_since(&self, after: u64) -> Result<Vec<AuditRecord>, StoreError> {
        self.changes_page(after, None, usize::MAX)
    }

    /// Whether the store can take a commit now (sled: a working handle and free space; a store
    /// whose handles a failed write dropped is reopened here when it can be). Blocking.
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Membership in a group of nameservers sharing one store: following the shared intent,
/// saying what this node serves, who serves what, and shared health. A local store has no
/// cluster (`Backend::cluster` is None): every question here then has its local answer in the
/// caller (`StoreView::nodes`, the writer).
pub trait Cluster: Send + Sync + std::fmt::Debug {
    /// Sends every stored state (and peer health changes) to `tx`, for as long as the process
    /// runs, reconnecting by itself.
    fn follow(&self, tx: mpsc::Sender<Followed>);
    /// This node now serves `overlay` at `generation` (called after every publish). Must not
    /// block.
    fn served(&self, overlay: &Overlay, generation: u64);
    /// Every known nameserver and the generation it serves (a quorum read).
    fn nodes(&self) -> Result<Vec<Node>, StoreError>;
    /// From what this node last heard, without I/O: does every known node serve at least
    /// `generation`?
    fn synced(&self, generation: u64) -> bool;
    /// Forgets a member that is gone, so it no longer holds changes PENDING. Ok(false) when
    /// no such member exists. Blocking.
    fn forget(&self, node_id: &str) -> Result<bool, StoreError>;
    /// The connection to the shared store.
    fn link(&self) -> Link;
    /// Shared health: publishes this node's probe results (a no-op unless health is shared).
    fn report_health(&self, report: HealthReport);
    /// Shared health: every other live node's last report, by node id.
    fn peer_health(&self) -> HashMap<String, HealthReport>;
    /// Leaves cleanly at shutdown (etcd: deletes this member and revokes its lease). Blocking.
    fn leave(&self);
}

/// An opened store: where intent persists, and this node's membership when it is shared.
#[derive(Clone, Debug)]
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub cluster: Option<Arc<dyn Cluster>>,
}

impl Backend {
    /// A store only this node uses.
    pub fn local(store: Arc<dyn Store>) -> Self {
        Backend {
            store,
            cluster: None,
        }
    }

    /// A store shared by several nameservers, which is also their cluster.
    pub fn shared<S: Store + Cluster + 'static>(store: Arc<S>) -> Self {
        Backend {
            store: store.clone(),
            cluster: Some(store),
        }
    }
}

/// The admin API's access to the store: the audit log and which nameserver serves which
/// generation. Nothing here writes: intent and membership change through `StateEvent`s.
#[derive(Clone, Debug)]
pub struct StoreView(Backend);

impl StoreView {
    pub fn new(backend: Backend) -> Self {
        StoreView(backend)
    }

    /// Newest first, only `pool`'s if given, at most `limit`.
    pub fn read(&self, pool: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.0.store.audit(pool, limit)
    }

    /// The change feed: records after generation `after`, oldest first, only `pool`'s if
    /// given, at most `limit` (read lazily: only what is returned).
    pub fn since(
        &self,
        after: u64,
        pool: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.0.store.changes_page(after, pool, limit)
    }

    /// Every known nameserver and the generation it serves (a quorum read with a cluster);
    /// without one, this node alone, serving `served` (the generation it publishes).
    pub fn nodes(&self, served: u64) -> Result<Vec<Node>, StoreError> {
        match &self.0.cluster {
            Some(cluster) => cluster.nodes(),
            None => Ok(vec![Node {
                node_id: "local".into(),
                generation: Some(served),
                updated: crate::clock::wall_secs(),
            }]),
        }
    }

    /// Whether the store is shared by several nameservers.
    pub fn shared(&self) -> bool {
        self.0.cluster.is_some()
    }
}

/// How a probe is named between nameservers (shared health): its target and kind. Nodes
/// whose checks differ in path or expectations still vote on the same endpoint.
fn health_key(key: &ProbeKey) -> String {
    format!("{}/{:?}", key.target, key.check.kind).to_lowercase()
}

/// This node's view of every probe it runs: the last flip, or the check's `initial` health.
pub fn health_report(health: &HealthMap, served: &HashSet<ProbeKey>) -> HealthReport {
    served
        .iter()
        .map(|k| (health_key(k), crate::model::probe_health(health, k)))
        .collect()
}

/// Shared health: a probe counts as down only when a majority of the live nodes that report
/// on it (this one included) see it down, so one partitioned node cannot fail an endpoint
/// over for everyone. With no peers (local health) it is this node's own view.
pub fn merged_health(
    local: &HealthMap,
    served: &HashSet<ProbeKey>,
    peers: &HashMap<String, HealthReport>,
) -> HealthMap {
    if peers.is_empty() {
        return local.clone();
    }
    served
        .iter()
        .map(|key| {
            let mine = crate::model::probe_health(local, key);
            let name = health_key(key);
            let (mut voters, mut down) = (1, usize::from(mine == Health::Down));
            for report in peers.values() {
                if let Some(h) = report.get(&name) {
                    voters += 1;
                    down += usize::from(*h == Health::Down);
                }
            }
            let health = if down * 2 > voters {
                Health::Down
            } else {
                Health::Up
            };
            (key.clone(), health)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::model::{Check, CheckKind};

    fn probe(last: u8, initial: Health) -> ProbeKey {
        ProbeKey {
            target: format!("192.0.2.{last}:80").parse().unwrap(),
            check: Arc::new(Check {
                kind: CheckKind::Tcp,
                port: 80,
                path: "/".into(),
                host: None,
                expect: vec![(200, 399)],
                body_contains: None,
                tls_verify: true,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(2),
                rise: 1,
                fall: 1,
                initial,
            }),
        }
    }

    fn peers(reports: &[&[(&ProbeKey, Health)]]) -> HashMap<String, HealthReport> {
        reports
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let report = r.iter().map(|(k, h)| (health_key(k), *h)).collect();
                (format!("node-{i}"), report)
            })
            .collect()
    }

    #[test]
    fn without_peers_a_node_serves_its_own_view() {
        let a = probe(1, Health::Up);
        let local = HealthMap::from([(a.clone(), Health::Down)]);
        let served = HashSet::from([a.clone()]);
        assert_eq!(merged_health(&local, &served, &HashMap::new()), local);
    }

    #[test]
    fn a_probe_is_down_only_when_a_majority_of_its_voters_see_it_down() {
        let a = probe(1, Health::Up);
        let served = HashSet::from([a.clone()]);
        let down_here = HealthMap::from([(a.clone(), Health::Down)]);
        let up_here = HealthMap::new();
        let cases = [
            // (this node, peers' views, merged)
            (&down_here, vec![Health::Up], Health::Up), // 1 of 2: a tie is not a majority
            (&down_here, vec![Health::Down], Health::Down), // 2 of 2
            (&down_here, vec![Health::Down, Health::Up], Health::Down), // 2 of 3
            (&down_here, vec![Health::Up, Health::Up], Health::Up), // one partitioned node
            (&up_here, vec![Health::Down, Health::Down], Health::Down), // outvoted
        ];
        for (local, views, want) in cases {
            let reports: Vec<Vec<(&ProbeKey, Health)>> =
                views.iter().map(|h| vec![(&a, *h)]).collect();
            let reports: Vec<&[(&ProbeKey, Health)]> = reports.iter().map(Vec::as_slice).collect();
            let merged = merged_health(local, &served, &peers(&reports));
            assert_eq!(merged[&a], want, "local {local:?}, peers {views:?}");
        }
    }

    #[test]
    fn peers_that_do_not_probe_an_endpoint_do_not_vote_on_it() {
        let (a, b) = (probe(1, Health::Up), probe(2, Health::Up));
        let served = HashSet::from([a.clone()]);
        let local = HealthMap::from([(a.clone(), Health::Down)]);
        // Two peers report only on b: a is this node's alone, and it sees it down.
        let merged = merged_health(
            &local,
            &served,
            &peers(&[&[(&b, Health::Up)], &[(&b, Health::Up)]]),
        );
        assert_eq!(merged[&a], Health::Down);
    }

    #[test]
    fn a_probe_without_a_result_votes_with_its_initial_health() {
        let a = probe(1, Health::Down);
        let served = HashSet::from([a.clone()]);
        let report = health_report(&HealthMap::new(), &served);
        assert_eq!(report[&health_key(&a)], Health::Down);
        let merged = merged_health(&HealthMap::new(), &served, &peers(&[&[(&a, Health::Down)]]));
        assert_eq!(merged[&a], Health::Down);
    }
}
