//! The configuration file: TOML -> `RawConfig` (serde, `deny_unknown_fields`) -> `validate()` ->
//! typed `Config`. Every semantic problem is collected (one `Collector` per validation) and
//! reported with its key path, so an operator fixes a file in one pass. Touches no sockets and no
//! runtime state.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::{Name, Pool, rtype};

mod pool;
mod route;
pub use pool::{MAX_WEIGHT, RawPlan, RawStep, plan};
pub use route::Routing;

/// One problem found while loading configuration or zones: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `file:line`, `file: key.path` or `file: name` (whatever pins the problem down best); a
    /// bare `key.path` in a rollout plan sent to the admin API.
    pub location: String,
    pub message: String,
}

impl Problem {
    /// The line this problem is at when it is located `{file}:{line}`.
    fn line_in(&self, file: &str) -> Option<usize> {
        self.location
            .strip_prefix(file)
            .and_then(|rest| rest.strip_prefix(':'))
            .and_then(|line| line.parse().ok())
    }
}

/// Puts `problems` in file order: those located at a line of `file` by line, the others after
/// them in the order they came.
pub fn sort_by_line(problems: &mut [Problem], file: &str) {
    problems.sort_by_key(|p| p.line_in(file).unwrap_or(usize::MAX));
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found, in file order. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Each problem as (location, message).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|p| (p.location.as_str(), p.message.as_str()))
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    dns: Option<RawDns>,
    admin: Option<RawAdmin>,
    store: Option<RawStore>,
    log: Option<RawLog>,
    #[serde(default)]
    zone: Vec<RawZone>,
    #[serde(default)]
    pool: Vec<pool::RawPool>,
    geo: Option<route::RawGeo>,
    #[serde(default)]
    route: Vec<route::RawRoute>,
    tsig: Option<RawTsig>,
    dnssec: Option<RawDnssec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnssec {
    key_dir: Option<String>,
    signature_validity: Option<String>,
    signature_refresh: Option<String>,
    inception_skew: Option<String>,
    propagation_delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsig {
    key_files: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    listen: Option<Vec<String>>,
    udp_workers: Option<i64>,
    udp_max_payload: Option<i64>,
    tcp_max_connections: Option<i64>,
    tcp_idle_timeout: Option<String>,
    tcp_io_timeout: Option<String>,
    track_convergence: Option<bool>,
    cookie_secret_file: Option<String>,
    rrl: Option<RawRrl>,
    xdp: Option<Vec<RawXdp>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXdp {
    interface: Option<String>,
    queues: Option<Vec<i64>>,
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRrl {
    rate: Option<i64>,
    window: Option<String>,
    slip: Option<i64>,
    exempt: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
    token_file: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<String>,
    path: Option<String>,
    audit_retention: Option<i64>,
    etcd: Option<RawEtcd>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    node_id: Option<String>,
    lease_ttl: Option<String>,
    timeout: Option<String>,
    health: Option<String>,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
    query_sample: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    origin: String,
    file: String,
    allow_transfer: Option<Vec<String>>,
    notify: Option<Vec<String>>,
    update: Option<Vec<RawGrant>>,
    dnssec: Option<bool>,
}

/// `[[zone.update]]`: what one TSIG key may change by UPDATE.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    key: String,
    names: Option<Vec<String>>,
    types: Option<Vec<String>>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub dns: DnsConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub zones: Vec<ZoneConfig>,
    /// Every pool: the `[[pool]]`s, the pools of each `[[route]]`, and blue-green previews.
    pub pools: Vec<Pool>,
    pub routing: Routing,
    /// `[tsig] key_files`: every key, read at load (and again at each reload).
    pub keyring: crate::tsig::Keyring,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Each address serves UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// UDP worker threads per listen address, each with its own SO_REUSEPORT socket.
    pub udp_workers: usize,
    /// EDNS UDP payload size weir advertises and the cap on UDP answers (DNS Flag Day 2020).
    pub udp_max_payload: u16,
    pub tcp_max_connections: usize,
    /// How long an idle TCP connection stays open between queries (RFC 7766 6.2.3).
    pub tcp_idle_timeout: Duration,
    /// How long one message may take to arrive once its first byte has, or to be written.
    pub tcp_io_timeout: Duration,
    /// Count pool queries per resolver to measure cache convergence after each change
    /// (`convergence`).
    pub track_convergence: bool,
    /// Response rate limiting on UDP (`dns::rrl`).
    pub rrl: RrlConfig,
    /// The file the DNS cookie secrets came from; None: a random secret per process.
    pub cookie_secret_file: Option<PathBuf>,
    /// The secrets read from `cookie_secret_file` (current, then previous).
    pub cookie_secrets: Option<crate::model::CookieSecrets>,
    /// `[[dns.xdp]]`: interfaces whose UDP queries to the listen addresses weir takes through
    /// AF_XDP (`dns::xdp`, feature `xdp`).
    pub xdp: Vec<XdpConfig>,
}

/// One `[[dns.xdp]]` interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    pub interface: String,
    /// Receive queues served (one AF_XDP socket and worker thread each); empty: every queue.
    pub queues: Vec<u32>,
    /// Attach in the driver (native XDP), or generic (skb) mode for drivers without it.
    pub generic: bool,
}

/// The most responses one rate-limiting bucket holds (`rate × window`): its tokens are 26 bits
/// of 1/64 (`dns::rrl`).
pub const RRL_MAX_BURST: u64 = ((1 << 26) - 1) / 64;

/// `[dns.rrl]`: response rate limiting (`dns::rrl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses a second per (client prefix, response class); 0 = off.
    pub rate: u32,
    /// Whole seconds of `rate` a bucket holds (the burst a quiet client may send).
    pub window: u32,
    /// Every `slip`-th limited response is sent as a minimal TC=1 reply; 0 = drop all.
    pub slip: u32,
    /// Clients never limited.
    pub exempt: Vec<crate::model::Prefix>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the admin HTTP API listens; None = disabled.
    pub listen: Option<SocketAddr>,
    /// Admin tokens; empty = no token auth (then the API must listen on loopback).
    pub tokens: Vec<Token>,
    /// The token file, resolved against the config file's folder.
    pub token_file: Option<PathBuf>,
    /// Serve the API over TLS with this PEM certificate chain and key.
    pub tls: Option<TlsFiles>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Read-only tokens may only GET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

/// One line of the token file: `NAME SCOPE TOKEN`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub scope: Scope,
    pub secret: String,
}

impl fmt::Debug for Token {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({} {:?})", self.name, self.scope)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The sled database folder, resolved against the config file's folder. With etcd it holds
    /// this node's cache of the last applied state.
    pub path: PathBuf,
    /// Audit records kept; older ones are dropped.
    pub audit_retention: usize,
    /// `backend = "etcd"`: the shared store; None = the local sled store only.
    pub etcd: Option<EtcdConfig>,
}

/// `[store.etcd]`: where the shared state lives and who this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://10.0.0.1:2379` (https when `ca_file` is set).
    pub endpoints: Vec<String>,
    /// Every key weir writes starts with this.
    pub prefix: String,
    /// This nameserver's name in `/v1/nodes` and change status; unique per node.
    pub node_id: String,
    /// A node that stops renewing its lease disappears from the live nodes after this long.
    pub lease_ttl: Duration,
    /// Deadline for one etcd request (admin writes fail with 503 after it).
    pub timeout: Duration,
    /// Health decided per node (`Local`) or by a majority of live nodes (`Shared`).
    pub health: HealthMode,
    pub tls: Option<EtcdTls>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthMode {
    Local,
    Shared,
}

/// TLS to etcd: the CA that signed the members' certificates, and an optional client pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `weir=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
    pub json: bool,
    /// Fraction of answered queries logged at target `weir::query` (0.0..=1.0); 0 = off.
    pub query_sample: f64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    pub origin: Name,
    /// Resolved against the config file's folder.
    pub file: PathBuf,
    /// Who may transfer the zone (AXFR, IXFR) over TCP: source prefixes and TSIG keys; empty:
    /// every transfer REFUSED.
    pub allow_transfer: Vec<crate::model::TransferAllow>,
    /// Secondaries sent a NOTIFY (RFC 1996) whenever the zone's serial changes.
    pub notify: Vec<crate::model::NotifyTarget>,
    /// Who may change what by UPDATE (RFC 2136); empty: every UPDATE is refused.
    pub update: Vec<crate::model::Grant>,
    /// `dnssec = true`: the zone's keys (from `[dnssec] key_dir`, read at each load) and the
    /// signature policy; None: served unsigned.
    pub dnssec: Option<std::sync::Arc<crate::dnssec::ZoneKeys>>,
}

