//! Routed names in the snapshot (issue 15): `Matcher`, built once per config load from the
//! name's `model::Rule`s, and `Matcher::decide`, which picks the rule for a client and the ECS
//! scope (RFC 7871 7.2.1) the choice holds for; `RouteNode`, a route as the query path sees it
//! (its matcher and the pool each rule selects), whose `choose` counts the rule and sets the
//! answer's scope. No allocation, no lock.
//!
//! The client is the ECS address when the query has one (in the family the option names),
//! else the source address, an IPv4-mapped IPv6 source counting as IPv4. Then:
//! 1. Subnets first: the subnets of every rule form one longest-prefix table per family; the
//!    longest prefix holding the client decides (networks the operator wrote beat any
//!    database, as gdnsd's `nets`).
//! 2. Otherwise the rules in order, the first match winning: a rule matches if the client's
//!    continent, country or subdivision (from the geography database) or its ASN (from the ASN
//!    database) is in its lists. A database is read only when a rule still being tried needs
//!    it, once at most per query.
//! 3. Otherwise the catch-all (the last rule; config guarantees there is one).
//!
//! The scope is the prefix length around the client address over which the choice is the
//! same. With `m` the length of the matched subnet (0 if none), every subnet `C` of any rule
//! longer than `m` that does not hold the client forces the scope past the bits the client
//! shares with `C`: subnet scope `d = max(m, max(common(client, C) + 1))`. When no subnet
//! matched, the prefix length of each database network read (`GeoDb::place`, `GeoDb::asn`)
//! counts too. So two rules on 198.51.100.0/24 and 198.51.100.128/25 give scope 25 to
//! clients of either half, and 198.51.100.0/24 alone gives 5 to 203.0.113.0.
//!
//! Each table is a binary trie in one `Vec` of 12-byte nodes: the two children's indexes (0
//! for none: the root, node 0, is no one's child) and the rule whose subnet ends there (or
//! `NONE`; a subnet written twice keeps its first rule). A table of `n` prefixes has at most
//! `1 + sum of their lengths` nodes, fewer where they share leading bits: 10,000 IPv4 /24s
//! inside one /8 take about 39,000 nodes (455 KiB), spread over all of IPv4 about 125,000
//! (1.5 MiB); 10,000 IPv6 /48s at most 480,001 (5.5 MiB). Built in about 4 ms for 20,000
//! subnets (the `timing` test, ignored by default, prints these). One walk down the
//! client's bits (at most 33 or 129 nodes) gives both numbers: `m` is the depth of the last
//! node on the path that ends a subnet, and since every node leads to at least one subnet, a
//! child off the path at depth `k` holds subnets that share exactly `k` bits with the client
//! and are all longer than `k`: it raises `d` to `k + 1`, which matters only when `k >= m`,
//! when every subnet in that subtree is longer than `m` as the rule requires.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use prometheus::IntCounter;

use super::{Answer, Client};
use crate::config::Routing;
use crate::geo::{GeoDb, Place};
use crate::model::{Code, Name, Pool, PoolId, Rule, Subdivision};

/// A node's rule when no subnet ends at it.
const NONE: u32 = u32::MAX;

/// What `Matcher::decide` chose: the index of the rule in the name's rules, and the ECS scope
/// prefix length the choice holds for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub rule: usize,
    pub scope: u8,
}

/// A routed name's rules, ready for `decide`.
#[derive(Debug)]
pub(super) struct Matcher {
    v4: Trie,
    v6: Trie,
    /// The rules with geography or ASN criteria, in order, up to the first catch-all.
    steps: Box<[Step]>,
    /// The first catch-all (the last rule, by config).
    catch_all: usize,
    geo: Option<GeoDb>,
    asn: Option<GeoDb>,
}

/// One rule's database criteria, sorted for binary search.
#[derive(Debug)]
struct Step {
    rule: usize,
    continents: Box<[Code]>,
    countries: Box<[Code]>,
    subdivisions: Box<[Subdivision]>,
    asns: Box<[u32]>,
}

