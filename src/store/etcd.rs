//! `EtcdStore`: the `Store` shared by every nameserver through etcd (feature `etcd`). The only
//! file that names etcd-client types.
//!
//! Keys, all under the configured prefix `P`:
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `P state` | the overlay (JSON); its `mod_revision` is the intent generation | permanent |
//! | `P audit/<g:020>-<i:04>` | audit record `i` of the commit based on generation `g`; the record's generation is the key's `mod_revision` | trimmed to `audit_retention` |
//! | `P members/<node>` | `{node_id, since}`: a node that joined and has not left cleanly | until the node leaves or is forgotten |
//! | `P nodes/<node>` | `{node_id, generation, updated}`: the generation it serves | under the node's lease |
//! | `P health/<node>` | probe target → health, as that node sees it (`health = "shared"`) | under the node's lease |
//!
//! A commit is one transaction: `if mod_revision(state) == expected then put state + audit
//! records`; the response's revision is the new generation. Followers read the whole prefix,
//! then watch it from the next revision; any break (error, cancel, compaction, lost leader)
//! re-reads everything, so compacted history never matters. All etcd I/O runs on this store's
//! own small runtime: the data plane and the writer never wait on etcd except through the
//! `Store` calls the writer makes off its thread (`spawn_blocking`), each bounded by `timeout`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, watch};

use super::{Cluster, Followed, HealthReport, Link, Node, SledStore, Store, StoreError, Stored};
use crate::config::{EtcdConfig, HealthMode};
use crate::model::{AuditRecord, Overlay};

/// Longest wait between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Deadline for reading the state at start-up (then the local cache serves).
const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
/// Audit keys read per request when scanning the log.
const AUDIT_PAGE: i64 = 500;

