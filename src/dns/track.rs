//! Who asked which pool, recorded on the query path for cache-convergence tracking
//! (`convergence`): per-worker fixed-size tables of (pool, resolver, snapshot generation) →
//! queries. No lock, no allocation, no system call: a few relaxed atomic loads and one atomic
//! add per answered pool query; a full table counts a drop instead of growing.
//!
//! Each UDP worker thread has a table of its own (one writer); the TCP tasks share one (several
//! writers, so a slot is claimed with a compare-and-swap). A table has two halves: writers add
//! to the active one while the aggregator drains the other, then the aggregator swaps them.
//! A half is drained one full aggregation period (~200 ms) after writers left it, so no writer
//! is still in it; a writer preempted for longer than that can at worst leave one stray count,
//! which the next drain reads or discards. Every access is an atomic, so that costs accuracy,
//! never memory safety.
//!
//! Memory bound: `SLOTS` × 2 halves × 32 bytes = 256 KiB per table, one table per UDP worker
//! plus one for TCP, allocated once at start-up.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::snapshot::{Client, Subnet};

/// Slots per half table (a power of two). Enough for ~3,000 distinct (pool, resolver) pairs per
/// worker per aggregation period before probes get long and records drop.
pub const SLOTS: usize = 4096;
/// Slots looked at before a record is dropped (linear probing).
const MAX_PROBE: usize = 16;
/// Bytes per table: two halves of `SLOTS` 32-byte slots.
pub const TABLE_BYTES: usize = 2 * SLOTS * std::mem::size_of::<Slot>();
/// Pools at or past this index in the snapshot are not tracked (the key has 15 bits for it).
pub const MAX_POOLS: usize = 0x7FFF;

/// Resolver identity is the source /24 (IPv4) or /48 (IPv6), plus the ECS prefix cut to the
/// same lengths.
const V4_BITS: u8 = 24;
const V6_BITS: u8 = 48;

/// A slot being filled by a writer (never a valid first key word: pool `MAX_POOLS` is not
/// tracked).
const BUSY: u64 = u64::MAX;
const MARK: u64 = 1 << 63;
const LOW48: u64 = (1 << 48) - 1;

#[derive(Debug, Default)]
#[repr(C, align(32))]
struct Slot {
    /// 0 = empty, `BUSY` = being written, else the key's first word (published last).
    w0: AtomicU64,
    w1: AtomicU64,
    generation: AtomicU64,
    count: AtomicU64,
}

/// A resolver as convergence tracking identifies it: the source address prefix and, when the
/// query carried one, the ECS client subnet (RFC 7871) cut to /24 or /48. Ordered and hashable
/// so the aggregator can key maps by it; `Display` writes it as prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resolver {
    /// `MARK` | source bits (v4: /24 in the low 24 bits, v6: /48 in the low 48 bits).
    src: u64,
    /// `MARK` | v6 source flag (bit 62) | ECS kind (bits 56..58: 0 none, 1 v4, 2 v6) | ECS
    /// prefix length (bits 48..54) | ECS bits (low 48).
    ecs: u64,
}

/// One drained record: `count` queries for the pool at `pool` (its index in the snapshot of
/// `generation`) from `resolver`, answered from the snapshot of `generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub pool: usize,
    pub resolver: Resolver,
    pub generation: u64,
    pub count: u64,
}

/// Left-aligned prefix bits (the first `bits` bits of `bytes`) as an integer of `bits` bits.
fn prefix_bits(bytes: &[u8], bits: u8) -> u64 {
    let mut v = 0u64;
    for b in bytes.iter().take(6) {
        v = v << 8 | u64::from(*b);
    }
    let have = 8 * bytes.len().min(6) as u32;
    let bits = u32::from(bits).min(have);
    if bits == 0 {
        return 0;
    }
    v >> (have - bits)
}

impl Resolver {
    /// The resolver key of a client: no allocation, a handful of shifts.
    #[inline]
    pub fn of(client: &Client) -> Resolver {
        let (src, v6) = match client.addr {
            IpAddr::V4(a) => (prefix_bits(&a.octets(), V4_BITS), false),
            IpAddr::V6(a) => (prefix_bits(&a.octets(), V6_BITS), true),
        };
        let ecs = match client.ecs {
            Some(Subnet {
                family,
                source_prefix,
                addr,
            }) if source_prefix > 0 => {
                let (kind, cap, len) = if family == 1 {
                    (1u64, V4_BITS, 4)
                } else {
                    (2u64, V6_BITS, 16)
                };
                let prefix = source_prefix.min(cap);
                let bits = prefix_bits(&addr[..len], prefix);
                kind << 56 | u64::from(prefix) << 48 | bits
            }
            _ => 0,
        };
        Resolver {
            src: MARK | src,
            ecs: MARK | u64::from(v6) << 62 | ecs,
        }
    }

