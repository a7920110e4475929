//! RFC 1035 master files -> `model::Record`s, through hickory-proto's zone parser. This is the
//! only place zone text meets hickory types; everything after it works on `model`.

use std::path::Path;
use std::str::FromStr;

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

/// A record of a type that allows one record per owner (CNAME, DNAME, SOA) written again at
/// the same owner with different data. hickory's parser silently keeps only the last CNAME,
/// so these are found by a pass over the text of their own.
#[derive(Debug, PartialEq, Eq)]
pub struct Repeat {
    pub owner: Name,
    pub rtype: u16,
    /// `file:line` of the repeat, and the line of the first record.
    pub location: String,
    pub first: String,
}

/// Types with at most one record per owner (RFC 2181 10.1, RFC 6672 2.4, RFC 1035 5.2).
const SINGLETONS: [(&str, u16); 3] = [
    ("CNAME", model::rtype::CNAME),
    ("DNAME", model::rtype::DNAME),
    ("SOA", model::rtype::SOA),
];

/// Every singleton-type record repeated at one owner with other data, with file:line. Run
/// after `parse` succeeded, so the text is known to be well-formed; `$INCLUDE`s are followed
/// as hickory follows them (relative to the including file). Identical repeats are one record
/// (RFC 2181 5) and not reported.
pub fn singleton_repeats(text: &str, path: &Path, origin: &Name) -> Vec<Repeat> {
    let mut scan = RepeatScan {
        origin: HName::from_ascii(origin.to_string()).ok(),
        owner: None,
        seen: std::collections::HashMap::new(),
        repeats: Vec::new(),
    };
    scan.file(text, path, 0);
    scan.repeats
}

struct RepeatScan {
    origin: Option<HName>,
    owner: Option<HName>,
    /// (owner, type) -> (first location, its data).
    seen: std::collections::HashMap<(Name, u16), (String, String)>,
    repeats: Vec<Repeat>,
}

/// hickory's limit on nested `$INCLUDE`s.
const MAX_INCLUDE_DEPTH: usize = 20;

impl RepeatScan {
    fn file(&mut self, text: &str, path: &Path, depth: usize) {
        for (line, blank_start, tokens) in entries(text) {
            let location = format!("{}:{line}", path.display());
            self.entry(&location, blank_start, &tokens, path, depth);
        }
    }

    fn entry(
        &mut self,
        location: &str,
        blank_start: bool,
        tokens: &[String],
        path: &Path,
        depth: usize,
    ) {
        let Some(first) = tokens.first() else { return };
        if !blank_start && first.starts_with('$') {
            match first.to_ascii_uppercase().as_str() {
                "$ORIGIN" => {
                    self.origin = tokens.get(1).and_then(|o| HName::parse(o, None).ok());
                }
                "$INCLUDE" if depth < MAX_INCLUDE_DEPTH => {
                    let Some(file) = tokens.get(1) else { return };
                    let file = Path::new(file);
                    let file = if file.is_absolute() {
                        file.to_path_buf()
                    } else {
                        path.parent().unwrap_or(Path::new("")).join(file)
                    };
                    if let Ok(text) = std::fs::read_to_string(&file) {
                        self.file(&text, &file, depth + 1);
                    }
                }
                _ => {}
            }
            return;
        }
        let rest = if blank_start {
            tokens
        } else {
            self.owner = if first == "@" {
                self.origin.clone()
            } else {
                HName::parse(first, self.origin.as_ref()).ok()
            };
            &tokens[1..]
        };
        // [TTL] [class] type data..., TTL and class in either order (hickory's rule).
        let mut fields = rest.iter().skip_while(|t| {
            let upper = t.to_ascii_uppercase();
            t.bytes().next().is_some_and(|b| b.is_ascii_digit())
                || DNSClass::from_str(&upper).is_ok()
        });
        let Some(rtype) = fields.next().map(|t| t.to_ascii_uppercase()) else {
            return;
        };
        let Some(&(_, code)) = SINGLETONS.iter().find(|(name, _)| *name == rtype) else {
            return;
        };
        let Some(owner) = &self.owner else { return };
        let owner = convert_name(owner);
        // Names in the data compare without case and relative to the origin.
        let data: Vec<String> = fields
            .map(|t| match HName::parse(t, self.origin.as_ref()) {
                Ok(name) if code != model::rtype::SOA => convert_name(&name).to_string(),
                _ => t.to_ascii_lowercase(),
            })
            .collect();
        let data = data.join(" ");
        match self.seen.entry((owner.clone(), code)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((location.to_string(), data));
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                let (first, first_data) = o.get();
                if *first_data != data {
                    self.repeats.push(Repeat {
                        owner,
                        rtype: code,
                        location: location.to_string(),
                        first: first.clone(),
                    });
                }
            }
        }
    }
}

