//! Runtime changes to pools: what an operator can ask for (`Change`), how it is checked against
//! the config and the current intent (`apply`), the pools as served (`effective`: config with
//! the overlay on top), and dropping intent that a new config no longer backs (`prune`).
//! Pure functions: the writer calls them, persists the result and publishes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use crate::model::{
    AddedEndpoint, AuditRecord, Endpoint, Group, Overlay, Override, Pool, PoolId, ProbeKey,
};

/// One change an operator asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    GroupWeight {
        pool: PoolId,
        group: String,
        weight: u32,
    },
    /// `None` goes back to the configured weight.
    EndpointWeight {
        pool: PoolId,
        address: IpAddr,
        weight: Option<u32>,
    },
    Override {
        pool: PoolId,
        address: IpAddr,
        health: Override,
    },
    AddEndpoint {
        pool: PoolId,
        group: String,
        address: IpAddr,
        weight: u32,
    },
    RemoveEndpoint {
        pool: PoolId,
        address: IpAddr,
    },
    /// Drop a zone's UPDATE layer (`update::discard`; the writer applies it: it needs the
    /// zone's file).
    DiscardUpdates {
        zone: crate::model::Name,
    },
    /// Start a zone-signing key's pre-publish rollover (`model::KeyRollover`; the writer
    /// applies it: it needs the zone's keys and TTLs): to `key`, or to the zone's one standby
    /// zone-signing key.
    DnssecRollover {
        zone: crate::model::Name,
        key: Option<u16>,
    },
}

/// A change plus who asks and on what basis.
#[derive(Clone, Debug)]
pub struct ChangeRequest {
    pub change: Change,
    /// Token name ("local" without token auth).
    pub actor: String,
    pub source: String,
    pub reason: String,
    /// The generation the operator based the change on (`If-Match`).
    pub if_match: Option<u64>,
    /// Allow leaving a pool with zero total weight.
    pub force: bool,
}

/// Why a change was refused; each maps to one HTTP status in `admin`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the state is at generation {actual}, the change was based on {expected}")]
    Stale { expected: u64, actual: u64 },
    /// The store's disk is full: nothing changed (507).
    #[error("the change could not be stored: {0}")]
    Full(String),
    /// The local store failed or did not answer in time: nothing changed (503).
    #[error("the change could not be stored: {0}")]
    Store(String),
    /// The shared store is unreachable or has no quorum: nothing changed (503).
    #[error("the change could not be stored, the shared state store is unavailable: {0}")]
    Unavailable(String),
}

/// The pools as served: the config with the overlay applied.
pub fn effective(pools: &[Pool], overlay: &Overlay) -> Vec<Pool> {
    pools.iter().map(|p| effective_pool(p, overlay)).collect()
}

fn effective_pool(config: &Pool, overlay: &Overlay) -> Pool {
    let name = &config.name;
    let mut pool = config.clone();
    // A rollout with a TTL ramp serves its short TTL until it finishes.
    pool.ttl = crate::rollout::served_ttl(overlay.rollouts.get(name), config.ttl);
    pool.degraded_ttl = pool.degraded_ttl.min(pool.ttl);
    let group_weights = overlay.group_weights.get(name);
    let endpoint_weights = overlay.endpoint_weights.get(name);
    let overrides = overlay.overrides.get(name);
    let removed = overlay.removed.get(name);
    let added = overlay.added.get(name);
    for g in &mut pool.groups {
        if let Some(w) = group_weights.and_then(|m| m.get(&g.name)) {
            g.weight = *w;
        }
        g.endpoints
            .retain(|e| !removed.is_some_and(|r| r.contains(&e.address)));
        for (&address, a) in added.into_iter().flatten() {
            if a.group != g.name {
                continue;
            }
            g.endpoints.push(Endpoint {
                address,
                weight: a.weight,
                // Added endpoints get the pool's check; a tcp check without a port cannot apply.
                probe: config
                    .check
                    .clone()
                    .filter(|c| c.port != 0)
                    .map(|check| ProbeKey {
                        target: SocketAddr::new(address, check.port),
                        check,
                    }),
                force: Override::Auto,
            });
        }
        for e in &mut g.endpoints {
            if let Some(w) = endpoint_weights.and_then(|m| m.get(&e.address)) {
                e.weight = *w;
            }
            if let Some(o) = overrides.and_then(|m| m.get(&e.address)) {
                e.force = *o;
            }
        }
    }
    pool
}

