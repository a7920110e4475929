//! `SledStore`: the `Store` kept on local disk in one sled database, and the corruption and
//! lock checks around it. This file is the only one that names sled types.
//!
//! Layout: tree `state` holds the overlay as JSON under `overlay` and the generation as a u64
//! big-endian under `generation`; tree `audit` holds one JSON record per key
//! (generation u64 BE, index u32 BE), so key order is chronological order. Beside sled's own
//! files, `weir-generation` holds the last generation known to be flushed (see `open`).

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Node, Store, StoreError, Stored};
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

pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    /// Our own handle on sled's log file, to fsync it (see `sync_to_disk`).
    log_file: fs::File,
    state: sled::Tree,
    audit: sled::Tree,
    retention: usize,
    /// Commits run one at a time, so the floor file only ever moves forward.
    commit_lock: Mutex<()>,
    /// The generation this node serves (`Store::served`), for `Store::nodes`.
    served: AtomicU64,
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

impl SledStore {
    /// Opens (creating if missing) the store at `path`. Keeps at most `audit_retention` audit
    /// records (oldest dropped after each commit; a retention of 0 is treated as 1).
    ///
    /// Fails fast with `Locked` if another process (or another `SledStore` in this process)
    /// holds the store: sled takes a non-blocking `flock` on `<path>/db`. Fails with `Corrupt`
    /// if sled cannot read its files, if the stored state does not decode, or if the store
    /// holds an older generation than one that was acknowledged.
    pub fn open(path: &Path, audit_retention: usize) -> Result<SledStore, StoreError> {
        let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
        // sled's recovery asserts in places; a store it chokes on must still come back as
        // `Corrupt` (with the --reset-state hint), not as a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        let db = match opened {
            Ok(Ok(db)) => db,
            // What sled says when its `conf` file does not parse or names another format.
            Ok(Err(sled::Error::Unsupported(why))) => return Err(corrupt(path, why)),
            Ok(Err(e)) => return Err(sled_error(path, e)),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(corrupt(
                    path,
                    format!("sled panicked while opening it: {why}"),
                ));
            }
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
        let store = SledStore {
            path: path.to_path_buf(),
            db,
            log_file,
            state,
            audit,
            retention: audit_retention.max(1),
            commit_lock: Mutex::new(()),
            served: AtomicU64::new(0),
        };
        // Decode now, so a bad store stops start-up instead of the first admin request.
        let stored = store.load()?;
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
        Ok(store)
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
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
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
        let mut batch = sled::Batch::default();
        batch.insert(OVERLAY_KEY, overlay);
        batch.insert(GENERATION_KEY, &stored.generation.to_be_bytes()[..]);
        batch.insert(CACHED_KEY, &b"1"[..]);
        self.state
            .apply_batch(batch)
            .map_err(|e| sled_error(path, e))?;
        self.db.flush().map_err(|e| sled_error(path, e))?;
        Ok(())
    }

    /// The cached state, if this store has ever been written as a cache (`cache_put`).
    pub fn cached(&self) -> Result<Option<Stored>, StoreError> {
        let marked = self
            .state
            .contains_key(CACHED_KEY)
            .map_err(|e| sled_error(&self.path, e))?;
        if marked {
            self.load().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Drops audit records beyond the retention, oldest first. Not flushed on its own: if
    /// it is lost in a crash the next commit trims again.
    fn trim(&self) -> Result<(), sled::Error> {
        let stale = self
            .audit
            .iter()
            .keys()
            .rev()
            .skip(self.retention)
            .collect::<Result<Vec<_>, _>>()?;
        for key in stale {
            self.audit.remove(key)?;
        }
        Ok(())
    }

    /// Makes what `Db::flush` wrote durable. On Linux sled's flush ends in `sync_file_range`,
    /// which neither commits the log file's new length (the log grows by appending) nor
    /// flushes the drive's write cache, and sled never syncs the files in `blobs/` (where it
    /// puts nodes over ~128 KiB, e.g. a very large overlay). `fsync` does all of that; it acts
    /// on the file, not the descriptor, so our own handles reach what sled wrote.
    fn sync_to_disk(&self) -> std::io::Result<()> {
        self.log_file.sync_all()?;
        let blobs = self.path.join("blobs");
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

    fn decode_record(&self, key: &[u8], value: &[u8]) -> Result<AuditRecord, StoreError> {
        serde_json::from_slice(value).map_err(|e| {
            corrupt(
                &self.path,
                format!("the audit record at key {key:02x?} does not decode: {e}"),
            )
        })
    }
}

impl Store for SledStore {
    fn load(&self) -> Result<Stored, StoreError> {
        let path = &self.path;
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
        for (index, mut record) in audit.into_iter().enumerate() {
            record.generation = generation;
            let index = u32::try_from(index)
                .map_err(|_| io_error(path, "more than u32::MAX audit records in one commit"))?;
            let value = serde_json::to_vec(&record)
                .map_err(|e| io_error(path, format!("cannot encode an audit record: {e}")))?;
            records.push((audit_key(generation, index), value));
        }

        // sled may run this closure more than once; it only reads its captures.
        let outcome = (&self.state, &self.audit).transaction(|(state, audit)| {
            let actual = match state.get(GENERATION_KEY)? {
                None => 0,
                Some(bytes) => decode_generation(&bytes)
                    .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e)))?,
            };
            if actual != expected {
                return Err(ConflictableTransactionError::Abort(Abort::Conflict(actual)));
            }
            state.insert(OVERLAY_KEY, overlay_json.as_slice())?;
            state.insert(GENERATION_KEY, &generation.to_be_bytes()[..])?;
            for (key, value) in &records {
                audit.insert(&key[..], value.as_slice())?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => {}
            Err(TransactionError::Abort(Abort::Conflict(actual))) => {
                return Err(StoreError::Conflict { expected, actual });
            }
            Err(TransactionError::Abort(Abort::Corrupt(detail))) => {
                return Err(corrupt(path, detail));
            }
            Err(TransactionError::Storage(e)) => return Err(sled_error(path, e)),
        }
        // Acknowledged means on disk: without this sled writes out only every 500 ms. If this
        // or the fsync fails, the change is applied in memory but may not survive a crash:
        // the caller gets an error and must not acknowledge it.
        self.db.flush().map_err(|e| sled_error(path, e))?;
        self.sync_to_disk()
            .map_err(|e| io_error(path, format!("fsync failed: {e}")))?;
        self.write_floor(generation);
        if let Err(e) = self.trim() {
            tracing::warn!(path = %path.display(), error = %e, "cannot trim the audit log");
        }
        Ok(generation)
    }

    fn audit(&self, pool: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut records = Vec::new();
        for entry in self.audit.iter().rev() {
            if records.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|e| sled_error(&self.path, e))?;
            let record = self.decode_record(&key, &value)?;
            if pool.is_none_or(|pool| record.pool == pool) {
                records.push(record);
            }
        }
        Ok(records)
    }

    fn served(&self, _overlay: &Overlay, generation: u64) {
        self.served.store(generation, Ordering::Relaxed);
    }

    fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        Ok(vec![Node {
            node_id: "local".into(),
            generation: Some(self.served.load(Ordering::Relaxed)),
            updated: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }])
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
        // Lazily, one record at a time: nothing past the page is read or decoded.
        let mut records = Vec::new();
        for entry in self.audit.range(audit_key(first, 0)..) {
            if records.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(|e| sled_error(&self.path, e))?;
            let record = self.decode_record(&key, &value)?;
            if pool.is_none_or(|pool| record.pool == pool) {
                records.push(record);
            }
        }
        Ok(records)
    }
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
        other => io_error(path, other),
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
            .entry(POOL.to_string())
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
        drop(store);
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
        let weights = large.endpoint_weights.entry(POOL.to_string()).or_default();
        for i in 0..12_000u32 {
            weights.insert(format!("2001:db8::{i:x}"), i);
        }
        assert!(serde_json::to_vec(&large).unwrap().len() > 200_000);
        let store = SledStore::open(&path, 10).unwrap();
        store.commit(0, &large, Vec::new()).unwrap();
        assert!(fs::read_dir(path.join("blobs")).unwrap().next().is_some());
        drop(store);
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
        drop(store);

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
        drop(store);
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
            drop(store);
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
        drop(store);
        scribble(&path.join("conf"), 0, 5);
        assert_corrupt(SledStore::open(&path, 10), &path);
    }

    #[test]
    fn lost_data_files_or_a_bad_floor_file_are_corrupt() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 10).unwrap();
        commit_n(&store, 3);
        drop(store);
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
    fn an_undecodable_audit_record_is_corrupt() {
        let (_dir, path) = scratch();
        let store = SledStore::open(&path, 10).unwrap();
        commit_n(&store, 2);
        drop(store);
        write_raw(&path, AUDIT_TREE, &[(&audit_key(1, 7), b"not json")]);
        let store = SledStore::open(&path, 10).unwrap();
        for result in [store.audit(None, 10), store.changes_since(0)] {
            assert!(
                matches!(result, Err(StoreError::Corrupt { .. })),
                "{result:?}"
            );
        }
        // Records newer than the damage still read.
        assert_eq!(generations(&store.audit(None, 1).unwrap()), [2]);
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
        store.audit.insert(audit_key(9, 0), b"not json").unwrap();
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
