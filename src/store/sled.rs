//! `SledStore`: the `Store` kept on local disk in one sled database, and the corruption and
//! lock checks around it. This file is the only one that names sled types.
//!
//! Layout: tree `state` holds the overlay as JSON under `overlay` and the generation as a u64
//! big-endian under `generation`; tree `audit` holds one JSON record per key
//! (generation u64 BE, index u32 BE), so key order is chronological order. Beside sled's own
//! files, `weir-generation` holds the last generation known to be flushed (see `open`).
//!
//! Failing disks: a commit first checks the file system's free space (`RESERVE`) and refuses
//! with `StoreError::Full` before sled writes anything. If sled fails anyway (another process
//! took the space, an I/O error), sled has applied the change in memory and refuses every later
//! write (its "global error"): reads go on from its in-memory copy with the failed commit
//! hidden, and the store is reopened from disk once there is room again (`recover`, from the
//! next commit or `Store::check`), undoing the failed commit if it reached the disk.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Store, StoreError, Stored};
use crate::model::{AuditRecord, Overlay};

const STATE_TREE: &str = "state";
const AUDIT_TREE: &str = "audit";
const OVERLAY_KEY: &[u8] = b"overlay";
const GENERATION_KEY: &[u8] = b"generation";
/// Present when the store is a shared store's local cache (see `cache_put`).
const CACHED_KEY: &[u8] = b"cached";
/// Written after each flushed commit. sled treats any unreadable stretch of its log as a torn
/// write and silently recovers the prefix before it (random bytes over `db` open as an empty
/// store), so this file is how `open` notices that committed generations went missing.
const FLOOR_FILE: &str = "weir-generation";
const FLOOR_TEMP: &str = "weir-generation.tmp";
/// sled's default page cache is 1 GiB; the state store is kilobytes.
const CACHE_BYTES: u64 = 16 << 20;
/// Free space a commit leaves on the file system, beyond twice its own encoded size: two of
/// sled's 512 KiB log segments, so sled never meets ENOSPC half way through a flush.
const RESERVE: u64 = 1 << 20;

/// sled's handles on an open store.
struct Handles {
    db: sled::Db,
    /// Our own handle on sled's log file, to fsync it (see `sync_to_disk`).
    log_file: fs::File,
    state: sled::Tree,
    audit: sled::Tree,
}

/// Why the store's handles were dropped, and what `recover` must undo.
#[derive(Clone, Debug)]
struct Broken {
    why: String,
    full: bool,
    /// The state before the commit that failed: restored if that commit reached the disk.
    undo: Option<Undo>,
}

#[derive(Clone, Debug)]
struct Undo {
    generation: u64,
    overlay: Option<sled::IVec>,
}

pub struct SledStore {
    path: PathBuf,
    /// None after a write failed (see the module comment); `broken` says why.
    handles: RwLock<Option<Handles>>,
    broken: Mutex<Option<Broken>>,
    retention: usize,
    /// Free space a commit must leave (`RESERVE`; lower in tests that reach sled's own ENOSPC).
    reserve: AtomicU64,
    /// Commits run one at a time, so the floor file only ever moves forward.
    commit_lock: Mutex<()>,
}

// By hand: sled's `Debug` for a tree walks and prints every node.
impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// Why a commit transaction gave up without writing.
enum Abort {
    Conflict(u64),
    Corrupt(String),
}

/// Runs `f`, turning a sled panic (its recovery asserts in places) into `Corrupt`.
fn unpanicked<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(corrupt(
                path,
                format!("sled panicked while reading it: {why}"),
            ))
        }
    }
}

impl Handles {
    /// Opens sled at `path` and checks everything weir will read later: the overlay and
    /// generation decode, the generation is not behind the floor file, both trees iterate to
    /// their end, and every audit record decodes, at or below the stored generation.
    fn open(path: &Path) -> Result<(Handles, Stored), StoreError> {
        let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
        let db = match unpanicked(path, || Ok(config.open())) {
            Ok(Ok(db)) => db,
            // What sled says when its `conf` file does not parse or names another format.
            Ok(Err(sled::Error::Unsupported(why))) => return Err(corrupt(path, why)),
            Ok(Err(e)) => return Err(sled_error(path, e)),
            Err(e) => return Err(e),
        };
        // Read under sled's lock, so a store in use reports `Locked` first.
        let floor = read_floor(path)?;
        let state = db.open_tree(STATE_TREE).map_err(|e| sled_error(path, e))?;
        let audit = db.open_tree(AUDIT_TREE).map_err(|e| sled_error(path, e))?;
        let log_file = fs::File::open(path.join("db")).map_err(|e| io_error(path, e))?;
        // sled never syncs its directory: make the entries of a new store's files durable.
        fs::File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(path, e))?;
        let handles = Handles {
            db,
            log_file,
            state,
            audit,
        };
        // Decode now, so a bad store stops start-up instead of the first admin request.
        let stored = unpanicked(path, || handles.verify(path))?;
        if let Some(floor) = floor
            && stored.generation < floor
        {
            return Err(corrupt(
                path,
                format!(
                    "it holds generation {} but generation {floor} was committed; \
                     sled dropped log data it could not read",
                    stored.generation
                ),
            ));
        }
        Ok((handles, stored))
    }

    fn verify(&self, path: &Path) -> Result<Stored, StoreError> {
        let stored = self.load(path)?;
        // Later reads walk both ways and look keys up (audit pages newest first, the change
        // feed from a generation on, trims, commits): each path reaches other index nodes.
        for tree in [&self.state, &self.audit] {
            for entry in tree.iter().rev() {
                let (key, _) = entry.map_err(|e| sled_error(path, e))?;
                tree.get(&key).map_err(|e| sled_error(path, e))?;
            }
        }
        for entry in self.audit.iter() {
            let (key, value) = entry.map_err(|e| sled_error(path, e))?;
            let record = decode_record(path, &key, &value)?;
            let generation = key
                .get(..8)
                .filter(|_| key.len() == 12)
                .map(|g| u64::from_be_bytes(g.try_into().unwrap_or_default()));
            if generation != Some(record.generation) || record.generation > stored.generation {
                return Err(corrupt(
                    path,
                    format!(
                        "the audit record at key {key:02x?} (generation {}) does not belong \
                         to a stored generation (the store is at {})",
                        record.generation, stored.generation
                    ),
                ));
            }
        }
        Ok(stored)
    }

    fn load(&self, path: &Path) -> Result<Stored, StoreError> {
        let generation = self
            .state
            .get(GENERATION_KEY)
            .map_err(|e| sled_error(path, e))?;
        let overlay = self
            .state
            .get(OVERLAY_KEY)
            .map_err(|e| sled_error(path, e))?;
        match (generation, overlay) {
            (None, None) => Ok(Stored::default()),
            (Some(generation), Some(overlay)) => Ok(Stored {
                generation: decode_generation(&generation).map_err(|e| corrupt(path, e))?,
                overlay: serde_json::from_slice::<Overlay>(&overlay).map_err(|e| {
                    corrupt(path, format!("the stored overlay does not decode: {e}"))
                })?,
            }),
            // A commit writes both in one transaction, so one without the other is damage.
            _ => Err(corrupt(
                path,
                "the overlay and its generation are not stored together",
            )),
        }
    }

    /// Makes what `Db::flush` wrote durable. On Linux sled's flush ends in `sync_file_range`,
    /// which neither commits the log file's new length (the log grows by appending) nor
    /// flushes the drive's write cache, and sled never syncs the files in `blobs/` (where it
    /// puts nodes over ~128 KiB, e.g. a very large overlay). `fsync` does all of that; it acts
    /// on the file, not the descriptor, so our own handles reach what sled wrote.
    fn sync_to_disk(&self, path: &Path) -> std::io::Result<()> {
        self.log_file.sync_all()?;
        let blobs = path.join("blobs");
        let mut any = false;
        for entry in fs::read_dir(&blobs)? {
            any = true;
            match fs::File::open(entry?.path()) {
                Ok(blob) => blob.sync_all()?,
                // sled removes blobs it no longer needs; that race is harmless.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if any {
            fs::File::open(&blobs)?.sync_all()?;
        }
        Ok(())
    }

    /// Flush and fsync: what a commit needs before it is acknowledged.
    fn persist(&self, path: &Path) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| sled_error(path, e))?;
        self.sync_to_disk(path)
            .map_err(|e| storage_error(path, "fsync failed", &e))
    }
}

