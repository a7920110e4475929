//! Response rate limiting (RRL) on the UDP query path, with the semantics of Knot's and BIND's:
//! responses are counted per client prefix (IPv4 /24, IPv6 /56) and response class (an answer
//! per name and type; NXDOMAIN, NODATA, wildcard answers and referrals per zone; errors per
//! prefix), each in a token bucket that refills `rate` tokens a second up to `rate × window`.
//! A response that finds its bucket empty is limited: dropped, except every `slip`-th, which
//! goes out as a minimal TC=1 reply (BADCOOKIE with a fresh cookie when the query carried a
//! client cookie) so a real client behind a spoofed address retries over TCP. TCP answers,
//! exempt prefixes and clients that returned a valid server cookie are never limited.
//!
//! No lock, no allocation: one fixed table of `SLOTS` atomic words shared by every worker,
//! allocated at start. A slot packs tag (16 bits) | time (22 bits, 1/64 s) | tokens (26 bits,
//! 1/64 token), updated with one compare-and-swap. A key hashes to a group of 8 slots (one cache
//! line); a key with no slot there takes an empty one or the one closest to full (a full bucket
//! is the same as none), so a table crowded by other keys forgets limited clients last. Two keys may share a tag (1 in 32,768 within a
//! group): they then share a bucket, which errs towards limiting a little early.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::config::RrlConfig;
use crate::model::Rcode;

/// Slots in the table: 8 per group, 64 bytes a group; 512 KiB in all.
pub const SLOTS: usize = 1 << 16;
const WAYS: usize = 8;
const GROUPS: usize = SLOTS / WAYS;
/// Clock ticks per second (time and tokens are both in these units, so a refill is exact).
const TICK: u64 = 64;
const TIME_BITS: u32 = 22;
const TOKEN_BITS: u32 = 26;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;
/// Largest `rate × window` a bucket can hold (tokens are 26 bits of 1/64).
pub const MAX_BURST: u64 = TOKEN_MASK / TICK;
const _: () = assert!(MAX_BURST == crate::config::RRL_MAX_BURST);
/// Compare-and-swap attempts before a contended bucket is judged on what was read.
const RETRIES: usize = 4;

/// Response classes (Knot's `rrl_cls`): what a bucket counts, beside the client prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Data for the question: counted per name and type.
    Answer,
    /// Data synthesized from a wildcard: counted per zone, so random names do not escape.
    Wildcard,
    /// NXDOMAIN: per zone (random-subdomain floods share one bucket).
    Nxdomain,
    /// NOERROR without data: per zone.
    Nodata,
    /// A delegation (AA=0, NS in AUTHORITY): per zone.
    Referral,
    /// Any other RCODE (REFUSED, FORMERR, SERVFAIL, NOTIMP, BADVERS...): per prefix.
    Error,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Answer,
        Class::Wildcard,
        Class::Nxdomain,
        Class::Nodata,
        Class::Referral,
        Class::Error,
    ];

    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            Class::Answer => "answer",
            Class::Wildcard => "wildcard",
            Class::Nxdomain => "nxdomain",
            Class::Nodata => "nodata",
            Class::Referral => "referral",
            Class::Error => "error",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The class of a response from its RCODE and shape.
    pub fn of(rcode: Rcode, authoritative: bool, has_answer: bool, wildcard: bool) -> Class {
        match rcode {
            Rcode::NoError if has_answer && wildcard => Class::Wildcard,
            Rcode::NoError if has_answer => Class::Answer,
            // An empty non-authoritative NOERROR from a zone is a referral.
            Rcode::NoError if !authoritative => Class::Referral,
            Rcode::NoError => Class::Nodata,
            Rcode::NxDomain => Class::Nxdomain,
            _ => Class::Error,
        }
    }
}

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Limited, and this one goes out as a minimal truncated reply.
    Slip,
    /// Limited: no reply.
    Drop,
}

#[derive(Debug)]
#[repr(C, align(64))]
struct Group([AtomicU64; WAYS]);

#[derive(Debug)]
struct Shared {
    groups: Box<[Group]>,
    /// Tokens added per tick, in token units (1/64): the rate itself.
    rate: u64,
    /// Bucket capacity in token units.
    cap: u64,
    slip: u32,
    exempt: Vec<crate::model::Prefix>,
}