impl Step {
    fn uses_geography(&self) -> bool {
        !(self.continents.is_empty() && self.countries.is_empty() && self.subdivisions.is_empty())
    }

    fn holds_place(&self, p: &Place) -> bool {
        p.continent
            .is_some_and(|c| self.continents.binary_search(&c).is_ok())
            || p.country
                .is_some_and(|c| self.countries.binary_search(&c).is_ok())
            || p.subdivision
                .is_some_and(|s| self.subdivisions.binary_search(&s).is_ok())
    }
}

fn sorted<T: Ord + Copy>(items: &[T]) -> Box<[T]> {
    let mut v = items.to_vec();
    v.sort_unstable();
    v.dedup();
    v.into_boxed_slice()
}

impl Matcher {
    /// The matcher of `rules`, with the databases their criteria need (config guarantees:
    /// `geo` if any rule has geography criteria, `asn` if any has ASNs, one catch-all, last).
    pub(super) fn new(rules: &[Rule], geo: Option<&GeoDb>, asn: Option<&GeoDb>) -> Matcher {
        let mut v4 = Trie::default();
        let mut v6 = Trie::default();
        for (i, rule) in rules.iter().enumerate() {
            let Ok(index) = u32::try_from(i) else { break };
            for p in &rule.subnets {
                let (trie, key, len) = match p.addr {
                    IpAddr::V4(a) => (&mut v4, v4_key(a), p.len.min(32)),
                    // A subnet of IPv4-mapped addresses is the IPv4 subnet those clients are.
                    IpAddr::V6(a) => match a.to_ipv4_mapped() {
                        Some(a) if p.len >= 96 => (&mut v4, v4_key(a), (p.len - 96).min(32)),
                        _ => (&mut v6, u128::from(a), p.len.min(128)),
                    },
                };
                trie.insert(key, len, index);
            }
        }
        let catch_all = rules
            .iter()
            .position(Rule::is_catch_all)
            .unwrap_or(rules.len().saturating_sub(1));
        let steps = rules[..catch_all]
            .iter()
            .enumerate()
            .filter(|(_, r)| r.uses_geography() || !r.asns.is_empty())
            .map(|(rule, r)| Step {
                rule,
                continents: sorted(&r.continents),
                countries: sorted(&r.countries),
                subdivisions: sorted(&r.subdivisions),
                asns: sorted(&r.asns),
            })
            .collect();
        Matcher {
            v4,
            v6,
            steps,
            catch_all,
            geo: geo.cloned(),
            asn: asn.cloned(),
        }
    }

    /// The rule for `client` and the scope it holds for.
    pub(super) fn decide(&self, client: &Client) -> Decision {
        // RFC 7871 7.1.2: a source prefix of 0 asks that no client address be used. The
        // resolver's own address decides, as without ECS, and the answer holds for every
        // client of that resolver: scope 0.
        if client.ecs.is_some_and(|s| s.source_prefix == 0) {
            let resolver = Client {
                addr: client.addr,
                ecs: None,
            };
            return Decision {
                scope: 0,
                ..self.decide(&resolver)
            };
        }
        let ip = address(client);
        let (subnet, mut scope) = match ip {
            IpAddr::V4(a) => self.v4.walk(v4_key(a), 32),
            IpAddr::V6(a) => self.v6.walk(u128::from(a), 128),
        };
        if let Some(rule) = subnet {
            return Decision { rule, scope };
        }
        // Each database is read at most once, when the first step needing it comes.
        let mut place: Option<Option<Place>> = None;
        let mut number: Option<Option<u32>> = None;
        for step in &self.steps {
            if step.uses_geography()
                && let Some(db) = &self.geo
            {
                let p = *place.get_or_insert_with(|| {
                    let (p, len) = db.place(ip);
                    scope = scope.max(len);
                    p
                });
                if p.is_some_and(|p| step.holds_place(&p)) {
                    return Decision {
                        rule: step.rule,
                        scope,
                    };
                }
            }
            if !step.asns.is_empty()
                && let Some(db) = &self.asn
            {
                let n = *number.get_or_insert_with(|| {
                    let (n, len) = db.asn(ip);
                    scope = scope.max(len);
                    n
                });
                if n.is_some_and(|n| step.asns.binary_search(&n).is_ok()) {
                    return Decision {
                        rule: step.rule,
                        scope,
                    };
                }
            }
        }
        Decision {
            rule: self.catch_all,
            scope,
        }
    }
}

