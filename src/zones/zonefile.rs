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
pub(super) struct SyntaxError {
    pub(super) line: usize,
    pub(super) message: String,
}

/// One parsed record plus the class it was written with (only IN is served; `zones` says so).
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) record: Record,
    pub(super) class_in: bool,
}

/// Entries handed to hickory per parse call. hickory's `RecordSet::insert` compares each new
/// record with every record already in its set, so one call over 40k records at one name is
/// quadratic (12 s); chunks keep each set it builds small, and the whole parse linear.
const CHUNK: usize = 256;
/// Syntax errors reported per file; past this the rest of the file is not parsed.
const MAX_SYNTAX_ERRORS: usize = 50;
/// A record written at the head of every chunk after the first to carry the owner, class and
/// last TTL the text before it set (hickory keeps them between entries); dropped from the
/// result.
const MARKER: &str = "weir-zone-chunk-context-5f1d";

/// Parses zone text. `path` anchors relative `$INCLUDE`s; `origin` is the zone's origin.
/// Every syntax error is reported (up to `MAX_SYNTAX_ERRORS`), each with its line: an entry
/// that does not parse is skipped and parsing goes on after it. Files with `$INCLUDE` are
/// parsed whole (hickory follows the include), stopping at the first error.
pub(super) fn parse(text: &str, path: &Path, origin: &Name) -> (Vec<Parsed>, Vec<SyntaxError>) {
    match parse_all(text, path, origin) {
        Ok(parsed) => parsed,
        Err(errors) => (Vec::new(), errors),
    }
}