/// Zone text as entries: (1-based first line, starts with a blank, tokens). Parentheses join
/// lines, comments and the parentheses themselves are dropped, quoted strings are one token,
/// escapes stay in their token.
fn entries(text: &str) -> Vec<(usize, bool, Vec<String>)> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut comment) = (0i32, false, false, false);
    let (mut line, mut start_line, mut blank_start, mut at_start) = (1, 1, false, true);
    let mut tokens: Vec<String> = Vec::new();
    let mut token = String::new();
    let end_token = |token: &mut String, tokens: &mut Vec<String>| {
        if !token.is_empty() {
            tokens.push(std::mem::take(token));
        }
    };
    for c in text.chars() {
        if at_start {
            at_start = false;
            start_line = line;
            blank_start = c == ' ' || c == '\t';
        }
        if escaped {
            escaped = false;
            token.push(c);
            continue;
        }
        match c {
            '\n' => {
                comment = false;
                line += 1;
                if quoted {
                    token.push(c);
                } else {
                    end_token(&mut token, &mut tokens);
                    if depth <= 0 {
                        out.push((start_line, blank_start, std::mem::take(&mut tokens)));
                        depth = 0;
                        at_start = true;
                    }
                }
            }
            _ if comment => {}
            '\\' => {
                escaped = true;
                token.push(c);
            }
            '"' => {
                quoted = !quoted;
                token.push(c);
            }
            _ if quoted => token.push(c),
            ';' => {
                end_token(&mut token, &mut tokens);
                comment = true;
            }
            '(' | ')' => {
                end_token(&mut token, &mut tokens);
                depth += if c == '(' { 1 } else { -1 };
            }
            ' ' | '\t' | '\r' => end_token(&mut token, &mut tokens),
            _ => token.push(c),
        }
    }
    end_token(&mut token, &mut tokens);
    if !tokens.is_empty() {
        out.push((start_line, blank_start, tokens));
    }
    out
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
    fn repeated_singletons_are_found_with_their_lines() {
        let text = "$TTL 300\n@ SOA ns1 hm ( 1 2\n 3 4 5 )\n@ NS ns1\nwww CNAME a\nwww 60 IN CNAME b ; second\nWWW CNAME a.example.com.\nx CNAME a\n  IN CNAME A.example.com.\n$ORIGIN sub.example.com.\nd DNAME t.example.net.\nd.sub.example.com. DNAME u.example.net.\n";
        let got = singleton_repeats(text, Path::new("z"), &origin());
        let got: Vec<(String, u16, &str, &str)> = got
            .iter()
            .map(|r| (r.owner.to_string(), r.rtype, &r.location[..], &r.first[..]))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "www.example.com.".to_string(),
                    model::rtype::CNAME,
                    "z:6",
                    "z:5"
                ),
                (
                    "d.sub.example.com.".to_string(),
                    model::rtype::DNAME,
                    "z:12",
                    "z:11"
                ),
            ],
            "same data again (any case, relative or absolute) is one record"
        );
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