/// The address a client is routed by: the ECS address if the query has one, else the source
/// address, IPv4 if it is IPv4-mapped. (An ECS address keeps the family its option names, so
/// the scope is in the family of the source prefix it answers.)
fn address(client: &Client) -> IpAddr {
    match client.ecs {
        Some(s) if s.family == 1 => {
            IpAddr::V4(Ipv4Addr::new(s.addr[0], s.addr[1], s.addr[2], s.addr[3]))
        }
        Some(s) if s.family == 2 => IpAddr::V6(Ipv6Addr::from(s.addr)),
        _ => match client.addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
            v4 => v4,
        },
    }
}

/// An IPv4 address's bits at the top of a `u128`, where the trie reads them.
fn v4_key(a: Ipv4Addr) -> u128 {
    u128::from(u32::from(a)) << 96
}

/// One family's longest-prefix table (the layout is in the module's `//!`).
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    /// The nodes for a next bit of 0 and of 1; 0 for none.
    child: [u32; 2],
    /// The rule of the subnet ending here, or `NONE`.
    rule: u32,
}

const EMPTY: Node = Node {
    child: [0, 0],
    rule: NONE,
};

impl Trie {
    /// Adds the subnet of the first `len` bits of `key` (from the top) for `rule`.
    fn insert(&mut self, key: u128, len: u8, rule: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(EMPTY);
        }
        let mut at = 0;
        for depth in 0..u32::from(len) {
            let bit = (key >> (127 - depth)) as usize & 1;
            let next = self.nodes[at].child[bit];
            at = if next == 0 {
                let new = self.nodes.len();
                self.nodes.push(EMPTY);
                // Indexes fit in u32: 2^32 nodes would take 48 GiB.
                self.nodes[at].child[bit] = new as u32;
                new
            } else {
                next as usize
            };
        }
        if self.nodes[at].rule == NONE {
            self.nodes[at].rule = rule;
        }
    }

    /// The rule of the longest subnet holding `key` (`width` bits: 32 or 128) and the subnet
    /// scope `d` (the module's `//!`).
    fn walk(&self, key: u128, width: u8) -> (Option<usize>, u8) {
        let Some(mut node) = self.nodes.first() else {
            return (None, 0);
        };
        let mut matched = None;
        let mut m = 0;
        let mut d = 0;
        let mut depth = 0u8;
        loop {
            if node.rule != NONE {
                matched = Some(node.rule as usize);
                m = depth;
            }
            if depth >= width {
                break;
            }
            let bit = (key >> (127 - u32::from(depth))) as usize & 1;
            if node.child[bit ^ 1] != 0 {
                d = depth + 1;
            }
            match node.child[bit] {
                0 => break,
                next => match self.nodes.get(next as usize) {
                    Some(n) => node = n,
                    None => break,
                },
            }
            depth += 1;
        }
        (matched, d.max(m))
    }
}

/// One routed name as the query path sees it.
#[derive(Debug)]
pub(super) struct RouteNode {
    pub(super) matcher: Matcher,
    /// Per rule: the index of its pool in the snapshot's pools.
    pools: Vec<usize>,
    /// Per rule, the pool it selects.
    pub(super) selects: Vec<PoolId>,
}

/// The query-path form of every route in `routing`; `pools` is the list `build` will get.
pub(super) fn nodes(routing: &Routing, pools: &[Pool]) -> Vec<RouteNode> {
    routing
        .routes
        .iter()
        .map(|route| {
            let selects: Vec<PoolId> = (route.rules.iter())
                .map(|r| PoolId {
                    name: route.name.clone(),
                    label: Some(r.pool.as_str().into()),
                })
                .collect();
            RouteNode {
                matcher: Matcher::new(&route.rules, routing.geo.as_ref(), routing.asn.as_ref()),
                // Config guarantees every rule's pool exists; a missing one answers as if the
                // name had no data (`choose` returns None).
                pools: (selects.iter())
                    .map(|id| {
                        pools
                            .iter()
                            .position(|p| p.name == *id)
                            .unwrap_or(usize::MAX)
                    })
                    .collect(),
                selects,
            }
        })
        .collect()
}