pub struct EtcdStore {
    shared: Arc<Shared>,
    /// Runs every etcd request and the follower, lease and cache tasks. `Option` so `Drop`
    /// can shut it down without blocking (a runtime may not be dropped inside another).
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.shared.prefix)
            .field("node_id", &self.shared.node_id)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What this node reports under its lease.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Report {
    node_id: String,
    generation: u64,
    updated: u64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Member {
    node_id: String,
    since: u64,
}

/// What the watch has told this node about the others.
#[derive(Debug, Default)]
struct Table {
    members: BTreeMap<String, Member>,
    nodes: BTreeMap<String, Report>,
    health: HashMap<String, HealthReport>,
}

struct Shared {
    /// One client per endpoint, used one at a time: `current` moves to the next endpoint on
    /// any failure. (etcd-client's balanced channel can stay broken once one member is down,
    /// etcdv3/etcd-client#39; the Go client pins one endpoint and rotates the same way.)
    clients: Vec<Client>,
    current: std::sync::atomic::AtomicUsize,
    prefix: String,
    node_id: String,
    lease_ttl: Duration,
    timeout: Duration,
    retention: usize,
    shared_health: bool,
    cache: SledStore,
    /// The latest state this node serves; changes only with the generation (`Cluster::served`).
    /// The cache and lease tasks follow it.
    served: watch::Sender<Stored>,
    /// This node's last health report (shared health).
    health: watch::Sender<HealthReport>,
    table: Mutex<Table>,
    connected: AtomicBool,
    last_contact_ms: AtomicU64,
    /// The lease of this node's keys (0 = none yet), for `leave`.
    lease: AtomicU64,
    commits: AtomicU64,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Sleeps `base` ± 50%, so restarted nodes do not reconnect in lock step.
async fn jittered(base: Duration) {
    let ms = base.as_millis() as u64;
    let ms = ms / 2 + fastrand::u64(0..=ms.max(1));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl Shared {
    fn client(&self) -> &Client {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len().max(1);
        &self.clients[i]
    }

    /// After a failure: the next request goes to the next endpoint.
    fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn contact(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.last_contact_ms
            .store(crate::clock::wall_ms(), Ordering::Relaxed);
    }

    fn lost(&self, what: &str, e: &dyn std::fmt::Display) {
        if self.connected.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e, "lost etcd ({what}); serving the last state, admin writes fail until it is back");
        } else {
            tracing::debug!(error = %e, "etcd still unavailable ({what})");
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with a deadline of `timeout`.
    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.bounded_by(self.timeout, f).await
    }

    async fn bounded_by<T>(
        &self,
        deadline: Duration,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(deadline, f).await {
            Ok(Ok(v)) => {
                self.contact();
                Ok(v)
            }
            Ok(Err(e)) => {
                self.rotate();
                Err(unavailable(e))
            }
            Err(_) => {
                self.rotate();
                Err(unavailable(format!(
                    "no answer from etcd within {deadline:?}"
                )))
            }
        }
    }

    async fn read_state(&self) -> Result<Stored, StoreError> {
        let mut kv = self.client().kv_client();
        // Short: a node restarting while etcd is down must serve its cache within 2 s.
        let resp = self
            .bounded_by(
                LOAD_TIMEOUT.min(self.timeout),
                kv.get(self.key("state"), None),
            )
            .await?;
        match resp.kvs().first() {
            None => Ok(Stored::default()),
            Some(kv) => Ok(Stored {
                overlay: decode_overlay(kv.value())?,
                generation: kv.mod_revision() as u64,
            }),
        }
    }

    async fn commit(
        &self,
        expected: u64,
        overlay: Vec<u8>,
        audit: Vec<Vec<u8>>,
    ) -> Result<u64, StoreError> {
        let state = self.key("state");
        let mut ops = vec![TxnOp::put(state.clone(), overlay, None)];
        for (i, record) in audit.into_iter().enumerate() {
            ops.push(TxnOp::put(
                self.key(&format!("audit/{expected:020}-{i:04}")),
                record,
                None,
            ));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                state.clone(),
                CompareOp::Equal,
                expected as i64,
            )])
            .and_then(ops)
            .or_else([TxnOp::get(state, None)]);
        let mut kv = self.client().kv_client();
        let resp = self.bounded(kv.txn(txn)).await?;
        if !resp.succeeded() {
            let actual = resp
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(g) => {
                        Some(g.kvs().first().map_or(0, |kv| kv.mod_revision()))
                    }
                    _ => None,
                })
                .unwrap_or(0);
            return Err(StoreError::Conflict {
                expected,
                actual: actual as u64,
            });
        }
        let generation = resp.header().map_or(0, |h| h.revision()) as u64;
        if self
            .commits
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(32)
        {
            self.trim().await;
        }
        Ok(generation)
    }

    /// Drops the oldest audit records beyond the retention. Best effort.
    async fn trim(&self) {
        let prefix = self.key("audit/");
        let mut kv = self.client().kv_client();
        let count = match self
            .bounded(kv.get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ))
            .await
        {
            Ok(r) => r.count().max(0) as usize,
            Err(_) => return,
        };
        let excess = count.saturating_sub(self.retention);
        if excess == 0 {
            return;
        }
        let oldest = self
            .bounded(
                kv.get(
                    prefix.clone(),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_sort(SortTarget::Key, SortOrder::Ascend)
                            .with_limit(excess as i64),
                    ),
                ),
            )
            .await;
        if let Ok(oldest) = oldest
            && let Some(last) = oldest.kvs().last()
        {
            let mut end = last.key().to_vec();
            end.push(0);
            let deleted = self
                .bounded(kv.delete(
                    prefix.as_bytes().to_vec(),
                    Some(etcd_client::DeleteOptions::new().with_range(end)),
                ))
                .await;
            if let Err(e) = deleted {
                tracing::warn!(error = %e, "cannot trim the audit log in etcd");
            }
        }
    }

    /// Audit records newest first (key order is commit order) that `keep` accepts, at most
    /// `limit`.
    async fn audit(
        &self,
        limit: usize,
        keep: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let prefix = self.key("audit/");
        let mut kv = self.client().kv_client();
        let mut records = Vec::new();
        let mut end: Option<Vec<u8>> = None;
        while records.len() < limit {
            let mut options = GetOptions::new()
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(AUDIT_PAGE);
            options = match &end {
                Some(end) => options.with_range(end.clone()),
                None => options.with_prefix(),
            };
            let resp = self.bounded(kv.get(prefix.clone(), Some(options))).await?;
            let kvs = resp.kvs();
            for kv in kvs {
                let record = decode_record(kv)?;
                if keep(&record) && records.len() < limit {
                    records.push(record);
                }
            }
            match kvs.last() {
                Some(last) if kvs.len() as i64 == AUDIT_PAGE => end = Some(last.key().to_vec()),
                _ => break,
            }
        }
        Ok(records)
    }

    /// The change feed from `after`, oldest first, at most `limit` (only `pool`'s if given),
    /// read forward in pages of `AUDIT_PAGE`. Keys are named by the generation a commit was
    /// based on and commits form a chain (each based on the one before), so the first record
    /// above `after` is in the commit under the greatest key based at or below `after`: one
    /// keys-only lookup finds it, then the scan reads only what the page returns (plus records
    /// `pool` filters out). A record's generation is its key's `mod_revision`.
    async fn changes_page(
        &self,
        after: u64,
        pool: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let prefix = self.key("audit/");
        let mut end = prefix.clone().into_bytes();
        // The prefix's range end: "audit/" -> "audit0".
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut kv = self.client().kv_client();
        let below = self
            .bounded(
                kv.get(
                    prefix.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(self.key(&format!("audit/{:020}", after.saturating_add(1))))
                            .with_sort(SortTarget::Key, SortOrder::Descend)
                            .with_keys_only()
                            .with_limit(1),
                    ),
                ),
            )
            .await?;
        let mut start: Vec<u8> = match below.kvs().first() {
            // `audit/<base>-<i>`: start at the first record of that commit.
            Some(found) => found
                .key()
                .iter()
                .copied()
                .take(prefix.len() + 20)
                .collect(),
            None => prefix.into_bytes(),
        };
        let mut records = Vec::new();
        while records.len() < limit {
            // Unfiltered, a page needs no more keys than it has room for (plus the records
            // at or below `after` in the first commit, found on the next round).
            let page = match pool {
                None => i64::try_from(limit - records.len())
                    .map_or(AUDIT_PAGE, |n| n.clamp(1, AUDIT_PAGE)),
                Some(_) => AUDIT_PAGE,
            };
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_sort(SortTarget::Key, SortOrder::Ascend)
                .with_limit(page);
            let resp = self.bounded(kv.get(start.clone(), Some(options))).await?;
            let kvs = resp.kvs();
            for kv in kvs {
                if kv.mod_revision() as u64 <= after || records.len() >= limit {
                    continue;
                }
                let record = decode_record(kv)?;
                if pool.is_none_or(|p| record.pool == p) {
                    records.push(record);
                }
            }
            match kvs.last() {
                Some(last) if kvs.len() as i64 == page => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(records)
    }

    /// A fresh read (through the quorum) of members and the nodes' reports.
    async fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let mut kv = self.client().kv_client();
        let resp = self
            .bounded(kv.get(self.key(""), Some(GetOptions::new().with_prefix())))
            .await?;
        let mut table = Table::default();
        for kv in resp.kvs() {
            let _ = self.apply_table(&mut table, kv.key(), Some(kv.value()));
        }
        Ok(node_list(&table))
    }

    /// Files one key of `members/`, `nodes/` or `health/` into `table` (None = deleted).
    /// True when the health a peer reports may have changed (its report, or its liveness).
    fn apply_table(&self, table: &mut Table, key: &[u8], value: Option<&[u8]>) -> bool {
        let Some(rest) = key.strip_prefix(self.prefix.as_bytes()) else {
            return false;
        };
        let rest = String::from_utf8_lossy(rest);
        if let Some(node) = rest.strip_prefix("members/") {
            match value.and_then(|v| serde_json::from_slice::<Member>(v).ok()) {
                Some(m) => table.members.insert(node.to_string(), m),
                None => table.members.remove(node),
            };
            false
        } else if let Some(node) = rest.strip_prefix("nodes/") {
            match value.and_then(|v| serde_json::from_slice::<Report>(v).ok()) {
                Some(r) => table.nodes.insert(node.to_string(), r).is_none(),
                None => table.nodes.remove(node).is_some(),
            }
        } else if let Some(node) = rest.strip_prefix("health/") {
            match value.and_then(|v| serde_json::from_slice::<HealthReport>(v).ok()) {
                Some(h) => table.health.insert(node.to_string(), h),
                None => table.health.remove(node),
            };
            true
        } else {
            false
        }
    }

    /// Reads everything under the prefix, then follows it with a watch until the watch breaks.
    async fn follow_once(&self, tx: &mpsc::Sender<Followed>) -> Result<(), StoreError> {
        let mut kv = self.client().kv_client();
        let resp = self
            .bounded(kv.get(self.key(""), Some(GetOptions::new().with_prefix())))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let state_key = self.key("state");
        let mut table = Table::default();
        let mut stored = Stored::default();
        for kv in resp.kvs() {
            if kv.key() == state_key.as_bytes() {
                stored = Stored {
                    overlay: decode_overlay(kv.value())?,
                    generation: kv.mod_revision() as u64,
                };
            } else {
                let _ = self.apply_table(&mut table, kv.key(), Some(kv.value()));
            }
        }
        *self.table() = table;
        let stopped = |_| unavailable("the writer stopped");
        tx.send(Followed::State(stored)).await.map_err(stopped)?;
        if self.shared_health {
            tx.send(Followed::PeerHealth).await.map_err(stopped)?;
        }

        let mut watch_client = self.client().watch_client();
        let mut stream = self
            .bounded(
                watch_client.watch(
                    self.key(""),
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                ),
            )
            .await?;
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(unavailable("the watch stream ended")),
                Err(e) => return Err(unavailable(e)),
            };
            if message.canceled() {
                return Err(unavailable(format!(
                    "the watch was cancelled ({}; compacted at revision {})",
                    message.cancel_reason(),
                    message.compact_revision()
                )));
            }
            self.contact();
            let mut newest: Option<Stored> = None;
            let mut peers_changed = false;
            {
                let mut table = self.table();
                for event in message.events() {
                    let Some(kv) = event.kv() else { continue };
                    let value = (event.event_type() == EventType::Put).then(|| kv.value());
                    if kv.key() == state_key.as_bytes() {
                        newest = Some(match value {
                            Some(v) => Stored {
                                overlay: decode_overlay(v)?,
                                generation: kv.mod_revision() as u64,
                            },
                            // Deleted by hand: no intent, at the deletion's revision.
                            None => Stored {
                                overlay: Overlay::default(),
                                generation: kv.mod_revision().max(revision) as u64,
                            },
                        });
                    } else {
                        peers_changed |= self.apply_table(&mut table, kv.key(), value);
                    }
                }
            }
            // One revision, one batch: a message holds whole revisions.
            if let Some(stored) = newest {
                tx.send(Followed::State(stored)).await.map_err(stopped)?;
            }
            if peers_changed && self.shared_health {
                tx.send(Followed::PeerHealth).await.map_err(stopped)?;
            }
        }
    }

    /// Holds this node's lease: registers it as a member, reports the generation it serves
    /// (and its health view) under the lease, renews it every third of the TTL.
    async fn lease_once(
        &self,
        served: &mut watch::Receiver<Stored>,
        health: &mut watch::Receiver<HealthReport>,
    ) -> Result<(), StoreError> {
        let ttl = self.lease_ttl.as_secs().max(2) as i64;
        let mut lease_client = self.client().lease_client();
        let lease = self.bounded(lease_client.grant(ttl, None)).await?.id();
        self.lease.store(lease as u64, Ordering::Relaxed);
        let member = Member {
            node_id: self.node_id.clone(),
            since: crate::clock::wall_secs(),
        };
        let mut kv = self.client().kv_client();
        self.bounded(kv.put(
            self.key(&format!("members/{}", self.node_id)),
            json(&member),
            None,
        ))
        .await?;
        let report = |generation: u64| Report {
            node_id: self.node_id.clone(),
            generation,
            updated: crate::clock::wall_secs(),
        };
        let put_report = |generation: u64| {
            let mut kv = self.client().kv_client();
            let key = self.key(&format!("nodes/{}", self.node_id));
            let value = json(&report(generation));
            async move {
                self.bounded(kv.put(key, value, Some(PutOptions::new().with_lease(lease))))
                    .await
            }
        };
        let put_health = |h: HealthReport| {
            let mut kv = self.client().kv_client();
            let key = self.key(&format!("health/{}", self.node_id));
            let value = json(&h);
            async move {
                self.bounded(kv.put(key, value, Some(PutOptions::new().with_lease(lease))))
                    .await
            }
        };
        let generation = served.borrow_and_update().generation;
        put_report(generation).await?;
        if self.shared_health {
            let h = health.borrow_and_update().clone();
            put_health(h).await?;
        }
        let (mut keeper, mut responses) = self.bounded(lease_client.keep_alive(lease)).await?;
        let mut renew = tokio::time::interval(self.lease_ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = served.changed() => {
                    changed.map_err(|_| unavailable("the writer stopped"))?;
                    let generation = served.borrow_and_update().generation;
                    put_report(generation).await?;
                }
                changed = health.changed(), if self.shared_health => {
                    changed.map_err(|_| unavailable("the writer stopped"))?;
                    let h = health.borrow_and_update().clone();
                    put_health(h).await?;
                }
                _ = renew.tick() => {
                    self.bounded(keeper.keep_alive()).await?;
                    match self.bounded(responses.message()).await? {
                        Some(r) if r.ttl() > 0 => {}
                        _ => return Err(unavailable("the lease expired")),
                    }
                }
            }
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode_overlay(bytes: &[u8]) -> Result<Overlay, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: "etcd".into(),
        detail: format!("the stored overlay does not decode: {e}"),
    })
}