impl SledStore {
    /// Opens (creating if missing) the store at `path`. Keeps at most `audit_retention` audit
    /// records (oldest dropped after each commit; a retention of 0 is treated as 1).
    ///
    /// Fails fast with `Locked` if another process (or another `SledStore` in this process)
    /// holds the store: sled takes a non-blocking `flock` on `<path>/db`. Fails with `Corrupt`
    /// if sled cannot read its files, if anything stored (state or audit record) does not
    /// decode, or if the store holds an older generation than one that was acknowledged.
    pub fn open(path: &Path, audit_retention: usize) -> Result<SledStore, StoreError> {
        let (handles, _) = Handles::open(path)?;
        Ok(SledStore {
            path: path.to_path_buf(),
            handles: RwLock::new(Some(handles)),
            broken: Mutex::new(None),
            retention: audit_retention.max(1),
            reserve: AtomicU64::new(RESERVE),
            commit_lock: Mutex::new(()),
        })
    }

    /// Runs `f` on the open handles, or says why there are none.
    fn with<T>(&self, f: impl FnOnce(&Handles) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let handles = self.handles.read().unwrap_or_else(PoisonError::into_inner);
        match handles.as_ref() {
            // A damaged page found late is `Corrupt` for that read, never a crash.
            Some(handles) => unpanicked(&self.path, || f(handles)),
            None => Err(self.broken_error()),
        }
    }

    fn broken_error(&self) -> StoreError {
        let broken = self.broken.lock().unwrap_or_else(PoisonError::into_inner);
        let (why, full) = broken
            .as_ref()
            .map_or(("closed".to_string(), false), |b| (b.why.clone(), b.full));
        let detail = format!("{why}; the store is reopened before the next change");
        if full {
            StoreError::Full {
                path: self.path.display().to_string(),
                detail,
            }
        } else {
            io_error(&self.path, detail)
        }
    }

    /// After a failed write: remembers what to undo. sled refuses every write after one
    /// failed, but still reads: until `recover` reopens it, reads go on from its in-memory
    /// copy, hiding the failed commit (`durable`). Called with the commit lock held.
    fn fail(&self, error: &StoreError, undo: Option<Undo>) {
        let full = matches!(error, StoreError::Full { .. });
        tracing::error!(path = %self.path.display(), %error, "the state store failed; it is reopened before the next change");
        let mut broken = self.broken.lock().unwrap_or_else(PoisonError::into_inner);
        // A second failure before recovery keeps the first undo: that is the durable state.
        let undo = broken.as_ref().and_then(|b| b.undo.clone()).or(undo);
        *broken = Some(Broken {
            why: error.to_string(),
            full,
            undo,
        });
    }

