//! Geography and ASN databases for routing rules (issue 15): MaxMind DB (`.mmdb`) files, as
//! GeoLite2, GeoIP2 and DB-IP ship them, opened once per config load and read on the query
//! path. The only file that names the `maxminddb` crate.
//!
//! `GeoDb::open` memory-maps the file and checks its metadata's `database_type` against what
//! the caller wants (`DbKind`): a City, Country or Enterprise database for geography, an ASN
//! (or ISP) database for autonomous system numbers. Every failure names the file.
//!
//! The mapping assumes what every updater does (geoipupdate, DB-IP's scripts, `mv`): a new
//! database replaces the old file by rename. Truncating or rewriting a mapped file in place
//! would make later reads fault (SIGBUS); a reload picks the new file up.
//!
//! Lookups (`place`, `asn`) neither allocate nor lock. The crate's `Reader::lookup` walks the
//! mapped search tree and returns a `LookupResult` by value (a reference, an offset, a prefix
//! length); `LookupResult::network` builds a `Copy` network. Decoding goes through the
//! crate's serde `Decoder`, a cursor over the mapped bytes, into the private `*Record` types
//! below, which own nothing: codes are copied into fixed arrays (`Short`), the ASN into a
//! `u32`, every field the records do not name (names in eight languages, locations, postal
//! codes...) is skipped by `IgnoredAny` without being read, and `subdivisions` is an array read
//! by a visitor that keeps its first element and skips the rest (`FirstSubdivision`), never
//! collecting it. Map keys reach the derived field visitors as bytes borrowed from the map. Only
//! a malformed record costs an allocation (the crate boxes its error), and then decodes as
//! nothing; the unit tests count allocations around lookups.
//!
//! A lookup also returns the prefix length of the database network that holds the address,
//! in the address's own family: an IPv4 address in an IPv6 tree reports its length inside the
//! IPv4 subtree (`::/96`), and 0 when the tree has no IPv4 subtree (one record then covers all
//! of IPv4). Routing uses it as the ECS scope of a decision the database made.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxminddb::{MaxMindDbError, Mmap, Reader};
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::model::{Code, Subdivision};

/// What a database is wanted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// Continent code, country ISO code, first subdivision ISO code (a City, Country or
    /// Enterprise database).
    Geography,
    /// Autonomous system number (an ASN or ISP database).
    Asn,
}

impl DbKind {
    /// The kind a database's `database_type` says it is, None if neither (an anonymous-IP or
    /// connection-type database, say). ASN first: `GeoIP2-ISP` and `GeoLite2-ASN` carry
    /// `autonomous_system_number`; `GeoIP2-City`, `GeoLite2-Country`, `GeoIP2-Enterprise`
    /// and `DBIP-City-Lite (compat=City)` carry the geography.
    fn of(database_type: &str) -> Option<DbKind> {
        let t = database_type.to_ascii_lowercase();
        if t.contains("asn") || t.contains("isp") {
            Some(DbKind::Asn)
        } else if t.contains("city") || t.contains("country") || t.contains("enterprise") {
            Some(DbKind::Geography)
        } else {
            None
        }
    }
}

impl fmt::Display for DbKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbKind::Geography => "a City or Country database",
            DbKind::Asn => "an ASN database",
        })
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a MaxMind DB (.mmdb) file: {reason}", .path.display())]
    NotMaxMind { path: PathBuf, reason: String },
    #[error("{}: is a `{found}` database; expected {expected}", .path.display())]
    WrongKind {
        path: PathBuf,
        found: String,
        expected: DbKind,
    },
}

/// Where a database places an address. Codes are upper case; a code the record lacks, or
/// one that is not a code (wrong length, not ASCII letters), is None.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub continent: Option<Code>,
    pub country: Option<Code>,
    /// The first (largest) subdivision, with the record's country; None without a country.
    pub subdivision: Option<Subdivision>,
}

/// An opened database, memory-mapped; clones share it.
#[derive(Clone)]
pub struct GeoDb(Arc<Inner>);