/// Defaults, written once here and mirrored in config/weir.toml (a test keeps them equal).
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:5353";
    pub const UDP_WORKERS: i64 = 0;
    pub const UDP_MAX_PAYLOAD: i64 = 1232;
    pub const TCP_MAX_CONNECTIONS: i64 = 1024;
    pub const TCP_IDLE_TIMEOUT: &str = "10s";
    pub const TCP_IO_TIMEOUT: &str = "5s";
    pub const TRACK_CONVERGENCE: bool = true;
    pub const RRL_RATE: i64 = 0;
    pub const RRL_WINDOW: &str = "2s";
    pub const RRL_SLIP: i64 = 2;
    pub const ADMIN_LISTEN: &str = "127.0.0.1:8053";
    pub const STORE_PATH: &str = "weir-state";
    pub const AUDIT_RETENTION: i64 = 100_000;
    pub const STORE_BACKEND: &str = "sled";
    pub const ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";
    pub const ETCD_PREFIX: &str = "/weir/";
    pub const ETCD_LEASE_TTL: &str = "10s";
    pub const ETCD_TIMEOUT: &str = "3s";
    pub const ETCD_HEALTH: &str = "local";
    pub const LOG_LEVEL: &str = "info";
    pub const LOG_FORMAT: &str = "text";
    pub const LOG_QUERY_SAMPLE: f64 = 0.0;
    pub const DNSSEC_KEY_DIR: &str = "keys";
    pub const SIGNATURE_VALIDITY: &str = "14days";
    pub const SIGNATURE_REFRESH: &str = "7days";
    pub const INCEPTION_SKEW: &str = "1h";
    pub const PROPAGATION_DELAY: &str = "1h";
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            location: path.display().to_string(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` names the file in messages and anchors relative paths.
/// Every problem comes back at once: each unknown key (serde stops at the first, so each one
/// it names is dropped and the text deserialized again), then every validation problem.
pub fn parse(text: &str, path: &Path) -> Result<Config, Problems> {
    let file = path.display().to_string();
    let located = |e: &toml::de::Error| {
        let location = match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("{file}:{line}")
            }
            None => file.clone(),
        };
        Problem {
            location,
            message: e.message().trim().to_string(),
        }
    };
    let mut root = toml::de::DeTable::parse(text).map_err(|e| Problems(vec![located(&e)]))?;
    let mut problems = Vec::new();
    let raw = loop {
        match RawConfig::deserialize(toml::de::Deserializer::from(root.clone())) {
            Ok(raw) => break Some(raw),
            Err(e) => {
                problems.push(located(&e));
                let dropped = e.message().starts_with("unknown field")
                    && e.span().is_some_and(|span| drop_key(root.get_mut(), &span));
                if !dropped || problems.len() >= MAX_UNKNOWN_KEYS {
                    break None;
                }
            }
        }
    };
    // Unknown keys in file order (serde finds them table by table).
    sort_by_line(&mut problems, &file);
    let line_of = |key: &str| line_of(root.get_ref(), text, key);
    match raw.map(|raw| validate(raw, path, &line_of)) {
        Some(Ok(config)) if problems.is_empty() => Ok(config),
        Some(Err(Problems(more))) => {
            problems.extend(more);
            Err(Problems(problems))
        }
        _ => Err(Problems(problems)),
    }
}

/// The zones a config file names, read leniently: what `weir check` loads to report zone
/// problems beside config problems (when the config has problems, `load` gives no `Config`).
pub fn zone_configs(path: &Path) -> Vec<ZoneConfig> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut zones: Vec<ZoneConfig> = Vec::new();
    for zone in table
        .get("zone")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
    {
        let origin = zone.get("origin").and_then(toml::Value::as_str);
        let file = zone.get("file").and_then(toml::Value::as_str);
        let (Some(origin), Some(file)) = (origin, file) else {
            continue;
        };
        let Ok(origin) = Name::parse(origin) else {
            continue;
        };
        if file.is_empty() || origin == Name::root() || zones.iter().any(|z| z.origin == origin) {
            continue;
        }
        zones.push(ZoneConfig {
            origin,
            file: base.join(file),
            allow_transfer: Vec::new(),
            notify: Vec::new(),
            update: Vec::new(),
            dnssec: None,
        });
    }
    zones
}

/// The line of `text` where the value at key path `key` (`route[0].rule[1].countries`,
/// `dns.listen[0]`) is written; for a key not written there, the line of the nearest table
/// holding it. None when not even the first part of the path is in the file.
fn line_of(root: &toml::de::DeTable<'_>, text: &str, key: &str) -> Option<usize> {
    use toml::de::DeValue;
    let mut table = Some(root);
    let mut found = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((_, value)) = table.and_then(|t| t.iter().find(|(k, _)| k.get_ref() == name))
        else {
            break;
        };
        let value = match (index, value.get_ref()) {
            (None, _) => value,
            (Some(i), DeValue::Array(items)) => match items.get(i) {
                Some(item) => item,
                None => break,
            },
            (Some(_), _) => break,
        };
        found = Some(value.span());
        table = match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    let start = found?.start.min(text.len());
    Some(text[..start].matches('\n').count() + 1)
}

/// Unknown keys reported at most in one pass (each costs a deserialization of the file).
const MAX_UNKNOWN_KEYS: usize = 100;

/// Removes the key at `span` from `table` or any table below it; false if there is none.
fn drop_key(table: &mut toml::de::DeTable<'_>, span: &std::ops::Range<usize>) -> bool {
    let found = table.keys().find(|k| k.span() == *span).cloned();
    if let Some(key) = found {
        table.remove(&key);
        return true;
    }
    table
        .iter_mut()
        .any(|(_, value)| drop_key_in(value.get_mut(), span))
}

fn drop_key_in(value: &mut toml::de::DeValue<'_>, span: &std::ops::Range<usize>) -> bool {
    match value {
        toml::de::DeValue::Table(table) => drop_key(table, span),
        toml::de::DeValue::Array(items) => items.iter_mut().any(|v| drop_key_in(v.get_mut(), span)),
        _ => false,
    }
}

/// Every problem one validation finds, in the order found: the one way config checks report.
/// A problem is pushed with its key path (`dns.listen[1]`) and shown as `file: key`; a plan sent
/// to the admin API has no file, so its keys stand alone.
/// The line a key path is written at, when it is written in the file (`line_of`).
type LineOf<'a> = &'a dyn Fn(&str) -> Option<usize>;

struct Collector<'a> {
    file: Option<&'a str>,
    line_of: Option<LineOf<'a>>,
    problems: Vec<Problem>,
}

impl<'a> Collector<'a> {
    /// Problems of the config file `file`, located at a line by `line_of` where they can be.
    fn new(file: &'a str, line_of: LineOf<'a>) -> Self {
        Collector {
            file: Some(file),
            line_of: Some(line_of),
            problems: Vec::new(),
        }
    }

    /// Problems of something that is not a file (a rollout plan in an API request).
    fn standalone() -> Self {
        Collector {
            file: None,
            line_of: None,
            problems: Vec::new(),
        }
    }

    /// A problem with the value at `key` (a key path, `pool[0].group[1].weight`): located
    /// `file:line` with the key path starting the message where the key (or the table holding
    /// it) is written, else `file: key`.
    fn push(&mut self, key: &str, message: impl Into<String>) {
        let line = self.line_of.and_then(|line_of| line_of(key));
        match (self.file, line) {
            (Some(file), Some(line)) => {
                self.push_at(
                    format!("{file}:{line}"),
                    format!("{key}: {}", message.into()),
                );
            }
            (Some(file), None) => self.push_at(format!("{file}: {key}"), message),
            (None, _) => self.push_at(key.to_string(), message),
        }
    }

    /// A problem pinned down by something other than a key path, such as another file's line.
    fn push_at(&mut self, location: String, message: impl Into<String>) {
        self.problems.push(Problem {
            location,
            message: message.into(),
        });
    }

    /// How many problems were found so far: compare two counts to learn whether a part added any.
    fn found(&self) -> usize {
        self.problems.len()
    }

    /// `value` if nothing was found, else every problem.
    fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(Problems(self.problems))
        }
    }

    fn int_in(&mut self, key: &str, value: i64, min: i64, max: i64) -> i64 {
        if value < min || value > max {
            self.push(key, format!("{value} is out of range {min}..={max}"));
        }
        value.clamp(min, max)
    }

    /// A list of address prefixes at `key`; each one that is not is a problem at `key[i]`.
    fn prefixes(&mut self, key: &str, texts: &[String]) -> Vec<crate::model::Prefix> {
        let mut prefixes = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match crate::model::Prefix::parse(text) {
                Some(p) => prefixes.push(p),
                None => self.push(
                    &format!("{key}[{i}]"),
                    format!("`{text}` is not a prefix like \"192.0.2.0/24\" or \"2001:db8::/32\" (no bits set past the length)"),
                ),
            }
        }
        prefixes
    }

    /// One `[[zone.update]]`: the key's name, its name patterns (default: the whole zone) and
    /// types (default: every type but SOA).
    fn grant(
        &mut self,
        key: &str,
        raw: &RawGrant,
        origin: &Name,
        keyring: &crate::tsig::Keyring,
    ) -> Option<crate::model::Grant> {
        let name = match Name::parse(&raw.key) {
            Ok(name) if keyring.get(name.wire()).is_some() => Some(name),
            _ => {
                self.push(
                    &format!("{key}.key"),
                    format!("`{}` is no key of [tsig] key_files", raw.key),
                );
                None
            }
        };
        let default = ["**".to_string()];
        let mut names = Vec::new();
        let texts = raw.names.as_deref().unwrap_or(&default);
        if texts.is_empty() {
            self.push(
                &format!("{key}.names"),
                "is empty: the key could change nothing",
            );
        }
        for (i, text) in texts.iter().enumerate() {
            match crate::model::NamePattern::parse(text, origin) {
                Ok(p) => names.push(p),
                Err(e) => self.push(&format!("{key}.names[{i}]"), e),
            }
        }
        let mut types = Vec::new();
        for (i, text) in raw.types.iter().flatten().enumerate() {
            let at = format!("{key}.types[{i}]");
            match crate::model::rtype_from_name(text) {
                Some(rtype::SOA) => self.push(
                    &at,
                    "SOA cannot be updated: the zone file owns it, and weir sets its serial",
                ),
                Some(rtype::ANY | rtype::AXFR | rtype::IXFR | rtype::TSIG | rtype::OPT) => {
                    self.push(&at, format!("`{text}` is not a type records have"))
                }
                Some(t) => types.push(t),
                None => self.push(
                    &at,
                    format!("`{text}` is not a record type (a mnemonic like TXT, or TYPE65280)"),
                ),
            }
        }
        if raw.types.as_ref().is_some_and(Vec::is_empty) {
            self.push(
                &format!("{key}.types"),
                "is empty: the key could change nothing (leave it out for every type)",
            );
        }
        Some(crate::model::Grant {
            key: name?,
            names,
            types,
        })
    }

    /// A secondary to NOTIFY: `192.0.2.1`, `[2001:db8::1]` (port 53) or with a port; after
    /// `key:NAME@`, signed with that `[tsig]` key.
    fn notify_target(
        &mut self,
        key: &str,
        text: &str,
        keyring: &crate::tsig::Keyring,
    ) -> Option<crate::model::NotifyTarget> {
        let (signer, address) = match text.strip_prefix("key:").and_then(|r| r.split_once('@')) {
            Some((name, address)) => match Name::parse(name) {
                Ok(name) if keyring.get(name.wire()).is_some() => (Some(name), address),
                _ => {
                    self.push(key, format!("`{name}` is no key of [tsig] key_files"));
                    return None;
                }
            },
            None => (None, text),
        };
        let parsed = address.parse::<std::net::SocketAddr>().ok().or_else(|| {
            let bare = address.trim_start_matches('[').trim_end_matches(']');
            bare.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| (ip, 53).into())
        });
        if parsed.is_none() {
            self.push(
                key,
                format!("`{text}` is not an address like \"192.0.2.1\", \"[2001:db8::1]:5300\" or \"key:NAME@192.0.2.1\""),
            );
        }
        Some(crate::model::NotifyTarget {
            addr: parsed?,
            key: signer,
        })
    }

    fn duration(&mut self, key: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) if d > Duration::ZERO => d,
            Ok(_) => {
                self.push(key, "must be longer than zero");
                Duration::from_secs(1)
            }
            Err(e) => {
                self.push(key, format!("`{text}` is not a duration like \"5s\": {e}"));
                Duration::from_secs(1)
            }
        }
    }

    /// The value `text` names among `choices`; None (and a problem listing them) for another.
    fn choice<T: Copy>(&mut self, key: &str, text: &str, choices: &[(&str, T)]) -> Option<T> {
        let found = choices.iter().find(|(name, _)| *name == text);
        if found.is_none() {
            let names: Vec<String> = choices
                .iter()
                .map(|(name, _)| format!("\"{name}\""))
                .collect();
            self.push(key, format!("`{text}` is not one of {}", names.join(", ")));
        }
        found.map(|(_, value)| *value)
    }
}

/// A file named in the config, resolved against the config file's folder; None if unset or "".
fn file_path(base: &Path, value: Option<&str>) -> Option<PathBuf> {
    value.filter(|f| !f.is_empty()).map(|f| base.join(f))
}

/// Checks every section in the order config/weir.toml shows them, so the problems come in the
/// order an operator reads them.
fn validate(raw: RawConfig, path: &Path, line_of: LineOf<'_>) -> Result<Config, Problems> {
    let file = path.display().to_string();
    let mut c = Collector::new(&file, line_of);
    let base = path.parent().unwrap_or(Path::new("."));
    let dns = dns(&mut c, raw.dns.unwrap_or_default(), base);
    let admin = admin(&mut c, raw.admin.unwrap_or_default(), base);
    let store = store(&mut c, raw.store.unwrap_or_default(), base);
    let log = log(&mut c, raw.log.unwrap_or_default());
    let keyring = tsig(&mut c, &raw.tsig.unwrap_or_default(), base);
    let dnssec = dnssec(&mut c, &raw.dnssec.unwrap_or_default(), base);
    let zones = zones(&mut c, &raw.zone, base, &keyring, &dnssec);
    let (geo, asn) = route::geo(&mut c, &raw.geo.unwrap_or_default(), base);
    let route_names = route::names(&mut c, &raw.route);
    let served: Vec<String> = raw.pool.iter().map(|p| p.name.clone()).collect();
    let (routes, route_pools) =
        route::validate(&mut c, &raw.route, &route_names, &served, (&geo, &asn));
    let placed: Vec<pool::Placed<'_>> = (raw.pool.iter().enumerate())
        .map(|(i, raw)| pool::Placed {
            key: format!("pool[{i}]"),
            raw,
            route: None,
        })
        .chain(route_pools)
        .collect();
    let pools = pool::validate(&mut c, &placed);
    c.finish(Config {
        path: path.to_path_buf(),
        dns,
        admin,
        store,
        log,
        zones,
        pools,
        routing: Routing { routes, geo, asn },
        keyring,
    })
}

/// `[tsig]`: reads every key file (relative to the config file's folder); a file that cannot
/// be read or holds a bad key is a problem at its own line, and a key name defined twice (in
/// one file or two) is refused.
fn tsig(c: &mut Collector<'_>, raw: &RawTsig, base: &Path) -> crate::tsig::Keyring {
    let mut keys: Vec<(crate::tsig::Key, String)> = Vec::new();
    for (i, file) in raw.key_files.iter().flatten().enumerate() {
        let key = format!("tsig.key_files[{i}]");
        let Some(path) = file_path(base, Some(file)) else {
            c.push(&key, "is empty");
            continue;
        };
        let shown = path.display().to_string();
        match crate::tsig::read_key_file(&path) {
            Ok(read) => {
                for k in read {
                    if let Some((_, other)) = keys.iter().find(|(o, _)| o.name == k.name) {
                        c.push(
                            &key,
                            format!("key `{}` in {shown} is also defined in {other}", k.name),
                        );
                        continue;
                    }
                    keys.push((k, shown.clone()));
                }
            }
            Err(problems) => {
                for p in problems {
                    if p.line == 0 {
                        c.push(&key, format!("{shown}: {}", p.message));
                    } else {
                        c.push_at(format!("{shown}:{}", p.line), p.message);
                    }
                }
            }
        }
    }
    crate::tsig::Keyring::new(keys.into_iter().map(|(k, _)| k).collect())
}

/// `[dnssec]`: where signed zones' keys are (relative to the config file's folder) and the
/// signature policy.
fn dnssec(c: &mut Collector<'_>, raw: &RawDnssec, base: &Path) -> (PathBuf, crate::dnssec::Policy) {
    let dir = base.join(raw.key_dir.as_deref().unwrap_or(defaults::DNSSEC_KEY_DIR));
    let mut secs = |key: &str, text: &Option<String>, default: &str| {
        c.duration(&format!("dnssec.{key}"), text.as_deref().unwrap_or(default))
            .as_secs()
    };
    let policy = crate::dnssec::Policy {
        validity: secs(
            "signature_validity",
            &raw.signature_validity,
            defaults::SIGNATURE_VALIDITY,
        ),
        refresh: secs(
            "signature_refresh",
            &raw.signature_refresh,
            defaults::SIGNATURE_REFRESH,
        ),
        inception_skew: secs(
            "inception_skew",
            &raw.inception_skew,
            defaults::INCEPTION_SKEW,
        ),
        propagation_delay: secs(
            "propagation_delay",
            &raw.propagation_delay,
            defaults::PROPAGATION_DELAY,
        ),
    };
    if policy.refresh >= policy.validity {
        c.push(
            "dnssec.signature_refresh",
            "must be shorter than signature_validity (signatures are made again when this much validity is left)",
        );
    }
    (dir, policy)
}

/// A signed zone's keys from `dir` (`[[zone]] dnssec = true`): every problem of every key
/// file at `key`, and none at all is one.
fn zone_keys(
    c: &mut Collector<'_>,
    key: &str,
    origin: &Name,
    (dir, policy): &(PathBuf, crate::dnssec::Policy),
) -> Option<std::sync::Arc<crate::dnssec::ZoneKeys>> {
    match crate::dnssec::read_keys(dir, origin) {
        Ok(keys) if keys.is_empty() => {
            c.push(
                key,
                format!(
                    "no keys for {origin} in {} (make one: weir dnssec keygen {origin} --dir {})",
                    dir.display(),
                    dir.display()
                ),
            );
            None
        }
        Ok(keys)
            if !keys
                .iter()
                .any(|k| k.timing.active(crate::clock::wall_secs())) =>
        {
            c.push(
                key,
                format!(
                    "no key of {origin} in {} signs now (each is standby, inactive or not yet active by its timing); the zone would be served unsigned",
                    dir.display()
                ),
            );
            None
        }
        Ok(keys) => Some(std::sync::Arc::new(crate::dnssec::ZoneKeys {
            keys,
            policy: *policy,
        })),
        Err(problems) => {
            for p in problems {
                c.push(key, p);
            }
            None
        }
    }
}

/// `[dns]`.
fn dns(c: &mut Collector<'_>, raw: RawDns, base: &Path) -> DnsConfig {
    let listen = listen(
        c,
        &raw.listen
            .unwrap_or_else(|| vec![defaults::LISTEN.to_string()]),
    );
    let udp_workers = c.int_in(
        "dns.udp_workers",
        raw.udp_workers.unwrap_or(defaults::UDP_WORKERS),
        0,
        256,
    ) as usize;
    let udp_max_payload = c.int_in(
        "dns.udp_max_payload",
        raw.udp_max_payload.unwrap_or(defaults::UDP_MAX_PAYLOAD),
        512,
        4096,
    ) as u16;
    let tcp_max_connections = c.int_in(
        "dns.tcp_max_connections",
        raw.tcp_max_connections
            .unwrap_or(defaults::TCP_MAX_CONNECTIONS),
        1,
        1_000_000,
    ) as usize;
    let tcp_idle_timeout = c.duration(
        "dns.tcp_idle_timeout",
        raw.tcp_idle_timeout
            .as_deref()
            .unwrap_or(defaults::TCP_IDLE_TIMEOUT),
    );
    let tcp_io_timeout = c.duration(
        "dns.tcp_io_timeout",
        raw.tcp_io_timeout
            .as_deref()
            .unwrap_or(defaults::TCP_IO_TIMEOUT),
    );
    let rrl = rrl(c, raw.rrl.unwrap_or_default());
    let cookie_secret_file = file_path(base, raw.cookie_secret_file.as_deref());
    let cookie_secrets = cookie_secret_file
        .as_deref()
        .and_then(|path| read_cookie_secrets(c, path));
    DnsConfig {
        listen,
        udp_workers,
        udp_max_payload,
        tcp_max_connections,
        tcp_idle_timeout,
        tcp_io_timeout,
        track_convergence: raw.track_convergence.unwrap_or(defaults::TRACK_CONVERGENCE),
        rrl,
        cookie_secret_file,
        cookie_secrets,
        xdp: xdp(c, raw.xdp.unwrap_or_default()),
    }
}

/// The receive queues of a network interface (`/sys/class/net/IF/queues/rx-*`); an error when
/// this machine has no such interface.
pub fn receive_queues(interface: &str) -> std::io::Result<usize> {
    let dir = std::fs::read_dir(Path::new("/sys/class/net").join(interface).join("queues"))?;
    Ok(dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count())
}

/// `[[dns.xdp]]`: each interface once, named and present on this machine, queues it has, and
/// a build that has the `xdp` feature.
fn xdp(c: &mut Collector<'_>, raws: Vec<RawXdp>) -> Vec<XdpConfig> {
    let mut out: Vec<XdpConfig> = Vec::new();
    if !raws.is_empty() && !cfg!(feature = "xdp") {
        c.push(
            "dns.xdp",
            "this weir was built without AF_XDP support: build with `cargo build --release --features xdp`",
        );
    }
    for (i, raw) in raws.into_iter().enumerate() {
        let at = format!("dns.xdp[{i}]");
        let Some(interface) = raw.interface.filter(|s| !s.is_empty()) else {
            c.push(
                &format!("{at}.interface"),
                "is required: the network interface to take queries from, like \"eth0\"",
            );
            continue;
        };
        if out.iter().any(|x| x.interface == interface) {
            c.push(
                &format!("{at}.interface"),
                format!("`{interface}` is listed twice"),
            );
            continue;
        }
        let have = match receive_queues(&interface) {
            Ok(n) => n,
            Err(_) => {
                c.push(
                    &format!("{at}.interface"),
                    format!(
                        "this machine has no network interface `{interface}` (`ip link` lists them)"
                    ),
                );
                0
            }
        };
        let mut queues = Vec::new();
        for (k, &q) in raw.queues.iter().flatten().enumerate() {
            let key = format!("{at}.queues[{k}]");
            if q < 0 || (have > 0 && q as usize >= have) {
                c.push(
                    &key,
                    format!(
                        "`{interface}` has receive queues 0 to {}; {q} is not one",
                        have.max(1) - 1
                    ),
                );
            } else if queues.contains(&(q as u32)) {
                c.push(&key, format!("queue {q} is listed twice"));
            } else {
                queues.push(q as u32);
            }
        }
        if raw.queues.as_ref().is_some_and(Vec::is_empty) {
            c.push(
                &format!("{at}.queues"),
                "is empty: leave it out to serve every queue",
            );
        }
        let generic = match raw.mode.as_deref() {
            None | Some("native") => false,
            Some("generic") => true,
            Some(other) => {
                c.push(
                    &format!("{at}.mode"),
                    format!("`{other}` is not a mode: \"native\" (in the driver, the default) or \"generic\" (any driver, slower)"),
                );
                false
            }
        };
        out.push(XdpConfig {
            interface,
            queues,
            generic,
        });
    }
    out
}

/// `[dns] listen`: at least one address, each once.
fn listen(c: &mut Collector<'_>, texts: &[String]) -> Vec<SocketAddr> {
    if texts.is_empty() {
        c.push("dns.listen", "needs at least one address");
    }
    let mut listen = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match text.parse::<SocketAddr>() {
            Ok(addr) if listen.contains(&addr) => {
                c.push(&format!("dns.listen[{i}]"), format!("`{text}` is listed twice"));
            }
            Ok(addr) => listen.push(addr),
            Err(_) => c.push(
                &format!("dns.listen[{i}]"),
                format!("`{text}` is not an address with a port, like \"127.0.0.1:5353\" or \"[::1]:5353\""),
            ),
        }
    }
    listen
}

/// `[dns.rrl]`.
fn rrl(c: &mut Collector<'_>, raw: RawRrl) -> RrlConfig {
    let rate = c.int_in(
        "dns.rrl.rate",
        raw.rate.unwrap_or(defaults::RRL_RATE),
        0,
        1_000_000,
    ) as u32;
    let window = c.duration(
        "dns.rrl.window",
        raw.window.as_deref().unwrap_or(defaults::RRL_WINDOW),
    );
    if window.subsec_nanos() != 0 || window.as_secs() > 60 {
        c.push("dns.rrl.window", "must be whole seconds, from 1s to 60s");
    }
    let window = window.as_secs().clamp(1, 60) as u32;
    let burst = u64::from(rate) * u64::from(window);
    if burst > RRL_MAX_BURST {
        c.push(
            "dns.rrl",
            format!("rate × window is {burst}; at most {RRL_MAX_BURST} responses fit a bucket"),
        );
    }
    let slip = c.int_in(
        "dns.rrl.slip",
        raw.slip.unwrap_or(defaults::RRL_SLIP),
        0,
        10,
    ) as u32;
    let exempt = c.prefixes("dns.rrl.exempt", &raw.exempt.unwrap_or_default());
    RrlConfig {
        rate,
        window,
        slip,
        exempt,
    }
}

/// `[admin]`.
fn admin(c: &mut Collector<'_>, raw: RawAdmin, base: &Path) -> AdminConfig {
    let token_file = file_path(base, raw.token_file.as_deref());
    let tokens = match &token_file {
        Some(path) => read_tokens(c, path),
        None => Vec::new(),
    };
    let tls = admin_tls(
        c,
        file_path(base, raw.tls_cert.as_deref()),
        file_path(base, raw.tls_key.as_deref()),
    );
    let listen = admin_listen(
        c,
        raw.listen.as_deref().unwrap_or(defaults::ADMIN_LISTEN),
        !tokens.is_empty() && tls.is_some(),
    );
    AdminConfig {
        listen,
        tokens,
        token_file,
        tls,
    }
}

/// `[admin] tls_cert` and `tls_key`: both or neither.
fn admin_tls(
    c: &mut Collector<'_>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Option<TlsFiles> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            for (k, path) in [("admin.tls_cert", &cert), ("admin.tls_key", &key)] {
                if let Err(e) = std::fs::metadata(path) {
                    c.push(k, format!("cannot read {}: {e}", path.display()));
                }
            }
            Some(TlsFiles { cert, key })
        }
        (None, None) => None,
        _ => {
            c.push("admin", "tls_cert and tls_key go together");
            None
        }
    }
}

/// `[admin] listen`; "" disables the API. `secured`: tokens and TLS are both configured.
fn admin_listen(c: &mut Collector<'_>, text: &str, secured: bool) -> Option<SocketAddr> {
    if text.is_empty() {
        return None;
    }
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() || secured => Some(addr),
        // Tokens travel in the clear without TLS: beyond loopback both are required.
        Ok(addr) => {
            c.push(
                "admin.listen",
                format!("{addr} is not a loopback address; listening beyond loopback needs admin.token_file and admin.tls_cert/tls_key"),
            );
            None
        }
        Err(_) => {
            c.push(
                "admin.listen",
                format!("`{text}` is not an address with a port (or \"\" to disable)"),
            );
            None
        }
    }
}

/// `[store]`.
fn store(c: &mut Collector<'_>, raw: RawStore, base: &Path) -> StoreConfig {
    let path = raw.path.as_deref().unwrap_or(defaults::STORE_PATH);
    if path.is_empty() {
        c.push("store.path", "is empty");
    }
    let audit_retention = c.int_in(
        "store.audit_retention",
        raw.audit_retention.unwrap_or(defaults::AUDIT_RETENTION),
        1,
        100_000_000,
    ) as usize;
    let etcd = uses_etcd(c, &raw).then(|| etcd(c, &raw.etcd.unwrap_or_default(), base));
    StoreConfig {
        path: base.join(path),
        audit_retention,
        etcd,
    }
}

/// `[store] backend`: true for "etcd" (then `[store.etcd]` is read).
fn uses_etcd(c: &mut Collector<'_>, raw: &RawStore) -> bool {
    let backend = raw.backend.as_deref().unwrap_or(defaults::STORE_BACKEND);
    match c.choice("store.backend", backend, &[("sled", false), ("etcd", true)]) {
        Some(true) => {
            if !cfg!(feature = "etcd") {
                c.push(
                    "store.backend",
                    "this weir was built without etcd support; build it with `cargo build --release --features etcd`",
                );
            }
            true
        }
        Some(false) => {
            if raw.etcd.is_some() {
                c.push(
                    "store.etcd",
                    "is set but store.backend is \"sled\"; set backend = \"etcd\" to use it",
                );
            }
            false
        }
        None => false,
    }
}

/// `[store.etcd]`: where the shared state lives and who this node is.
fn etcd(c: &mut Collector<'_>, raw: &RawEtcd, base: &Path) -> EtcdConfig {
    let endpoints = raw
        .endpoints
        .clone()
        .unwrap_or_else(|| vec![defaults::ETCD_ENDPOINT.to_string()]);
    if endpoints.is_empty() {
        c.push(
            "store.etcd.endpoints",
            "is empty; list at least one etcd client URL",
        );
    }
    for (i, e) in endpoints.iter().enumerate() {
        if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 10 {
            c.push(
                &format!("store.etcd.endpoints[{i}]"),
                format!("`{e}` is not a URL like \"http://10.0.0.1:2379\""),
            );
        }
    }
    let prefix = raw
        .prefix
        .clone()
        .unwrap_or_else(|| defaults::ETCD_PREFIX.into());
    if prefix.is_empty() || !prefix.ends_with('/') {
        c.push(
            "store.etcd.prefix",
            format!("`{prefix}` must be non-empty and end with `/`"),
        );
    }
    let node_id = node_id(c, raw.node_id.clone().unwrap_or_else(hostname));
    let lease_ttl = c.duration(
        "store.etcd.lease_ttl",
        raw.lease_ttl.as_deref().unwrap_or(defaults::ETCD_LEASE_TTL),
    );
    if lease_ttl < Duration::from_secs(2) {
        c.push("store.etcd.lease_ttl", "must be at least 2s");
    }
    let timeout = c.duration(
        "store.etcd.timeout",
        raw.timeout.as_deref().unwrap_or(defaults::ETCD_TIMEOUT),
    );
    let health = c
        .choice(
            "store.etcd.health",
            raw.health.as_deref().unwrap_or(defaults::ETCD_HEALTH),
            &[("local", HealthMode::Local), ("shared", HealthMode::Shared)],
        )
        .unwrap_or(HealthMode::Local);
    let tls = etcd_tls(c, raw, base);
    if tls.is_some() && endpoints.iter().any(|e| e.starts_with("http://")) {
        c.push(
            "store.etcd.endpoints",
            "use https:// URLs when ca_file is set",
        );
    }
    EtcdConfig {
        endpoints,
        prefix,
        node_id,
        lease_ttl,
        timeout,
        health,
        tls,
    }
}

/// `[store.etcd] node_id`: 1 to 64 characters that are safe in an etcd key.
fn node_id(c: &mut Collector<'_>, node_id: String) -> String {
    if node_id.is_empty()
        || node_id.len() > 64
        || !node_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        c.push(
            "store.etcd.node_id",
            format!("`{node_id}` must be 1 to 64 letters, digits, `-`, `_` or `.`"),
        );
    }
    node_id
}

/// `[store.etcd] ca_file`, `cert_file` and `key_file`: TLS when `ca_file` is set.
fn etcd_tls(c: &mut Collector<'_>, raw: &RawEtcd, base: &Path) -> Option<EtcdTls> {
    let mut file = |key: &str, value: &Option<String>| {
        let path = file_path(base, value.as_deref())?;
        if !path.is_file() {
            c.push(key, format!("{} is not a readable file", path.display()));
        }
        Some(path)
    };
    let ca_file = file("store.etcd.ca_file", &raw.ca_file);
    let cert_file = file("store.etcd.cert_file", &raw.cert_file);
    let key_file = file("store.etcd.key_file", &raw.key_file);
    if cert_file.is_some() != key_file.is_some() {
        c.push(
            "store.etcd.cert_file",
            "cert_file and key_file go together (a client certificate needs its key)",
        );
    }
    let Some(ca_file) = ca_file else {
        if cert_file.is_some() {
            c.push(
                "store.etcd.ca_file",
                "a client certificate needs ca_file too (the CA of the etcd members)",
            );
        }
        return None;
    };
    Some(EtcdTls {
        ca_file,
        cert_file,
        key_file,
    })
}

/// This machine's host name, the default node id.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// `[log]`.
fn log(c: &mut Collector<'_>, raw: RawLog) -> LogConfig {
    let level = raw.level.unwrap_or_else(|| defaults::LOG_LEVEL.into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        c.push("log.level", format!("`{level}` is not a log filter: {e}"));
    }
    let json = c
        .choice(
            "log.format",
            raw.format.as_deref().unwrap_or(defaults::LOG_FORMAT),
            &[("text", false), ("json", true)],
        )
        .unwrap_or(false);
    let query_sample = raw.query_sample.unwrap_or(defaults::LOG_QUERY_SAMPLE);
    if !(0.0..=1.0).contains(&query_sample) {
        c.push(
            "log.query_sample",
            format!("{query_sample} is out of range 0.0..=1.0 (the fraction of queries logged)"),
        );
    }
    LogConfig {
        level,
        json,
        query_sample,
    }
}

/// `[[zone]]`: at least one, each origin once.
fn zones(
    c: &mut Collector<'_>,
    raw: &[RawZone],
    base: &Path,
    keyring: &crate::tsig::Keyring,
    dnssec: &(PathBuf, crate::dnssec::Policy),
) -> Vec<ZoneConfig> {
    if raw.is_empty() {
        c.push(
            "zone",
            "no [[zone]] is configured; weir would answer REFUSED to everything",
        );
    }
    let mut zones: Vec<ZoneConfig> = Vec::new();
    for (i, z) in raw.iter().enumerate() {
        let key = format!("zone[{i}]");
        let origin = match Name::parse(&z.origin) {
            Ok(origin) => origin,
            Err(e) => {
                c.push(&format!("{key}.origin"), format!("`{}`: {e}", z.origin));
                continue;
            }
        };
        if origin == Name::root() {
            c.push(
                &format!("{key}.origin"),
                "weir does not serve the root zone",
            );
            continue;
        }
        if zones.iter().any(|other| other.origin == origin) {
            c.push(
                &format!("{key}.origin"),
                format!("zone `{origin}` is configured twice"),
            );
            continue;
        }
        if z.file.is_empty() {
            c.push(&format!("{key}.file"), "is empty");
            continue;
        }
        let allow_transfer = transfer_acl(
            c,
            &format!("{key}.allow_transfer"),
            z.allow_transfer.as_deref().unwrap_or_default(),
            keyring,
        );
        let notify = z
            .notify
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, text)| c.notify_target(&format!("{key}.notify[{i}]"), text, keyring))
            .collect();
        let update = (z.update.iter().flatten().enumerate())
            .filter_map(|(i, g)| c.grant(&format!("{key}.update[{i}]"), g, &origin, keyring))
            .collect();
        let dnssec = match z.dnssec {
            Some(true) => zone_keys(c, &format!("{key}.dnssec"), &origin, dnssec),
            _ => None,
        };
        zones.push(ZoneConfig {
            origin,
            file: base.join(&z.file),
            allow_transfer,
            notify,
            update,
            dnssec,
        });
    }
    zones
}

/// `[[zone]] allow_transfer`: prefixes, `key:NAME` and `key:NAME@PREFIX`, the NAME one of
/// `[tsig]`'s keys; each bad entry is a problem at `key[i]`.
fn transfer_acl(
    c: &mut Collector<'_>,
    key: &str,
    texts: &[String],
    keyring: &crate::tsig::Keyring,
) -> Vec<crate::model::TransferAllow> {
    use crate::model::TransferAllow;
    let mut allow = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let Some(rest) = text.strip_prefix("key:") else {
            match crate::model::Prefix::parse(text) {
                Some(p) => allow.push(TransferAllow::Source(p)),
                None => c.push(&at, format!("`{text}` is not a prefix like \"192.0.2.0/24\" or \"2001:db8::/32\" (no bits set past the length), \"key:NAME\" or \"key:NAME@PREFIX\"")),
            }
            continue;
        };
        let (name, source) = match rest.split_once('@') {
            Some((name, prefix)) => match crate::model::Prefix::parse(prefix) {
                Some(p) => (name, Some(p)),
                None => {
                    c.push(&at, format!("`{prefix}` in `{text}` is not a prefix like \"192.0.2.0/24\" (no bits set past the length)"));
                    continue;
                }
            },
            None => (rest, None),
        };
        match Name::parse(name) {
            Ok(name) if keyring.get(name.wire()).is_some() => {
                allow.push(TransferAllow::Key { key: name, source });
            }
            _ => c.push(
                &at,
                format!("`{name}` is no key of [tsig] key_files (entries are prefixes, \"key:NAME\" or \"key:NAME@PREFIX\")"),
            ),
        }
    }
    allow
}

/// Reads `[dns] cookie_secret_file`: mode 0600 like the token file, one or two lines of 32 hex
/// digits (the current secret, then the previous one during a rotation).
fn read_cookie_secrets(c: &mut Collector<'_>, path: &Path) -> Option<crate::model::CookieSecrets> {
    use std::os::unix::fs::PermissionsExt;
    const KEY: &str = "dns.cookie_secret_file";
    let shown = path.display();
    let text = match std::fs::metadata(path).and_then(|m| Ok((m, std::fs::read_to_string(path)?))) {
        Ok((m, _)) if m.permissions().mode() & 0o077 != 0 => {
            let mode = m.permissions().mode() & 0o777;
            c.push(
                KEY,
                format!("{shown} has mode {mode:o}; it holds secrets, so it must be 0600 (chmod 600 {shown})"),
            );
            return None;
        }
        Ok((_, text)) => text,
        Err(e) => {
            c.push(KEY, format!("cannot read {shown}: {e}"));
            return None;
        }
    };
    match parse_cookie_secrets(&text) {
        Ok(secrets) => Some(secrets),
        Err(e) => {
            c.push(KEY, format!("{shown}: {e}"));
            None
        }
    }
}

/// Why a cookie secret file holds no usable secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CookieSecretsError {
    /// The 1-based line that is not a secret.
    #[error("line {0}: a secret is 32 hex digits (16 bytes)")]
    NotASecret(usize),
    #[error("holds no secret (32 hex digits)")]
    Empty,
    #[error("holds more than two secrets (current, then previous)")]
    TooMany,
}

/// Parses a cookie secret file: one or two lines of 32 hex digits (current, then previous);
/// blank lines and `#` comments are skipped.
pub fn parse_cookie_secrets(text: &str) -> Result<crate::model::CookieSecrets, CookieSecretsError> {
    let mut secrets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let secret = parse_hex16(line).ok_or(CookieSecretsError::NotASecret(i + 1))?;
        secrets.push(secret);
    }
    match secrets[..] {
        [current] => Ok(crate::model::CookieSecrets {
            current,
            previous: None,
        }),
        [current, previous] => Ok(crate::model::CookieSecrets {
            current,
            previous: Some(previous),
        }),
        [] => Err(CookieSecretsError::Empty),
        _ => Err(CookieSecretsError::TooMany),
    }
}

fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(out)
}

/// Reads `NAME SCOPE TOKEN` lines. The file must not be readable by group or others.
fn read_tokens(c: &mut Collector<'_>, path: &Path) -> Vec<Token> {
    use std::os::unix::fs::PermissionsExt;
    const KEY: &str = "admin.token_file";
    let shown = path.display();
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode(),
        Err(e) => {
            c.push(KEY, format!("cannot read {shown}: {e}"));
            return Vec::new();
        }
    };
    if mode & 0o077 != 0 {
        c.push(
            KEY,
            format!(
                "{shown} has mode {:o}; it holds secrets, so it must be 0600 (chmod 600 {shown})",
                mode & 0o777
            ),
        );
        return Vec::new();
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            c.push(KEY, format!("cannot read {shown}: {e}"));
            return Vec::new();
        }
    };
    let mut tokens: Vec<Token> = Vec::new();
    let before = c.found();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match token(line, &tokens) {
            Ok(t) => tokens.push(t),
            Err(message) => c.push_at(format!("{shown}:{}", i + 1), message),
        }
    }
    // Only when no line of this file had a problem: such a line already says why no token is
    // left (problems elsewhere in the config do not hide an empty token file).
    if tokens.is_empty() && c.found() == before {
        c.push(KEY, format!("{shown} holds no token"));
    }
    tokens
}