/// Every route's rule counters (`weir_route_queries_total`), by route and rule.
pub(super) fn counters(
    routing: &Routing,
    routes: &[RouteNode],
    metrics: &crate::metrics::Metrics,
) -> Vec<Box<[IntCounter]>> {
    let labels: Vec<(&Name, Vec<&PoolId>)> = (routing.routes.iter().zip(routes))
        .map(|(route, node)| (&route.name, node.selects.iter().collect()))
        .collect();
    (metrics.route_queries(&labels).into_iter())
        .map(Vec::into_boxed_slice)
        .collect()
}

impl RouteNode {
    /// Chooses `client`'s pool: counts the rule in `counters` (this route's), and sets the
    /// answer's ECS scope to the rule's when that is longer.
    #[inline]
    pub(super) fn choose(
        &self,
        client: &Client,
        counters: Option<&[IntCounter]>,
        ans: &mut Answer<'_>,
    ) -> Option<usize> {
        let (d, pool) = self.decide(client);
        if let Some(counter) = counters.and_then(|c| c.get(d.rule)) {
            counter.inc();
        }
        ans.ecs_scope = ans.ecs_scope.max(d.scope);
        pool
    }

    /// The rule `client` matches and its pool (admin preview).
    pub(super) fn decide(&self, client: &Client) -> (Decision, Option<usize>) {
        let d = self.matcher.decide(client);
        (d, self.pools.get(d.rule).copied())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use super::*;
    use crate::geo::mmdb::Value;
    use crate::geo::testing::{allocations, write};
    use crate::geo::{DbKind, GeoDb};
    use crate::model::Prefix;
    use crate::snapshot::Subnet;

    fn rule(pool: &str, set: impl FnOnce(&mut Rule)) -> Rule {
        let mut r = Rule {
            pool: pool.to_string(),
            ..Rule::default()
        };
        set(&mut r);
        r
    }

    fn subnets(pool: &str, nets: &[&str]) -> Rule {
        rule(pool, |r| {
            r.subnets = nets.iter().map(|n| Prefix::parse(n).unwrap()).collect()
        })
    }

    fn catch_all() -> Rule {
        rule("default", |_| {})
    }

    fn code(s: &str) -> Code {
        s.as_bytes().try_into().unwrap()
    }

    fn sub(s: &str) -> Subdivision {
        let (country, c) = s.split_once('-').unwrap();
        let mut code3 = [0; 3];
        code3[..c.len()].copy_from_slice(c.as_bytes());
        Subdivision {
            country: code(country),
            code: code3,
        }
    }

    /// A query from a resolver (of the other family, so a test that ignored ECS would fail)
    /// carrying ECS `addr/len`, zero past `len` as the wire parser leaves it.
    fn ecs(addr: &str, len: u8) -> Client {
        let ip: IpAddr = addr.parse().unwrap();
        let (family, mut bytes, resolver) = match ip {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                (1, b, "2001:db8:ffff::53")
            }
            IpAddr::V6(a) => (2, a.octets(), "192.0.2.53"),
        };
        for (i, byte) in bytes.iter_mut().enumerate() {
            let keep = (i32::from(len) - 8 * i as i32).clamp(0, 8) as u32;
            *byte &= (0xFFu16 << (8 - keep)) as u8;
        }
        Client {
            addr: resolver.parse().unwrap(),
            ecs: Some(Subnet {
                family,
                source_prefix: len,
                addr: bytes,
            }),
        }
    }

    fn source(addr: &str) -> Client {
        Client {
            addr: addr.parse().unwrap(),
            ecs: None,
        }
    }