struct Inner {
    reader: Reader<Mmap>,
    path: PathBuf,
    kind: DbKind,
    /// An IPv4-only tree: the crate refuses (with an allocated error) IPv6 lookups in it.
    ipv4_only: bool,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.0.path)
            .field("kind", &self.0.kind)
            .field("database_type", &self.database_type())
            .field("build_epoch", &self.build_epoch())
            .finish()
    }
}

impl GeoDb {
    /// Opens and maps `path`, checking that it is a MaxMind DB of the `kind` wanted.
    pub fn open(path: &Path, kind: DbKind) -> Result<GeoDb, GeoError> {
        // SAFETY: the map is only read, and stays valid as long as the file is replaced by
        // rename rather than truncated in place (the module's `//!` states the assumption);
        // every read through it is bounds-checked by the crate against the mapped length.
        let reader = unsafe { Reader::open_mmap(path) }.map_err(|e| match e {
            MaxMindDbError::Io(source) | MaxMindDbError::Mmap(source) => GeoError::Read {
                path: path.to_path_buf(),
                source,
            },
            other => GeoError::NotMaxMind {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
        let found = &reader.metadata().database_type;
        if DbKind::of(found) != Some(kind) {
            return Err(GeoError::WrongKind {
                path: path.to_path_buf(),
                found: found.clone(),
                expected: kind,
            });
        }
        let ipv4_only = reader.metadata().ip_version == 4;
        Ok(GeoDb(Arc::new(Inner {
            reader,
            path: path.to_path_buf(),
            kind,
            ipv4_only,
        })))
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    pub fn kind(&self) -> DbKind {
        self.0.kind
    }

    /// The metadata's `database_type` (`GeoLite2-City`, `GeoLite2-ASN`, ...).
    pub fn database_type(&self) -> &str {
        &self.0.reader.metadata().database_type
    }

    /// When the database was built, in Unix seconds (its metadata's `build_epoch`).
    pub fn build_epoch(&self) -> u64 {
        self.0.reader.metadata().build_epoch
    }

    /// Continent, country and first subdivision of `ip` (None where the database has no
    /// record), and the prefix length of the database network holding it.
    pub fn place(&self, ip: IpAddr) -> (Option<Place>, u8) {
        let (record, len) = self.lookup::<GeoRecord>(ip);
        let place = record.map(|r| {
            let country = r.country.iso_code.code();
            Place {
                continent: r.continent.code.code(),
                country,
                subdivision: country
                    .zip(r.subdivisions.0)
                    .map(|(country, code)| Subdivision { country, code }),
            }
        });
        (place, len)
    }

    /// The autonomous system number of `ip`, and the prefix length of the database network
    /// holding it.
    pub fn asn(&self, ip: IpAddr) -> (Option<u32>, u8) {
        let (record, len) = self.lookup::<AsnRecord>(ip);
        (record.and_then(|r| r.autonomous_system_number.0), len)
    }

    /// The record holding `ip`, decoded as `T` (None without one, or if it does not decode),
    /// and its network's prefix length in `ip`'s family.
    fn lookup<'a, T: Deserialize<'a>>(&'a self, ip: IpAddr) -> (Option<T>, u8) {
        let full = if ip.is_ipv4() { 32 } else { 128 };
        if ip.is_ipv6() && self.0.ipv4_only {
            // Nothing for any IPv6 address: one answer for the whole family.
            return (None, 0);
        }
        let Ok(found) = self.0.reader.lookup(ip) else {
            // A data pointer outside the data section (a corrupt file): claim nothing wider
            // than the address itself.
            return (None, full);
        };
        let len = match found.network() {
            Ok(net) if net.is_ipv4() == ip.is_ipv4() => net.prefix(),
            // An IPv4 address in an IPv6 tree without an IPv4 subtree: the record reached on
            // the way down `::/96` covers all of IPv4.
            Ok(_) => 0,
            Err(_) => full,
        };
        (found.decode::<T>().ok().flatten(), len)
    }
}

/// The fields of a GeoIP2 City/Country record that routing reads.
#[derive(Deserialize)]
struct GeoRecord {
    #[serde(default)]
    continent: ContinentRecord,
    #[serde(default)]
    country: CountryRecord,
    #[serde(default)]
    subdivisions: FirstSubdivision,
}

#[derive(Default, Deserialize)]
struct ContinentRecord {
    #[serde(default)]
    code: Short,
}

#[derive(Default, Deserialize)]
struct CountryRecord {
    #[serde(default)]
    iso_code: Short,
}

#[derive(Default, Deserialize)]
struct SubdivisionRecord {
    #[serde(default)]
    iso_code: Short,
}

/// The fields of a GeoLite2-ASN (or GeoIP2-ISP) record that routing reads.
#[derive(Deserialize)]
struct AsnRecord {
    #[serde(default)]
    autonomous_system_number: Number,
}

/// A short code: 1 to 3 ASCII letters or digits, upper-cased; None for any other value (a
/// longer or empty string, a number, a map).
#[derive(Clone, Copy, Default)]
struct Short(Option<([u8; 3], usize)>);

impl Short {
    /// A two-letter code (continent, country).
    fn code(self) -> Option<Code> {
        match self.0 {
            Some(([a, b, _], 2)) if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some([a, b])
            }
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Short {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Short, D::Error> {
        d.deserialize_any(Lenient(|s: &str| {
            let bytes = s.as_bytes();
            if bytes.is_empty() || bytes.len() > 3 || !bytes.iter().all(u8::is_ascii_alphanumeric) {
                return Short(None);
            }
            let mut code = [0u8; 3];
            for (to, from) in code.iter_mut().zip(bytes) {
                *to = from.to_ascii_uppercase();
            }
            Short(Some((code, bytes.len())))
        }))
    }
}

/// An unsigned number that fits 32 bits, however the database encodes it (uint16, uint32,
/// uint64, int32); None for anything else.
#[derive(Clone, Copy, Default)]
struct Number(Option<u32>);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Number, D::Error> {
        d.deserialize_any(Lenient(|_: &str| Number(None)))
    }
}

/// A visitor that accepts any value: strings go to the function, numbers to `From<u64>`
/// (`Number`), maps and arrays are skipped, everything else is the default (nothing). Never
/// an error, so never an allocation.
struct Lenient<F>(F);

/// What `Lenient` makes of a number.
trait FromNumber: Default {
    fn from_u64(_: u64) -> Self {
        Self::default()
    }
}

impl FromNumber for Short {}

impl FromNumber for Number {
    fn from_u64(v: u64) -> Number {
        Number(u32::try_from(v).ok())
    }
}

impl<'de, T: FromNumber, F: FnOnce(&str) -> T> Visitor<'de> for Lenient<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from_u64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Ok(u64::try_from(v).map_or_else(|_| T::default(), T::from_u64))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<T, E> {
        Ok(u64::try_from(v).map_or_else(|_| T::default(), T::from_u64))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
}

/// The ISO code of the first element of `subdivisions` (the largest subdivision: a US state,
/// an English constituent country), 1 to 3 characters, padded with zero bytes.
#[derive(Default)]
struct FirstSubdivision(Option<[u8; 3]>);

impl<'de> Deserialize<'de> for FirstSubdivision {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<FirstSubdivision, D::Error> {
        struct First;
        impl<'de> Visitor<'de> for First {
            type Value = FirstSubdivision;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of subdivisions")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<SubdivisionRecord>()?;
                // The decoder reads the array in place: the rest must be stepped over for
                // the record's next key to be where the decoder looks.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstSubdivision(
                    first.and_then(|s| s.iso_code.0).map(|(code, _)| code),
                ))
            }
        }
        d.deserialize_seq(First)
    }
}

/// Test support shared with `snapshot::route`: the `.mmdb` writer of `tests/it`, a helper that
/// writes a database to a directory, and a count of this thread's allocations.
#[cfg(test)]
#[path = "../tests/it/mmdb.rs"]
pub(crate) mod mmdb;

#[cfg(test)]
pub(crate) mod testing {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};

    use super::mmdb::{Value, build};

    /// Writes a database of `networks` (`"198.51.100.0"`, prefix length, record) as
    /// `dir/name`.
    pub(crate) fn write(
        dir: &Path,
        name: &str,
        database_type: &str,
        networks: &[(&str, u8, Value)],
    ) -> PathBuf {
        let networks: Vec<(IpAddr, u8, Value)> = networks
            .iter()
            .map(|(ip, len, v)| (ip.parse().unwrap(), *len, v.clone()))
            .collect();
        let path = dir.join(name);
        std::fs::write(&path, build(database_type, &networks)).unwrap();
        path
    }

    /// Counts allocations per thread for `allocations`; otherwise the system allocator.
    struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    // SAFETY: every call goes to the system allocator unchanged; the count is a const-initialized
    // thread-local Cell, which neither allocates nor registers a destructor.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: the caller's contract is passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract is passed on.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: the caller's contract is passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Runs `f` and returns its result with the number of allocations it made on this thread.
    pub(crate) fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
        let before = ALLOCATIONS.with(Cell::get);
        let r = f();
        (r, ALLOCATIONS.with(Cell::get) - before)
    }
}