/// Total weight that can answer: groups count when some endpoint in them has weight.
pub fn answerable_weight(pool: &Pool) -> u64 {
    pool.groups
        .iter()
        .filter(|g| g.endpoints.iter().any(|e| e.weight > 0))
        .map(|g| u64::from(g.weight))
        .sum()
}

/// What `apply` produced: the new overlay and the audit record's content.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub overlay: Overlay,
    pub pool: String,
    pub action: &'static str,
    pub subject: String,
    pub before: Value,
    pub after: Value,
}

/// Sets `map[pool][k] = v`, or removes the entry when `v` is None (and empty parents).
fn put<K: Ord + Clone, V>(
    map: &mut BTreeMap<PoolId, BTreeMap<K, V>>,
    pool: &PoolId,
    k: &K,
    v: Option<V>,
) {
    match v {
        Some(v) => {
            map.entry(pool.clone()).or_default().insert(k.clone(), v);
        }
        None => {
            if let Some(inner) = map.get_mut(pool) {
                inner.remove(k);
                if inner.is_empty() {
                    map.remove(pool);
                }
            }
        }
    }
}

/// Checks `change` against the config `pools` and the current `overlay`, and returns the new
/// overlay. The layer stays minimal: a value equal to the config's removes the override.
pub fn apply(
    pools: &[Pool],
    overlay: &Overlay,
    change: &Change,
    force: bool,
) -> Result<Applied, ChangeError> {
    let pool_name = match change {
        Change::GroupWeight { pool, .. }
        | Change::EndpointWeight { pool, .. }
        | Change::Override { pool, .. }
        | Change::AddEndpoint { pool, .. }
        | Change::RemoveEndpoint { pool, .. } => pool,
        Change::DiscardUpdates { zone } | Change::DnssecRollover { zone, .. } => {
            return Err(ChangeError::Invalid(format!(
                "zone {zone}: this change needs the zone's files (the writer's)"
            )));
        }
    };
    let config = pools
        .iter()
        .find(|p| p.name == *pool_name)
        .ok_or_else(|| ChangeError::NotFound(format!("no pool `{pool_name}`")))?;
    let at = At {
        config,
        current: effective_pool(config, overlay),
        name: config.name.to_string(),
    };
    let mut next = overlay.clone();
    let edit = match change {
        Change::GroupWeight { group, weight, .. } => at.group_weight(&mut next, group, *weight)?,
        Change::EndpointWeight {
            address, weight, ..
        } => at.endpoint_weight(&mut next, address, *weight)?,
        Change::Override {
            address, health, ..
        } => at.set_override(&mut next, address, *health)?,
        Change::AddEndpoint {
            group,
            address,
            weight,
            ..
        } => at.add_endpoint(&mut next, group, address, *weight)?,
        Change::RemoveEndpoint { address, .. } => at.remove_endpoint(&mut next, address)?,
        Change::DiscardUpdates { .. } | Change::DnssecRollover { .. } => {
            unreachable!("returned above")
        }
    };
    let after = effective_pool(config, &next);
    if answerable_weight(&after) == 0 && !force {
        return Err(ChangeError::Conflict(format!(
            "this would leave pool `{}` with zero total weight, so it would never answer; send \"force\": true to do it anyway",
            at.name
        )));
    }
    Ok(Applied {
        overlay: next,
        pool: at.name,
        action: edit.action,
        subject: edit.subject,
        before: edit.before,
        after: edit.after,
    })
}

/// The pool a change is about: as configured, as currently served, and its name as text.
struct At<'a> {
    config: &'a Pool,
    current: Pool,
    name: String,
}

/// What one change did, for its audit record.
struct Edit {
    action: &'static str,
    subject: String,
    before: Value,
    after: Value,
}