    /// While a failed commit is not undone: the generation and overlay it would have replaced.
    fn durable(&self) -> Option<Undo> {
        self.broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|b| b.undo.clone())
    }

    /// Reopens a store after a failed write, undoing a failed commit that reached the disk
    /// after all. A no-op while nothing failed. Called with the commit lock held, and only
    /// once the disk has room (`ensure_space`): until a reopen succeeds reads fail.
    fn recover(&self) -> Result<(), StoreError> {
        if self
            .broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            return Ok(());
        }
        let path = &self.path;
        let undo = self.durable();
        // sled's lock is per open file: the old handles must go before the store reopens.
        *self.handles.write().unwrap_or_else(PoisonError::into_inner) = None;
        let (handles, stored) = Handles::open(path)?;
        if let Some(undo) = undo
            && stored.generation != undo.generation
        {
            if stored.generation < undo.generation {
                return Err(corrupt(
                    path,
                    format!(
                        "it reopened at generation {} after generation {} was committed",
                        stored.generation, undo.generation
                    ),
                ));
            }
            // The failed commit (or part of a batch after it) is on disk: take it back, so
            // what was refused to the client never serves.
            let mut state = sled::Batch::default();
            match &undo.overlay {
                Some(overlay) => state.insert(OVERLAY_KEY, overlay.clone()),
                None => state.remove(OVERLAY_KEY),
            }
            if undo.generation == 0 {
                state.remove(GENERATION_KEY);
            } else {
                state.insert(GENERATION_KEY, &undo.generation.to_be_bytes()[..]);
            }
            let mut audit = sled::Batch::default();
            for key in handles
                .audit
                .range(audit_key(undo.generation + 1, 0)..)
                .keys()
            {
                audit.remove(key.map_err(|e| sled_error(path, e))?);
            }
            let applied = (&handles.state, &handles.audit).transaction(|(s, a)| {
                s.apply_batch(&state)?;
                a.apply_batch(&audit)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            });
            applied.map_err(|e| match e {
                TransactionError::Storage(e) => sled_error(path, e),
                TransactionError::Abort(()) => io_error(path, "the undo transaction aborted"),
            })?;
            handles.persist(path)?;
            tracing::warn!(
                path = %path.display(),
                from = stored.generation,
                to = undo.generation,
                "a failed commit had reached the disk; it was undone"
            );
        }
        *self.handles.write().unwrap_or_else(PoisonError::into_inner) = Some(handles);
        *self.broken.lock().unwrap_or_else(PoisonError::into_inner) = None;
        tracing::info!(path = %path.display(), "the state store was reopened");
        Ok(())
    }

    /// `Full` unless the file system holding the store has `RESERVE` plus twice `size`
    /// bytes free.
    fn ensure_space(&self, size: u64) -> Result<(), StoreError> {
        let free = free_bytes(&self.path).map_err(|e| io_error(&self.path, e))?;
        let needed = self
            .reserve
            .load(Ordering::Relaxed)
            .saturating_add(size.saturating_mul(2));
        if free < needed {
            return Err(StoreError::Full {
                path: self.path.display().to_string(),
                detail: format!("{free} bytes free, a change needs {needed}"),
            });
        }
        Ok(())
    }

    #[cfg(test)]
    fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Moves a (corrupt or unwanted) store aside to `<path>.reset-<unix seconds>` and returns
    /// the new location; Ok(None) if nothing was there. Refuses with `Locked` while a process
    /// holds the store, so a running weir never has its store moved from under it.
    pub fn reset(path: &Path) -> Result<Option<PathBuf>, StoreError> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path, e)),
            Ok(_) => {}
        }
        ensure_unlocked(path)?;
        let seconds = crate::clock::wall_secs();
        // Rebuilt from components so a trailing `/` does not put the new name inside `path`.
        let base: PathBuf = path.components().collect();
        let mut target = aside_name(&base, &format!(".reset-{seconds}"));
        let mut n = 1;
        while fs::symlink_metadata(&target).is_ok() {
            target = aside_name(&base, &format!(".reset-{seconds}-{n}"));
            n += 1;
        }
        fs::rename(path, &target).map_err(|e| io_error(path, e))?;
        Ok(Some(target))
    }

    /// As a shared store's local cache: replaces the overlay and generation with `stored`
    /// (the generation may go down if the shared store was rebuilt) and marks the store as a
    /// cache. Flushed, not fsynced: losing the last entries in a crash only makes a restart
    /// without etcd serve an older state, which the next watch event corrects.
    pub fn cache_put(&self, stored: &Stored) -> Result<(), StoreError> {
        let path = &self.path;
        let overlay = serde_json::to_vec(&stored.overlay)
            .map_err(|e| io_error(path, format!("cannot encode the overlay: {e}")))?;
        let _serial = self
            .commit_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.ensure_space(overlay.len() as u64)?;
        self.recover()?;
        let mut batch = sled::Batch::default();
        batch.insert(OVERLAY_KEY, overlay);
        batch.insert(GENERATION_KEY, &stored.generation.to_be_bytes()[..]);
        batch.insert(CACHED_KEY, &b"1"[..]);
        let written = self.with(|h| {
            h.state
                .apply_batch(batch)
                .map_err(|e| sled_error(path, e))?;
            h.db.flush().map_err(|e| sled_error(path, e))?;
            Ok(())
        });
        if let Err(e) = &written {
            // A cache has nothing to undo: the next `cache_put` overwrites it whole.
            self.fail(e, None);
        }
        written
    }

    /// The cached state, if this store has ever been written as a cache (`cache_put`).
    pub fn cached(&self) -> Result<Option<Stored>, StoreError> {
        let marked = self.with(|h| {
            h.state
                .contains_key(CACHED_KEY)
                .map_err(|e| sled_error(&self.path, e))
        })?;
        if marked {
            self.load().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Drops audit records beyond the retention, oldest first. Not flushed on its own: if
    /// it is lost in a crash the next commit trims again.
    fn trim(&self, handles: &Handles) -> Result<(), sled::Error> {
        let stale = handles
            .audit
            .iter()
            .keys()
            .rev()
            .skip(self.retention)
            .collect::<Result<Vec<_>, _>>()?;
        for key in stale {
            handles.audit.remove(key)?;
        }
        Ok(())
    }

    /// Records that `generation` is on disk. Best effort: the commit is already durable, and
    /// a floor that lags behind only weakens the check in `open`. The rename makes the update
    /// atomic, and the fsync before it keeps a crash from leaving an empty file behind.
    fn write_floor(&self, generation: u64) {
        let temp = self.path.join(FLOOR_TEMP);
        let written = fs::File::create(&temp)
            .and_then(|mut file| {
                file.write_all(format!("{generation}\n").as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temp, self.path.join(FLOOR_FILE)));
        if let Err(e) = written {
            let path = self.path.display();
            tracing::warn!(%path, error = %e, "cannot record the committed generation");
        }
    }

    /// The transaction of `commit`, on open handles.
    fn commit_on(
        &self,
        h: &Handles,
        expected: u64,
        generation: u64,
        overlay_json: &[u8],
        records: &[([u8; 12], Vec<u8>)],
    ) -> Result<(), StoreError> {
        let path = &self.path;
        // sled may run this closure more than once; it only reads its captures.
        let outcome = (&h.state, &h.audit).transaction(|(state, audit)| {
            let actual = match state.get(GENERATION_KEY)? {
                None => 0,
                Some(bytes) => decode_generation(&bytes)
                    .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e)))?,
            };
            if actual != expected {
                return Err(ConflictableTransactionError::Abort(Abort::Conflict(actual)));
            }
            state.insert(OVERLAY_KEY, overlay_json)?;
            state.insert(GENERATION_KEY, &generation.to_be_bytes()[..])?;
            for (key, value) in records {
                audit.insert(&key[..], value.as_slice())?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(Abort::Conflict(actual))) => {
                Err(StoreError::Conflict { expected, actual })
            }
            Err(TransactionError::Abort(Abort::Corrupt(detail))) => Err(corrupt(path, detail)),
            Err(TransactionError::Storage(e)) => Err(sled_error(path, e)),
        }
    }
}