    fn words(self, pool: usize) -> (u64, u64) {
        (self.src | (pool as u64) << 48, self.ecs)
    }

    fn from_words(w0: u64, w1: u64) -> (usize, Resolver) {
        let pool = ((w0 & !MARK) >> 48) as usize;
        (
            pool,
            Resolver {
                src: w0 & (MARK | LOW48),
                ecs: w1,
            },
        )
    }
}

/// Writes `bits` (a /`len` prefix, right-aligned) of family `v6` as `addr/len`.
fn write_prefix(f: &mut fmt::Formatter<'_>, v6: bool, bits: u64, len: u8) -> fmt::Result {
    if v6 {
        let shifted = if len == 0 { 0 } else { bits << (48 - len) };
        let mut octets = [0u8; 16];
        octets[..6].copy_from_slice(&shifted.to_be_bytes()[2..]);
        write!(f, "{}/{len}", Ipv6Addr::from(octets))
    } else {
        let shifted = if len == 0 { 0 } else { bits << (32 - len) };
        write!(f, "{}/{len}", Ipv4Addr::from(shifted as u32))
    }
}

impl fmt::Display for Resolver {
    /// `192.0.2.0/24`, `2001:db8:1::/48`, and with ECS `192.0.2.0/24 ecs 198.51.100.0/24`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = self.ecs & 1 << 62 != 0;
        let len = if v6 { V6_BITS } else { V4_BITS };
        write_prefix(f, v6, self.src & LOW48, len)?;
        let kind = (self.ecs >> 56) & 0x3;
        if kind != 0 {
            let prefix = ((self.ecs >> 48) & 0x3F) as u8;
            f.write_str(" ecs ")?;
            write_prefix(f, kind == 2, self.ecs & LOW48, prefix)?;
        }
        Ok(())
    }
}

/// A well-mixed slot index for a key (SplitMix64's finalizer).
#[inline]
fn slot_hash(w0: u64, w1: u64, generation: u64) -> usize {
    let mut z = w0 ^ w1.rotate_left(21) ^ generation.rotate_left(42);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as usize
}

