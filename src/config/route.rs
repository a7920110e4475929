//! `[[route]]` tables and `[geo]`: routed names (ordered rules choosing among the name's own
//! pools by client subnet, continent, country, subdivision or network) and the MaxMind-format
//! databases their rules read, opened here so a missing or unreadable one is a config problem.
//! The pools themselves are checked by `pool.rs` like every other pool.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::Collector;
use super::pool::{Placed, RawPool};
use crate::geo::{DbKind, GeoDb};
use crate::model::{Code, Name, Prefix, Route, Rule, Subdivision};

/// The routes of a config and the databases their rules read.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    pub routes: Vec<Route>,
    /// `[geo] database`: continent, country and subdivision (a City or Country database).
    pub geo: Option<GeoDb>,
    /// `[geo] asn_database`: autonomous system numbers.
    pub asn: Option<GeoDb>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    name: String,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    pool: Vec<RawPool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pool: String,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    continents: Vec<String>,
    #[serde(default)]
    countries: Vec<String>,
    #[serde(default)]
    subdivisions: Vec<String>,
    #[serde(default)]
    asns: Vec<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGeo {
    database: Option<String>,
    asn_database: Option<String>,
}

/// The seven continent codes of MaxMind-format databases.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// ISO 3166-1 alpha-2 codes (as /usr/share/zoneinfo/iso3166.tab lists them), and XK (Kosovo),
/// which GeoLite2, DB-IP and IPinfo use.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH \
    BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX \
    CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM \
    GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG \
    KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN \
    MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK \
    PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST \
    SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI \
    VN VU WF WS XK YE YT ZA ZM ZW";

/// `[geo]`: opens each database named (relative to the config file's folder).
pub(super) fn geo(
    c: &mut Collector<'_>,
    raw: &RawGeo,
    base: &Path,
) -> (Option<GeoDb>, Option<GeoDb>) {
    let mut open = |key: &str, file: &Option<String>, kind: DbKind| {
        let path = super::file_path(base, file.as_deref())?;
        GeoDb::open(&path, kind)
            .map_err(|e| c.push(key, e.to_string()))
            .ok()
    };
    let geo = open("geo.database", &raw.database, DbKind::Geography);
    let asn = open("geo.asn_database", &raw.asn_database, DbKind::Asn);
    (geo, asn)
}

/// Every `[[route]]`: its rules, and where its pools are written for `pool::validate`.
/// `served` holds the names of the `[[pool]]`s, which a route may not share.
pub(super) fn validate<'a>(
    c: &mut Collector<'_>,
    raw: &'a [RawRoute],
    names: &'a [Option<Name>],
    served: &[String],
    dbs: (&Option<GeoDb>, &Option<GeoDb>),
) -> (Vec<Route>, Vec<Placed<'a>>) {
    let mut routes = Vec::new();
    let mut placed = Vec::new();
    for (i, (rr, name)) in raw.iter().zip(names).enumerate() {
        let key = format!("route[{i}]");
        let Some(name) = name else { continue };
        if served
            .iter()
            .any(|s| Name::parse(s).is_ok_and(|s| s == *name))
        {
            c.push(
                &format!("{key}.name"),
                format!("`{name}` is also a [[pool]]: a name is served by a pool or a route"),
            );
        }
        if routes.iter().any(|r: &Route| r.name == *name) {
            c.push(
                &format!("{key}.name"),
                format!("route `{name}` is configured twice"),
            );
        }
        if rr.pool.is_empty() {
            c.push(
                &key,
                "has no [[route.pool]]: a route needs pools to choose from",
            );
        }
        for (j, rp) in rr.pool.iter().enumerate() {
            placed.push(Placed {
                key: format!("{key}.pool[{j}]"),
                raw: rp,
                route: Some(name),
            });
        }
        let rules = rules(c, &key, rr, dbs);
        unused_pools(c, &key, rr);
        routes.push(Route {
            name: name.clone(),
            rules,
        });
    }
    (routes, placed)
}

/// Each route's name, parsed (None, and a problem, where it does not parse).
pub(super) fn names(c: &mut Collector<'_>, raw: &[RawRoute]) -> Vec<Option<Name>> {
    raw.iter()
        .enumerate()
        .map(|(i, rr)| match Name::parse(&rr.name) {
            Ok(n) if !rr.name.contains('@') => Some(n),
            Ok(_) => {
                c.push(
                    &format!("route[{i}].name"),
                    format!("`{}`: `@` is not allowed in a name", rr.name),
                );
                None
            }
            Err(e) => {
                c.push(&format!("route[{i}].name"), format!("`{}`: {e}", rr.name));
                None
            }
        })
        .collect()
}

