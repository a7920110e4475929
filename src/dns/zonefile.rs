//! RFC 1035 master files -> `model::Record`s, through hickory-proto's zone parser. This is the
//! only place zone text meets hickory types; everything after it works on `model`.

use std::path::Path;

use hickory_proto::rr::{DNSClass, Name as HName, RData};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use hickory_proto::serialize::txt::Parser;

use crate::model::{self, Name, Rdata, Record, Soa};

/// A zone file that does not parse, with the 1-based line of the entry at fault.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// One parsed record plus the class it was written with (only IN is served; `zones` says so).
#[derive(Debug)]
pub struct Parsed {
    pub record: Record,
    pub class_in: bool,
}

/// Parses zone text. `path` anchors relative `$INCLUDE`s; `origin` is the zone's origin.
pub fn parse(text: &str, path: &Path, origin: &Name) -> Result<Vec<Parsed>, SyntaxError> {
    let horigin = HName::from_ascii(origin.to_string()).map_err(|e| SyntaxError {
        line: 0,
        message: format!("origin: {e}"),
    })?;
    let run =
        |text: &str| Parser::new(text, Some(path.to_path_buf()), Some(horigin.clone())).parse();
    let (_, sets) = match run(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Err(SyntaxError {
                line: failing_line(text, |prefix| run(prefix).is_err()),
                message: e.to_string(),
            });
        }
    };

    let mut out = Vec::new();
    for set in sets.values() {
        for r in set.records_without_rrsigs() {
            let Some(rdata) = convert_rdata(&r.data) else {
                return Err(SyntaxError {
                    line: 0,
                    message: format!("{} {}: cannot encode rdata", r.name, r.record_type()),
                });
            };
            out.push(Parsed {
                record: Record {
                    owner: convert_name(&r.name),
                    rtype: u16::from(r.record_type()),
                    ttl: r.ttl,
                    rdata,
                },
                class_in: r.dns_class == DNSClass::IN,
            });
        }
    }
    Ok(out)
}

/// hickory's parser stops at the first error without a line number. Entries end on lines where
/// parentheses are balanced; the first prefix of whole entries that fails to parse ends with the
/// entry at fault, found by bisection (a failing prefix stays failing when extended).
fn failing_line(text: &str, fails: impl Fn(&str) -> bool) -> usize {
    // Byte offsets just past each line that closes an entry, with its 1-based line number.
    let mut ends: Vec<(usize, usize)> = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut comment) = (0i32, false, false, false);
    let mut line = 1;
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\n' => {
                comment = false;
                if depth <= 0 && !quoted {
                    ends.push((i + 1, line));
                }
                line += 1;
            }
            _ if comment => {}
            b'\\' => escaped = true,
            b'"' => quoted = !quoted,
            _ if quoted => {}
            b';' => comment = true,
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ => {}
        }
    }
    ends.push((text.len(), line));
    // Smallest k whose prefix ends[k] fails; the entry at fault starts after ends[k - 1].
    let (mut lo, mut hi) = (0usize, ends.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&text[..ends[mid].0]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let start = if lo == 0 { 1 } else { ends[lo - 1].1 + 1 };
    // Point at the entry's first non-blank line.
    text.lines()
        .enumerate()
        .skip(start - 1)
        .take(ends[lo].1 + 1 - start)
        .find(|(_, l)| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with(';')
        })
        .map_or(start, |(i, _)| i + 1)
}

fn convert_name(name: &HName) -> Name {
    let mut wire = Vec::with_capacity(model::MAX_NAME_LEN);
    for label in name.iter() {
        wire.push(label.len() as u8);
        wire.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    wire.push(0);
    Name::from_lower_wire(&wire)
}

fn convert_rdata(rdata: &RData) -> Option<Rdata> {
    Some(match rdata {
        RData::CNAME(n) => Rdata::Name(convert_name(&n.0)),
        RData::NS(n) => Rdata::Name(convert_name(&n.0)),
        RData::PTR(n) => Rdata::Name(convert_name(&n.0)),
        RData::MX(mx) => Rdata::Mx {
            preference: mx.preference,
            exchange: convert_name(&mx.exchange),
        },
        RData::SOA(soa) => Rdata::Soa(Box::new(Soa {
            mname: convert_name(&soa.mname),
            rname: convert_name(&soa.rname),
            serial: soa.serial,
            refresh: soa.refresh as u32,
            retry: soa.retry as u32,
            expire: soa.expire as u32,
            minimum: soa.minimum,
        })),
        RData::SRV(srv) => Rdata::Srv {
            priority: srv.priority,
            weight: srv.weight,
            port: srv.port,
            target: convert_name(&srv.target),
        },
        other => {
            // Names inside other types' rdata must not be compressed (RFC 3597 4), and their
            // case is the zone file's.
            let mut wire = Vec::new();
            let mut encoder = BinEncoder::new(&mut wire);
            encoder.set_name_encoding(NameEncoding::Uncompressed);
            other.emit(&mut encoder).ok()?;
            Rdata::Opaque(wire.into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Name {
        Name::parse("example.com.").unwrap()
    }

    #[test]
    fn parses_relative_names_multiline_soa_and_txt_strings() {
        let text = "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster (\n 1 ; serial\n 7200 3600 1209600 60 )\n  IN NS ns1\nns1 IN A 192.0.2.1\nwww 60 IN TXT \"a b\" \"c\"\n";
        let got = parse(text, Path::new("z"), &origin()).unwrap();
        let find = |t: u16| got.iter().find(|p| p.record.rtype == t).unwrap();
        let soa = find(model::rtype::SOA);
        let Rdata::Soa(s) = &soa.record.rdata else {
            panic!("not SOA")
        };
        assert_eq!(s.mname, Name::parse("ns1.example.com").unwrap());
        assert_eq!((s.serial, s.minimum), (1, 60));
        let txt = find(model::rtype::TXT);
        assert_eq!(txt.record.owner, Name::parse("www.example.com").unwrap());
        assert_eq!(txt.record.ttl, 60);
        assert_eq!(txt.record.rdata, Rdata::Opaque((*b"\x03a b\x01c").into()));
        assert!(txt.class_in);
    }

    #[test]
    fn syntax_error_names_the_line_of_the_entry() {
        let text = "$TTL 300\n@ IN SOA ns1 hostmaster (\n 1 7200 3600\n 1209600 60 )\n@ IN NS ns1\n\nns1 IN A 192.0.2.1\nbad IN A 300.1.1.1\nok IN A 192.0.2.2\n";
        let err = parse(text, Path::new("z"), &origin()).unwrap_err();
        assert_eq!(err.line, 8, "{err}");

        let text = "$TTL 300\n@ IN SOA ns1 hostmaster ( 1 2 3 4 5 )\nwww IN MX\n";
        assert_eq!(parse(text, Path::new("z"), &origin()).unwrap_err().line, 3);
    }
}