/// One worker's table (see the module comment).
#[derive(Debug)]
pub struct Table {
    /// Which half writers use (0 or 1).
    active: AtomicUsize,
    slots: Box<[Slot]>,
    /// Records that found no free slot within `MAX_PROBE`.
    dropped: AtomicU64,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Table {
    pub fn new() -> Table {
        Table {
            active: AtomicUsize::new(0),
            slots: (0..2 * SLOTS).map(|_| Slot::default()).collect(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Counts one query for pool `pool` from `resolver`, answered from snapshot `generation`.
    #[inline]
    pub fn record(&self, pool: usize, resolver: Resolver, generation: u64) {
        if pool >= MAX_POOLS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (w0, w1) = resolver.words(pool);
        let base = (self.active.load(Ordering::Relaxed) & 1) * SLOTS;
        let start = slot_hash(w0, w1, generation);
        for probe in 0..MAX_PROBE {
            let i = base + ((start + probe) & (SLOTS - 1));
            let Some(slot) = self.slots.get(i) else {
                return;
            };
            let mut seen = slot.w0.load(Ordering::Acquire);
            if seen == 0 {
                // Claim the empty slot, fill it, then publish its first word: a reader or
                // writer that sees the key sees the rest of it.
                match slot
                    .w0
                    .compare_exchange(0, BUSY, Ordering::Acquire, Ordering::Acquire)
                {
                    Ok(_) => {
                        slot.w1.store(w1, Ordering::Relaxed);
                        slot.generation.store(generation, Ordering::Relaxed);
                        slot.count.fetch_add(1, Ordering::Relaxed);
                        slot.w0.store(w0, Ordering::Release);
                        return;
                    }
                    Err(now) => seen = now,
                }
            }
            // A slot being filled by another writer is skipped: at worst the same key gets a
            // second slot, and the aggregator sums them.
            if seen == w0
                && slot.w1.load(Ordering::Relaxed) == w1
                && slot.generation.load(Ordering::Relaxed) == generation
            {
                slot.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Off the query path: reads and clears the inactive half (left by writers one period
    /// ago), hands each record to `each`, then makes that half the active one.
    pub fn drain(&self, mut each: impl FnMut(Sample)) {
        let active = self.active.load(Ordering::Relaxed) & 1;
        let inactive = 1 - active;
        let half = self
            .slots
            .get(inactive * SLOTS..(inactive + 1) * SLOTS)
            .unwrap_or_default();
        for slot in half {
            let w0 = slot.w0.load(Ordering::Acquire);
            if w0 == 0 {
                continue;
            }
            let w1 = slot.w1.swap(0, Ordering::Relaxed);
            let generation = slot.generation.swap(0, Ordering::Relaxed);
            let count = slot.count.swap(0, Ordering::Relaxed);
            slot.w0.store(0, Ordering::Release);
            // A slot left half-written (a writer preempted for a whole period) is discarded.
            if w0 == BUSY || w0 & MARK == 0 || w1 & MARK == 0 || count == 0 {
                continue;
            }
            let (pool, resolver) = Resolver::from_words(w0, w1);
            each(Sample {
                pool,
                resolver,
                generation,
                count,
            });
        }
        self.active.store(inactive, Ordering::Release);
    }

    /// Records dropped since the last call (table full, or a pool index past `MAX_POOLS`).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

/// Every worker's table: index 0 is shared by the TCP tasks, the others belong to one UDP
/// worker each.
#[derive(Debug)]
pub struct Tables {
    tables: Box<[Table]>,
}

impl Tables {
    /// `udp_workers` tables for UDP workers plus one for TCP.
    pub fn new(udp_workers: usize) -> Arc<Tables> {
        Arc::new(Tables {
            tables: (0..=udp_workers).map(|_| Table::new()).collect(),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter()
    }

    /// Memory held by every table, in bytes.
    pub fn bytes(&self) -> usize {
        self.tables.len() * TABLE_BYTES
    }
}

/// What the query path holds: which table it writes to, or nothing when tracking is off.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    tables: Option<Arc<Tables>>,
    table: usize,
}

impl Recorder {
    /// Tracking off: the query path tests one `Option`.
    pub fn off() -> Recorder {
        Recorder::default()
    }

    /// Records into `tables`; the TCP table until `for_udp_worker` picks another.
    pub fn new(tables: Arc<Tables>) -> Recorder {
        Recorder {
            tables: Some(tables),
            table: 0,
        }
    }

    /// The recorder of UDP worker `n` (counted across listen addresses from 0). More workers
    /// than tables share tables, which is safe, only slower.
    pub(crate) fn for_udp_worker(&self, n: usize) -> Recorder {
        let len = self.tables.as_ref().map_or(1, |t| t.tables.len());
        Recorder {
            tables: self.tables.clone(),
            table: match len {
                0 | 1 => 0,
                len => 1 + n % (len - 1),
            },
        }
    }

    /// Counts one query for the pool at index `pool` of snapshot `generation`.
    #[inline]
    pub fn record(&self, pool: usize, generation: u64, client: &Client) {
        if let Some(table) = self.tables.as_ref().and_then(|t| t.tables.get(self.table)) {
            table.record(pool, Resolver::of(client), generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(addr: &str, ecs: Option<(u16, u8, &str)>) -> Client {
        Client {
            addr: addr.parse().unwrap(),
            ecs: ecs.map(|(family, source_prefix, a)| {
                let mut addr = [0u8; 16];
                match a.parse::<IpAddr>().unwrap() {
                    IpAddr::V4(v) => addr[..4].copy_from_slice(&v.octets()),
                    IpAddr::V6(v) => addr.copy_from_slice(&v.octets()),
                }
                Subnet {
                    family,
                    source_prefix,
                    addr,
                }
            }),
        }
    }

    #[test]
    fn resolver_keys_are_prefixes() {
        type Ecs = Option<(u16, u8, &'static str)>;
        let cases: [(&str, Ecs, &str); 8] = [
            ("192.0.2.77", None, "192.0.2.0/24"),
            ("192.0.2.1", None, "192.0.2.0/24"),
            ("2001:db8:aaaa:bbbb::1", None, "2001:db8:aaaa::/48"),
            ("::1", None, "::/48"),
            (
                "10.0.0.1",
                Some((1, 32, "198.51.100.9")),
                "10.0.0.0/24 ecs 198.51.100.0/24",
            ),
            (
                "10.0.0.1",
                Some((1, 16, "198.51.0.0")),
                "10.0.0.0/24 ecs 198.51.0.0/16",
            ),
            (
                "10.0.0.1",
                Some((2, 56, "2001:db8:1:2::")),
                "10.0.0.0/24 ecs 2001:db8:1::/48",
            ),
            // Source prefix 0: the client asked for no subnet to be used.
            ("10.0.0.1", Some((1, 0, "0.0.0.0")), "10.0.0.0/24"),
        ];
        for (addr, ecs, shown) in cases {
            assert_eq!(
                Resolver::of(&client(addr, ecs)).to_string(),
                shown,
                "{addr}"
            );
        }
        let a = Resolver::of(&client("192.0.2.1", None));
        assert_eq!(a, Resolver::of(&client("192.0.2.200", None)));
        assert_ne!(a, Resolver::of(&client("192.0.3.1", None)));
        assert_ne!(
            a,
            Resolver::of(&client("192.0.2.1", Some((1, 24, "1.2.3.0"))))
        );
        // Same bits, different family.
        assert_ne!(
            Resolver::of(&client("0.0.0.1", None)),
            Resolver::of(&client("::1", None))
        );
    }

    fn drained(t: &Table) -> Vec<(usize, String, u64, u64)> {
        let mut out = Vec::new();
        t.drain(|s| {
            out.push((s.pool, s.resolver.to_string(), s.generation, s.count));
        });
        out.sort();
        out
    }

    #[test]
    fn records_are_counted_per_key_and_read_one_period_late() {
        let t = Table::new();
        let a = Resolver::of(&client("192.0.2.1", None));
        let b = Resolver::of(&client("198.51.100.1", None));
        for _ in 0..3 {
            t.record(0, a, 7);
        }
        t.record(1, a, 7);
        t.record(0, a, 8);
        t.record(0, b, 8);
        // The first drain reads the half nobody wrote to and swaps halves.
        assert!(drained(&t).is_empty());
        t.record(0, b, 8);
        // The second reads what was written before the first drain; the record after it waits.
        assert_eq!(
            drained(&t),
            vec![
                (0, "192.0.2.0/24".into(), 7, 3),
                (0, "192.0.2.0/24".into(), 8, 1),
                (0, "198.51.100.0/24".into(), 8, 1),
                (1, "192.0.2.0/24".into(), 7, 1),
            ]
        );
        assert_eq!(drained(&t), vec![(0, "198.51.100.0/24".into(), 8, 1)]);
        assert!(drained(&t).is_empty());
        assert_eq!(t.take_dropped(), 0);
    }

    #[test]
    fn a_full_table_drops_and_counts() {
        let t = Table::new();
        let n = 3 * SLOTS;
        for i in 0..n {
            let c = client(&format!("10.{}.{}.1", i >> 8, i & 255), None);
            t.record(0, Resolver::of(&c), 1);
        }
        t.record(MAX_POOLS, Resolver::of(&client("10.0.0.1", None)), 1);
        let dropped = t.take_dropped();
        t.drain(|_| {});
        let mut kept = 0;
        t.drain(|s| kept += s.count);
        assert!(dropped > 0, "some records dropped");
        assert_eq!(kept + dropped, n as u64 + 1, "every record kept or counted");
        assert!(kept <= SLOTS as u64);
    }

    #[test]
    fn writers_on_several_threads_lose_nothing() {
        let t = Arc::new(Table::new());
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        let c = client(&format!("10.0.{}.1", (i + k) % 50), None);
                        t.record(0, Resolver::of(&c), 1);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        t.drain(|_| {});
        let mut total = 0;
        let mut keys = std::collections::HashMap::new();
        t.drain(|s| {
            total += s.count;
            *keys.entry(s.resolver).or_insert(0) += s.count;
        });
        assert_eq!(total + t.take_dropped(), 40_000);
        assert_eq!(keys.len(), 50);
    }

    #[test]
    fn recorders_spread_udp_workers_over_tables() {
        let tables = Tables::new(2);
        let r = Recorder::new(tables.clone());
        assert_eq!(r.table, 0);
        assert_eq!(r.for_udp_worker(0).table, 1);
        assert_eq!(r.for_udp_worker(1).table, 2);
        assert_eq!(r.for_udp_worker(2).table, 1);
        assert_eq!(tables.bytes(), 3 * 256 * 1024);
        Recorder::off().record(0, 1, &client("10.0.0.1", None));
    }
}