/// `parse`; Err when nothing can be trusted (a bad origin, an included file that fails).
fn parse_all(
    text: &str,
    path: &Path,
    origin: &Name,
) -> Result<(Vec<Parsed>, Vec<SyntaxError>), Vec<SyntaxError>> {
    let horigin = HName::from_ascii(origin.to_string()).map_err(|e| {
        vec![SyntaxError {
            line: 0,
            message: format!("origin: {e}"),
        }]
    })?;
    let run =
        |text: &str| Parser::new(text, Some(path.to_path_buf()), Some(horigin.clone())).parse();
    let spans = entry_spans(text);
    let includes = spans.iter().any(|e| {
        e.tokens
            .first()
            .is_some_and(|t| !e.blank_start && t.eq_ignore_ascii_case("$INCLUDE"))
    });
    let mut out = Vec::new();
    if includes {
        let (_, sets) = run(text).map_err(|e| {
            vec![SyntaxError {
                line: failing_line(text, |prefix| run(prefix).is_err()),
                message: e.to_string(),
            }]
        })?;
        convert_sets(&sets, &mut out).map_err(|e| vec![e])?;
        return Ok((out, Vec::new()));
    }
    let mut errors = Vec::new();
    let mut cx = Context {
        origin: Some(horigin.clone()),
        ..Context::default()
    };
    let mut i = 0;
    while i < spans.len() && errors.len() < MAX_SYNTAX_ERRORS {
        let end = (i + CHUNK).min(spans.len());
        let prefix = cx.prefix();
        let chunk = |to: usize| format!("{prefix}{}", &text[spans[i].start..spans[to - 1].end]);
        match run(&chunk(end)) {
            Ok((_, sets)) => {
                convert_sets(&sets, &mut out).map_err(|e| vec![e])?;
                for e in &spans[i..end] {
                    cx.advance(e);
                }
                i = end;
            }
            Err(first) => {
                // The first entry whose chunk prefix fails is the one at fault (a failing
                // prefix stays failing when extended).
                let (mut lo, mut hi) = (i + 1, end);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if run(&chunk(mid)).is_err() {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                let bad = lo - 1;
                let message = match run(&chunk(lo)) {
                    // hickory cannot read DNAME at all; weir would refuse it anyway.
                    _ if spans[bad].rtype().as_deref() == Some("DNAME") => {
                        "DNAME is not supported".to_string()
                    }
                    Err(e) => e.to_string(),
                    Ok(_) => first.to_string(),
                };
                errors.push(SyntaxError {
                    line: spans[bad].line,
                    message,
                });
                if bad > i {
                    let (_, sets) = run(&chunk(bad)).map_err(|e| {
                        vec![SyntaxError {
                            line: spans[i].line,
                            message: e.to_string(),
                        }]
                    })?;
                    convert_sets(&sets, &mut out).map_err(|e| vec![e])?;
                }
                for e in &spans[i..=bad] {
                    cx.advance(e);
                }
                i = bad + 1;
            }
        }
    }
    Ok((out, errors))
}

/// hickory's record sets as `Parsed` records, without the chunk markers.
fn convert_sets(
    sets: &std::collections::BTreeMap<hickory_proto::rr::RrKey, hickory_proto::rr::RecordSet>,
    out: &mut Vec<Parsed>,
) -> Result<(), SyntaxError> {
    for set in sets.values() {
        for r in set.records_without_rrsigs() {
            if let RData::TXT(txt) = &r.data
                && let [only] = &txt.txt_data[..]
                && **only == *MARKER.as_bytes()
            {
                continue;
            }
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
    Ok(())
}

/// One entry of zone text: its bytes, the line of its first token, its tokens.
struct Span {
    start: usize,
    end: usize,
    line: usize,
    blank_start: bool,
    tokens: Vec<String>,
}

impl Span {
    /// The type token of a record entry (after the owner, TTL and class), upper case.
    fn rtype(&self) -> Option<String> {
        let first = self.tokens.first()?;
        if !self.blank_start && first.starts_with('$') {
            return None;
        }
        let rest = if self.blank_start {
            &self.tokens[..]
        } else {
            &self.tokens[1..]
        };
        rest.iter().map(|t| t.to_ascii_uppercase()).find(|t| {
            !t.bytes().next().is_some_and(|b| b.is_ascii_digit()) && DNSClass::from_str(t).is_err()
        })
    }
}

/// Zone text cut into entries (as `failing_line` cuts it), with their tokens; entries with
/// no tokens (blank lines, comments) are folded into the next one.
fn entry_spans(text: &str) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let push = |start: usize, end: usize, before: usize, out: &mut Vec<Span>| {
        let Some((line, blank_start, tokens)) = entries(&text[start..end])
            .into_iter()
            .find(|e| !e.2.is_empty())
        else {
            return false;
        };
        out.push(Span {
            start,
            end,
            line: before + line,
            blank_start,
            tokens,
        });
        true
    };
    // `start` and the newlines before it.
    let (mut start, mut start_newlines) = (0, 0);
    for (end, line) in entry_ends(text) {
        if push(start, end, start_newlines, &mut out) {
            (start, start_newlines) = (end, line);
        }
    }
    if start < text.len() {
        push(start, text.len(), start_newlines, &mut out);
    }
    out
}

/// What hickory carries from one entry to the next, tracked over the text so a chunk can
/// start where the last one ended.
#[derive(Default)]
struct Context {
    origin: Option<HName>,
    default_ttl: Option<String>,
    last_ttl: Option<String>,
    class: Option<String>,
    owner: Option<HName>,
}

impl Context {
    fn advance(&mut self, e: &Span) {
        let Some(first) = e.tokens.first() else {
            return;
        };
        if !e.blank_start && first.starts_with('$') {
            match first.to_ascii_uppercase().as_str() {
                "$ORIGIN" => self.origin = e.tokens.get(1).and_then(|o| HName::parse(o, None).ok()),
                "$TTL" => self.default_ttl = e.tokens.get(1).cloned(),
                _ => {}
            }
            return;
        }
        let rest = if e.blank_start {
            &e.tokens[..]
        } else {
            self.owner = if first == "@" {
                self.origin.clone()
            } else {
                HName::parse(first, self.origin.as_ref()).ok()
            };
            &e.tokens[1..]
        };
        for t in rest {
            let upper = t.to_ascii_uppercase();
            if t.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                self.last_ttl = Some(t.clone());
            } else if DNSClass::from_str(&upper).is_ok() {
                self.class = Some(upper);
            } else {
                break;
            }
        }
    }

    /// Directives and a marker record that put hickory where this context is.
    fn prefix(&self) -> String {
        let mut out = String::new();
        if let Some(origin) = &self.origin {
            out.push_str(&format!("$ORIGIN {origin}\n"));
        }
        if let Some(ttl) = &self.default_ttl {
            out.push_str(&format!("$TTL {ttl}\n"));
        }
        if let Some(owner) = &self.owner {
            let ttl = self.last_ttl.as_deref().unwrap_or("0");
            let class = self.class.as_deref().unwrap_or("IN");
            out.push_str(&format!("{owner} {ttl} {class} TXT \"{MARKER}\"\n"));
        }
        out
    }
}

/// A record of a type that allows one record per owner (CNAME, DNAME, SOA) written again at
/// the same owner with different data. hickory's parser silently keeps only the last CNAME,
/// so these are found by a pass over the text of their own.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Repeat {
    pub(super) owner: Name,
    pub(super) rtype: u16,
    /// `file:line` of the repeat, and the line of the first record.
    pub(super) location: String,
    pub(super) first: String,
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
pub(super) fn singleton_repeats(text: &str, path: &Path, origin: &Name) -> Vec<Repeat> {
    let mut scan = RepeatScan {
        origin: HName::from_ascii(origin.to_string()).ok(),
        owner: None,
        seen: std::collections::HashMap::new(),
        repeats: Vec::new(),
        wanted: None,
        found: std::collections::HashMap::new(),
    };
    scan.file(text, path, 0);
    scan.repeats
}

/// `file:line` of the first record of each wanted (owner, type), following `$INCLUDE`s: where
/// a problem found on the parsed zone is reported. Only asked for when there are problems.
pub(super) fn locate(
    text: &str,
    path: &Path,
    origin: &Name,
    wanted: std::collections::HashSet<(Name, u16)>,
) -> std::collections::HashMap<(Name, u16), String> {
    let mut scan = RepeatScan {
        origin: HName::from_ascii(origin.to_string()).ok(),
        owner: None,
        seen: std::collections::HashMap::new(),
        repeats: Vec::new(),
        wanted: Some(wanted),
        found: std::collections::HashMap::new(),
    };
    scan.file(text, path, 0);
    scan.found
}

struct RepeatScan {
    /// `locate`: the (owner, type)s to find, and where each was found first.
    wanted: Option<std::collections::HashSet<(Name, u16)>>,
    found: std::collections::HashMap<(Name, u16), String>,
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
        if let Some(wanted) = &self.wanted {
            let (Some(owner), Ok(code)) =
                (&self.owner, hickory_proto::rr::RecordType::from_str(&rtype))
            else {
                return;
            };
            let key = (convert_name(owner), u16::from(code));
            if wanted.contains(&key) {
                self.found
                    .entry(key)
                    .or_insert_with(|| location.to_string());
            }
            return;
        }
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

/// Byte offsets just past each line that closes an entry (parentheses balanced, outside a
/// quoted string; comments and escapes skipped), with that line's 1-based number: the one
/// cut of zone text into entries that `entry_spans` and `failing_line` share.
fn entry_ends(text: &str) -> Vec<(usize, usize)> {
    let mut ends = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut comment) = (0i32, false, false, false);
    // Every newline counts for line numbers, an escaped one too.
    let mut lines = 0;
    for (i, b) in text.bytes().enumerate() {
        if b == b'\n' {
            lines += 1;
        }
        match b {
            _ if escaped => escaped = false,
            b'\n' => {
                comment = false;
                if depth <= 0 && !quoted {
                    ends.push((i + 1, lines));
                }
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
    ends
}

/// hickory's parser stops at the first error without a line number. Entries end on lines where
/// parentheses are balanced; the first prefix of whole entries that fails to parse ends with the
/// entry at fault, found by bisection (a failing prefix stays failing when extended).
fn failing_line(text: &str, fails: impl Fn(&str) -> bool) -> usize {
    let mut ends = entry_ends(text);
    ends.push((text.len(), text.bytes().filter(|b| *b == b'\n').count() + 1));
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

/// `rdata` of type `rtype` in presentation form (`10 mail.example.com.`, `"text"`), as a zone
/// file writes it; None when the bytes are not a valid record of that type (UPDATE refuses
/// such records).
pub(super) fn present_rdata(rtype: u16, rdata: &Rdata) -> Option<String> {
    use hickory_proto::rr::RecordType;
    use hickory_proto::serialize::binary::{BinDecoder, Restrict};
    let mut wire = Vec::new();
    rdata.to_wire(&mut wire);
    let length = u16::try_from(wire.len()).ok()?;
    let mut decoder = BinDecoder::new(&wire);
    let parsed = RData::read(&mut decoder, RecordType::from(rtype), Restrict::new(length)).ok()?;
    (decoder.index() == wire.len()).then(|| parsed.to_string())
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
        let (got, errors) = parse(text, Path::new("z"), &origin());
        assert!(errors.is_empty(), "{errors:?}");
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
    fn every_syntax_error_is_named_with_its_line_and_the_rest_still_parses() {
        let text = "$TTL 300\n@ IN SOA ns1 hostmaster (\n 1 7200 3600\n 1209600 60 )\n@ IN NS ns1\n\nns1 IN A 192.0.2.1\nbad IN A 300.1.1.1\nok IN A 192.0.2.2\nold DNAME t.example.net.\n; a comment\nwww IN MX\nlast A 192.0.2.3\n";
        let (got, errors) = parse(text, Path::new("z"), &origin());
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [8, 10, 12], "{errors:?}");
        let owners: Vec<String> = got.iter().map(|p| p.record.owner.to_string()).collect();
        for name in ["ok.example.com.", "last.example.com.", "ns1.example.com."] {
            assert!(owners.contains(&name.to_string()), "{owners:?}");
        }
    }

    #[test]
    fn chunks_carry_origin_owner_class_and_ttl_like_one_parse() {
        // More than three chunks; no $TTL (each record inherits the last explicit TTL), owners
        // inherited by blank-started lines, a sticky class and an $ORIGIN change, each placed
        // on chunk edges somewhere.
        let mut text = String::from("@ 300 IN SOA ns1 hm 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n");
        for i in 0..(3 * CHUNK + 7) {
            match i % 7 {
                0 => text.push_str(&format!("h{i} {} A 192.0.2.{}\n", 60 + i, i % 250)),
                1 => text.push_str(&format!("  TXT \"t{i}\"\n")),
                2 => text.push_str(&format!("  MX ( 10\n    m{i} )\n")),
                3 => text.push_str(&format!("c{i} CH TXT \"chaos\"\n")),
                4 => text.push_str(&format!("n{i} IN A 192.0.2.9\n")),
                5 if i % 3 == 0 => text.push_str(&format!("$ORIGIN o{i}.example.com.\n")),
                _ => text.push_str(&format!("\n; c\nmany A 10.0.{}.{}\n", i / 250, i % 250)),
            }
        }
        let (chunked, errors) = parse(&text, Path::new("z"), &origin());
        assert!(errors.is_empty(), "{errors:?}");
        let horigin = HName::from_ascii("example.com.").unwrap();
        let (_, sets) = Parser::new(&text[..], None, Some(horigin)).parse().unwrap();
        let mut whole = Vec::new();
        convert_sets(&sets, &mut whole).unwrap();
        let key = |v: &[Parsed]| {
            let mut k: Vec<String> = v
                .iter()
                .map(|p| format!("{:?} {}", p.record, p.class_in))
                .collect();
            k.sort();
            k
        };
        assert_eq!(chunked.len(), whole.len());
        assert_eq!(key(&chunked), key(&whole));
    }
}