    fn d(rule: usize, scope: u8) -> Decision {
        Decision { rule, scope }
    }

    #[test]
    fn a_source_prefix_of_zero_is_decided_by_the_resolver_with_scope_zero() {
        let m = Matcher::new(
            &[subnets("v6", &["2001:db8:ffff::/48"]), catch_all()],
            None,
            None,
        );
        // ecs() sends from 2001:db8:ffff::53 for an IPv4 subnet.
        assert_eq!(m.decide(&ecs("0.0.0.0", 0)), d(0, 0));
        assert_eq!(m.decide(&ecs("198.51.100.0", 24)), d(1, 0));
    }

    #[test]
    fn the_longest_subnet_across_rules_decides_and_nested_subnets_set_the_scope() {
        let m = Matcher::new(
            &[
                subnets("eu", &["198.51.100.0/24"]),
                subnets("us", &["198.51.100.128/25"]),
                catch_all(),
            ],
            None,
            None,
        );
        // The /25 beside the client narrows the /24's answer to the /25 that holds it.
        assert_eq!(m.decide(&ecs("198.51.100.0", 24)), d(0, 25));
        assert_eq!(m.decide(&ecs("198.51.100.127", 32)), d(0, 25));
        assert_eq!(m.decide(&ecs("198.51.100.200", 32)), d(1, 25));
        assert_eq!(m.decide(&ecs("198.51.100.128", 25)), d(1, 25));
        // Nothing holds it: the scope keeps it out of the /24 (203 = 11001011, 198 = 11000110).
        assert_eq!(m.decide(&ecs("203.0.113.0", 24)), d(2, 5));
        // No IPv6 subnets: one answer for all of IPv6.
        assert_eq!(m.decide(&ecs("2001:db8::", 48)), d(2, 0));

        let only = Matcher::new(
            &[subnets("eu", &["198.51.100.0/24"]), catch_all()],
            None,
            None,
        );
        assert_eq!(only.decide(&ecs("198.51.100.0", 24)), d(0, 24));
        assert_eq!(only.decide(&ecs("198.51.100.200", 32)), d(0, 24));
        assert_eq!(only.decide(&ecs("203.0.113.0", 24)), d(1, 5));

        // Longest wins whatever the rule order; a later rule's shorter subnet still counts.
        let m = Matcher::new(
            &[
                subnets("a", &["10.1.2.0/24"]),
                subnets("b", &["10.0.0.0/8", "192.0.2.0/24"]),
                subnets("c", &["10.1.0.0/16"]),
                catch_all(),
            ],
            None,
            None,
        );
        assert_eq!(m.decide(&source("10.1.2.3")), d(0, 24));
        // 3 and 2 share 7 bits of the third octet.
        assert_eq!(m.decide(&source("10.1.3.3")), d(2, 24));
        assert_eq!(m.decide(&source("10.2.0.1")), d(1, 15));
        assert_eq!(m.decide(&source("192.0.2.1")), d(1, 24));
        assert_eq!(m.decide(&source("11.0.0.1")), d(3, 8));
    }

    #[test]
    fn without_ecs_the_source_address_decides_and_a_mapped_one_is_ipv4() {
        let m = Matcher::new(
            &[
                subnets("eu", &["198.51.100.0/24"]),
                subnets("us", &["198.51.100.128/25"]),
                subnets("v6", &["2001:db8::/32"]),
                catch_all(),
            ],
            None,
            None,
        );
        assert_eq!(m.decide(&source("198.51.100.7")), d(0, 25));
        assert_eq!(m.decide(&source("198.51.100.200")), d(1, 25));
        assert_eq!(m.decide(&source("::ffff:198.51.100.200")), d(1, 25));
        assert_eq!(m.decide(&source("::ffff:203.0.113.1")), d(3, 5));
        assert_eq!(m.decide(&source("2001:db8::1")), d(2, 32));
        // ECS wins over the source address.
        assert_eq!(
            m.decide(&Client {
                addr: "198.51.100.7".parse().unwrap(),
                ecs: ecs("198.51.100.200", 32).ecs,
            }),
            d(1, 25)
        );
    }