/// The limiter each worker holds: the shared table and this worker's slip counter.
#[derive(Clone, Debug)]
pub struct Limiter {
    shared: Option<Arc<Shared>>,
    /// Limited responses seen by this worker, for every-Nth slipping (one writer per worker).
    limited: Arc<AtomicU32>,
}

/// The bucket key of a response: a well-mixed 64-bit hash of prefix, class and discriminator.
#[inline]
pub fn key(client: IpAddr, class: Class, qname: &[u8], qtype: u16, zone: Option<usize>) -> u64 {
    let prefix = match client {
        IpAddr::V4(a) => u64::from(u32::from(a) >> 8),
        IpAddr::V6(a) => (1 << 63) | (u128::from(a) >> 72) as u64,
    };
    let zone = zone.map_or(0, |z| z as u64 + 1);
    let what = match class {
        Class::Answer => {
            use std::hash::Hasher;
            let mut h = rustc_hash::FxHasher::default();
            h.write(qname);
            h.write_u16(qtype);
            h.finish()
        }
        Class::Error => 0,
        _ => zone,
    };
    mix(prefix ^ mix(what ^ (class as u64) << 56))
}

/// SplitMix64's finalizer.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Now, in ticks of the coarse monotonic clock (vDSO, no system call).
#[inline]
fn now_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * TICK + (ts.tv_nsec as u64) * TICK / 1_000_000_000
}

fn pack(tag: u64, time: u64, tokens: u64) -> u64 {
    tag << (TIME_BITS + TOKEN_BITS) | (time & TIME_MASK) << TOKEN_BITS | tokens
}

impl Shared {
    /// The tokens in the bucket `word` at `now`: what it held plus the refill since.
    #[inline]
    fn refilled(&self, word: u64, now: u64) -> u64 {
        let idle = now.wrapping_sub(word >> TOKEN_BITS) & TIME_MASK;
        (word & TOKEN_MASK)
            .saturating_add(idle.saturating_mul(self.rate))
            .min(self.cap)
    }

    /// Takes one token from the bucket of `key` at time `now` (ticks); false if it is empty.
    fn take(&self, key: u64, now: u64) -> bool {
        let group = &self.groups[(key as usize) % GROUPS].0;
        // Never 0, so an all-zero word is an empty slot.
        let tag = (key >> 48) | 0x8000;
        let mut allowed = true;
        for _ in 0..RETRIES {
            let mut words = [0u64; WAYS];
            let mut found = None;
            for (i, slot) in group.iter().enumerate() {
                let word = slot.load(Ordering::Relaxed);
                if word >> (TIME_BITS + TOKEN_BITS) == tag {
                    found = Some((i, word));
                    break;
                }
                words[i] = word;
            }
            // The slot to take for a new key: an empty one, else the one closest to full (a
            // full bucket is the same as no bucket, so evicting it forgets nothing).
            let victim = || {
                let mut victim = (0, 0u64, 0u64);
                for (i, &word) in words.iter().enumerate() {
                    let score = if word == 0 {
                        u64::MAX
                    } else {
                        self.refilled(word, now)
                    };
                    if i == 0 || score > victim.1 {
                        victim = (i, score, word);
                    }
                }
                victim
            };
            let (i, old, new) = match found {
                Some((i, word)) => {
                    let tokens = self.refilled(word, now);
                    allowed = tokens >= TICK;
                    let left = if allowed { tokens - TICK } else { tokens };
                    (i, word, pack(tag, now, left))
                }
                // A new key starts with a full bucket, less this response.
                None => {
                    allowed = true;
                    let (i, _, word) = victim();
                    (i, word, pack(tag, now, self.cap - TICK))
                }
            };
            if old == new
                || group[i]
                    .compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return allowed;
            }
        }
        allowed
    }
}

