//! Persistence of runtime intent (the `Overlay`) and the audit log, behind the `Store` trait.
//! The trait and its types live here; `SledStore` (in `store/sled.rs`) keeps them on local
//! disk, `EtcdStore` (in `store/etcd.rs`, feature `etcd`) shares them between nameservers.
//! Only this module names sled or etcd: nothing backend-specific crosses the trait.

#[cfg(feature = "etcd")]
mod etcd;
mod sled;

#[cfg(feature = "etcd")]
pub use self::etcd::EtcdStore;
pub use self::sled::SledStore;

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::model::{AuditRecord, Health, Overlay};

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

    /// Whether several nameservers share this store; then intent is never pruned locally.
    fn shared(&self) -> bool {
        false
    }
    /// Shared stores: sends every stored state (and peer health changes) to `tx`, for as long as the process
    /// runs, reconnecting by itself. Local stores have nothing to follow.
    fn follow(&self, _tx: mpsc::Sender<Followed>) {}
    /// This node now serves `stored` (called after every publish). Must not block.
    fn served(&self, overlay: &Overlay, generation: u64);
    /// Every known nameserver and the generation it serves (only this one for a local store).
    fn nodes(&self) -> Result<Vec<Node>, StoreError>;
    /// From what this node last heard, without I/O: does every known node serve at least
    /// `generation`? Always true for a local store.
    fn synced(&self, _generation: u64) -> bool {
        true
    }
    /// Forgets a member that is gone, so it no longer holds changes PENDING. Ok(false) when
    /// no such member exists.
    fn forget(&self, _node_id: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// The connection to a shared store (always connected for a local one).
    fn link(&self) -> Link {
        Link {
            connected: true,
            last_contact_ms: 0,
        }
    }
    /// Shared health: publishes this node's probe results. No-op unless health is shared.
    fn report_health(&self, _report: HealthReport) {}
    /// Shared health: every live node's last report, by node id.
    fn peer_health(&self) -> HashMap<String, HealthReport> {
        HashMap::new()
    }
    /// Leaves cleanly at shutdown (etcd: deletes this member and revokes its lease).
    fn leave(&self) {}
}