impl Store for SledStore {
    fn load(&self) -> Result<Stored, StoreError> {
        if let Some(durable) = self.durable() {
            let overlay = match &durable.overlay {
                Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
                    corrupt(
                        &self.path,
                        format!("the stored overlay does not decode: {e}"),
                    )
                })?,
                None => Overlay::default(),
            };
            return Ok(Stored {
                overlay,
                generation: durable.generation,
            });
        }
        self.with(|h| h.load(&self.path))
    }

    fn commit(
        &self,
        expected: u64,
        overlay: &Overlay,
        audit: Vec<AuditRecord>,
    ) -> Result<u64, StoreError> {
        let path = &self.path;
        let _serial = self
            .commit_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = expected
            .checked_add(1)
            .ok_or_else(|| io_error(path, "the generation cannot go past u64::MAX"))?;
        let overlay_json = serde_json::to_vec(overlay)
            .map_err(|e| io_error(path, format!("cannot encode the overlay: {e}")))?;
        let mut records = Vec::with_capacity(audit.len());
        let mut size = overlay_json.len() as u64;
        for (index, mut record) in audit.into_iter().enumerate() {
            record.generation = generation;
            let index = u32::try_from(index)
                .map_err(|_| io_error(path, "more than u32::MAX audit records in one commit"))?;
            let value = serde_json::to_vec(&record)
                .map_err(|e| io_error(path, format!("cannot encode an audit record: {e}")))?;
            size += value.len() as u64;
            records.push((audit_key(generation, index), value));
        }
        // Before sled writes anything: a refusal here changes nothing, in memory or on disk.
        self.ensure_space(size)?;
        self.recover()?;

        let handles = self.handles.read().unwrap_or_else(PoisonError::into_inner);
        let Some(h) = handles.as_ref() else {
            return Err(self.broken_error());
        };
        // What to restore if this commit fails after sled applied it in memory.
        let undo = h
            .state
            .get(OVERLAY_KEY)
            .map(|overlay| Undo {
                generation: expected,
                overlay,
            })
            .map_err(|e| sled_error(path, e))?;
        // Acknowledged means on disk: without the flush sled writes out only every 500 ms.
        // If it or the fsync fails, the change is applied in memory but may not survive a
        // crash: the caller gets an error, and the store is reopened (and the change undone)
        // before the next commit.
        let written = self
            .commit_on(h, expected, generation, &overlay_json, &records)
            .and_then(|()| h.persist(path));
        match written {
            Ok(()) => {}
            Err(e @ (StoreError::Conflict { .. } | StoreError::Corrupt { .. })) => return Err(e),
            Err(e) => {
                drop(handles);
                self.fail(&e, Some(undo));
                return Err(e);
            }
        }
        self.write_floor(generation);
        if let Err(e) = self.trim(h) {
            tracing::warn!(path = %path.display(), error = %e, "cannot trim the audit log");
        }
        Ok(generation)
    }

    fn audit(&self, pool: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let last = self.durable().map_or(u64::MAX, |d| d.generation);
        self.with(|h| {
            let mut records = Vec::new();
            for entry in h.audit.range(..audit_key(last.saturating_add(1), 0)).rev() {
                if records.len() >= limit {
                    break;
                }
                let (key, value) = entry.map_err(|e| sled_error(&self.path, e))?;
                let record = decode_record(&self.path, &key, &value)?;
                if pool.is_none_or(|pool| record.pool == pool) {
                    records.push(record);
                }
            }
            Ok(records)
        })
    }

    fn changes_page(
        &self,
        after: u64,
        pool: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        // Records past what is durable (a commit that failed half-way) are never shown.
        let last = self.durable().map_or(u64::MAX, |d| d.generation);
        // Lazily, one record at a time: nothing past the page is read or decoded.
        self.with(|h| {
            let mut records = Vec::new();
            for entry in h.audit.range(audit_key(first, 0)..) {
                if records.len() >= limit {
                    break;
                }
                let (key, value) = entry.map_err(|e| sled_error(&self.path, e))?;
                let record = decode_record(&self.path, &key, &value)?;
                // Keys are in generation order: everything after this is past it too.
                if record.generation > last {
                    break;
                }
                if pool.is_none_or(|pool| record.pool == pool) {
                    records.push(record);
                }
            }
            Ok(records)
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        let _serial = self
            .commit_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.ensure_space(0)?;
        self.recover()
    }
}

/// Bytes available to unprivileged writers on the file system holding `path` (or its parent,
/// before the store's folder exists).
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let target = if path.exists() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let c_path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs reads a NUL-terminated path and writes one struct through a valid pointer.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn decode_record(path: &Path, key: &[u8], value: &[u8]) -> Result<AuditRecord, StoreError> {
    serde_json::from_slice(value).map_err(|e| {
        corrupt(
            path,
            format!("the audit record at key {key:02x?} does not decode: {e}"),
        )
    })
}

fn audit_key(generation: u64, index: u32) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&generation.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

fn decode_generation(bytes: &[u8]) -> Result<u64, String> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("the stored generation has {} bytes, not 8", bytes.len()))
}

/// The last generation a commit flushed, if this store has ever committed.
fn read_floor(path: &Path) -> Result<Option<u64>, StoreError> {
    let file = path.join(FLOOR_FILE);
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&file, e)),
    };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            corrupt(
                path,
                format!("{} does not hold a generation", file.display()),
            )
        })
}