#[cfg(test)]
mod tests {
    use super::mmdb::Value;
    use super::testing::{allocations, write};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn place(continent: &str, country: &str, sub: Option<&str>) -> Option<Place> {
        let code = |s: &str| <[u8; 2]>::try_from(s.as_bytes()).unwrap();
        Some(Place {
            continent: Some(code(continent)),
            country: Some(code(country)),
            subdivision: sub.map(|s| {
                let mut c = [0; 3];
                c[..s.len()].copy_from_slice(s.as_bytes());
                Subdivision {
                    country: code(country),
                    code: c,
                }
            }),
        })
    }

    fn geo_db(dir: &Path) -> GeoDb {
        let path = write(
            dir,
            "city.mmdb",
            "GeoLite2-City",
            &[
                ("198.51.100.0", 24, Value::geo("EU", "DE", Some("BE"))),
                ("198.51.100.128", 25, Value::geo("NA", "US", Some("CA"))),
                ("203.0.113.0", 24, Value::geo("EU", "GB", Some("ENG"))),
                ("2001:db8::", 32, Value::geo("EU", "FR", None)),
            ],
        );
        GeoDb::open(&path, DbKind::Geography).unwrap()
    }

    #[test]
    fn place_reads_continent_country_and_first_subdivision_with_the_network_length() {
        let dir = tempfile::tempdir().unwrap();
        let db = geo_db(dir.path());
        // The /25 splits the /24: the DE half is a /25 network in the tree.
        assert_eq!(
            db.place(ip("198.51.100.7")),
            (place("EU", "DE", Some("BE")), 25)
        );
        assert_eq!(
            db.place(ip("198.51.100.200")),
            (place("NA", "US", Some("CA")), 25)
        );
        assert_eq!(
            db.place(ip("203.0.113.9")),
            (place("EU", "GB", Some("ENG")), 24)
        );
        assert_eq!(db.place(ip("2001:db8:1::1")), (place("EU", "FR", None), 32));
        // Outside every network: no record, and the length of the empty network around it
        // (192 = 11000000 parts from 198 = 11000110 after five bits), in IPv4 bits.
        assert_eq!(db.place(ip("192.0.2.1")), (None, 6));
        // 2001:db9:: parts from 2001:db8:: after 31 bits.
        assert_eq!(db.place(ip("2001:db9::1")), (None, 32));
        // An IPv4-mapped address is an IPv6 address to the database (no alias in this tree).
        assert_eq!(db.place(ip("::ffff:198.51.100.7")).0, None);
    }

