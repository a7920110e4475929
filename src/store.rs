//! Persistence of runtime intent (the `Overlay`) and the audit log, behind the `Store` trait.
//! The trait and its types live here; `SledStore` (in `store/sled.rs`) keeps them on local
//! disk. Only this module names sled: nothing sled-specific crosses the trait.

mod sled;

pub use self::sled::SledStore;

use crate::model::{AuditRecord, Overlay};

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
    #[error("state store {path}: {detail}")]
    Io { path: String, detail: String },
}

/// A place to keep runtime intent. Designed so a shared backend (etcd, for several nameservers)
/// can implement it: every commit gets the next generation, a commit is conditional on the
/// generation it was based on, and `changes_since` lets a follower replay from a generation on.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The stored layer and generation (empty and 0 for a new store).
    fn load(&self) -> Result<Stored, StoreError>;
    /// Replaces the overlay and appends `audit` (their `generation` fields are set to the new
    /// generation) atomically, if and only if the stored generation is `expected`
    /// (else `Conflict`). When it returns Ok the change is durable on disk. Returns the new
    /// generation (`expected + 1`).
    fn commit(
        &self,
        expected: u64,
        overlay: &Overlay,
        audit: Vec<AuditRecord>,
    ) -> Result<u64, StoreError>;
    /// Audit records, newest first, only `pool`'s if given, at most `limit`.
    fn audit(&self, pool: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    /// Audit records with a generation above `after`, oldest first: the change feed.
    fn changes_since(&self, after: u64) -> Result<Vec<AuditRecord>, StoreError>;
}
