//! Zone files -> checked `Zone`s. Reads each configured file once, parses it (via
//! `zones/zonefile.rs`, the only place hickory-proto is named), groups records into RRsets and runs the semantic checks that keep a zone
//! servable. After loading, nothing here does I/O.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, Problem, Problems, ZoneConfig};
use crate::model::{Name, RRset, Rdata, Record, rtype, rtype_name};

mod zonefile;

/// A loaded zone: every RRset by owner name.
#[derive(Clone, Debug)]
pub struct Zone {
    pub origin: Name,
    pub rrsets: BTreeMap<Name, Vec<RRset>>,
    /// Who may transfer the zone (`[[zone]] allow_transfer`); empty for zones read by
    /// `from_text`.
    pub allow_transfer: Vec<crate::model::TransferAllow>,
    /// Secondaries to NOTIFY on serial changes (`[[zone]] notify`).
    pub notify: Vec<crate::model::NotifyTarget>,
    /// Who may change what by UPDATE (`[[zone.update]]`).
    pub update: Vec<crate::model::Grant>,
    /// Its keys when signed (`[[zone]] dnssec = true`).
    pub dnssec: Option<std::sync::Arc<crate::dnssec::ZoneKeys>>,
}

impl Zone {
    pub fn get(&self, owner: &Name, rtype: u16) -> Option<&RRset> {
        self.rrsets.get(owner)?.iter().find(|s| s.rtype == rtype)
    }
}

/// Types whose zone-file text from hickory reads back in weir's zone loader (hickory's parser;
/// `presented_records_read_back_the_same`); every other type (DS, LOC, URI, ...: hickory shows
/// some as base64) is shown in RFC 3597's generic form, which most zone-file readers take
/// (hickory's does not: such records, which only UPDATE can add, cannot be folded into a file
/// weir loads).
const PRESENTED: [u16; 15] = [
    64, // SVCB
    65, // HTTPS
    rtype::A,
    rtype::NS,
    rtype::CNAME,
    rtype::SOA,
    rtype::PTR,
    13, // HINFO
    rtype::MX,
    rtype::AAAA,
    rtype::SRV,
    35,  // NAPTR
    44,  // SSHFP
    52,  // TLSA
    257, // CAA
];

/// The records of `set` at `owner` in zone-file form, one line each
/// (`www.example.com. 60 IN A 192.0.2.1`); types outside `PRESENTED`, and rdata hickory cannot
/// read, in RFC 3597's generic form (`\# 4 c0000201`).
pub fn present(owner: &Name, set: &RRset) -> Vec<String> {
    let kind = rtype_name(set.rtype);
    set.rdatas
        .iter()
        .map(|rdata| {
            let text = match rdata {
                Rdata::Opaque(bytes) if set.rtype == rtype::TXT => present_txt(bytes),
                _ if PRESENTED.contains(&set.rtype) => zonefile::present_rdata(set.rtype, rdata),
                _ => None,
            };
            let text = text.unwrap_or_else(|| {
                let mut wire = Vec::new();
                rdata.to_wire(&mut wire);
                let hex: String = wire.iter().map(|b| format!("{b:02x}")).collect();
                format!("\\# {} {hex}", wire.len())
            });
            format!("{owner} {} IN {kind} {text}", set.ttl)
        })
        .collect()
}

/// TXT rdata as quoted strings (`"first" "second"`), bytes other than printable ASCII as
/// `\DDD` (RFC 1035 5.1); None when the lengths do not add up.
fn present_txt(mut bytes: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let text = rest.get(..len as usize)?;
        bytes = &rest[len as usize..];
        let mut part = String::from("\"");
        for &b in text {
            match b {
                b'"' | b'\\' => {
                    part.push('\\');
                    part.push(b as char);
                }
                0x20..=0x7E => part.push(b as char),
                _ => part.push_str(&format!("\\{b:03}")),
            }
        }
        part.push('"');
        parts.push(part);
    }
    Some(parts.join(" "))
}

/// Whether `rdata` is a well-formed record of type `rtype` (what a zone file could hold).
pub fn valid_rdata(rtype: u16, rdata: &Rdata) -> bool {
    zonefile::present_rdata(rtype, rdata).is_some()
}

/// Loads every configured zone, collecting the problems of all of them.
pub fn load_all(config: &Config) -> Result<Vec<Zone>, Problems> {
    load_each(&config.zones)
}

