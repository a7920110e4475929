//! A MaxMind DB (`.mmdb`) writer for tests and guides: small databases built from
//! documentation prefixes, so no one's geolocation data is shipped (issue 15 routes by country,
//! continent, subdivision and ASN from such files). Writes format 2.0, the one GeoLite2, DB-IP
//! and IPinfo files use: an IPv6 search tree with 24-bit records (IPv4 networks in the `::/96`
//! subtree), 16 zero bytes, the data section, then the metadata marker and map. The test below
//! reads what it writes with the `maxminddb` crate.

use std::net::IpAddr;

/// A value in the data section.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Str(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    pub(crate) fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    pub(crate) fn str(s: &str) -> Value {
        Value::Str(s.to_string())
    }

    /// A GeoIP2-Country/City-shaped record: continent code, country ISO code and, if given,
    /// one subdivision ISO code.
    pub(crate) fn geo(continent: &str, country: &str, subdivision: Option<&str>) -> Value {
        let mut pairs = vec![
            ("continent", Value::map(&[("code", Value::str(continent))])),
            ("country", Value::map(&[("iso_code", Value::str(country))])),
        ];
        if let Some(s) = subdivision {
            pairs.push((
                "subdivisions",
                Value::Array(vec![Value::map(&[("iso_code", Value::str(s))])]),
            ));
        }
        Value::map(&pairs)
    }

    /// A GeoLite2-ASN-shaped record.
    pub(crate) fn asn(number: u32, organization: &str) -> Value {
        Value::map(&[
            ("autonomous_system_number", Value::U32(number)),
            ("autonomous_system_organization", Value::str(organization)),
        ])
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Str(s) => {
                control(out, 2, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Value::U16(v) => uint(out, 5, u64::from(*v)),
            Value::U32(v) => uint(out, 6, u64::from(*v)),
            Value::U64(v) => uint(out, 9, *v),
            Value::Map(pairs) => {
                control(out, 7, pairs.len());
                for (k, v) in pairs {
                    Value::Str(k.clone()).encode(out);
                    v.encode(out);
                }
            }
            Value::Array(items) => {
                control(out, 11, items.len());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }
}

/// A control byte (type, size) with the format's extended-type and size-extension bytes.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (bits, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind < 8 {
        out.push(kind << 5 | bits);
    } else {
        out.push(bits);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

/// One node of the search tree being built: each side is a subtree, data, or nothing.
#[derive(Clone, Debug)]
enum Side {
    Empty,
    Data(usize),
    Node(Box<[Side; 2]>),
}

/// The 128 bits of `ip` as the tree walks them (IPv4 at `::a.b.c.d`).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn insert(side: &mut Side, key: u128, depth: u32, len: u32, data: usize) {
    if depth == len {
        *side = Side::Data(data);
        return;
    }
    if !matches!(side, Side::Node(_)) {
        // A wider network already here stays on both halves; the narrower one overrides.
        let inherited = side.clone();
        *side = Side::Node(Box::new([inherited.clone(), inherited]));
    }
    let Side::Node(children) = side else {
        unreachable!()
    };
    let bit = (key >> (127 - depth)) & 1;
    insert(&mut children[bit as usize], key, depth + 1, len, data);
}

/// Builds a database of `networks` (address, prefix length, record). IPv4 prefixes count IPv4
/// bits. Wider networks should come before the narrower ones nested in them.
pub(crate) fn build(database_type: &str, networks: &[(IpAddr, u8, Value)]) -> Vec<u8> {
    let mut root = Side::Empty;
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (ip, len, value) in networks {
        let len = u32::from(*len) + if ip.is_ipv4() { 96 } else { 0 };
        offsets.push(data.len());
        value.encode(&mut data);
        insert(&mut root, bits(*ip), 0, len, offsets.len() - 1);
    }
    // Number the nodes breadth first; node 0 is the root.
    let Side::Node(first) = root else {
        panic!("a database needs at least one network")
    };
    let mut order: Vec<&[Side; 2]> = vec![&first];
    let mut i = 0;
    while i < order.len() {
        for side in order[i].iter() {
            if let Side::Node(children) = side {
                order.push(children);
            }
        }
        i += 1;
    }
    let node_count = order.len();
    let mut out = Vec::with_capacity(node_count * 6 + data.len() + 512);
    let mut next_node = 1;
    for node in &order {
        for side in node.iter() {
            let record = match side {
                Side::Empty => node_count,
                Side::Data(d) => node_count + 16 + offsets[*d],
                Side::Node(_) => {
                    next_node += 1;
                    next_node - 1
                }
            };
            assert!(record < 1 << 24, "too large for 24-bit records");
            out.extend_from_slice(&(record as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    Value::map(&[
        ("binary_format_major_version", Value::U16(2)),
        ("binary_format_minor_version", Value::U16(0)),
        ("build_epoch", Value::U64(1_700_000_000)),
        ("database_type", Value::str(database_type)),
        (
            "description",
            Value::map(&[("en", Value::str("weir test data"))]),
        ),
        ("ip_version", Value::U16(6)),
        ("languages", Value::Array(vec![Value::str("en")])),
        ("node_count", Value::U32(node_count as u32)),
        ("record_size", Value::U16(24)),
    ])
    .encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxminddb_reads_what_we_write_nested_networks_included() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let db = build(
            "GeoIP2-Country",
            &[
                (ip("198.51.100.0"), 24, Value::geo("EU", "DE", Some("BE"))),
                (ip("198.51.100.128"), 25, Value::geo("NA", "US", None)),
                (ip("203.0.113.0"), 24, Value::geo("NA", "US", None)),
                (ip("2001:db8::"), 32, Value::geo("EU", "FR", None)),
            ],
        );
        let reader = maxminddb::Reader::from_source(db).unwrap();
        let r = reader.lookup(ip("198.51.100.7")).unwrap();
        let c: maxminddb::geoip2::City = r.decode().unwrap().unwrap();
        assert_eq!(c.country.iso_code, Some("DE"));
        assert_eq!(c.continent.code, Some("EU"));
        assert_eq!(c.subdivisions[0].iso_code, Some("BE"));
        assert_eq!(r.network().unwrap().to_string(), "198.51.100.0/25");
        let r = reader.lookup(ip("198.51.100.200")).unwrap();
        let c: maxminddb::geoip2::Country = r.decode().unwrap().unwrap();
        assert_eq!(c.country.iso_code, Some("US"));
        assert_eq!(r.network().unwrap().to_string(), "198.51.100.128/25");
        let r = reader.lookup(ip("2001:db8::1")).unwrap();
        let c: maxminddb::geoip2::Country = r.decode().unwrap().unwrap();
        assert_eq!(c.country.iso_code, Some("FR"));
        assert!(!reader.lookup(ip("192.0.2.1")).unwrap().has_data());
        let asn = build(
            "GeoLite2-ASN",
            &[(ip("192.0.2.0"), 24, Value::asn(64500, "Example"))],
        );
        let reader = maxminddb::Reader::from_source(asn).unwrap();
        let a: maxminddb::geoip2::Asn = reader
            .lookup(ip("192.0.2.9"))
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(a.autonomous_system_number, Some(64500));
    }
}