impl Limiter {
    /// No rate limiting: `check` is never reached (`is_on` is false).
    pub fn off() -> Limiter {
        Limiter {
            shared: None,
            limited: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Allocates the table (512 KiB) when `rate > 0`.
    pub fn new(settings: &RrlConfig) -> Limiter {
        if settings.rate == 0 {
            return Limiter::off();
        }
        let rate = u64::from(settings.rate);
        let cap = (rate * u64::from(settings.window.max(1))).min(MAX_BURST) * TICK;
        Limiter {
            shared: Some(Arc::new(Shared {
                groups: (0..GROUPS)
                    .map(|_| Group(std::array::from_fn(|_| AtomicU64::new(0))))
                    .collect(),
                rate,
                cap,
                slip: settings.slip,
                exempt: settings.exempt.clone(),
            })),
            limited: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The same table with a slip counter of this worker's own.
    pub fn for_worker(&self) -> Limiter {
        Limiter {
            shared: self.shared.clone(),
            limited: Arc::new(AtomicU32::new(0)),
        }
    }

    #[inline]
    pub fn is_on(&self) -> bool {
        self.shared.is_some()
    }

    /// The verdict on one UDP response to `client` (see the module comment).
    #[inline]
    pub fn check(
        &self,
        client: IpAddr,
        class: Class,
        qname: &[u8],
        qtype: u16,
        zone: Option<usize>,
    ) -> Verdict {
        let Some(shared) = &self.shared else {
            return Verdict::Send;
        };
        self.check_at(
            shared,
            client,
            key(client, class, qname, qtype, zone),
            now_ticks(),
        )
    }

    fn check_at(&self, shared: &Shared, client: IpAddr, key: u64, now: u64) -> Verdict {
        if shared.take(key, now) || shared.exempt.iter().any(|p| p.contains(client)) {
            return Verdict::Send;
        }
        let n = self.limited.fetch_add(1, Ordering::Relaxed);
        if shared.slip != 0 && n.is_multiple_of(shared.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, window: u32, slip: u32, exempt: &[&str]) -> Limiter {
        Limiter::new(&RrlConfig {
            rate,
            window,
            slip,
            exempt: exempt
                .iter()
                .map(|p| crate::model::Prefix::parse(p).unwrap())
                .collect(),
        })
    }

    /// Sends `n` responses of one key at `now`; counts (sent, slipped, dropped).
    fn burst(l: &Limiter, client: &str, key: u64, now: u64, n: usize) -> (usize, usize, usize) {
        let shared = l.shared.as_ref().unwrap();
        let mut counts = (0, 0, 0);
        for _ in 0..n {
            match l.check_at(shared, client.parse().unwrap(), key, now) {
                Verdict::Send => counts.0 += 1,
                Verdict::Slip => counts.1 += 1,
                Verdict::Drop => counts.2 += 1,
            }
        }
        counts
    }

    /// (time in ticks, responses tried, (sent, slipped, dropped)).
    type Step = (u64, usize, (usize, usize, usize));

    #[test]
    fn token_bucket_table() {
        // (rate, window, slip, [(time in ticks, responses tried, (sent, slipped, dropped))])
        let cases: &[(u32, u32, u32, &[Step])] = &[
            // A full bucket is rate × window; then rate per second.
            (
                10,
                2,
                0,
                &[
                    (1000, 50, (20, 0, 30)),
                    (1000 + 64, 50, (10, 0, 40)),
                    (1000 + 96, 50, (5, 0, 45)),
                ],
            ),
            // Refill stops at the capacity however long the bucket was idle.
            (
                5,
                1,
                0,
                &[(10, 5, (5, 0, 0)), (10 + 64 * 100, 20, (5, 0, 15))],
            ),
            // slip 2: every other limited response is truncated.
            (1, 1, 2, &[(7, 11, (1, 5, 5))]),
            // slip 1: every limited response is truncated.
            (1, 1, 1, &[(7, 11, (1, 10, 0))]),
            // slip 3.
            (2, 1, 3, &[(7, 11, (2, 3, 6))]),
            // Fractions of a token accumulate: 1/s, asked every 1/4 s.
            (
                1,
                1,
                0,
                &[
                    (100, 1, (1, 0, 0)),
                    (116, 1, (0, 0, 1)),
                    (132, 1, (0, 0, 1)),
                    (148, 1, (0, 0, 1)),
                    (164, 1, (1, 0, 0)),
                ],
            ),
        ];
        for (rate, window, slip, steps) in cases {
            let l = limiter(*rate, *window, *slip, &[]);
            for (step, (now, n, want)) in steps.iter().enumerate() {
                let got = burst(&l, "192.0.2.1", 42, *now, *n);
                assert_eq!(
                    got, *want,
                    "rate {rate} window {window} slip {slip} step {step}"
                );
            }
        }
    }

    #[test]
    fn time_wraps() {
        // The 22-bit tick counter wraps every ~18 hours; a bucket refills across the wrap.
        let l = limiter(1, 1, 0, &[]);
        let before = TIME_MASK - 10;
        assert_eq!(burst(&l, "192.0.2.1", 1, before, 3), (1, 0, 2));
        assert_eq!(burst(&l, "192.0.2.1", 1, before + 64, 3), (1, 0, 2));
    }

    #[test]
    fn exempt_prefixes_are_never_limited() {
        let l = limiter(1, 1, 0, &["192.0.2.0/24", "2001:db8::/32"]);
        for client in ["192.0.2.200", "2001:db8:1::1"] {
            assert_eq!(
                burst(
                    &l,
                    client,
                    key(client.parse().unwrap(), Class::Answer, b"\0", 1, None),
                    5,
                    100
                ),
                (100, 0, 0)
            );
        }
        assert_eq!(burst(&l, "192.0.3.1", 9, 5, 100), (1, 0, 99));
    }

    #[test]
    fn keys_by_prefix_class_and_name() {
        let k = |ip: &str, class, name: &[u8], qtype, zone| {
            key(ip.parse().unwrap(), class, name, qtype, zone)
        };
        let www = b"\x03www\x07example\x00";
        let base = k("192.0.2.1", Class::Answer, www, 1, Some(0));
        // Same /24, same question: same bucket.
        assert_eq!(base, k("192.0.2.254", Class::Answer, www, 1, Some(0)));
        // Another /24, type, name, class: another bucket.
        for other in [
            k("192.0.3.1", Class::Answer, www, 1, Some(0)),
            k("192.0.2.1", Class::Answer, www, 28, Some(0)),
            k(
                "192.0.2.1",
                Class::Answer,
                b"\x03ftp\x07example\x00",
                1,
                Some(0),
            ),
            k("192.0.2.1", Class::Nodata, www, 1, Some(0)),
        ] {
            assert_ne!(base, other);
        }
        // NXDOMAIN per zone: every name shares one bucket.
        assert_eq!(
            k(
                "192.0.2.1",
                Class::Nxdomain,
                b"\x01a\x07example\x00",
                1,
                Some(0)
            ),
            k(
                "192.0.2.1",
                Class::Nxdomain,
                b"\x01b\x07example\x00",
                16,
                Some(0)
            )
        );
        assert_ne!(
            k("192.0.2.1", Class::Nxdomain, www, 1, Some(0)),
            k("192.0.2.1", Class::Nxdomain, www, 1, Some(1))
        );
        // IPv6 by /56.
        assert_eq!(
            k("2001:db8:0:1200::1", Class::Answer, www, 1, None),
            k("2001:db8:0:12ff:ffff::1", Class::Answer, www, 1, None)
        );
        assert_ne!(
            k("2001:db8:0:1200::1", Class::Answer, www, 1, None),
            k("2001:db8:0:1300::1", Class::Answer, www, 1, None)
        );
    }

    #[test]
    fn classes() {
        use Rcode::*;
        for (rcode, aa, data, wild, want) in [
            (NoError, true, true, false, Class::Answer),
            (NoError, true, true, true, Class::Wildcard),
            (NoError, true, false, false, Class::Nodata),
            (NoError, false, false, false, Class::Referral),
            (NxDomain, true, false, false, Class::Nxdomain),
            (NxDomain, true, true, false, Class::Nxdomain),
            (Refused, false, false, false, Class::Error),
            (ServFail, true, false, false, Class::Error),
            (FormErr, false, false, false, Class::Error),
            (BadVers, false, false, false, Class::Error),
        ] {
            assert_eq!(
                Class::of(rcode, aa, data, wild),
                want,
                "{rcode:?} aa={aa} data={data}"
            );
        }
    }

    #[test]
    fn many_keys_share_the_table_without_growing() {
        // More keys than slots: the table evicts the fullest buckets, never allocates, and a key that
        // keeps coming back stays limited.
        let l = limiter(10, 1, 0, &[]);
        let shared = l.shared.as_ref().unwrap();
        for _ in 0..10 {
            assert!(shared.take(7, 1));
        }
        for k in 0..(4 * SLOTS as u64) {
            shared.take(mix(k + 100), 1);
            if k % 1000 == 0 {
                // Its bucket is empty, so it is never the one evicted for a new key.
                assert!(!shared.take(7, 1), "key 7 stayed limited ({k})");
            }
        }
    }
}