fn decode_record(kv: &etcd_client::KeyValue) -> Result<AuditRecord, StoreError> {
    let mut record: AuditRecord =
        serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
            path: "etcd".into(),
            detail: format!(
                "audit record {} does not decode: {e}",
                String::from_utf8_lossy(kv.key())
            ),
        })?;
    record.generation = kv.mod_revision() as u64;
    Ok(record)
}

/// Members and live nodes, sorted by id: a member without a live report is gone.
fn node_list(table: &Table) -> Vec<Node> {
    let mut ids: Vec<&String> = table.members.keys().chain(table.nodes.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .map(|id| match table.nodes.get(id) {
            Some(r) => Node {
                node_id: id.clone(),
                generation: Some(r.generation),
                updated: r.updated,
            },
            None => Node {
                node_id: id.clone(),
                generation: None,
                updated: 0,
            },
        })
        .collect()
}

impl EtcdStore {
    /// Connects (lazily: an unreachable etcd is not an error here) and starts the tasks that
    /// keep the cache and this node's report. `cache` is the node's local sled store.
    pub fn open(
        config: &EtcdConfig,
        cache: SledStore,
        audit_retention: usize,
    ) -> Result<EtcdStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-etcd")
            .enable_all()
            .build()
            .map_err(unavailable)?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(2), config.timeout)
            .with_keep_alive_while_idle(true)
            // A member that lost its leader cancels our watch instead of going quiet.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| unavailable(format!("{}: {e}", p.display())))
            };
            let mut t =
                TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca_file)?));
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(t);
        }
        // Each client connects lazily: an etcd that is down now is not an error.
        let clients = config
            .endpoints
            .iter()
            .map(|e| {
                runtime
                    .block_on(Client::connect([e], Some(options.clone())))
                    .map_err(unavailable)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let initial = cache.cached()?.unwrap_or_default();
        let (served, _) = watch::channel(initial);
        let (health, _) = watch::channel(HealthReport::new());
        let shared = Arc::new(Shared {
            clients,
            current: std::sync::atomic::AtomicUsize::new(fastrand::usize(..)),
            prefix: config.prefix.clone(),
            node_id: config.node_id.clone(),
            lease_ttl: config.lease_ttl,
            timeout: config.timeout,
            retention: audit_retention.max(1),
            shared_health: config.health == HealthMode::Shared,
            cache,
            served,
            health,
            table: Mutex::new(Table::default()),
            connected: AtomicBool::new(false),
            last_contact_ms: AtomicU64::new(0),
            lease: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        });
        runtime.spawn(keep_cache(shared.clone()));
        runtime.spawn(keep_lease(shared.clone()));
        Ok(EtcdStore {
            shared,
            runtime: Some(runtime),
        })
    }

    /// Runs `f` on the store's runtime and waits for it (never on an async worker: the writer
    /// and the admin API call the store from `spawn_blocking`; start-up waits once).
    fn block<T: Send + 'static>(
        &self,
        f: impl FnOnce(
            Arc<Shared>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>,
    ) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(unavailable("the etcd client has stopped"));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.shared.clone());
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| unavailable("the etcd client has stopped"))?
    }
}