    #[test]
    fn ipv6_ecs_uses_the_ipv6_table() {
        let m = Matcher::new(
            &[
                subnets("wide", &["2001:db8::/32"]),
                subnets("narrow", &["2001:db8:1::/48"]),
                subnets("v4", &["198.51.100.0/24"]),
                catch_all(),
            ],
            None,
            None,
        );
        assert_eq!(m.decide(&ecs("2001:db8:1::", 48)), d(1, 48));
        assert_eq!(m.decide(&ecs("2001:db8:1:ff00::", 56)), d(1, 48));
        // :2 and :1 share 46 bits.
        assert_eq!(m.decide(&ecs("2001:db8:2::", 48)), d(0, 47));
        assert_eq!(m.decide(&ecs("2001:db8:8000::", 40)), d(0, 33));
        // db9 and db8 share 31 bits.
        assert_eq!(m.decide(&ecs("2001:db9::", 32)), d(3, 32));
        assert_eq!(m.decide(&ecs("198.51.100.0", 24)), d(2, 24));
    }

    #[test]
    fn a_subnet_of_ipv4_mapped_addresses_is_an_ipv4_subnet() {
        let m = Matcher::new(
            &[subnets("mapped", &["::ffff:198.51.100.0/120"]), catch_all()],
            None,
            None,
        );
        assert_eq!(m.decide(&source("198.51.100.1")), d(0, 24));
        assert_eq!(m.decide(&source("::ffff:198.51.100.1")), d(0, 24));
        assert_eq!(m.decide(&ecs("198.51.100.0", 24)), d(0, 24));
    }

    /// A geography database (a /24 split in two /25s, another /24 with a /25 inside) and an
    /// ASN database over the documentation prefixes.
    fn databases(dir: &Path) -> (GeoDb, GeoDb) {
        let geo = write(
            dir,
            "city.mmdb",
            "GeoLite2-City",
            &[
                ("192.0.2.0", 24, Value::geo("EU", "DE", Some("BE"))),
                ("198.51.100.0", 24, Value::geo("NA", "US", Some("CA"))),
                ("198.51.100.128", 25, Value::geo("NA", "US", Some("NY"))),
                ("203.0.113.0", 24, Value::geo("OC", "AU", Some("NSW"))),
                ("203.0.113.128", 25, Value::geo("OC", "NZ", None)),
                ("2001:db8::", 32, Value::geo("EU", "FR", Some("IDF"))),
            ],
        );
        let asn = write(
            dir,
            "asn.mmdb",
            "GeoLite2-ASN",
            &[
                ("192.0.2.0", 24, Value::asn(64500, "DE")),
                ("198.51.100.0", 28, Value::asn(64501, "CA")),
                ("198.51.100.192", 27, Value::asn(64502, "NY")),
                ("203.0.113.0", 24, Value::asn(64503, "AU")),
                ("2001:db8::", 48, Value::asn(64504, "FR")),
            ],
        );
        (
            GeoDb::open(&geo, DbKind::Geography).unwrap(),
            GeoDb::open(&asn, DbKind::Asn).unwrap(),
        )
    }