/// Loads the given zones, collecting the problems of all of them.
pub fn load_each(configs: &[ZoneConfig]) -> Result<Vec<Zone>, Problems> {
    let mut zones = Vec::new();
    let mut problems = Vec::new();
    for zc in configs {
        match load(zc) {
            Ok(zone) => zones.push(zone),
            Err(Problems(p)) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(zones)
    } else {
        Err(Problems(problems))
    }
}

/// Checks served pools and routed names against the zones they live in: inside a served zone,
/// not beside static A/AAAA/CNAME data, not at or below a delegation.
pub fn check_pools<Z: std::borrow::Borrow<Zone>>(config: &Config, zones: &[Z]) -> Vec<Problem> {
    let file = config.path.display().to_string();
    let served = (config.pools.iter().enumerate())
        .filter_map(|(i, p)| Some((format!("pool[{i}].name"), "pool", p.name.served_name()?)));
    let routed = (config.routing.routes.iter().enumerate())
        .map(|(i, r)| (format!("route[{i}].name"), "route", &r.name));
    let mut problems = Vec::new();
    for (key, what, name) in served.chain(routed) {
        let mut push = |message: String| {
            problems.push(Problem {
                location: format!("{file}: {key}"),
                message,
            })
        };
        let Some(zone) = zones
            .iter()
            .map(Z::borrow)
            .filter(|z| name.is_at_or_below(&z.origin))
            .max_by_key(|z| z.origin.wire().len())
        else {
            push(format!("{what} `{name}` is not inside any configured zone"));
            continue;
        };
        if let Some(sets) = zone.rrsets.get(name) {
            let clash: Vec<String> = sets
                .iter()
                .filter(|s| matches!(s.rtype, rtype::A | rtype::AAAA | rtype::CNAME))
                .map(|s| rtype_name(s.rtype))
                .collect();
            if !clash.is_empty() {
                push(format!(
                    "{what} `{name}` clashes with static {} data in the zone file of `{}`",
                    clash.join("/"),
                    zone.origin
                ));
            }
        }
        let mut up = Some(name.clone());
        while let Some(at) = up.filter(|n| *n != zone.origin) {
            if zone.get(&at, rtype::NS).is_some() {
                push(format!(
                    "{what} `{name}` lies at or below the delegation `{at}`"
                ));
                break;
            }
            up = at.parent();
        }
    }
    problems
}

/// Reads, parses and checks one zone file.
pub fn load(zc: &ZoneConfig) -> Result<Zone, Problems> {
    let file = zc.file.display().to_string();
    let text = std::fs::read_to_string(&zc.file).map_err(|e| {
        Problems(vec![Problem {
            location: file.clone(),
            message: format!("cannot read zone file for `{}`: {e}", zc.origin),
        }])
    })?;
    let mut zone = from_text(&text, &zc.file, &zc.origin)?;
    zone.allow_transfer.clone_from(&zc.allow_transfer);
    zone.notify.clone_from(&zc.notify);
    zone.update.clone_from(&zc.update);
    zone.dnssec.clone_from(&zc.dnssec);
    Ok(zone)
}

/// What is wrong with a zone's records (the file's, or with UPDATEs applied), by owner and
/// type: SOA and NS at the apex, one SOA, none below it, CNAME beside other data, in-zone NS
/// targets without an address (missing glue).
pub fn check(zone: &Zone) -> Vec<(Name, u16, String)> {
    let origin = &zone.origin;
    let mut found: Vec<(Name, u16, String)> = Vec::new();
    let mut at = |name: &Name, t: u16, message: String| found.push((name.clone(), t, message));
    match zone.get(origin, rtype::SOA) {
        None => at(origin, 0, "the zone has no SOA record at its apex".into()),
        Some(soa) if soa.rdatas.len() > 1 => at(
            origin,
            rtype::SOA,
            "the zone has more than one SOA record".into(),
        ),
        Some(_) => {}
    }
    if zone.get(origin, rtype::NS).is_none() {
        at(origin, 0, "the zone has no NS records at its apex".into());
    }
    for (owner, sets) in &zone.rrsets {
        if owner != origin && sets.iter().any(|s| s.rtype == rtype::SOA) {
            at(owner, rtype::SOA, "SOA record below the apex".into());
        }
        if sets.iter().any(|s| s.rtype == rtype::CNAME) {
            // RFC 2181 10.1: "there may be only one such alias" (checked on the text above,
            // see `singleton_repeats`) and no other data beside it.
            let others: Vec<String> = sets
                .iter()
                .filter(|s| s.rtype != rtype::CNAME)
                .map(|s| rtype_name(s.rtype))
                .collect();
            if !others.is_empty() {
                at(
                    owner,
                    rtype::CNAME,
                    format!("CNAME beside other data ({})", others.join(", ")),
                );
            }
        }
        if let Some(ns) = sets.iter().find(|s| s.rtype == rtype::NS) {
            for rd in &ns.rdatas {
                let Rdata::Name(target) = rd else { continue };
                let in_zone = target.is_at_or_below(origin);
                let has_address =
                    zone.get(target, rtype::A).is_some() || zone.get(target, rtype::AAAA).is_some();
                if in_zone && !has_address {
                    at(
                        owner,
                        rtype::NS,
                        format!(
                            "NS target `{target}` is inside the zone but has no A or AAAA record (missing glue)"
                        ),
                    );
                }
            }
        }
    }

    found
}

/// Parses and checks zone text; `path` names the file in messages.
pub fn from_text(text: &str, path: &Path, origin: &Name) -> Result<Zone, Problems> {
    let file = path.display().to_string();
    let (parsed, syntax) = zonefile::parse(text, path, origin);
    // Syntax errors (each entry that does not parse is skipped), then the repeats of
    // singleton types, then what is wrong with the records that did parse: all in one pass.
    let mut problems: Vec<Problem> = syntax
        .into_iter()
        .map(|e| Problem {
            location: format!("{file}:{}", e.line),
            message: e.message,
        })
        .collect();

    // A second CNAME (or DNAME, SOA) at one owner: hickory keeps only the last one, so look
    // at the text itself. File:line, since the records involved never reach the zone.
    let repeats: Vec<zonefile::Repeat> = zonefile::singleton_repeats(text, path, origin)
        .into_iter()
        // Every DNAME is already an error of its own, and a line the parser refused (a
        // second SOA within one chunk) is named once.
        .filter(|r| r.rtype != rtype::DNAME && !problems.iter().any(|p| p.location == r.location))
        .collect();
    problems.extend(repeats.into_iter().map(|r| Problem {
        location: r.location,
        message: format!(
            "{}: more than one {} record (the first is at {}); only one is allowed at a name",
            r.owner,
            rtype_name(r.rtype),
            r.first
        ),
    }));
    // Problems with the parsed records, by (owner, type): given file:line at the end.
    let mut found: Vec<(Name, u16, String)> = Vec::new();
    let mut at = |name: &Name, t: u16, message: String| found.push((name.clone(), t, message));

    let mut rrsets: BTreeMap<Name, Vec<RRset>> = BTreeMap::new();
    for p in parsed {
        let Record {
            owner,
            rtype: t,
            ttl,
            rdata,
        } = p.record;
        if !p.class_in {
            at(
                &owner,
                t,
                format!(
                    "{} record is not class IN; weir serves only IN",
                    rtype_name(t)
                ),
            );
            continue;
        }
        if !owner.is_at_or_below(origin) {
            at(
                &owner,
                t,
                format!(
                    "{} record is outside the zone's origin `{origin}`",
                    rtype_name(t)
                ),
            );
            continue;
        }
        if t == rtype::DNAME {
            at(&owner, t, "DNAME is not supported".into());
            continue;
        }
        let sets = rrsets.entry(owner).or_default();
        match sets.iter_mut().find(|s| s.rtype == t) {
            Some(set) => {
                // RFC 2181 5.2: TTLs within an RRset must be equal; serve the smallest.
                set.ttl = set.ttl.min(ttl);
                // Duplicates collapse below, in one pass per set (a `contains` here was
                // quadratic: 40k records at one name took 12 s).
                set.rdatas.push(rdata);
            }
            None => sets.push(RRset {
                rtype: t,
                ttl,
                rdatas: vec![rdata],
            }),
        }
    }
    for sets in rrsets.values_mut() {
        sets.sort_by_key(|s| s.rtype);
        for set in sets.iter_mut().filter(|s| s.rdatas.len() > 1) {
            // RFC 2181 5: identical records are one; the first written is kept in place.
            let mut seen = std::collections::HashSet::with_capacity(set.rdatas.len());
            let rdatas = std::mem::take(&mut set.rdatas);
            set.rdatas = rdatas
                .into_iter()
                .filter(|r| seen.insert(r.clone()))
                .collect();
        }
    }
    let zone = Zone {
        origin: origin.clone(),
        rrsets,
        allow_transfer: Vec::new(),
        notify: Vec::new(),
        update: Vec::new(),
        dnssec: None,
    };

    found.extend(check(&zone));

    if !found.is_empty() {
        // One more pass over the text, only when something is wrong: where each record is.
        let wanted = found.iter().map(|(n, t, _)| (n.clone(), *t)).collect();
        let lines = zonefile::locate(text, path, origin, wanted);
        problems.extend(found.into_iter().map(|(name, t, message)| {
            match lines.get(&(name.clone(), t)) {
                Some(line) => Problem {
                    location: line.clone(),
                    message: format!("{name}: {message}"),
                },
                // A missing record has no line.
                None => Problem {
                    location: format!("{file}: {name}"),
                    message,
                },
            }
        }));
    }
    // In file order: `file:line` locations by line, the rest (no line: a missing record)
    // after them.
    crate::config::sort_by_line(&mut problems, &file);
    if problems.is_empty() {
        Ok(zone)
    } else {
        Err(Problems(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 60\n@ NS ns1\nns1 A 192.0.2.1\n";

    fn check(body: &str) -> Vec<String> {
        let origin = Name::parse("example.com").unwrap();
        match from_text(&format!("{HEAD}{body}"), Path::new("z.zone"), &origin) {
            Ok(_) => Vec::new(),
            Err(Problems(p)) => p.iter().map(ToString::to_string).collect(),
        }
    }

    /// A DS (a secure delegation) reads; the DNSSEC records a signer makes (a pre-signed
    /// file's) are refused at their line by the reader, signed zone or not: weir signs itself.
    #[test]
    fn a_signed_zone_takes_ds_but_not_what_signing_makes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("z.zone");
        let ds = "sub NS ns.sub\nns.sub A 192.0.2.3\nsub DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\n";
        let signed =
            "@ DNSKEY 256 3 13 AQID\nwww A 192.0.2.2\nwww NSEC a.example.com. A RRSIG NSEC\n";
        let keys = crate::dnssec::ZoneKeys {
            keys: Vec::new(),
            policy: crate::dnssec::Policy {
                validity: 10,
                refresh: 5,
                inception_skew: 1,
                propagation_delay: 1,
            },
        };
        let zc = |dnssec: bool| crate::config::ZoneConfig {
            origin: Name::parse("example.com.").unwrap(),
            file: file.clone(),
            allow_transfer: Vec::new(),
            notify: Vec::new(),
            update: Vec::new(),
            dnssec: dnssec.then(|| std::sync::Arc::new(keys.clone())),
        };
        std::fs::write(&file, format!("{HEAD}{ds}")).unwrap();
        let zone = load(&zc(true)).unwrap();
        let sub = Name::parse("sub.example.com.").unwrap();
        assert!(zone.get(&sub, rtype::DS).is_some());
        std::fs::write(&file, format!("{HEAD}{ds}{signed}")).unwrap();
        let problems = load(&zc(true)).unwrap_err().to_string();
        assert!(
            problems.contains("z.zone:9: DNSKEY should be dynamically generated"),
            "{problems}"
        );
        assert!(
            problems.contains("z.zone:11: NSEC should be dynamically generated"),
            "{problems}"
        );
        assert!(load(&zc(false)).is_err());
    }

    /// What `present` writes reads back as the same records: `weir ctl records` output saved
    /// as the zone file serves the same data (folding UPDATE changes in).
    #[test]
    fn presented_records_read_back_the_same() {
        let origin = Name::parse("example.com").unwrap();
        let text = format!(
            "{HEAD}www A 192.0.2.2\nwww AAAA 2001:db8::2\n@ MX 10 mail\nmail A 192.0.2.25\n@ TXT \"a \\\"quoted\\\" \\\\ word\" \"two\"\n_sip._tcp SRV 10 60 5060 www\n@ CAA 0 issue \"ca.example.net\"\nsub NS ns.sub\nns.sub A 192.0.2.3\nsvc HTTPS 1 . alpn=h2,h3 port=8443\nalias CNAME www\n12 PTR www\n@ SSHFP 4 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
        );
        let zone = from_text(&text, Path::new("z.zone"), &origin).unwrap();
        let mut out = String::new();
        for (owner, sets) in &zone.rrsets {
            for set in sets {
                for line in present(owner, set) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        }
        assert!(
            out.contains("example.com. 300 IN TXT \"a \\\"quoted\\\" \\\\ word\" \"two\""),
            "{out}"
        );
        assert!(out.contains("svc.example.com. 300 IN HTTPS 1 . "), "{out}");
        let back = from_text(&out, Path::new("presented.zone"), &origin).unwrap();
        assert_eq!(back.rrsets, zone.rrsets, "{out}");
        // A type outside `PRESENTED` (a DS added by UPDATE): RFC 3597's generic form.
        let ds = RRset {
            rtype: rtype::DS,
            ttl: 60,
            rdatas: vec![Rdata::Opaque((*b"\x30\x39\x0d\x02").into())],
        };
        assert_eq!(
            present(&origin, &ds),
            ["example.com. 60 IN DS \\# 4 30390d02"]
        );
    }

    #[test]
    fn a_good_zone_has_no_problems() {
        assert_eq!(
            check("www A 192.0.2.2\nsub NS ns.sub\nns.sub A 192.0.2.3\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_semantic_problem_is_named() {
        let got = check("www CNAME x\nwww TXT \"t\"\nother.org. A 192.0.2.9\nsub NS ns.sub\n");
        assert_eq!(
            got,
            vec![
                "z.zone:6: www.example.com.: CNAME beside other data (TXT)",
                "z.zone:8: other.org.: A record is outside the zone's origin `example.com.`",
                "z.zone:9: sub.example.com.: NS target `ns.sub.example.com.` is inside the zone but has no A or AAAA record (missing glue)",
            ]
        );
    }

    #[test]
    fn singleton_types_repeated_at_a_name_are_errors_with_file_and_line() {
        // HEAD is 5 lines; the body starts at line 6.
        let got = check("www CNAME a\nwww CNAME b\nsame CNAME a\nsame CNAME a.example.com.\n");
        assert_eq!(
            got,
            vec![
                "z.zone:7: www.example.com.: more than one CNAME record (the first is at z.zone:6); only one is allowed at a name",
            ]
        );
        // DNAME is not supported at all: each one is named, and nothing else is hidden.
        let got =
            check("d DNAME x.example.net.\nd DNAME y.example.net.\nwww CNAME a\nwww A 192.0.2.9\n");
        assert_eq!(
            got,
            vec![
                "z.zone:6: DNAME is not supported",
                "z.zone:7: DNAME is not supported",
                "z.zone:8: www.example.com.: CNAME beside other data (A)",
            ]
        );
        // A second SOA at the apex is refused by the parser, with its line.
        let got = check("@ SOA ns1 other 2 7200 3600 1209600 60\n");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].starts_with("z.zone:6: "), "{got:#?}");
        assert!(got[0].contains("SOA is already specified"), "{got:#?}");
    }

    #[test]
    fn missing_soa_and_ns_are_reported_together() {
        let origin = Name::parse("example.com").unwrap();
        let err = from_text(
            "$TTL 60\nwww.example.com. A 192.0.2.1\n",
            Path::new("z"),
            &origin,
        )
        .unwrap_err();
        let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            vec![
                "z: example.com.: the zone has no SOA record at its apex",
                "z: example.com.: the zone has no NS records at its apex",
            ]
        );
    }

    #[test]
    fn pools_must_sit_in_a_zone_clear_of_static_data_and_cuts() {
        let origin = Name::parse("example.com").unwrap();
        let zone = from_text(
            &format!("{HEAD}www A 192.0.2.2\nalias CNAME www\nsub NS ns.sub\nns.sub A 192.0.2.3\n"),
            Path::new("z"),
            &origin,
        )
        .unwrap();
        let pool = |name: &str| {
            format!(
                "[[pool]]\nname = \"{name}\"\n[[pool.group]]\nname = \"g\"\nendpoints = [{{ address = \"192.0.2.9\" }}]\n"
            )
        };
        let text = format!(
            "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n{}{}{}{}{}",
            pool("app.example.org."),
            pool("www.example.com."),
            pool("alias.example.com."),
            pool("x.sub.example.com."),
            pool("ok.example.com."),
        );
        let config = crate::config::parse(&text, Path::new("w.toml")).unwrap();
        let got: Vec<String> = check_pools(&config, &[zone])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "w.toml: pool[0].name: pool `app.example.org.` is not inside any configured zone",
                "w.toml: pool[1].name: pool `www.example.com.` clashes with static A data in the zone file of `example.com.`",
                "w.toml: pool[2].name: pool `alias.example.com.` clashes with static CNAME data in the zone file of `example.com.`",
                "w.toml: pool[3].name: pool `x.sub.example.com.` lies at or below the delegation `sub.example.com.`",
            ]
        );
    }

    #[test]
    fn rrset_ttl_is_the_smallest_and_duplicates_collapse() {
        let origin = Name::parse("example.com").unwrap();
        let zone = from_text(
            &format!("{HEAD}www 60 A 192.0.2.7\nwww 30 A 192.0.2.8\nwww 90 A 192.0.2.7\n"),
            Path::new("z"),
            &origin,
        )
        .unwrap();
        let set = zone
            .get(&Name::parse("www.example.com").unwrap(), rtype::A)
            .unwrap();
        assert_eq!(set.ttl, 30);
        assert_eq!(set.rdatas.len(), 2);
    }
}