/// Writes each newly served state to the local cache (sled I/O off the runtime's thread).
async fn keep_cache(shared: Arc<Shared>) {
    let mut rx = shared.served.subscribe();
    while rx.changed().await.is_ok() {
        let stored = rx.borrow_and_update().clone();
        let s = shared.clone();
        let written = tokio::task::spawn_blocking(move || s.cache.cache_put(&stored)).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "cannot write the local state cache");
        }
    }
}

async fn keep_lease(shared: Arc<Shared>) {
    let mut generation_rx = shared.served.subscribe();
    let mut health_rx = shared.health.subscribe();
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = shared.lease_once(&mut generation_rx, &mut health_rx).await {
            shared.lost("lease", &e);
        }
        if started.elapsed() > shared.lease_ttl {
            backoff = Duration::from_millis(100);
        }
        jittered(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn keep_following(shared: Arc<Shared>, tx: mpsc::Sender<Followed>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        match shared.follow_once(&tx).await {
            Err(StoreError::Unavailable(e)) if e == "the writer stopped" => return,
            Err(e) => shared.lost("watch", &e),
            Ok(()) => {}
        }
        if started.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(100);
        }
        jittered(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Stored, StoreError> {
        match self.block(|s| Box::pin(async move { s.read_state().await })) {
            Ok(stored) => Ok(stored),
            Err(StoreError::Unavailable(why)) => match self.shared.cache.cached()? {
                Some(cached) => {
                    tracing::warn!(
                        error = %why,
                        generation = cached.generation,
                        "etcd is unavailable; serving the state cached locally until it is back"
                    );
                    Ok(cached)
                }
                None => Err(StoreError::Unavailable(format!(
                    "{why}; and no state is cached locally yet, so there is nothing safe to serve"
                ))),
            },
            Err(e) => Err(e),
        }
    }

    fn commit(
        &self,
        expected: u64,
        overlay: &Overlay,
        audit: Vec<AuditRecord>,
    ) -> Result<u64, StoreError> {
        let overlay = serde_json::to_vec(overlay).map_err(|e| StoreError::Io {
            path: "etcd".into(),
            detail: format!("cannot encode the overlay: {e}"),
        })?;
        let audit: Vec<Vec<u8>> = audit.iter().map(json).collect();
        self.block(move |s| Box::pin(async move { s.commit(expected, overlay, audit).await }))
    }

    fn audit(&self, pool: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let pool = pool.map(str::to_string);
        self.block(move |s| {
            Box::pin(async move {
                s.audit(limit, |r| pool.as_deref().is_none_or(|p| r.pool == p))
                    .await
            })
        })
    }

    fn changes_page(
        &self,
        after: u64,
        pool: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let pool = pool.map(str::to_string);
        self.block(move |s| {
            Box::pin(async move { s.changes_page(after, pool.as_deref(), limit).await })
        })
    }
}

impl Cluster for EtcdStore {
    fn follow(&self, tx: mpsc::Sender<Followed>) {
        if let Some(runtime) = &self.runtime {
            runtime.spawn(keep_following(self.shared.clone(), tx));
        }
    }

    fn served(&self, overlay: &Overlay, generation: u64) {
        // Health flips republish the same generation: nothing to cache or report then.
        self.shared.served.send_if_modified(|current| {
            if current.generation == generation {
                return false;
            }
            *current = Stored {
                overlay: overlay.clone(),
                generation,
            };
            true
        });
    }

    fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        self.block(|s| Box::pin(async move { s.nodes().await }))
    }

    fn synced(&self, generation: u64) -> bool {
        let table = self.shared.table();
        let nodes = node_list(&table);
        !nodes.is_empty()
            && nodes
                .iter()
                .all(|n| n.generation.is_some_and(|g| g >= generation))
    }

    fn forget(&self, node_id: &str) -> Result<bool, StoreError> {
        let node = node_id.to_string();
        self.block(move |s| {
            Box::pin(async move {
                let mut kv = s.client().kv_client();
                let member = s
                    .bounded(kv.delete(s.key(&format!("members/{node}")), None))
                    .await?;
                let report = s
                    .bounded(kv.delete(s.key(&format!("nodes/{node}")), None))
                    .await?;
                Ok(member.deleted() + report.deleted() > 0)
            })
        })
    }

    fn link(&self) -> Link {
        Link {
            connected: self.shared.connected.load(Ordering::Relaxed),
            last_contact_ms: self.shared.last_contact_ms.load(Ordering::Relaxed),
        }
    }

    fn report_health(&self, report: HealthReport) {
        if self.shared.shared_health {
            self.shared.health.send_if_modified(|current| {
                if *current == report {
                    return false;
                }
                *current = report;
                true
            });
        }
    }

    fn peer_health(&self) -> HashMap<String, HealthReport> {
        let table = self.shared.table();
        table
            .health
            .iter()
            .filter(|(node, _)| **node != self.shared.node_id && table.nodes.contains_key(*node))
            .map(|(node, h)| (node.clone(), h.clone()))
            .collect()
    }

    fn leave(&self) {
        let result = self.block(|s| {
            Box::pin(async move {
                let mut kv = s.client().kv_client();
                s.bounded(kv.delete(s.key(&format!("members/{}", s.node_id)), None))
                    .await?;
                let lease = s.lease.load(Ordering::Relaxed) as i64;
                if lease != 0 {
                    let mut leases = s.client().lease_client();
                    s.bounded(leases.revoke(lease)).await?;
                }
                Ok(())
            })
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not leave the etcd cluster cleanly; this node shows as gone until its lease expires and it is forgotten");
        }
    }
}