    #[test]
    fn each_criterion_selects_its_rule_with_the_database_networks_as_scope() {
        let dir = tempfile::tempdir().unwrap();
        let (geo, asn) = databases(dir.path());
        let m = Matcher::new(
            &[
                rule("calif", |r| r.subdivisions = vec![sub("US-CA")]),
                rule("germany", |r| r.countries = vec![code("DE")]),
                rule("oceania", |r| r.continents = vec![code("OC")]),
                rule("transit", |r| r.asns = vec![64504, 64502]),
                catch_all(),
            ],
            Some(&geo),
            Some(&asn),
        );
        // Subdivision; the ASN database is not read (its /28 would make the scope 28).
        assert_eq!(m.decide(&ecs("198.51.100.7", 32)), d(0, 25));
        // Country: DE-BE is no US-CA.
        assert_eq!(m.decide(&ecs("192.0.2.0", 24)), d(1, 24));
        // Continent, both countries of it; the geography networks are /25s.
        assert_eq!(m.decide(&ecs("203.0.113.0", 24)), d(2, 25));
        assert_eq!(m.decide(&source("203.0.113.200")), d(2, 25));
        // ASN after the geography failed: the longer of the two networks read.
        assert_eq!(m.decide(&ecs("2001:db8::", 56)), d(3, 48));
        assert_eq!(m.decide(&ecs("198.51.100.200", 32)), d(3, 27));
        // Nothing matched: the networks read still bound the scope (US-NY /25, no ASN in
        // the /26 around .130).
        assert_eq!(m.decide(&ecs("198.51.100.130", 32)), d(4, 26));
        // Outside every network: 100 = 01100100 leaves both trees after one bit.
        assert_eq!(m.decide(&ecs("100.64.0.1", 32)), d(4, 1));
        // The source address, IPv4-mapped or not.
        assert_eq!(m.decide(&source("192.0.2.77")), d(1, 24));
        assert_eq!(m.decide(&source("::ffff:198.51.100.7")), d(0, 25));
    }

    #[test]
    fn the_first_matching_rule_wins_and_databases_are_read_only_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let (geo, asn) = databases(dir.path());
        let us = || rule("us", |r| r.countries = vec![code("US")]);
        let ca = || rule("ca", |r| r.subdivisions = vec![sub("US-CA")]);
        let m = Matcher::new(&[us(), ca(), catch_all()], Some(&geo), None);
        assert_eq!(m.decide(&source("198.51.100.7")), d(0, 25));
        let m = Matcher::new(&[ca(), us(), catch_all()], Some(&geo), None);
        assert_eq!(m.decide(&source("198.51.100.7")), d(0, 25));
        assert_eq!(m.decide(&source("198.51.100.200")), d(1, 25));