impl At<'_> {
    fn pool(&self) -> &PoolId {
        &self.config.name
    }

    /// The served endpoint at `address` and its group; 404 when there is none.
    fn served(&self, address: &IpAddr) -> Result<(&Group, &Endpoint), ChangeError> {
        find_endpoint(&self.current, address).ok_or_else(|| {
            ChangeError::NotFound(format!("no endpoint {address} in pool `{}`", self.name))
        })
    }

    /// The configured endpoint at `address` and its group, if the config has one.
    fn configured(&self, address: &IpAddr) -> Option<(&Group, &Endpoint)> {
        find_endpoint(self.config, address)
    }

    fn group_weight(
        &self,
        next: &mut Overlay,
        group: &str,
        weight: u32,
    ) -> Result<Edit, ChangeError> {
        let configured = self
            .config
            .groups
            .iter()
            .find(|g| g.name == group)
            .ok_or_else(|| {
                ChangeError::NotFound(format!("no group `{group}` in pool `{}`", self.name))
            })?;
        let before = self
            .current
            .groups
            .iter()
            .find(|g| g.name == group)
            .map_or(0, |g| g.weight);
        put(
            &mut next.group_weights,
            self.pool(),
            &group.to_string(),
            (weight != configured.weight).then_some(weight),
        );
        Ok(Edit {
            action: "set-group-weight",
            subject: format!("group {group}"),
            before: json!({ "weight": before }),
            after: json!({ "weight": weight }),
        })
    }

    fn endpoint_weight(
        &self,
        next: &mut Overlay,
        address: &IpAddr,
        weight: Option<u32>,
    ) -> Result<Edit, ChangeError> {
        let (_, e) = self.served(address)?;
        let before = e.weight;
        let pool = self.pool();
        let after = match (self.configured(address), weight) {
            (Some((_, configured)), Some(w)) => {
                put(
                    &mut next.endpoint_weights,
                    pool,
                    address,
                    (w != configured.weight).then_some(w),
                );
                w
            }
            (Some((_, configured)), None) => {
                put::<_, u32>(&mut next.endpoint_weights, pool, address, None);
                configured.weight
            }
            (None, Some(w)) => {
                if let Some(a) = next.added.get_mut(pool).and_then(|m| m.get_mut(address)) {
                    a.weight = w;
                }
                w
            }
            (None, None) => {
                return Err(ChangeError::Invalid(format!(
                    "{address} was added at runtime and has no configured weight to go back to"
                )));
            }
        };
        Ok(Edit {
            action: "set-endpoint-weight",
            subject: format!("endpoint {address}"),
            before: json!({ "weight": before }),
            after: json!({ "weight": after }),
        })
    }

    fn set_override(
        &self,
        next: &mut Overlay,
        address: &IpAddr,
        health: Override,
    ) -> Result<Edit, ChangeError> {
        let (_, e) = self.served(address)?;
        let before = e.force;
        put(
            &mut next.overrides,
            self.pool(),
            address,
            (health != Override::Auto).then_some(health),
        );
        Ok(Edit {
            action: "override",
            subject: format!("endpoint {address}"),
            before: json!({ "health": before }),
            after: json!({ "health": health }),
        })
    }

    fn add_endpoint(
        &self,
        next: &mut Overlay,
        group: &str,
        address: &IpAddr,
        weight: u32,
    ) -> Result<Edit, ChangeError> {
        if !self.config.groups.iter().any(|g| g.name == group) {
            return Err(ChangeError::NotFound(format!(
                "no group `{group}` in pool `{}`",
                self.name
            )));
        }
        if let Some(why) = crate::model::unservable(*address) {
            return Err(ChangeError::Invalid(why));
        }
        if self.served(address).is_ok() {
            return Err(ChangeError::Conflict(format!(
                "{address} is already an endpoint of pool `{}`",
                self.name
            )));
        }
        let pool = self.pool();
        match self.configured(address) {
            // A configured endpoint removed earlier comes back where the config has it.
            Some((g, configured)) if g.name == group => {
                if let Some(removed) = next.removed.get_mut(pool) {
                    removed.remove(address);
                    if removed.is_empty() {
                        next.removed.remove(pool);
                    }
                }
                put(
                    &mut next.endpoint_weights,
                    pool,
                    address,
                    (weight != configured.weight).then_some(weight),
                );
            }
            Some((g, _)) => {
                return Err(ChangeError::Conflict(format!(
                    "{address} is configured in group `{}`; add it back there",
                    g.name
                )));
            }
            None => put(
                &mut next.added,
                pool,
                address,
                Some(AddedEndpoint {
                    group: group.to_string(),
                    weight,
                }),
            ),
        }
        Ok(Edit {
            action: "add-endpoint",
            subject: format!("endpoint {address}"),
            before: Value::Null,
            after: json!({ "group": group, "weight": weight }),
        })
    }

    fn remove_endpoint(&self, next: &mut Overlay, address: &IpAddr) -> Result<Edit, ChangeError> {
        let (g, e) = self.served(address)?;
        let before = json!({ "group": g.name, "weight": e.weight });
        let pool = self.pool();
        put::<_, u32>(&mut next.endpoint_weights, pool, address, None);
        put::<_, Override>(&mut next.overrides, pool, address, None);
        if self.configured(address).is_some() {
            next.removed
                .entry(pool.clone())
                .or_default()
                .insert(*address);
        } else {
            put::<_, AddedEndpoint>(&mut next.added, pool, address, None);
        }
        Ok(Edit {
            action: "remove-endpoint",
            subject: format!("endpoint {address}"),
            before,
            after: Value::Null,
        })
    }
}