/// One `NAME SCOPE TOKEN` line, new among `tokens`; the problem with it otherwise.
fn token(line: &str, tokens: &[Token]) -> Result<Token, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, scope, secret] = fields[..] else {
        return Err("expected `NAME SCOPE TOKEN`".into());
    };
    let scope = match scope {
        "read" => Scope::Read,
        "write" => Scope::Write,
        other => return Err(format!("scope `{other}` is not one of `read`, `write`")),
    };
    if secret.len() < 16 {
        return Err("the token is shorter than 16 characters".into());
    }
    if tokens.iter().any(|t| t.name == name) {
        return Err(format!("token name `{name}` is used twice"));
    }
    Ok(Token {
        name: name.to_string(),
        scope,
        secret: secret.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("/etc/weir/weir.toml")) {
            Ok(_) => Vec::new(),
            Err(Problems(p)) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// `[tsig] key_files` load both formats relative to the config; `key:NAME` and
    /// `key:NAME@PREFIX` entries name configured keys; bad files, duplicate names and unknown
    /// keys are problems at their file and line, all at once.
    #[test]
    fn tsig_keys_load_and_allow_transfer_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "Yc9AZD0H1CxI6XH+GutSy3ErAM/dFig+Ykok+3O5SCc=";
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(
            dir.path().join("keys/bind.conf"),
            format!("key \"acme-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("keys/knot.yaml"),
            format!("key:\n  - id: second\n    algorithm: hmac-sha512\n    secret: {secret}\n"),
        )
        .unwrap();
        let config_path = dir.path().join("weir.toml");
        let config = parse(
            "[tsig]\nkey_files = [\"keys/bind.conf\", \"keys/knot.yaml\"]\n[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\nallow_transfer = [\"key:acme-key\", \"key:second.@192.0.2.0/24\", \"10.0.0.0/8\"]\n",
            &config_path,
        )
        .unwrap();
        assert_eq!(config.keyring.keys().len(), 2);
        let allow = &config.zones[0].allow_transfer;
        let acme = Name::parse("acme-key").unwrap();
        let second = Name::parse("second").unwrap();
        let inside = "192.0.2.9".parse().unwrap();
        let outside = "198.51.100.9".parse().unwrap();
        assert!(allow[0].allows(outside, Some(&acme)));
        assert!(!allow[0].allows(outside, None));
        assert!(!allow[0].allows(outside, Some(&second)));
        assert!(allow[1].allows(inside, Some(&second)));
        assert!(!allow[1].allows(outside, Some(&second)));
        assert!(!allow[1].allows(inside, None));

        std::fs::write(
            dir.path().join("keys/bad.conf"),
            format!("key \"y\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\nkey \"x\" {{\n\talgorithm hmac-md5;\n\tsecret \"{secret}\";\n}};\n"),
        )
        .unwrap();
        std::fs::copy(
            dir.path().join("keys/bind.conf"),
            dir.path().join("keys/dup.conf"),
        )
        .unwrap();
        let got = match parse(
            "[tsig]\nkey_files = [\"keys/bind.conf\", \"keys/dup.conf\", \"keys/bad.conf\", \"keys/missing.conf\"]\n[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\nallow_transfer = [\"key:nobody\", \"key:acme-key@192.0.2.1/24\"]\n",
            &config_path,
        ) {
            Ok(_) => panic!("accepted"),
            Err(Problems(p)) => p.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        };
        let file = config_path.display();
        let keys = dir.path().join("keys");
        let keys = keys.display();
        for want in [
            format!(
                "{keys}/bad.conf:6: key `x.`: algorithm `hmac-md5` is not supported (supported: hmac-sha256, hmac-sha384, hmac-sha512)"
            ),
            format!(
                "{file}:2: tsig.key_files[1]: key `acme-key.` in {keys}/dup.conf is also defined in {keys}/bind.conf"
            ),
            format!("{file}:2: tsig.key_files[3]: {keys}/missing.conf: cannot read key file"),
            format!("{file}:6: zone[0].allow_transfer[0]: `nobody` is no key of [tsig] key_files"),
            format!(
                "{file}:6: zone[0].allow_transfer[1]: `192.0.2.1/24` in `key:acme-key@192.0.2.1/24` is not a prefix"
            ),
        ] {
            assert!(
                got.iter().any(|p| p.starts_with(&want)),
                "{want} in {got:#?}"
            );
        }
    }

    #[test]
    fn allow_transfer_takes_prefixes_and_reports_others_at_their_line() {
        let config = parse(
            "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\nallow_transfer = [\"192.0.2.0/24\", \"127.0.0.1\", \"2001:db8::/32\"]\n",
            Path::new("/etc/weir/weir.toml"),
        )
        .unwrap();
        let allow = &config.zones[0].allow_transfer;
        assert_eq!(allow.len(), 3);
        assert!(allow[0].allows("192.0.2.77".parse().unwrap(), None));
        assert!(allow[1].allows("127.0.0.1".parse().unwrap(), None));
        assert!(!allow[1].allows("127.0.0.2".parse().unwrap(), None));
        let got = problems(
            "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n\nallow_transfer = [\"192.0.2.1/24\", \"nope\"]\n",
        );
        for want in [
            "/etc/weir/weir.toml:5: zone[0].allow_transfer[0]: `192.0.2.1/24` is not a prefix",
            "/etc/weir/weir.toml:5: zone[0].allow_transfer[1]: `nope` is not a prefix",
        ] {
            assert!(got.iter().any(|p| p.contains(want)), "{want} in {got:#?}");
        }
        // Not given: no transfers.
        let config = parse(
            "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n",
            Path::new("/etc/weir/weir.toml"),
        )
        .unwrap();
        assert!(config.zones[0].allow_transfer.is_empty());
    }

    #[test]
    fn notify_takes_addresses_with_or_without_a_port() {
        let config = parse(
            "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\nnotify = [\"192.0.2.53\", \"127.0.0.1:5300\", \"[2001:db8::53]\", \"[::1]:5301\"]\n",
            Path::new("/etc/weir/weir.toml"),
        )
        .unwrap();
        let want: Vec<SocketAddr> = [
            "192.0.2.53:53",
            "127.0.0.1:5300",
            "[2001:db8::53]:53",
            "[::1]:5301",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let addrs: Vec<SocketAddr> = config.zones[0].notify.iter().map(|t| t.addr).collect();
        assert_eq!(addrs, want);
        assert!(config.zones[0].notify.iter().all(|t| t.key.is_none()));
        let got = problems(
            "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\nnotify = [\"ns2.example.com\", \"key:nokey@192.0.2.1\"]\n",
        );
        for want in [
            "/etc/weir/weir.toml:4: zone[0].notify[0]: `ns2.example.com` is not an address",
            "/etc/weir/weir.toml:4: zone[0].notify[1]: `nokey` is no key of [tsig] key_files",
        ] {
            assert!(got.iter().any(|p| p.contains(want)), "{want} in {got:#?}");
        }
    }

    #[test]
    fn every_store_problem_is_listed_with_its_key() {
        let found = problems(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"127.0.0.1:2379\"]\nprefix = \"weir\"\nnode_id = \"ns 1\"\nlease_ttl = \"1s\"\nhealth = \"most\"\ncert_file = \"/nonexistent\"\n",
        );
        let expected = [
            "store.etcd.endpoints[0]: `127.0.0.1:2379` is not a URL",
            "store.etcd.prefix: `weir` must be non-empty and end with `/`",
            "store.etcd.node_id: `ns 1` must be",
            "store.etcd.lease_ttl: must be at least 2s",
            "store.etcd.health: `most` is not one of",
            "store.etcd.cert_file: /nonexistent is not a readable file",
            "store.etcd.cert_file: cert_file and key_file go together",
        ];
        for e in expected {
            assert!(found.iter().any(|p| p.contains(e)), "{e} in {found:#?}");
        }
        if !cfg!(feature = "etcd") {
            assert!(
                found
                    .iter()
                    .any(|p| p.contains("built without etcd support"))
            );
        }
        let found = problems("[store]\nbackend = \"zookeeper\"\n");
        assert!(
            found[0].contains("store.backend: `zookeeper` is not one of"),
            "{found:?}"
        );
        let found = problems("[store.etcd]\nprefix = \"/w/\"\n");
        assert!(
            found[0].contains("store.etcd: is set but store.backend is \"sled\""),
            "{found:?}"
        );
    }

    #[test]
    fn rrl_and_cookie_settings() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("cookie.secret");
        std::fs::write(
            &secret,
            "# current, then previous\n445536bcd2513298075a5d379663c962\ndd3bdf9344b678b185a6f5cb60fca715\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "[dns]\ncookie_secret_file = \"{}\"\n[dns.rrl]\nrate = 20\nwindow = \"5s\"\nslip = 1\nexempt = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n",
            secret.display()
        );
        let config = parse(&text, Path::new("/etc/weir/weir.toml")).unwrap();
        let rrl = &config.dns.rrl;
        assert_eq!((rrl.rate, rrl.window, rrl.slip), (20, 5, 1));
        assert_eq!(rrl.exempt.len(), 3);
        assert!(rrl.exempt[0].contains("10.200.0.1".parse().unwrap()));
        assert!(!rrl.exempt[0].contains("11.0.0.1".parse().unwrap()));
        assert!(rrl.exempt[2].contains("192.0.2.7".parse().unwrap()));
        assert!(!rrl.exempt[2].contains("192.0.2.8".parse().unwrap()));
        let secrets = config.dns.cookie_secrets.as_ref().unwrap();
        assert_eq!(secrets.current[0], 0x44);
        assert_eq!(secrets.previous.unwrap()[0], 0xdd);
        assert!(
            !format!("{:?}", config.dns).contains("68"),
            "secrets are not shown"
        );

        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let got = problems(&format!(
            "[dns]\ncookie_secret_file = \"{}\"\n[dns.rrl]\nrate = 600000\nwindow = \"1500ms\"\nslip = 11\nexempt = [\"192.0.2.1/24\", \"nope\"]\n",
            secret.display()
        ));
        for want in [
            "dns.cookie_secret_file: ",
            "must be 0600",
            "dns.rrl.window: must be whole seconds",
            "dns.rrl.slip: 11 is out of range 0..=10",
            "dns.rrl.exempt[0]: `192.0.2.1/24` is not a prefix",
            "dns.rrl.exempt[1]: `nope` is not a prefix",
        ] {
            assert!(got.iter().any(|p| p.contains(want)), "{want} in {got:#?}");
        }
        let got = problems("[dns.rrl]\nrate = 600000\nwindow = \"2s\"\n");
        assert!(
            got[0].contains("dns.rrl: rate × window is 1200000"),
            "{got:?}"
        );
    }

    #[test]
    fn cookie_secret_files() {
        let s = parse_cookie_secrets("# rotated\ne5e973e5a6b2a43f48e7dc849e37bfcf\n").unwrap();
        assert_eq!(s.current[..2], [0xe5, 0xe9]);
        assert_eq!(s.previous, None);
        for bad in ["", "abc", "e5e973e5a6b2a43f48e7dc849e37bfcg", "00\n00\n00"] {
            assert!(parse_cookie_secrets(bad).is_err(), "{bad:?}");
        }
        assert!(parse_cookie_secrets(&vec!["00".repeat(16); 3].join("\n")).is_err());
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let config = parse(
            "[[zone]]\norigin = \"Example.com\"\nfile = \"zones/example.com.zone\"\n",
            Path::new("/etc/weir/weir.toml"),
        )
        .unwrap();
        assert_eq!(config.dns.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(config.dns.udp_max_payload, 1232);
        assert_eq!(config.dns.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(config.zones[0].origin.to_string(), "example.com.");
        assert_eq!(
            config.zones[0].file,
            Path::new("/etc/weir/zones/example.com.zone")
        );
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_line_and_key_path() {
        let got = problems(
            r#"
[dns]
listen = ["127.0.0.1:53", "localhost", "127.0.0.1:53"]
udp_max_payload = 100
tcp_idle_timeout = "soon"
[log]
format = "xml"
[[zone]]
origin = "a..b"
file = "x"
[[zone]]
origin = "example.com."
file = "x"
[[zone]]
origin = "EXAMPLE.com"
file = "y"
"#,
        );
        let want = [
            "/etc/weir/weir.toml:3: dns.listen[1]: `localhost` is not an address with a port",
            "/etc/weir/weir.toml:3: dns.listen[2]: `127.0.0.1:53` is listed twice",
            "/etc/weir/weir.toml:4: dns.udp_max_payload: 100 is out of range 512..=4096",
            "/etc/weir/weir.toml:5: dns.tcp_idle_timeout: `soon` is not a duration",
            "/etc/weir/weir.toml:7: log.format: `xml` is not one of",
            "/etc/weir/weir.toml:9: zone[0].origin: `a..b`",
            "/etc/weir/weir.toml:15: zone[2].origin: zone `example.com.` is configured twice",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g:?} should start with {w:?}");
        }
    }

    #[test]
    fn unknown_key_and_syntax_errors_carry_the_line() {
        // Every unknown key, in file order, and the other problems after them.
        let got = problems(
            "[dns]\nlisten = [\"127.0.0.1:53\"]\nlisen = 1\n[log]\nlevl = 1\nformat = \"xml\"\n",
        );
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(
            got[0].starts_with("/etc/weir/weir.toml:3: unknown field `lisen`"),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("/etc/weir/weir.toml:5: unknown field `levl`"),
            "{got:?}"
        );
        assert!(
            got[2].starts_with("/etc/weir/weir.toml:6: log.format"),
            "{got:?}"
        );
        assert!(got[3].starts_with("/etc/weir/weir.toml: zone"), "{got:?}");

        let got = problems("[dns\n");
        assert!(got[0].starts_with("/etc/weir/weir.toml:1: "), "{got:?}");

        let got = problems("[dns]\nudp_workers = \"four\"\n");
        assert!(
            got[0].starts_with("/etc/weir/weir.toml:2: invalid type"),
            "{got:?}"
        );
    }

    #[test]
    fn query_sample_is_a_fraction() {
        let zone = "[[zone]]\norigin = \"example.com.\"\nfile = \"x\"\n";
        for (value, want) in [("0.0", 0.0), ("0.25", 0.25), ("1", 1.0), ("1.0", 1.0)] {
            let config = parse(
                &format!("[log]\nquery_sample = {value}\n{zone}"),
                Path::new("/etc/weir/weir.toml"),
            )
            .unwrap();
            assert_eq!(config.log.query_sample, want, "{value}");
        }
        for (value, shown) in [("1.5", "1.5"), ("2", "2"), ("-0.1", "-0.1"), ("nan", "NaN")] {
            let got = problems(&format!("[log]\nquery_sample = {value}\n{zone}"));
            let want = format!(
                "/etc/weir/weir.toml:2: log.query_sample: {shown} is out of range 0.0..=1.0"
            );
            assert_eq!(got.len(), 1, "{value}: {got:?}");
            assert!(got[0].starts_with(&want), "{got:?}");
        }
    }

    #[test]
    fn no_zone_is_a_problem() {
        let got = problems("");
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("no [[zone]] is configured"), "{got:?}");
    }
}