        // An ASN rule first: the geography database, whose /25 would widen the scope, is
        // not read when it matches.
        let m = Matcher::new(
            &[
                rule("as", |r| r.asns = vec![64503]),
                rule("nz", |r| r.countries = vec![code("NZ")]),
                catch_all(),
            ],
            Some(&geo),
            Some(&asn),
        );
        assert_eq!(m.decide(&source("203.0.113.200")), d(0, 24));
        // One rule with both: geography first, then its ASNs.
        let m = Matcher::new(
            &[
                rule("mixed", |r| {
                    r.countries = vec![code("DE")];
                    r.asns = vec![64501];
                }),
                catch_all(),
            ],
            Some(&geo),
            Some(&asn),
        );
        assert_eq!(m.decide(&source("192.0.2.1")), d(0, 24));
        assert_eq!(m.decide(&source("198.51.100.7")), d(0, 28));
        assert_eq!(m.decide(&source("198.51.100.100")), d(1, 26));
    }

    #[test]
    fn subnets_beat_the_databases_and_bound_their_scope() {
        let dir = tempfile::tempdir().unwrap();
        let (geo, asn) = databases(dir.path());
        let m = Matcher::new(
            &[
                rule("calif", |r| r.subdivisions = vec![sub("US-CA")]),
                subnets("office", &["198.51.100.0/26"]),
                catch_all(),
            ],
            Some(&geo),
            Some(&asn),
        );
        // The subnet decides; no database read, so its length is the scope.
        assert_eq!(m.decide(&source("198.51.100.7")), d(1, 26));
        // Outside it, the geography decides, and the subnet beside the client narrows the
        // scope past the database's /25.
        assert_eq!(m.decide(&source("198.51.100.100")), d(0, 26));
        let m = Matcher::new(
            &[
                rule("calif", |r| r.subdivisions = vec![sub("US-CA")]),
                subnets("lab", &["198.51.100.16/28"]),
                catch_all(),
            ],
            Some(&geo),
            None,
        );
        assert_eq!(m.decide(&source("198.51.100.7")), d(0, 28));
        assert_eq!(m.decide(&source("198.51.100.20")), d(1, 28));
    }

    #[test]
    fn decide_does_not_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let (geo, asn) = databases(dir.path());
        let m = Matcher::new(
            &[
                rule("calif", |r| r.subdivisions = vec![sub("US-CA")]),
                subnets("office", &["198.51.100.0/26", "2001:db8:1::/48"]),
                rule("transit", |r| r.asns = vec![64504, 64502]),
                catch_all(),
            ],
            Some(&geo),
            Some(&asn),
        );
        let clients = [
            ecs("198.51.100.7", 32),
            ecs("198.51.100.200", 32),
            ecs("2001:db8::", 56),
            ecs("2001:db8:1::", 48),
            source("192.0.2.1"),
            source("::ffff:203.0.113.9"),
        ];
        let (sum, n) = allocations(|| clients.iter().map(|c| m.decide(c).rule).sum::<usize>());
        assert_eq!(sum, 2 + 1 + 2 + 1 + 3 + 3);
        assert_eq!(n, 0, "allocations in decide");
    }

    /// The subnet rule straight from its definition, for one family (bits at the top).
    fn reference(prefixes: &[(u128, u8, usize)], key: u128) -> (Option<usize>, u8) {
        let holds = |net: u128, len: u8| len == 0 || (net ^ key) >> (128 - u32::from(len)) == 0;
        let best = prefixes
            .iter()
            .filter(|(net, len, _)| holds(*net, *len))
            .max_by_key(|(_, len, rule)| (*len, std::cmp::Reverse(*rule)));
        let m = best.map_or(0, |b| b.1);
        let d = prefixes
            .iter()
            .filter(|(net, len, _)| *len > m && !holds(*net, *len))
            .map(|(net, _, _)| (net ^ key).leading_zeros() as u8 + 1)
            .max()
            .unwrap_or(0);
        (best.map(|b| b.2), m.max(d))
    }

    #[test]
    fn thousands_of_random_subnets_agree_with_the_definition() {
        let mut rng = fastrand::Rng::with_seed(15);
        // Clustered, so prefixes nest and share leading bits.
        let bases: Vec<u32> = (0..8).map(|_| rng.u32(..)).collect();
        let mut rules = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for i in 0..400 {
            let mut r = Rule {
                pool: format!("r{i}"),
                ..Rule::default()
            };
            for _ in 0..10 {
                let base = bases[rng.usize(..bases.len())];
                if rng.bool() {
                    let len = rng.u8(4..=32);
                    let addr = base ^ (rng.u32(..) >> rng.u32(4..32));
                    let masked = addr & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    r.subnets.push(Prefix {
                        addr: IpAddr::V4(masked.into()),
                        len,
                    });
                    v4.push((u128::from(masked) << 96, len, i));
                } else {
                    let len = rng.u8(16..=64);
                    let key = (u128::from(base) << 96)
                        ^ (u128::from(rng.u64(..)) << 64 >> rng.u32(16..64));
                    let masked = key & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    r.subnets.push(Prefix {
                        addr: IpAddr::V6(masked.into()),
                        len,
                    });
                    v6.push((masked, len, i));
                }
            }
            rules.push(r);
        }
        rules.push(catch_all());
        let m = Matcher::new(&rules, None, None);
        for _ in 0..3000 {
            let base = bases[rng.usize(..bases.len())];
            let a = base ^ (rng.u32(..) >> rng.u32(0..32));
            let want = reference(&v4, u128::from(a) << 96);
            let got = m.decide(&source(&std::net::Ipv4Addr::from(a).to_string()));
            assert_eq!(
                got,
                d(want.0.unwrap_or(400), want.1),
                "{}",
                std::net::Ipv4Addr::from(a)
            );
            let k = (u128::from(base) << 96) ^ (u128::from(rng.u64(..)) << 64 >> rng.u32(0..64));
            let want = reference(&v6, k);
            let got = m.decide(&source(&std::net::Ipv6Addr::from(k).to_string()));
            assert_eq!(
                got,
                d(want.0.unwrap_or(400), want.1),
                "{}",
                std::net::Ipv6Addr::from(k)
            );
        }
    }
}