/// A route's `[[route.rule]]`s: each names one of the route's pools; criteria are valid and
/// appear in one rule only (a repeat could never match); exactly one catch-all, last.
fn rules(
    c: &mut Collector<'_>,
    key: &str,
    rr: &RawRoute,
    (geo, asn): (&Option<GeoDb>, &Option<GeoDb>),
) -> Vec<Rule> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::new();
    if rr.rule.is_empty() {
        c.push(
            key,
            "has no [[route.rule]]: a route needs at least its catch-all rule",
        );
    }
    for (r, raw) in rr.rule.iter().enumerate() {
        let rkey = format!("{key}.rule[{r}]");
        if !rr.pool.iter().any(|p| p.name == raw.pool) {
            c.push(
                &format!("{rkey}.pool"),
                format!(
                    "pool `{}` is not one of this route's [[route.pool]]s",
                    raw.pool
                ),
            );
        }
        let mut list = List {
            c: &mut *c,
            seen: &mut seen,
            rkey: &rkey,
            rule: r,
        };
        let rule = Rule {
            pool: raw.pool.clone(),
            subnets: list.parse(
                "subnets",
                &raw.subnets,
                Prefix::parse,
                "an address prefix (192.0.2.0/24, 2001:db8::/32; no bits set past the length)",
            ),
            continents: list.parse(
                "continents",
                &raw.continents,
                |t| code(t).filter(|_| CONTINENTS.contains(&t)),
                &format!("a continent code (one of {})", CONTINENTS.join(" ")),
            ),
            countries: list.parse(
                "countries",
                &raw.countries,
                country,
                "an ISO 3166-1 country code (upper case, such as DE or US)",
            ),
            subdivisions: list.parse(
                "subdivisions",
                &raw.subdivisions,
                subdivision,
                "an ISO 3166-2 subdivision code (country-code, such as US-CA or GB-SCT)",
            ),
            asns: list.parse(
                "asns",
                &raw.asns.iter().map(i64::to_string).collect::<Vec<_>>(),
                |t| t.parse::<u32>().ok().filter(|&n| n > 0),
                "an AS number (1..=4294967295)",
            ),
        };
        if rule.uses_geography() && geo.is_none() {
            c.push(&rkey, "matches on geography but [geo] names no database");
        }
        if !rule.asns.is_empty() && asn.is_none() {
            c.push(
                &rkey,
                "matches on AS numbers but [geo] names no asn_database",
            );
        }
        let empty = raw.subnets.is_empty()
            && raw.continents.is_empty()
            && raw.countries.is_empty()
            && raw.subdivisions.is_empty()
            && raw.asns.is_empty();
        if empty && r + 1 != rr.rule.len() {
            c.push(
                &rkey,
                "has no criteria, so it matches every client: only the last rule may (the rules after it could never match)",
            );
        }
        rules.push(rule);
    }
    if rules.last().is_some_and(|r| !r.is_catch_all()) {
        c.push(
            &format!("{key}.rule[{}]", rules.len() - 1),
            "the last rule must have no criteria (the catch-all), so every client gets a pool",
        );
    }
    rules
}

/// One rule's criterion lists being parsed: each item valid, and in no earlier place (an item
/// repeated, in this rule or a later one, could never match there).
struct List<'c, 'a> {
    c: &'c mut Collector<'a>,
    /// A list's name and an item's value (`Debug`, so `198.51.100.0/024` is `198.51.100.0/24`)
    /// -> the rule it is first in.
    seen: &'c mut HashMap<String, usize>,
    rkey: &'c str,
    rule: usize,
}

impl List<'_, '_> {
    /// `items` of the list `what` through `parse`; each one it refuses is a problem saying it
    /// is not `expected`.
    fn parse<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        items: &[String],
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Vec<T> {
        let key = format!("{}.{what}", self.rkey);
        let mut out = Vec::new();
        for text in items {
            let Some(item) = parse(text) else {
                self.c.push(&key, format!("`{text}` is not {expected}"));
                continue;
            };
            if let Some(first) = self.seen.insert(format!("{what} {item:?}"), self.rule) {
                let other = if first == self.rule {
                    "earlier in this rule".to_string()
                } else {
                    format!("in rule[{first}]")
                };
                self.c.push(
                    &key,
                    format!("{text} is already {other}: it could never match here"),
                );
            }
            out.push(item);
        }
        out
    }
}

/// Pools no rule selects and no pool falls back to are a mistake waiting to happen.
fn unused_pools(c: &mut Collector<'_>, key: &str, rr: &RawRoute) {
    for (j, rp) in rr.pool.iter().enumerate() {
        let selected = rr.rule.iter().any(|r| r.pool == rp.name);
        let fallback = rr.pool.iter().any(|other| {
            other
                .on_all_down
                .as_deref()
                .and_then(|t| t.strip_prefix("fallback:"))
                == Some(rp.name.as_str())
        });
        if !selected && !fallback {
            c.push(
                &format!("{key}.pool[{j}].name"),
                format!(
                    "pool `{}` is selected by no rule and is no pool's fallback",
                    rp.name
                ),
            );
        }
    }
}

/// Two upper-case ASCII letters.
fn code(text: &str) -> Option<Code> {
    let b = text.as_bytes();
    (b.len() == 2 && b.iter().all(u8::is_ascii_uppercase)).then(|| [b[0], b[1]])
}

fn country(text: &str) -> Option<Code> {
    code(text).filter(|_| COUNTRIES.split_ascii_whitespace().any(|c| c == text))
}

/// `US-CA`: a country code, `-`, and 1 to 3 upper-case letters or digits.
fn subdivision(text: &str) -> Option<Subdivision> {
    let (cc, sub) = text.split_once('-')?;
    let country = country(cc)?;
    let b = sub.as_bytes();
    if !(1..=3).contains(&b.len())
        || !b
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return None;
    }
    let mut code = [0; 3];
    code[..b.len()].copy_from_slice(b);
    Some(Subdivision { country, code })
}