/// The endpoint at `address` in `pool`, with its group.
fn find_endpoint<'p>(pool: &'p Pool, address: &IpAddr) -> Option<(&'p Group, &'p Endpoint)> {
    pool.groups.iter().find_map(|g| {
        g.endpoints
            .iter()
            .find(|e| e.address == *address)
            .map(|e| (g, e))
    })
}

/// Drops intent that the config no longer backs (pools, groups or endpoints gone), with an
/// audit record for each dropped entry.
pub fn prune(pools: &[Pool], overlay: &Overlay, now: u64) -> (Overlay, Vec<AuditRecord>) {
    // Zones' UPDATE layers and key rollovers are not pool intent: kept whole, even for a
    // zone no longer configured (inert until it is again; `weir ctl updates ZONE --discard`
    // drops the layers; a rollover naming keys no longer there changes nothing).
    let mut next = Overlay {
        zones: overlay.zones.clone(),
        rollovers: overlay.rollovers.clone(),
        ..Overlay::default()
    };
    let mut dropped = Vec::new();
    let mut drop_entry = |pool: &PoolId, subject: String, before: Value| {
        dropped.push(AuditRecord {
            generation: 0,
            time: now,
            actor: "weir".into(),
            source: String::new(),
            action: "drop-stale-override".into(),
            pool: pool.to_string(),
            subject,
            before,
            after: Value::Null,
            reason: "not backed by the config any more".into(),
        });
    };
    let pool_of = |name: &PoolId| pools.iter().find(|p| p.name == *name);
    let in_config = |p: &Pool, addr: &IpAddr| {
        p.groups
            .iter()
            .flat_map(|g| &g.endpoints)
            .any(|e| e.address == *addr)
    };
    let has_group = |p: &Pool, group: &str| p.groups.iter().any(|g| g.name == group);

    for (pool, groups) in &overlay.group_weights {
        for (group, w) in groups {
            match pool_of(pool) {
                Some(p) if has_group(p, group) => {
                    put(&mut next.group_weights, pool, group, Some(*w))
                }
                _ => drop_entry(pool, format!("group {group}"), json!({ "weight": w })),
            }
        }
    }
    for (pool, added) in &overlay.added {
        for (addr, a) in added {
            match pool_of(pool) {
                Some(p) if has_group(p, &a.group) && !in_config(p, addr) => {
                    put(&mut next.added, pool, addr, Some(a.clone()))
                }
                _ => drop_entry(
                    pool,
                    format!("endpoint {addr}"),
                    json!({ "group": a.group, "weight": a.weight }),
                ),
            }
        }
    }
    for (pool, removed) in &overlay.removed {
        for addr in removed {
            match pool_of(pool) {
                Some(p) if in_config(p, addr) => {
                    next.removed.entry(pool.clone()).or_default().insert(*addr);
                }
                _ => drop_entry(pool, format!("endpoint {addr}"), json!({ "removed": true })),
            }
        }
    }
    let exists = |next: &Overlay, pool: &PoolId, addr: &IpAddr| {
        pool_of(pool).is_some_and(|p| {
            in_config(p, addr) && !next.removed.get(pool).is_some_and(|r| r.contains(addr))
        }) || next.added.get(pool).is_some_and(|a| a.contains_key(addr))
    };
    for (pool, weights) in &overlay.endpoint_weights {
        for (addr, w) in weights {
            if exists(&next, pool, addr) {
                put(&mut next.endpoint_weights, pool, addr, Some(*w));
            } else {
                drop_entry(pool, format!("endpoint {addr}"), json!({ "weight": w }));
            }
        }
    }
    for (pool, overrides) in &overlay.overrides {
        for (addr, o) in overrides {
            if exists(&next, pool, addr) {
                put(&mut next.overrides, pool, addr, Some(*o));
            } else {
                drop_entry(pool, format!("endpoint {addr}"), json!({ "health": o }));
            }
        }
    }
    for (pool, r) in &overlay.rollouts {
        match pool_of(pool) {
            Some(p) if has_group(p, &r.from) && has_group(p, &r.to) => {
                next.rollouts.insert(pool.clone(), r.clone());
            }
            _ => drop_entry(
                pool,
                format!("rollout {} -> {}", r.from, r.to),
                json!({ "weight": r.weight }),
            ),
        }
    }
    (next, dropped)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn pools(text: &str) -> Vec<Pool> {
        let zone = "[[zone]]\norigin = \"example.com.\"\nfile = \"x\"\n";
        crate::config::parse(&format!("{zone}{text}"), Path::new("w.toml"))
            .unwrap()
            .pools
    }

    const POOL: &str = "[[pool]]\nname = \"app.example.com.\"\n[pool.check]\nkind = \"http\"\nport = 8080\n[[pool.group]]\nname = \"blue\"\nweight = 90\nendpoints = [{ address = \"192.0.2.10\" }, { address = \"192.0.2.11\", weight = 2 }]\n[[pool.group]]\nname = \"green\"\nweight = 10\nendpoints = [{ address = \"192.0.2.20\" }]\n";

    fn app() -> PoolId {
        PoolId::parse("app.example.com").unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// (group, weight, [(endpoint, weight, override)]).
    type Weights = Vec<(String, u32, Vec<(String, u32, Override)>)>;

    fn weights(p: &Pool) -> Weights {
        p.groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.weight,
                    g.endpoints
                        .iter()
                        .map(|e| (e.address.to_string(), e.weight, e.force))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn changes_apply_and_a_value_equal_to_the_config_clears_the_override() {
        let config = pools(POOL);
        let ov = Overlay::default();
        let a = apply(
            &config,
            &ov,
            &Change::GroupWeight {
                pool: app(),
                group: "green".into(),
                weight: 25,
            },
            false,
        )
        .unwrap();
        assert_eq!(
            (a.before.clone(), a.after.clone()),
            (json!({"weight": 10}), json!({"weight": 25}))
        );
        let a = apply(
            &config,
            &a.overlay,
            &Change::EndpointWeight {
                pool: app(),
                address: ip("192.0.2.10"),
                weight: Some(0),
            },
            false,
        )
        .unwrap();
        let a = apply(
            &config,
            &a.overlay,
            &Change::Override {
                pool: app(),
                address: ip("192.0.2.11"),
                health: Override::Down,
            },
            false,
        )
        .unwrap();
        let a = apply(
            &config,
            &a.overlay,
            &Change::AddEndpoint {
                pool: app(),
                group: "green".into(),
                address: ip("2001:db8::7"),
                weight: 3,
            },
            false,
        )
        .unwrap();
        let a = apply(
            &config,
            &a.overlay,
            &Change::RemoveEndpoint {
                pool: app(),
                address: ip("192.0.2.20"),
            },
            false,
        )
        .unwrap();
        let eff = effective(&config, &a.overlay);
        assert_eq!(
            weights(&eff[0]),
            vec![
                (
                    "blue".into(),
                    90,
                    vec![
                        ("192.0.2.10".into(), 0, Override::Auto),
                        ("192.0.2.11".into(), 2, Override::Down)
                    ]
                ),
                (
                    "green".into(),
                    25,
                    vec![("2001:db8::7".into(), 3, Override::Auto)]
                ),
            ]
        );
        let added = &eff[0].groups[1].endpoints[0];
        assert_eq!(
            added.probe.as_ref().unwrap().target,
            "[2001:db8::7]:8080".parse().unwrap(),
            "the pool's check"
        );
        // Back to configured values: the layer empties.
        let a = apply(
            &config,
            &a.overlay,
            &Change::GroupWeight {
                pool: app(),
                group: "green".into(),
                weight: 10,
            },
            false,
        )
        .unwrap();
        let a = apply(
            &config,
            &a.overlay,
            &Change::EndpointWeight {
                pool: app(),
                address: ip("192.0.2.10"),
                weight: None,
            },
            false,
        )
        .unwrap();
        let a = apply(
            &config,
            &a.overlay,
            &Change::Override {
                pool: app(),
                address: ip("192.0.2.11"),
                health: Override::Auto,
            },
            false,
        )
        .unwrap();
        let a = apply(
            &config,
            &a.overlay,
            &Change::RemoveEndpoint {
                pool: app(),
                address: ip("2001:db8::7"),
            },
            false,
        )
        .unwrap();
        let a = apply(
            &config,
            &a.overlay,
            &Change::AddEndpoint {
                pool: app(),
                group: "green".into(),
                address: ip("192.0.2.20"),
                weight: 1,
            },
            false,
        )
        .unwrap();
        assert_eq!(a.overlay, Overlay::default());
    }

    #[test]
    fn refusals() {
        let config = pools(POOL);
        let ov = Overlay::default();
        let other = PoolId::parse("other.example.com").unwrap();
        let cases = [
            (
                Change::GroupWeight {
                    pool: other,
                    group: "blue".into(),
                    weight: 1,
                },
                "no pool `other.example.com.`",
            ),
            (
                Change::GroupWeight {
                    pool: app(),
                    group: "red".into(),
                    weight: 1,
                },
                "no group `red` in pool `app.example.com.`",
            ),
            (
                Change::Override {
                    pool: app(),
                    address: ip("192.0.2.99"),
                    health: Override::Up,
                },
                "no endpoint 192.0.2.99 in pool `app.example.com.`",
            ),
            (
                Change::AddEndpoint {
                    pool: app(),
                    group: "blue".into(),
                    address: ip("192.0.2.20"),
                    weight: 1,
                },
                "192.0.2.20 is already an endpoint of pool `app.example.com.`",
            ),
        ];
        for (change, want) in cases {
            assert_eq!(
                apply(&config, &ov, &change, false).unwrap_err().to_string(),
                want
            );
        }
        // Zero total weight: 409 unless forced.
        let a = apply(
            &config,
            &ov,
            &Change::GroupWeight {
                pool: app(),
                group: "green".into(),
                weight: 0,
            },
            false,
        )
        .unwrap();
        let zero = Change::GroupWeight {
            pool: app(),
            group: "blue".into(),
            weight: 0,
        };
        assert!(
            matches!(apply(&config, &a.overlay, &zero, false), Err(ChangeError::Conflict(m)) if m.contains("zero total weight"))
        );
        assert!(apply(&config, &a.overlay, &zero, true).is_ok());
    }

    #[test]
    fn prune_drops_what_the_config_no_longer_has() {
        let config = pools(POOL);
        let mut ov = Overlay::default();
        for change in [
            Change::GroupWeight {
                pool: app(),
                group: "green".into(),
                weight: 30,
            },
            Change::Override {
                pool: app(),
                address: ip("192.0.2.10"),
                health: Override::Down,
            },
            Change::EndpointWeight {
                pool: app(),
                address: ip("192.0.2.11"),
                weight: Some(5),
            },
        ] {
            ov = apply(&config, &ov, &change, false).unwrap().overlay;
        }
        // The new config drops group green and endpoint .11.
        let new = pools(&POOL.replace(", { address = \"192.0.2.11\", weight = 2 }", "").replace("[[pool.group]]\nname = \"green\"\nweight = 10\nendpoints = [{ address = \"192.0.2.20\" }]\n", ""));
        let (kept, dropped) = prune(&new, &ov, 7);
        assert_eq!(kept.overrides[&app()][&ip("192.0.2.10")], Override::Down);
        assert!(kept.group_weights.is_empty() && kept.endpoint_weights.is_empty());
        let subjects: Vec<&str> = dropped.iter().map(|r| r.subject.as_str()).collect();
        assert_eq!(subjects, ["group green", "endpoint 192.0.2.11"]);
        assert!(
            dropped
                .iter()
                .all(|r| r.action == "drop-stale-override" && r.time == 7)
        );
        assert_eq!(
            prune(&config, &ov, 7).1,
            Vec::new(),
            "nothing stale under the old config"
        );
    }
}