/// `Locked` if a process holds sled's lock on `<path>/db`. sled takes it with `flock`, which
/// conflicts between open files even inside one process, so this sees our own stores too.
fn ensure_unlocked(path: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd;

    let file = match fs::File::open(path.join("db")) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path, e)),
    };
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call; closing
    // `file` at the end of this function releases the lock again.
    let held = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if held == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == ErrorKind::WouldBlock {
        Err(StoreError::Locked {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    } else {
        Err(io_error(path, e))
    }
}

fn aside_name(base: &Path, suffix: &str) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn corrupt(path: &Path, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn io_error(path: &Path, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn sled_error(path: &Path, error: sled::Error) -> StoreError {
    match error {
        sled::Error::Corruption { at, .. } => {
            corrupt(path, format!("sled found damaged data (at {at:?})"))
        }
        // sled 0.34.7 (config.rs `try_lock`) reports a held lock as a plain `Io` error of kind
        // `Other` with this text; the test `open_held_by_another_process_is_locked_at_once`
        // pins it.
        sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.display().to_string(),
                detail: e.to_string(),
            }
        }
        sled::Error::Io(e) => storage_error(path, "sled failed", &e),
        other => io_error(path, other),
    }
}

/// An I/O error, as `Full` when the file system is out of space (or quota).
fn storage_error(path: &Path, what: &str, e: &std::io::Error) -> StoreError {
    if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || e.kind() == ErrorKind::StorageFull
    {
        StoreError::Full {
            path: path.display().to_string(),
            detail: format!("{what}: {e}"),
        }
    } else {
        io_error(path, format!("{what}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const POOL: &str = "app.example.com.";

    fn pool() -> crate::model::PoolId {
        crate::model::PoolId::parse(POOL).unwrap()
    }

    fn record(pool: &str, subject: &str) -> AuditRecord {
        AuditRecord {
            generation: 0,
            time: 1_700_000_000,
            actor: "local".to_string(),
            source: "127.0.0.1".to_string(),
            action: "set-group-weight".to_string(),
            pool: pool.to_string(),
            subject: subject.to_string(),
            before: serde_json::json!(10),
            after: serde_json::json!(20),
            reason: "test".to_string(),
        }
    }

    fn overlay(weight: u32) -> Overlay {
        let mut overlay = Overlay::default();
        overlay
            .group_weights
            .entry(pool())
            .or_default()
            .insert("blue".to_string(), weight);
        overlay
    }

    /// A temp dir and the store path inside it (not created: `open` creates it).
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        (dir, path)
    }

    /// Waits until sled's background threads have closed `db` (they hold its lock a little
    /// past the drop), so that nothing writes over the damage a test makes.
    fn released(db: &Path) {
        use std::os::fd::AsRawFd;
        let file = fs::File::open(db).unwrap();
        for _ in 0..500 {
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                // SAFETY: as above.
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{} stayed locked", db.display());
    }

    /// Drops `store` and waits until sled has let go of it, as a process exit would.
    fn close(store: SledStore, path: &Path) {
        drop(store);
        released(&path.join("db"));
    }

    /// Commits `n` generations on top of what is there, one record each.
    fn commit_n(store: &SledStore, n: u64) -> u64 {
        let mut generation = store.load().unwrap().generation;
        for _ in 0..n {
            let subject = format!("change {}", generation + 1);
            generation = store
                .commit(
                    generation,
                    &overlay(generation as u32),
                    vec![record(POOL, &subject)],
                )
                .unwrap();
        }
        generation
    }

    fn generations(records: &[AuditRecord]) -> Vec<u64> {
        records.iter().map(|r| r.generation).collect()
    }

    fn assert_corrupt(result: Result<SledStore, StoreError>, path: &Path) -> String {
        match result {
            Err(StoreError::Corrupt { path: p, detail }) => {
                assert_eq!(p, path.display().to_string());
                detail
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    fn assert_locked(error: &StoreError, path: &Path) {
        let StoreError::Locked { path: p, .. } = error else {
            panic!("expected Locked, got {error:?}");
        };
        assert_eq!(*p, path.display().to_string());
    }

    /// Overwrites `file` from `from` (clamped to its length) to its end with seeded noise.
    fn scribble(file: &Path, from: usize, seed: u64) {
        let mut bytes = fs::read(file).unwrap();
        let from = from.min(bytes.len());
        let mut rng = fastrand::Rng::with_seed(seed);
        rng.fill(&mut bytes[from..]);
        fs::write(file, bytes).unwrap();
    }

    #[test]
    fn a_new_store_loads_empty() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 10).unwrap();
        assert_eq!(store.load().unwrap(), Stored::default());
        assert!(store.audit(None, 10).unwrap().is_empty());
        assert!(store.changes_since(0).unwrap().is_empty());
    }

    #[test]
    fn commit_then_load_round_trips_and_stamps_the_generation() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 10).unwrap();
        let records = vec![record(POOL, "group blue"), record(POOL, "group green")];
        assert_eq!(store.commit(0, &overlay(40), records.clone()).unwrap(), 1);
        assert_eq!(
            store.load().unwrap(),
            Stored {
                overlay: overlay(40),
                generation: 1
            }
        );
        let stamped: Vec<AuditRecord> = records
            .into_iter()
            .map(|r| AuditRecord { generation: 1, ..r })
            .collect();
        assert_eq!(store.changes_since(0).unwrap(), stamped);
    }

    #[test]
    fn each_commit_adds_one_to_the_generation() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 100).unwrap();
        for expected in 0..5 {
            assert_eq!(
                store.commit(expected, &overlay(1), Vec::new()).unwrap(),
                expected + 1
            );
        }
        assert_eq!(store.load().unwrap().generation, 5);
    }

    #[test]
    fn a_stale_expected_generation_conflicts_and_writes_nothing() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 10).unwrap();
        store
            .commit(0, &overlay(10), vec![record(POOL, "first")])
            .unwrap();
        store
            .commit(1, &overlay(20), vec![record(POOL, "second")])
            .unwrap();
        let before = (store.load().unwrap(), store.audit(None, 10).unwrap());
        for stale in [0, 1, 3] {
            let error = store
                .commit(stale, &overlay(99), vec![record(POOL, "lost")])
                .unwrap_err();
            assert!(
                matches!(error, StoreError::Conflict { expected, actual: 2 } if expected == stale),
                "{error:?}"
            );
        }
        assert_eq!(
            (store.load().unwrap(), store.audit(None, 10).unwrap()),
            before
        );
    }

    #[test]
    fn audit_is_newest_first_filtered_by_pool_and_limited() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 100).unwrap();
        store
            .commit(0, &overlay(1), vec![record("a.", "1"), record("b.", "2")])
            .unwrap();
        store
            .commit(1, &overlay(2), vec![record("b.", "3")])
            .unwrap();
        store
            .commit(2, &overlay(3), vec![record("a.", "4"), record("a.", "5")])
            .unwrap();
        let subjects = |records: Vec<AuditRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.subject).collect()
        };
        assert_eq!(
            subjects(store.audit(None, 10).unwrap()),
            ["5", "4", "3", "2", "1"]
        );
        assert_eq!(
            subjects(store.audit(Some("a."), 10).unwrap()),
            ["5", "4", "1"]
        );
        assert_eq!(subjects(store.audit(Some("b."), 10).unwrap()), ["3", "2"]);
        assert_eq!(subjects(store.audit(Some("a."), 2).unwrap()), ["5", "4"]);
        assert_eq!(subjects(store.audit(None, 1).unwrap()), ["5"]);
        assert!(store.audit(None, 0).unwrap().is_empty());
        assert!(store.audit(Some("c."), 10).unwrap().is_empty());
    }

    #[test]
    fn retention_drops_the_oldest_records() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 3).unwrap();
        commit_n(&store, 4);
        store
            .commit(4, &overlay(5), vec![record(POOL, "5a"), record(POOL, "5b")])
            .unwrap();
        let kept = store.audit(None, 100).unwrap();
        let subjects: Vec<&str> = kept.iter().map(|r| r.subject.as_str()).collect();
        assert_eq!(subjects, ["5b", "5a", "change 4"]);
        assert_eq!(generations(&store.changes_since(0).unwrap()), [4, 5, 5]);
        // The state itself is never trimmed.
        assert_eq!(store.load().unwrap().generation, 5);
    }

    #[test]
    fn changes_since_returns_later_generations_oldest_first() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 100).unwrap();
        commit_n(&store, 2);
        store
            .commit(2, &overlay(3), vec![record(POOL, "3a"), record(POOL, "3b")])
            .unwrap();
        commit_n(&store, 1);
        assert_eq!(
            generations(&store.changes_since(0).unwrap()),
            [1, 2, 3, 3, 4]
        );
        let since_two = store.changes_since(2).unwrap();
        let subjects: Vec<&str> = since_two.iter().map(|r| r.subject.as_str()).collect();
        assert_eq!(subjects, ["3a", "3b", "change 4"]);
        assert!(store.changes_since(4).unwrap().is_empty());
        assert!(store.changes_since(u64::MAX).unwrap().is_empty());
    }

    #[test]
    fn data_survives_closing_and_reopening() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 100).unwrap();
        commit_n(&store, 3);
        let before = (store.load().unwrap(), store.changes_since(0).unwrap());
        close(store, &path);
        let store = SledStore::open(&path, 100).unwrap();
        assert_eq!(
            (store.load().unwrap(), store.changes_since(0).unwrap()),
            before
        );
        assert_eq!(commit_n(&store, 1), 4);
    }

    #[test]
    fn an_overlay_too_large_for_the_log_survives_reopening() {
        // Over ~128 KiB sled moves a node into a file under blobs/, which sync_to_disk covers.
        let (_dir, path) = scratch();
        let mut large = overlay(1);
        let weights = large.endpoint_weights.entry(pool()).or_default();
        for i in 0..12_000u32 {
            weights.insert(format!("2001:db8::{i:x}").parse().unwrap(), i);
        }
        assert!(serde_json::to_vec(&large).unwrap().len() > 200_000);
        let store = SledStore::open(&path, 10).unwrap();
        store.commit(0, &large, Vec::new()).unwrap();
        assert!(fs::read_dir(path.join("blobs")).unwrap().next().is_some());
        close(store, &path);
        let store = SledStore::open(&path, 10).unwrap();
        assert_eq!(
            store.load().unwrap(),
            Stored {
                overlay: large,
                generation: 1
            }
        );
    }

    #[test]
    fn reset_moves_the_store_aside_and_a_fresh_open_is_empty() {
        let (dir, path) = scratch();
        assert_eq!(SledStore::reset(&path).unwrap(), None);
        let store = SledStore::open(&path, 10).unwrap();
        commit_n(&store, 2);
        close(store, &path);

        let aside = SledStore::reset(&path).unwrap().unwrap();
        assert!(!path.exists());
        assert_eq!(aside.parent(), Some(dir.path()));
        let name = aside.file_name().unwrap().to_str().unwrap();
        let seconds = name.strip_prefix("state.reset-").unwrap();
        assert!(seconds.parse::<u64>().is_ok(), "{name}");
        // What was moved aside is intact.
        assert_eq!(
            SledStore::open(&aside, 10)
                .unwrap()
                .load()
                .unwrap()
                .generation,
            2
        );

        let store = SledStore::open(&path, 10).unwrap();
        assert_eq!(store.load().unwrap(), Stored::default());
        close(store, &path);
        // A second reset in the same second does not clobber the first.
        let again = SledStore::reset(&path).unwrap().unwrap();
        assert_ne!(again, aside);
        assert!(aside.exists() && again.exists());
    }

    #[test]
    fn a_second_open_in_the_same_process_is_locked() {
        let (_dir, path) = scratch();
        let _store = SledStore::open(&path, 10).unwrap();
        let error = SledStore::open(&path, 10).unwrap_err();
        assert_locked(&error, &path);
        let error = SledStore::reset(&path).unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
        assert!(path.exists());
    }

    #[test]
    fn open_held_by_another_process_is_locked_at_once() {
        let (_dir, path) = scratch();
        let mut child = Child::spawn("hold", &path);
        assert_eq!(child.line().as_deref(), Some("ready"));

        let started = Instant::now();
        let error = SledStore::open(&path, 10).unwrap_err();
        let took = started.elapsed();
        assert_locked(&error, &path);
        assert!(error.to_string().contains(&path.display().to_string()));
        // "Fast" is a bound, not a measurement: a blocking lock would never return at all.
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let error = SledStore::reset(&path).unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");

        // Once the holder is gone the store opens.
        child.finish();
        SledStore::open(&path, 10).unwrap();
    }

    #[test]
    fn garbage_in_the_data_file_is_corrupt_never_empty() {
        for (from, seed) in [(0, 1), (100, 2), (4096, 3), (usize::MAX / 2, 4)] {
            let (_dir, path) = scratch();
            let store = SledStore::open(&path, 100).unwrap();
            commit_n(&store, 40);
            close(store, &path);
            let db = path.join("db");
            let from = if from == usize::MAX / 2 {
                fs::metadata(&db).unwrap().len() as usize / 2
            } else {
                from
            };
            scribble(&db, from, seed);
            let detail = assert_corrupt(SledStore::open(&path, 100), &path);
            assert!(!detail.is_empty(), "from {from}");
        }
    }

    #[test]
    fn garbage_in_the_conf_file_is_corrupt() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 10).unwrap();
        commit_n(&store, 3);
        close(store, &path);
        scribble(&path.join("conf"), 0, 5);
        assert_corrupt(SledStore::open(&path, 10), &path);
    }

    #[test]
    fn lost_data_files_or_a_bad_floor_file_are_corrupt() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 10).unwrap();
        commit_n(&store, 3);
        close(store, &path);
        fs::write(path.join(FLOOR_FILE), "three\n").unwrap();
        assert_corrupt(SledStore::open(&path, 10), &path);
        // A floor behind the store is normal (a crash between sled's fsync and the floor's).
        fs::write(path.join(FLOOR_FILE), "1\n").unwrap();
        assert_eq!(
            SledStore::open(&path, 10)
                .unwrap()
                .load()
                .unwrap()
                .generation,
            3
        );
        fs::write(path.join(FLOOR_FILE), "3\n").unwrap();
        assert_eq!(
            SledStore::open(&path, 10)
                .unwrap()
                .load()
                .unwrap()
                .generation,
            3
        );
        // Everything but the floor file gone: sled starts afresh, the floor notices.
        for entry in fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                fs::remove_dir_all(entry).unwrap();
            } else if !entry.ends_with(FLOOR_FILE) {
                fs::remove_file(entry).unwrap();
            }
        }
        let detail = assert_corrupt(SledStore::open(&path, 10), &path);
        assert!(detail.contains("generation 3 was committed"), "{detail}");
    }

    /// Writes `entries` into `tree` of the store at `path` through a raw sled handle.
    fn write_raw(path: &Path, tree: &str, entries: &[(&[u8], &[u8])]) {
        let db = sled::open(path).unwrap();
        let tree = db.open_tree(tree).unwrap();
        for (key, value) in entries {
            tree.insert(key, *value).unwrap();
        }
        db.flush().unwrap();
        // sled lets go of its lock only when its flusher thread ends, after the handles drop.
        drop((tree, db));
        released(&path.join("db"));
    }

    #[test]
    fn undecodable_state_is_corrupt() {
        let one = 1u64.to_be_bytes();
        let good = serde_json::to_vec(&overlay(1)).unwrap();
        let cases: [&[(&[u8], &[u8])]; 4] = [
            &[
                (GENERATION_KEY, &one),
                (OVERLAY_KEY, b"{\"group_weights\": 7"),
            ],
            &[(GENERATION_KEY, &one), (OVERLAY_KEY, b"\xff\xfe")],
            &[(GENERATION_KEY, &[0, 1, 2]), (OVERLAY_KEY, &good)],
            &[(GENERATION_KEY, &one)],
        ];
        for entries in cases {
            let (_dir, path) = scratch();
            write_raw(&path, STATE_TREE, entries);
            assert_corrupt(SledStore::open(&path, 10), &path);
        }
    }

    #[test]
    fn an_undecodable_audit_record_stops_open() {
        // Issue 12: such a store used to open, then every audit read and trim failed.
        let cases: [(&[u8], &[u8]); 3] = [
            (&audit_key(1, 7), b"not json"),
            // A record for a generation the store never reached.
            (&audit_key(9, 0), br#"{"generation":9,"time":1,"actor":"a","source":"","action":"x","pool":"p","subject":"s","before":1,"after":2,"reason":""}"#),
            // A key of the wrong shape.
            (b"short", br#"{"generation":1,"time":1,"actor":"a","source":"","action":"x","pool":"p","subject":"s","before":1,"after":2,"reason":""}"#),
        ];
        for (key, value) in cases {
            let (_dir, path) = scratch();
            let store = SledStore::open(&path, 10).unwrap();
            commit_n(&store, 2);
            close(store, &path);
            write_raw(&path, AUDIT_TREE, &[(key, value)]);
            let result = SledStore::open(&path, 10);
            let message = result.as_ref().map_err(ToString::to_string).unwrap_err();
            assert!(message.contains("--reset-state"), "{message}");
            assert_corrupt(result, &path);
        }
    }

    /// A tmpfs mounted for one test (tests run as root), unmounted on drop.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Tmpfs {
            let dir = tempfile::tempdir().unwrap();
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "mounting a tmpfs needs root");
            Tmpfs(dir)
        }

        fn path(&self) -> &Path {
            self.0.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0.path()).status();
        }
    }

    fn commit_big(store: &SledStore, generation: u64) -> Result<u64, StoreError> {
        let mut r = record(POOL, "big");
        r.reason = "x".repeat(1000);
        store.commit(generation, &overlay(generation as u32), vec![r])
    }

    /// Issue 12: after ENOSPC every later commit was a conflict (sled kept the failed commit
    /// in memory) until a restart. Here sled itself meets ENOSPC (no reserve).
    #[test]
    fn a_commit_sled_cannot_write_changes_nothing_and_the_store_recovers() {
        let disk = Tmpfs::mount("2m");
        let path = disk.path().join("state");
        let store = SledStore::open(&path, 100_000).unwrap();
        store.set_reserve(0);
        let mut generation = 0;
        let error = loop {
            match commit_big(&store, generation) {
                Ok(next) => generation = next,
                Err(e) => break e,
            }
            assert!(generation < 10_000, "the disk never filled");
        };
        assert!(matches!(error, StoreError::Full { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("no space left on the state store")
        );
        // Every write says why; reads go on, without the failed commit. (With the reserve
        // back, as in production, nothing tries to reopen the store while the disk is full.)
        store.set_reserve(RESERVE);
        let again = commit_big(&store, generation).unwrap_err();
        assert!(matches!(again, StoreError::Full { .. }), "{again:?}");
        assert!(store.check().is_err());
        assert_eq!(store.load().unwrap().generation, generation);
        assert_eq!(generations(&store.audit(None, 1).unwrap()), [generation]);
        assert_eq!(
            store.changes_since(0).unwrap().last().map(|r| r.generation),
            Some(generation)
        );
        // Room again: sled's own log filled the disk, so grow the file system.
        let status = Command::new("mount")
            .args(["-o", "remount,size=8m"])
            .arg(disk.path())
            .status()
            .unwrap();
        assert!(status.success());
        assert!(store.check().is_ok());
        assert_eq!(store.load().unwrap().generation, generation);
        assert_eq!(
            store.changes_since(0).unwrap().last().map(|r| r.generation),
            Some(generation)
        );
        assert_eq!(commit_big(&store, generation).unwrap(), generation + 1);
        close(store, &path);
        let store = SledStore::open(&path, 100_000).unwrap();
        assert_eq!(store.load().unwrap().generation, generation + 1);
        let all: Vec<u64> = (1..=generation + 1).collect();
        assert_eq!(generations(&store.changes_since(0).unwrap()), all);
    }

    /// A commit whose flush reported an error can still have reached the disk (the error
    /// came after the write): reopening takes it back, so what was refused never serves.
    #[test]
    fn a_failed_commit_that_reached_the_disk_is_undone_on_reopen() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 100).unwrap();
        commit_n(&store, 2);
        let before = store.load().unwrap();
        let previous = serde_json::to_vec(&before.overlay).unwrap();
        commit_n(&store, 1);
        // As `commit` does when the flush or fsync of generation 3 fails.
        let _serial = store.commit_lock.lock().unwrap();
        store.fail(
            &io_error(&path, "fsync failed: EIO"),
            Some(Undo {
                generation: 2,
                overlay: Some(previous.into()),
            }),
        );
        drop(_serial);
        assert_eq!(store.load().unwrap(), before);
        assert_eq!(generations(&store.changes_since(0).unwrap()), [1, 2]);
        store.check().unwrap();
        assert_eq!(store.load().unwrap(), before);
        assert_eq!(generations(&store.changes_since(0).unwrap()), [1, 2]);
        let after = store
            .commit(2, &overlay(99), vec![record(POOL, "after the undo")])
            .unwrap();
        assert_eq!(after, 3);
        close(store, &path);
        let store = SledStore::open(&path, 100).unwrap();
        assert_eq!(store.load().unwrap().overlay, overlay(99));
        let records = store.changes_since(0).unwrap();
        assert_eq!(generations(&records), [1, 2, 3]);
        assert_eq!(records[2].subject, "after the undo");
    }

    #[test]
    fn a_commit_that_would_leave_less_than_the_reserve_is_refused_before_writing() {
        let disk = Tmpfs::mount("2m");
        let path = disk.path().join("state");
        let store = SledStore::open(&path, 100).unwrap();
        let mut generation = commit_big(&store, 0).unwrap();
        generation = commit_big(&store, generation).unwrap();
        let free = free_bytes(&path).unwrap();
        let filler = disk.path().join("filler");
        fs::write(&filler, vec![0u8; (free - RESERVE + 2048) as usize]).unwrap();
        let error = commit_big(&store, generation).unwrap_err();
        assert!(matches!(error, StoreError::Full { .. }), "{error:?}");
        assert!(store.check().is_err());
        // Nothing changed, and reads work throughout.
        assert_eq!(store.load().unwrap().generation, generation);
        assert_eq!(store.audit(None, 10).unwrap().len(), 2);
        fs::remove_file(&filler).unwrap();
        assert!(store.check().is_ok());
        assert_eq!(commit_big(&store, generation).unwrap(), generation + 1);
    }

    /// Issue 12: 35 of 67 random corruptions of `db` opened, then failed on audit reads
    /// (here, on the code before the fix: 19 of 60 byte flips opened, then sled panicked on an
    /// audit read). Now a damaged store either opens with everything readable, or is `Corrupt`.
    #[test]
    fn random_damage_to_the_data_file_opens_readable_or_is_corrupt() {
        // A tmpfs: thousands of fsyncs cost nothing there.
        let disk = Tmpfs::mount("64m");
        let pristine = disk.path().join("pristine");
        let store = SledStore::open(&pristine, 1000).unwrap();
        let mut generation = 0;
        for i in 0..3000u32 {
            let mut r = record(POOL, &format!("change {i}"));
            r.reason = "r".repeat((i as usize * 37) % 900);
            generation = store.commit(generation, &overlay(i), vec![r]).unwrap();
        }
        drop(store);
        let db = fs::read(pristine.join("db")).unwrap();
        let path = disk.path().join("state");
        let (mut opened, mut refused) = (0, 0);
        for seed in 0..60u64 {
            let _ = fs::remove_dir_all(&path);
            fs::create_dir(&path).unwrap();
            for entry in fs::read_dir(&pristine).unwrap() {
                let entry = entry.unwrap();
                if entry.path().is_file() {
                    fs::copy(entry.path(), path.join(entry.file_name())).unwrap();
                }
            }
            let mut bytes = db.clone();
            let at = fastrand::Rng::with_seed(seed).usize(0..bytes.len());
            bytes[at] ^= 0xff;
            fs::write(path.join("db"), bytes).unwrap();
            match SledStore::open(&path, 1000) {
                Ok(store) => {
                    opened += 1;
                    let stored = store.load().unwrap();
                    store.audit(None, usize::MAX).unwrap();
                    let all = store.changes_since(0).unwrap();
                    assert!(all.iter().all(|r| r.generation <= stored.generation));
                    let next = store
                        .commit(stored.generation, &overlay(7), vec![record(POOL, "after")])
                        .unwrap();
                    assert_eq!(next, stored.generation + 1, "seed {seed}");
                    assert!(store.changes_since(0).is_ok(), "seed {seed}");
                }
                Err(StoreError::Corrupt { path: p, .. }) => {
                    assert_eq!(p, path.display().to_string());
                    refused += 1;
                }
                Err(other) => panic!("seed {seed}: {other:?}"),
            }
        }
        eprintln!("byte flips: {opened} opened readable, {refused} refused as corrupt");
        assert!(refused > 0 && opened > 0, "{opened} {refused}");
    }

    #[test]
    fn a_change_feed_page_reads_only_what_it_returns() {
        // Issue 12: `?since=0&limit=1` read the whole log before applying the limit. A record
        // that cannot be decoded past the page shows the page never reads it.
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 100).unwrap();
        commit_n(&store, 3);
        store
            .commit(3, &overlay(4), vec![record("other.example.com.", "4a")])
            .unwrap();
        store
            .with(|h| {
                h.audit.insert(audit_key(9, 0), b"not json").unwrap();
                Ok(())
            })
            .unwrap();
        assert_eq!(generations(&store.changes_page(0, None, 1).unwrap()), [1]);
        assert_eq!(
            generations(&store.changes_page(1, None, 2).unwrap()),
            [2, 3]
        );
        let other = store
            .changes_page(0, Some("other.example.com."), 1)
            .unwrap();
        assert_eq!(generations(&other), [4]);
        assert!(store.changes_page(0, None, 0).unwrap().is_empty());
        // The whole feed does reach the damage.
        assert!(matches!(
            store.changes_since(0),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn acknowledged_commits_survive_a_killed_process() {
        // What this shows: every commit that returned Ok is in the files after the process dies
        // at an arbitrary point without closing sled. What it cannot show: survival of a power
        // cut, which depends on `flush` reaching fsync; the commit path calls it before Ok.
        let (_dir, path) = scratch();
        let mut child = Child::spawn("commit-until-killed", &path);
        let mut acked = 0;
        while acked < 150 {
            let line = child.line().expect("the child stopped before 150 commits");
            if let Some(generation) = line.strip_prefix("acked ") {
                acked = generation.parse().unwrap();
            }
        }
        let rest = child.kill();
        for line in rest {
            if let Some(generation) = line.strip_prefix("acked ") {
                acked = acked.max(generation.parse().unwrap());
            }
        }
        let store = SledStore::open(&path, 1000).unwrap();
        let stored = store.load().unwrap();
        assert!(
            stored.generation >= acked,
            "{} < {acked}",
            stored.generation
        );
        assert_eq!(stored.overlay, overlay(stored.generation as u32 - 1));
        let all: Vec<u64> = (1..=stored.generation).collect();
        assert_eq!(generations(&store.changes_since(0).unwrap()), all);
    }

    #[test]
    fn commits_survive_a_store_that_is_never_closed() {
        let (_dir, path) = scratch();
        let mut child = Child::spawn("commit-then-forget", &path);
        let lines = child.finish();
        assert_eq!(
            lines.last().map(String::as_str),
            Some("acked 200"),
            "{lines:?}"
        );
        let store = SledStore::open(&path, 1000).unwrap();
        assert_eq!(store.load().unwrap().generation, 200);
        let all: Vec<u64> = (1..=200).collect();
        assert_eq!(generations(&store.changes_since(0).unwrap()), all);
    }

    /// Marks the child's own lines: libtest writes to the same stdout, even mid-line.
    const CHILD_SAYS: &str = "weir-child: ";
    const CHILD_MODE: &str = "WEIR_STORE_TEST_CHILD";
    const CHILD_PATH: &str = "WEIR_STORE_TEST_PATH";
    /// Generous: each child step is milliseconds; this only stops a hung child hanging the suite.
    const CHILD_PATIENCE: Duration = Duration::from_secs(60);

    /// This test binary re-run as a second process, running `child_process` below. Killed on
    /// drop, so a failing test leaves no process behind.
    struct Child {
        process: std::process::Child,
        lines: mpsc::Receiver<String>,
    }

    impl Child {
        fn spawn(mode: &str, path: &Path) -> Child {
            let test = concat!(module_path!(), "::child_process");
            // libtest names tests without the crate name.
            let test = test.split_once("::").map_or(test, |(_, rest)| rest);
            let mut process = Command::new(std::env::current_exe().unwrap())
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_MODE, mode)
                .env(CHILD_PATH, path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = process.stdout.take().unwrap();
            let (send, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
            Child { process, lines }
        }

        /// The child's next line (without libtest's output); None once it has ended.
        fn line(&mut self) -> Option<String> {
            loop {
                match self.lines.recv_timeout(CHILD_PATIENCE) {
                    Ok(line) => {
                        if let Some((_, said)) = line.split_once(CHILD_SAYS) {
                            return Some(said.to_string());
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                    Err(mpsc::RecvTimeoutError::Timeout) => panic!("the child process hung"),
                }
            }
        }

        fn rest(&mut self) -> Vec<String> {
            std::iter::from_fn(|| self.line()).collect()
        }

        /// Closes its stdin, waits for it to exit and returns the rest of its output.
        fn finish(&mut self) -> Vec<String> {
            drop(self.process.stdin.take());
            let rest = self.rest();
            assert!(
                self.process.wait().unwrap().success(),
                "the child failed: {rest:?}"
            );
            rest
        }

        /// SIGKILLs it and returns the output it had written.
        fn kill(&mut self) -> Vec<String> {
            self.process.kill().unwrap();
            self.process.wait().unwrap();
            self.rest()
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }

    /// Not a test of its own: the body of the second process for the tests above. Without the
    /// environment they set it does nothing.
    #[test]
    fn child_process() {
        let (Ok(mode), Ok(path)) = (std::env::var(CHILD_MODE), std::env::var(CHILD_PATH)) else {
            return;
        };
        let store = SledStore::open(Path::new(&path), 1000).unwrap();
        match mode.as_str() {
            "hold" => {
                println!("{CHILD_SAYS}ready");
                // Holds the store until the parent closes our stdin (or kills us).
                let mut sink = String::new();
                std::io::stdin().read_line(&mut sink).unwrap();
            }
            "commit-until-killed" => {
                // Ends by SIGKILL; if the parent is gone, println! fails on the closed pipe.
                for _ in 0..100_000 {
                    println!("{CHILD_SAYS}acked {}", commit_n(&store, 1));
                }
            }
            "commit-then-forget" => {
                for _ in 0..200 {
                    println!("{CHILD_SAYS}acked {}", commit_n(&store, 1));
                }
                // No clean close: sled's Drop (and its final flush) never runs.
                std::mem::forget(store);
            }
            other => panic!("unknown child mode {other}"),
        }
    }
}
