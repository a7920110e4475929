//! `weir ctl`: the operator's client for the admin API (`admin.rs` lists the endpoints). Owns the
//! subcommand's arguments, what each command asks, and what people read: aligned tables for
//! reads (`ctl/table.rs`), one line per acknowledged change. What each change and rollout
//! command sends (method, path, body, confirmation line) is one row of a table
//! (`Change::request`, `rollout`). `--json` prints the API's JSON as it came, for
//! scripts. `weir ctl rollout ...` drives canary rollouts (see `rollout`): start
//! (the pool's `[pool.rollout]` or a JSON plan file), a progress view, the operator commands.
//! The HTTP calls (reqwest on rustls+ring, 10 s per request, no proxy) and the error kinds are
//! in `ctl/client.rs`.
//!
//! Exit codes: 0 done; 1 the API refused (its status and `error` message go to stderr) or
//! answered with something that is not the JSON it documents; 2 no answer (connection failed,
//! timed out) or no usable token. Usage errors are clap's and exit 64 in `main`.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

mod client;
mod table;

use client::{Client, CtlError, generation};

/// Where `weir serve` listens for admin requests by default (`[admin] listen`).
const DEFAULT_URL: &str = "http://127.0.0.1:8053";

/// Arguments of `weir ctl`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the admin API.
    #[arg(
        long,
        env = "WEIR_ADMIN_URL",
        default_value = DEFAULT_URL,
        value_parser = parse_url,
        global = true
    )]
    url: Url,
    /// Bearer token [env: WEIR_TOKEN]. Prefer WEIR_TOKEN or --token-file: arguments show in `ps`.
    #[arg(long, global = true, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding just the bearer token.
    #[arg(long, value_name = "PATH", global = true)]
    token_file: Option<PathBuf>,
    /// A PEM certificate to trust for an https admin URL (e.g. the admin API's own
    /// self-signed `tls_cert`).
    #[arg(long, value_name = "PATH", global = true, env = "WEIR_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON as is, instead of tables and summaries.
    #[arg(long, global = true)]
    json: bool,
    /// Boxed: `main`'s command enum holds these arguments inline beside much smaller ones.
    #[command(subcommand)]
    command: Box<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Readiness, generation, zones, pools and (with a shared store) the nameservers at a
    /// glance. With --json: {"ready", "readyz", "zones", "pools", "nodes"}, the last three the
    /// API's answers as they came.
    Status,
    /// Every pool: TTL, groups with their weights, degraded address families.
    Pools,
    /// One pool: groups and endpoints with configured and effective weights, overrides, probes.
    Pool {
        /// The pool's name, e.g. app.example.com.
        name: String,
    },
    /// Every routed name: its rules (criteria, pool, queries matched) and its pools' health.
    Routes,
    /// One routed name; with --client or --ecs, which rule that client matches, the pool it
    /// gets, the ECS scope of its answers and that pool's answer probabilities.
    Route {
        /// The routed name, e.g. www.example.com.
        name: String,
        /// A client (resolver) address to ask for.
        #[arg(long)]
        client: Option<IpAddr>,
        /// An EDNS Client Subnet prefix to ask for, e.g. 198.51.100.0/24.
        #[arg(long)]
        ecs: Option<String>,
    },
    /// A zone's RFC 2136 UPDATE changes: the RRsets that differ from its zone file, the
    /// serial, the journal. With --discard, drop them: the file serves again, one serial later.
    Updates {
        /// The zone's origin, e.g. example.com.
        zone: String,
        /// Drop the zone's UPDATE changes (audited).
        #[arg(long)]
        discard: bool,
        /// Why (with --discard): recorded in the audit log.
        #[arg(long, requires = "discard")]
        reason: Option<String>,
    },
    /// How a signed zone is signed: its keys (role, published, signing), the DS for the
    /// parent, signature validity, the latest key rollover. With --rollover, start a
    /// zone-signing key's pre-publish rollover to the standby key (or --key TAG).
    Dnssec {
        /// The zone's origin, e.g. example.com.
        zone: String,
        /// Start a rollover (audited; its phases follow the DNSKEY TTL, the zone's largest TTL
        /// and [dnssec] propagation_delay).
        #[arg(long)]
        rollover: bool,
        /// The key to roll to (its tag); default: the zone's one standby zone-signing key.
        #[arg(long, requires = "rollover")]
        key: Option<u16>,
        /// Why (with --rollover): recorded in the audit log.
        #[arg(long, requires = "rollover")]
        reason: Option<String>,
    },
    /// A zone's static data as weir serves it (its file with UPDATE changes), in zone-file
    /// form: save it as the zone file to fold the changes in, then `updates ZONE --discard`.
    Records {
        /// The zone's origin, e.g. example.com.
        zone: String,
    },
    /// Cache convergence since the pool's last change of answers: the share of its query
    /// volume whose resolvers have asked again, the largest still silent, the time to 99%.
    Convergence {
        /// The pool's name, e.g. app.example.com.
        pool: String,
    },
    // set-weight, drain, undrain, force, add, remove: listed here, in this order.
    #[command(flatten)]
    Change(Change),
    /// The audit log, newest first.
    Audit {
        /// Only this pool's changes.
        #[arg(long)]
        pool: Option<String>,
        /// At most this many records (the server's default is 100).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Reload config and zones; on failure the previous config keeps serving.
    Reload,
    /// Every nameserver sharing the state and the generation it serves (one, this one, with
    /// the local sled store).
    Nodes,
    /// Whether a change (by its generation) is live on every nameserver: INSYNC or PENDING.
    Changes {
        /// The generation a write answered with.
        generation: u64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Forget a nameserver that is gone for good, so it stops holding changes PENDING.
    Forget {
        /// The node's id (`weir ctl nodes`).
        node: String,
    },
    /// Canary rollouts: move a pool's traffic from one group to another in steps.
    Rollout {
        #[command(subcommand)]
        command: Rollout,
    },
}

/// The changes to a pool's weights, overrides and endpoints; `Change::request` says what each
/// one sends.
#[derive(Debug, Subcommand)]
enum Change {
    /// Set a group's weight (0 takes the group out of answers).
    SetWeight {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// The group's name, e.g. green.
        group: String,
        /// The new weight; groups share answers in proportion to their weights.
        weight: u32,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Set an endpoint's weight to 0: it stays probed but gets no answers.
    Drain {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// The endpoint's IP address.
        address: IpAddr,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Give a drained endpoint its configured weight back.
    Undrain {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// The endpoint's IP address.
        address: IpAddr,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Force an endpoint up or down regardless of its probe, or back to `auto` (follow the probe).
    Force {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// The endpoint's IP address.
        address: IpAddr,
        /// `up` or `down` whatever the probe says, or `auto` to follow the probe again.
        health: Health,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Add an endpoint to a group at runtime (it gets the pool's check).
    Add {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// The group to add it to.
        group: String,
        /// The new endpoint's IP address.
        address: IpAddr,
        /// The endpoint's weight inside its group.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Remove an endpoint (a configured one stays removed until added back).
    Remove {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// The endpoint's IP address.
        address: IpAddr,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

/// `weir ctl rollout ...`: one rollout per pool, named by the pool.
#[derive(Debug, Subcommand)]
enum Rollout {
    /// Start a rollout: the pool's [pool.rollout], or the plan in --plan.
    ///
    /// The `to` group goes to 0% at once; the first step waits until that has settled in
    /// resolvers' caches (the pool's TTL + the plan's slack).
    Start {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// A JSON plan to run instead of the pool's [pool.rollout]: {"from": "blue", "to":
        /// "green", "steps": [{"set_weight": 5}, {"pause": "10m"}, {"pause": "manual"},
        /// {"set_weight": 100}], "slack": "5s"}.
        #[arg(long, value_name = "FILE.json", value_parser = read_plan)]
        plan: Option<Map<String, Value>>,
        #[command(flatten)]
        change: RolloutChange,
    },
    /// Where the pool's rollout stands: weights, steps done and to come, settling, next step.
    Status {
        /// The pool's name, e.g. app.example.com.
        pool: String,
    },
    /// Run the next step now: past a pause (timed or manual), then the next weight.
    /// `finalize` is the same: it ends a blue-green rollout at its rollback window.
    #[command(visible_alias = "finalize")]
    Promote {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// Jump straight to 100% (the rollout is done once that has settled).
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        change: RolloutChange,
    },
    /// Hold the rollout at its current weight until `resume`.
    Pause {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        #[command(flatten)]
        change: RolloutChange,
    },
    /// Continue a paused rollout from where it stopped.
    Resume {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        #[command(flatten)]
        change: RolloutChange,
    },
    /// End the rollout: the `to` group goes back to 0%.
    Abort {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        /// Why: shown by `rollout status` and recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Go back to the weight before the last one set, and pause there (`resume` redoes it).
    Undo {
        /// The pool's name, e.g. app.example.com.
        pool: String,
        #[command(flatten)]
        change: RolloutChange,
    },
}

/// What every rollout command accepts (the API takes no `force` or If-Match for rollouts).
#[derive(Debug, clap::Args)]
struct RolloutChange {
    /// Why: recorded in the audit log.
    #[arg(long)]
    reason: Option<String>,
}

/// What every change accepts.
#[derive(Debug, clap::Args)]
struct ChangeArgs {
    /// Why: recorded in the audit log.
    #[arg(long)]
    reason: Option<String>,
    /// Allow a change that leaves the pool with zero total weight.
    #[arg(long)]
    force: bool,
    /// Apply only if the state is still at this generation (sent as If-Match; 412 otherwise).
    #[arg(long, value_name = "GENERATION")]
    if_match: Option<u64>,
    #[command(flatten)]
    wait: WaitArgs,
}

impl ChangeArgs {
    /// A rollout command's: a reason, nothing else (the API takes no `force` or If-Match for
    /// rollouts, and `--wait` is not offered).
    fn reason_only(reason: Option<String>) -> ChangeArgs {
        ChangeArgs {
            reason,
            force: false,
            if_match: None,
            wait: WaitArgs {
                wait: false,
                wait_timeout: std::time::Duration::ZERO,
            },
        }
    }
}

/// Waiting for a change to be served by every nameserver.
#[derive(Debug, clap::Args)]
struct WaitArgs {
    /// Wait until every nameserver serves the change (INSYNC); exit 1 if it is still PENDING
    /// after --wait-timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    wait_timeout: std::time::Duration,
}

/// An argument value `weir ctl` cannot take; clap shows it after "invalid value 'X' for
/// '--flag':" and `main` exits 64.
#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error("`{text}` is not a duration like 30s: {error}")]
    Duration {
        text: String,
        error: humantime::DurationError,
    },
    #[error("`{text}`: {error}")]
    Url {
        text: String,
        error: <Url as std::str::FromStr>::Err,
    },
    #[error("`{0}` is not an http:// or https:// URL")]
    NotHttp(String),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0} holds no JSON object")]
    NotObject(String),
    #[error("{path} is not JSON: {error}")]
    NotJson {
        path: String,
        error: serde_json::Error,
    },
    #[error(
        "{path}: a plan needs \"from\", \"to\" and \"steps\"; missing \"{}\"",
        missing.join("\", \"")
    )]
    Incomplete {
        path: String,
        missing: Vec<&'static str>,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, ArgError> {
    humantime::parse_duration(text).map_err(|error| ArgError::Duration {
        text: text.into(),
        error,
    })
}

/// The health override to set.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Health {
    Up,
    Down,
    Auto,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Auto => "auto",
        }
    }
}

/// Runs one `weir ctl` command: prints its output, or the error to stderr, and says how to exit.
pub fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir ctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(text) => {
            // A closed pipe (`weir ctl audit | head`) is not worth a panic or an error.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut message = format!("weir ctl: {e}\n");
            if let CtlError::Refused { problems, .. } = &e {
                for p in problems {
                    message.push_str(&format!("  - {p}\n"));
                }
            }
            let _ = std::io::stderr().lock().write_all(message.as_bytes());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs the command and returns what to print on stdout.
async fn execute(args: Args) -> Result<String, CtlError> {
    let token = token(args.token, args.token_file.as_deref())?;
    let client = Client::new(args.url, token, args.ca_file.as_deref())?;
    let json = args.json;
    match *args.command {
        Command::Status => status(&client, json).await,
        Command::Pools => show(&client, &["v1", "pools"], &[], table::pools, json).await,
        Command::Pool { name } => {
            let render = |body: &Value| table::pool(body, crate::clock::wall_secs());
            show(&client, &["v1", "pools", &name], &[], render, json).await
        }
        Command::Routes => show(&client, &["v1", "routes"], &[], table::routes, json).await,
        Command::Route {
            name,
            client: None,
            ecs: None,
        } => show(&client, &["v1", "routes", &name], &[], table::route, json).await,
        Command::Route {
            name,
            client: addr,
            ecs,
        } => {
            let query: Vec<(&str, String)> = [
                addr.map(|a| ("client", a.to_string())),
                ecs.map(|e| ("ecs", e)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let path = ["v1", "routes", &name, "preview"];
            show(&client, &path, &query, table::route_preview, json).await
        }
        Command::Updates {
            zone,
            discard: false,
            ..
        } => {
            show(
                &client,
                &["v1", "zones", &zone, "updates"],
                &[],
                table::updates,
                json,
            )
            .await
        }
        Command::Updates { zone, reason, .. } => {
            let what = format!("{}: UPDATE changes discarded", shown(&zone));
            let args = ChangeArgs::reason_only(reason);
            let path = ["v1", "zones", &zone, "updates"];
            client
                .change(Method::DELETE, &path, None, &args, json, &what)
                .await
        }
        Command::Dnssec {
            zone,
            rollover: false,
            ..
        } => {
            let path = ["v1", "zones", &zone, "dnssec"];
            show(&client, &path, &[], table::dnssec, json).await
        }
        Command::Dnssec {
            zone, key, reason, ..
        } => {
            let what = format!("{}: key rollover started", shown(&zone));
            let args = ChangeArgs::reason_only(reason);
            let path = ["v1", "zones", &zone, "dnssec", "rollover"];
            let body = Some(key.map_or_else(|| json!({}), |k| json!({ "key": k })));
            client
                .change(Method::POST, &path, body, &args, json, &what)
                .await
        }
        Command::Records { zone } => {
            show(
                &client,
                &["v1", "zones", &zone, "records"],
                &[],
                table::records,
                json,
            )
            .await
        }
        Command::Convergence { pool } => {
            let path = ["v1", "pools", &pool, "convergence"];
            show(&client, &path, &[], table::convergence, json).await
        }
        Command::Audit { pool, limit } => {
            let query: Vec<(&str, String)> = [
                pool.map(|p| ("pool", p)),
                limit.map(|n| ("limit", n.to_string())),
            ]
            .into_iter()
            .flatten()
            .collect();
            show(&client, &["v1", "audit"], &query, table::audit, json).await
        }
        Command::Nodes => show(&client, &["v1", "nodes"], &[], table::nodes, json).await,
        Command::Changes { generation, wait } => changes(&client, generation, &wait, json).await,
        Command::Change(change) => submit(&client, change.request(), json).await,
        Command::Rollout { command } => rollout(&client, command, json).await,
        Command::Forget { node } => forget(&client, &node, json).await,
        Command::Reload => reload(&client, json).await,
    }
}

/// A read: the API's JSON as it came with `--json`, else `render`'s view of it.
async fn show(
    client: &Client,
    path: &[&str],
    query: &[(&str, String)],
    render: impl FnOnce(&Value) -> String,
    json: bool,
) -> Result<String, CtlError> {
    let (text, body) = client.read(path, query).await?;
    Ok(if json { raw(text) } else { render(&body) })
}

/// `status`: readiness (which is plain text, 200 or 503) plus the zone and pool lists.
async fn status(client: &Client, json: bool) -> Result<String, CtlError> {
    let (code, ready_text) = client
        .send(Method::GET, client.url(&["readyz"], &[]), None, None)
        .await?;
    let (_, zones) = client.read(&["v1", "zones"], &[]).await?;
    let (_, pools) = client.read(&["v1", "pools"], &[]).await?;
    // Several nameservers: who serves what. A shared store that is down is worth showing,
    // not a reason to fail the whole status.
    let nodes = match client.read(&["v1", "nodes"], &[]).await {
        Ok((_, nodes)) => nodes,
        Err(CtlError::Refused {
            status, message, ..
        }) if status == StatusCode::SERVICE_UNAVAILABLE => {
            json!({ "shared": true, "error": message })
        }
        Err(e) => return Err(e),
    };
    let ready = code == StatusCode::OK;
    let ready_text = ready_text.trim();
    if json {
        let body = json!({ "ready": ready, "readyz": ready_text, "zones": zones, "pools": pools, "nodes": nodes });
        return Ok(format!("{body}\n"));
    }
    Ok(table::status(ready, ready_text, &zones, &pools, &nodes))
}

/// `changes GENERATION [--wait]`: whether the change is live on every nameserver.
async fn changes(
    client: &Client,
    generation: u64,
    wait: &WaitArgs,
    json: bool,
) -> Result<String, CtlError> {
    let body = if wait.wait {
        client.wait_insync(generation, wait.wait_timeout).await?
    } else {
        client
            .read(&["v1", "changes", &generation.to_string()], &[])
            .await?
            .1
    };
    Ok(if json {
        format!("{body}\n")
    } else {
        table::change_status(&body)
    })
}

/// `forget NODE`: a DELETE whose answer has no body.
async fn forget(client: &Client, node: &str, json: bool) -> Result<String, CtlError> {
    let url = client.url(&["v1", "nodes", node], &[]);
    client.expect_ok(Method::DELETE, url, None, None).await?;
    Ok(if json {
        "{}\n".into()
    } else {
        format!("nameserver {node} forgotten\n")
    })
}

/// `reload`: the new generation, and the settings that only a restart applies.
async fn reload(client: &Client, json: bool) -> Result<String, CtlError> {
    let url = client.url(&["v1", "reload"], &[]);
    let (text, body) = client
        .expect_ok(Method::POST, url.clone(), None, None)
        .await?;
    let generation = generation(&body, &url)?;
    let restart: Vec<&str> = body["restart_required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .collect();
    Ok(if json {
        raw(text)
    } else if restart.is_empty() {
        format!("reloaded (generation {generation})\n")
    } else {
        format!(
            "reloaded (generation {generation}); restart weir to apply the changed [{}] settings\n",
            restart.join("], [")
        )
    })
}

/// One change to one pool: what a change or rollout command sends, and what its
/// confirmation line says.
#[derive(Debug)]
struct PoolChange {
    method: Method,
    pool: String,
    /// The path below `v1/pools/{pool}`.
    path: Vec<String>,
    /// The JSON object sent, to which reason and force are added. None (DELETE): they go in
    /// the query.
    body: Option<Value>,
    /// The confirmation line after `POOL: `, before ` (generation N)`.
    what: String,
    args: ChangeArgs,
}

/// Path segments from anything shown as text (names, addresses).
macro_rules! segments {
    ($($segment:expr),* $(,)?) => {
        vec![$($segment.to_string()),*]
    };
}

impl Change {
    /// The table of changes: what each command sends and what its confirmation says, one row
    /// per command (method, path below the pool, body, summary).
    fn request(self) -> PoolChange {
        let (method, path, body, what) = match &self {
            Change::SetWeight { group, weight, .. } => (
                Method::PUT,
                segments!["groups", group, "weight"],
                Some(json!({ "weight": weight })),
                format!("group {group} weight -> {weight}"),
            ),
            Change::Drain { address, .. } => (
                Method::PUT,
                segments!["endpoints", address, "weight"],
                Some(json!({ "weight": 0 })),
                format!("endpoint {address} weight -> 0 (drained)"),
            ),
            Change::Undrain { address, .. } => (
                Method::PUT,
                segments!["endpoints", address, "weight"],
                Some(json!({ "reset": true })),
                format!("endpoint {address} weight -> as configured"),
            ),
            Change::Force {
                address, health, ..
            } => (
                Method::PUT,
                segments!["endpoints", address, "override"],
                Some(json!({ "health": health.as_str() })),
                format!("endpoint {address} override -> {}", health.as_str()),
            ),
            Change::Add {
                group,
                address,
                weight,
                ..
            } => (
                Method::POST,
                segments!["groups", group, "endpoints"],
                Some(json!({ "address": address.to_string(), "weight": weight })),
                format!("endpoint {address} added to group {group} with weight {weight}"),
            ),
            Change::Remove { address, .. } => (
                Method::DELETE,
                segments!["endpoints", address],
                None,
                format!("endpoint {address} removed"),
            ),
        };
        // What every change has: its pool and the flags it shares with the others.
        let (Change::SetWeight { pool, change, .. }
        | Change::Drain { pool, change, .. }
        | Change::Undrain { pool, change, .. }
        | Change::Force { pool, change, .. }
        | Change::Add { pool, change, .. }
        | Change::Remove { pool, change, .. }) = self;
        PoolChange {
            method,
            pool,
            path,
            body,
            what,
            args: change,
        }
    }
}

/// What `rollout start` says it started (after `rollout `).
fn started(plan: Option<&Map<String, Value>>) -> String {
    match plan.map(|p| (p.get("from"), p.get("to"))) {
        Some((Some(Value::String(from)), Some(Value::String(to)))) => {
            format!("{from} -> {to} started")
        }
        Some(_) => "started".into(),
        None => "started (plan from [pool.rollout])".into(),
    }
}

/// Sends one change to a pool and returns its confirmation line `POOL: what (generation N)`,
/// or the API's JSON with `--json` (see `Client::change`).
async fn submit(client: &Client, change: PoolChange, json: bool) -> Result<String, CtlError> {
    let path: Vec<&str> = ["v1", "pools", &change.pool]
        .into_iter()
        .chain(change.path.iter().map(String::as_str))
        .collect();
    let what = format!("{}: {}", shown(&change.pool), change.what);
    client
        .change(change.method, &path, change.body, &change.args, json, &what)
        .await
}

/// `rollout ...`: the status view, or one rollout command, each a POST whose body carries the
/// reason, and its confirmation line. The table of rollout commands: path below the pool, body,
/// reason and confirmation, one row per command.
async fn rollout(client: &Client, command: Rollout, json: bool) -> Result<String, CtlError> {
    let (pool, path, body, reason, what): (_, &[&str], _, _, _) = match command {
        Rollout::Status { pool } => {
            let path = ["v1", "pools", &pool, "rollout"];
            return show(client, &path, &[], table::rollout, json).await;
        }
        Rollout::Start { pool, plan, change } => {
            let what = started(plan.as_ref());
            let body = Value::Object(plan.unwrap_or_default());
            (pool, &["rollouts"], body, change.reason, what)
        }
        Rollout::Promote { pool, full, change } => {
            let what = if full { "promoted to 100%" } else { "promoted" };
            let body = json!({ "full": full });
            (
                pool,
                &["rollout", "promote"],
                body,
                change.reason,
                what.into(),
            )
        }
        Rollout::Pause { pool, change } => (
            pool,
            &["rollout", "pause"],
            json!({}),
            change.reason,
            "paused".into(),
        ),
        Rollout::Resume { pool, change } => (
            pool,
            &["rollout", "resume"],
            json!({}),
            change.reason,
            "resumed".into(),
        ),
        Rollout::Abort { pool, reason } => (
            pool,
            &["rollout", "abort"],
            json!({}),
            reason,
            "aborted".into(),
        ),
        Rollout::Undo { pool, change } => {
            let what = "undone to the previous weight (paused)".into();
            (pool, &["rollout", "undo"], json!({}), change.reason, what)
        }
    };
    let change = PoolChange {
        method: Method::POST,
        pool,
        path: path.iter().map(ToString::to_string).collect(),
        body: Some(body),
        what: format!("rollout {what}"),
        args: ChangeArgs::reason_only(reason),
    };
    submit(client, change, json).await
}

/// `--plan FILE.json`: the file's JSON object, sent as the start request's body (the API
/// checks the plan itself). A file that cannot be read, is not a JSON object or lacks `from`,
/// `to` or `steps` is a usage error: the API reads a body without a plan as "use
/// [pool.rollout]", which is not what `--plan` asks for.
fn read_plan(path: &str) -> Result<Map<String, Value>, ArgError> {
    let text = std::fs::read_to_string(path).map_err(|error| ArgError::Read {
        path: path.into(),
        error,
    })?;
    let plan = match serde_json::from_str(&text) {
        Ok(Value::Object(plan)) => plan,
        Ok(_) => return Err(ArgError::NotObject(path.into())),
        Err(error) => {
            return Err(ArgError::NotJson {
                path: path.into(),
                error,
            });
        }
    };
    let missing: Vec<&str> = ["from", "to", "steps"]
        .into_iter()
        .filter(|k| !plan.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(ArgError::Incomplete {
            path: path.into(),
            missing,
        });
    }
    Ok(plan)
}

/// The token from `--token-file`, else `--token`, else `WEIR_TOKEN` (empty means none).
fn token(flag: Option<String>, file: Option<&Path>) -> Result<Option<String>, CtlError> {
    let token = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CtlError::Token(format!("cannot read {}: {e}", path.display())))?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(CtlError::Token(format!(
                    "{} holds no token",
                    path.display()
                )));
            }
            Some(token)
        }
        None => flag.or_else(|| std::env::var("WEIR_TOKEN").ok()),
    };
    Ok(token.filter(|t| !t.is_empty()))
}

fn parse_url(text: &str) -> Result<Url, ArgError> {
    let url = Url::parse(text).map_err(|error| ArgError::Url {
        text: text.into(),
        error,
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(ArgError::NotHttp(text.into()));
    }
    Ok(url)
}

/// A pool name as the server shows it: lowercase, fully qualified.
fn shown(pool: &str) -> String {
    let mut name = pool.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// The API's JSON as it came, ending in a newline.
fn raw(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_accepted() {
        for bad in ["127.0.0.1:8053", "ftp://h/", "mailto:a@b", "http//x"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(parse_url("https://admin.example:8443/").is_ok());
    }

    #[test]
    fn pool_names_are_shown_fully_qualified() {
        assert_eq!(shown("App.Example.com"), "app.example.com.");
        assert_eq!(shown("app.example.com."), "app.example.com.");
    }

    #[test]
    fn a_plan_file_must_hold_a_json_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let name = path.to_str().unwrap();
        std::fs::write(
            &path,
            r#"{"from": "blue", "to": "green", "steps": [{"set_weight": 5}]}"#,
        )
        .unwrap();
        let plan = read_plan(name).unwrap();
        assert_eq!(plan["steps"][0]["set_weight"], 5);
        for (text, want) in [
            ("[1, 2]", "holds no JSON object"),
            ("from = \"blue\"", "is not JSON"),
            ("{}", "missing \"from\", \"to\", \"steps\""),
            (r#"{"from": "a", "to": "b"}"#, "missing \"steps\""),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = read_plan(name).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let missing = dir.path().join("missing.json");
        let e = read_plan(missing.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read "), "{e}");
    }

    #[test]
    fn a_token_file_is_trimmed_and_must_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret-token-value\n").unwrap();
        assert_eq!(
            token(None, Some(&path)).unwrap().as_deref(),
            Some("s3cret-token-value")
        );
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(token(None, Some(&path)).unwrap_err().exit_code(), 2);
        let missing = dir.path().join("missing");
        assert_eq!(token(None, Some(&missing)).unwrap_err().exit_code(), 2);
        assert_eq!(
            token(Some("flag".into()), None).unwrap().as_deref(),
            Some("flag")
        );
    }
}