    #[test]
    fn an_ipv4_address_in_a_tree_without_ipv4_networks_has_length_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "v6.mmdb",
            "GeoLite2-Country",
            &[("2001:db8::", 32, Value::geo("EU", "FR", None))],
        );
        let db = GeoDb::open(&path, DbKind::Geography).unwrap();
        assert_eq!(db.place(ip("198.51.100.1")), (None, 0));
        assert_eq!(db.place(ip("2001:db8::1")), (place("EU", "FR", None), 32));
    }

    #[test]
    fn asn_reads_the_number_with_the_network_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "asn.mmdb",
            "GeoLite2-ASN",
            &[
                ("192.0.2.0", 24, Value::asn(64500, "Example")),
                ("2001:db8::", 48, Value::asn(64501, "Example v6")),
                (
                    "198.51.100.0",
                    24,
                    Value::map(&[("autonomous_system_number", Value::U16(7))]),
                ),
                (
                    "203.0.113.0",
                    24,
                    Value::map(&[("autonomous_system_number", Value::str("AS1"))]),
                ),
            ],
        );
        let db = GeoDb::open(&path, DbKind::Asn).unwrap();
        assert_eq!(db.asn(ip("192.0.2.9")), (Some(64500), 24));
        assert_eq!(db.asn(ip("2001:db8:0:1::")), (Some(64501), 48));
        assert_eq!(db.asn(ip("198.51.100.1")), (Some(7), 24), "a uint16 number");
        assert_eq!(
            db.asn(ip("203.0.113.1")),
            (None, 24),
            "a string is no number"
        );
        assert_eq!(db.asn(ip("2001:db8:1::")).0, None);
    }

    #[test]
    fn malformed_codes_are_none_and_the_rest_of_the_record_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let sub = |codes: &[&str]| {
            Value::Array(
                codes
                    .iter()
                    .map(|c| Value::map(&[("iso_code", Value::str(c))]))
                    .collect(),
            )
        };
        let path = write(
            dir.path(),
            "odd.mmdb",
            "GeoIP2-Country",
            &[
                // Lower case is upper-cased; the second subdivision is skipped over.
                (
                    "192.0.2.0",
                    26,
                    Value::map(&[
                        ("continent", Value::map(&[("code", Value::str("eu"))])),
                        ("country", Value::map(&[("iso_code", Value::str("gb"))])),
                        ("subdivisions", sub(&["eng", "LND"])),
                        (
                            "location",
                            Value::map(&[("time_zone", Value::str("Europe/London"))]),
                        ),
                    ]),
                ),
                // A number for a code, a four-character subdivision.
                (
                    "192.0.2.64",
                    26,
                    Value::map(&[
                        ("continent", Value::map(&[("code", Value::U32(7))])),
                        ("country", Value::map(&[("iso_code", Value::str("DE"))])),
                        ("subdivisions", sub(&["ABCD"])),
                    ]),
                ),
                // An empty code, a three-letter country, so a subdivision without a country.
                (
                    "192.0.2.128",
                    26,
                    Value::map(&[
                        ("continent", Value::map(&[("code", Value::str(""))])),
                        ("country", Value::map(&[("iso_code", Value::str("DEU"))])),
                        ("subdivisions", sub(&["CA"])),
                    ]),
                ),
                // No fields we read at all.
                ("192.0.2.192", 26, Value::map(&[("x", Value::U32(1))])),
            ],
        );
        let db = GeoDb::open(&path, DbKind::Geography).unwrap();
        assert_eq!(
            db.place(ip("192.0.2.1")),
            (place("EU", "GB", Some("ENG")), 26)
        );
        let de = Place {
            country: Some(*b"DE"),
            ..Place::default()
        };
        assert_eq!(db.place(ip("192.0.2.65")), (Some(de), 26));
        assert_eq!(db.place(ip("192.0.2.129")), (Some(Place::default()), 26));
        assert_eq!(db.place(ip("192.0.2.193")), (Some(Place::default()), 26));
    }

    #[test]
    fn lookups_do_not_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let db = geo_db(dir.path());
        let asn = GeoDb::open(
            &write(
                dir.path(),
                "asn.mmdb",
                "GeoLite2-ASN",
                &[("192.0.2.0", 24, Value::asn(64500, "Example"))],
            ),
            DbKind::Asn,
        )
        .unwrap();
        let addrs = [
            ip("198.51.100.7"),
            ip("198.51.100.200"),
            ip("203.0.113.9"),
            ip("192.0.2.1"),
            ip("2001:db8::1"),
            ip("2001:db9::1"),
        ];
        let (found, n) = allocations(|| {
            let mut found = 0;
            for a in addrs {
                found += usize::from(db.place(a).0.is_some());
                found += usize::from(asn.asn(a).0.is_some());
            }
            found
        });
        assert_eq!(found, 5, "4 places, 1 ASN");
        assert_eq!(n, 0, "allocations during lookups");
        assert_eq!(allocations(|| vec![0u8; 8]).1, 1, "the count counts");
    }

    #[test]
    fn open_names_the_file_and_what_is_wrong_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.mmdb");
        let err = GeoDb::open(&missing, DbKind::Geography).unwrap_err();
        assert!(matches!(err, GeoError::Read { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot read: No such file or directory (os error 2)",
                missing.display()
            )
        );

        let garbage = dir.path().join("garbage.mmdb");
        std::fs::write(&garbage, b"GIF89a not a database at all").unwrap();
        let err = GeoDb::open(&garbage, DbKind::Geography).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: not a MaxMind DB (.mmdb) file: invalid database: could not find MaxMind DB metadata in file",
                garbage.display()
            )
        );

        let empty = dir.path().join("empty.mmdb");
        std::fs::write(&empty, b"").unwrap();
        let err = GeoDb::open(&empty, DbKind::Asn).unwrap_err();
        assert!(matches!(err, GeoError::NotMaxMind { .. }), "{err:?}");

        let err = GeoDb::open(dir.path(), DbKind::Asn).unwrap_err();
        assert!(matches!(err, GeoError::Read { .. }), "a directory: {err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot read: ", dir.path().display())),
            "{err}"
        );

        let asn = write(
            dir.path(),
            "asn.mmdb",
            "GeoLite2-ASN",
            &[("192.0.2.0", 24, Value::asn(64500, "Example"))],
        );
        let err = GeoDb::open(&asn, DbKind::Geography).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: is a `GeoLite2-ASN` database; expected a City or Country database",
                asn.display()
            )
        );
        let city = write(
            dir.path(),
            "city.mmdb",
            "GeoIP2-City",
            &[("192.0.2.0", 24, Value::geo("EU", "DE", None))],
        );
        let err = GeoDb::open(&city, DbKind::Asn).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: is a `GeoIP2-City` database; expected an ASN database",
                city.display()
            )
        );
        let anon = write(
            dir.path(),
            "anon.mmdb",
            "GeoIP2-Anonymous-IP",
            &[(
                "192.0.2.0",
                24,
                Value::map(&[("is_anonymous", Value::U16(1))]),
            )],
        );
        let err = GeoDb::open(&anon, DbKind::Geography).unwrap_err();
        assert!(matches!(err, GeoError::WrongKind { .. }), "{err:?}");
    }

    #[test]
    fn the_kinds_of_known_database_types() {
        for (t, kind) in [
            ("GeoLite2-City", Some(DbKind::Geography)),
            ("GeoIP2-Country", Some(DbKind::Geography)),
            ("GeoIP2-Enterprise", Some(DbKind::Geography)),
            ("DBIP-City-Lite (compat=City)", Some(DbKind::Geography)),
            ("DBIP-Country-Lite", Some(DbKind::Geography)),
            ("GeoLite2-ASN", Some(DbKind::Asn)),
            ("DBIP-ASN-Lite (compat=GeoLite2-ASN)", Some(DbKind::Asn)),
            ("GeoIP2-ISP", Some(DbKind::Asn)),
            ("GeoIP2-Anonymous-IP", None),
            ("GeoIP2-Connection-Type", None),
        ] {
            assert_eq!(DbKind::of(t), kind, "{t}");
        }
    }

    #[test]
    fn accessors_and_debug_show_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = geo_db(dir.path());
        assert_eq!(db.path(), dir.path().join("city.mmdb"));
        assert_eq!(db.kind(), DbKind::Geography);
        assert_eq!(db.database_type(), "GeoLite2-City");
        assert_eq!(db.build_epoch(), 1_700_000_000);
        let shown = format!("{:?}", db.clone());
        assert!(
            shown.contains("city.mmdb") && shown.contains("GeoLite2-City"),
            "{shown}"
        );
    }
}
