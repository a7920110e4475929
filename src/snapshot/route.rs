//! Routed names in the snapshot: each route's rules, built once per load into a `Matcher`, and
//! the per-query choice of the pool (counted under its rule, with the rule's ECS scope).

use prometheus::IntCounter;

use super::{Answer, Client};
use crate::config::Routing;
use crate::model::{Name, Pool, PoolId};

/// Which rule a client matched and the ECS scope over which that holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub rule: usize,
    pub scope: u8,
}

/// TEMPORARY: replaced by the trie matcher.
#[derive(Debug)]
pub struct Matcher {
    rules: Vec<crate::model::Rule>,
}

impl Matcher {
    pub fn new(
        rules: &[crate::model::Rule],
        _geo: Option<&crate::geo::GeoDb>,
        _asn: Option<&crate::geo::GeoDb>,
    ) -> Matcher {
        Matcher {
            rules: rules.to_vec(),
        }
    }

    pub fn decide(&self, client: &Client) -> Decision {
        let addr = client.addr;
        let mut best: Option<(u8, usize)> = None;
        for (i, r) in self.rules.iter().enumerate() {
            for p in &r.subnets {
                if p.contains(addr) && best.is_none_or(|(l, _)| p.len > l) {
                    best = Some((p.len, i));
                }
            }
        }
        match best {
            Some((len, rule)) => Decision { rule, scope: len },
            None => Decision {
                rule: self.rules.len().saturating_sub(1),
                scope: 0,
            },
        }
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
        let d = self.matcher.decide(client);
        if let Some(counter) = counters.and_then(|c| c.get(d.rule)) {
            counter.inc();
        }
        ans.ecs_scope = ans.ecs_scope.max(d.scope);
        self.pools.get(d.rule).copied()
    }

    /// The rule `client` matches and its pool (admin preview).
    pub(super) fn decide(&self, client: &Client) -> (Decision, Option<usize>) {
        let d = self.matcher.decide(client);
        (d, self.pools.get(d.rule).copied())
    }
}
