//! `weir ctl`: the operator's client for the admin API (`admin.rs` lists the endpoints). Owns the
//! subcommand's arguments, what each command asks, and what people read: aligned tables for
//! reads (`ctl/table.rs`), one line per acknowledged change. `--json` prints the API's JSON as
//! it came, for scripts. `weir ctl rollout ...` drives canary rollouts (see `rollout`): start
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
    /// Cache convergence since the pool's last change of answers: the share of its query
    /// volume whose resolvers have asked again, the largest still silent, the time to 99%.
    Convergence {
        /// The pool's name, e.g. app.example.com.
        pool: String,
    },
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

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 30s: {e}"))
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
        Command::Pools => {
            let (text, body) = client.read(&["v1", "pools"], &[]).await?;
            Ok(if json { raw(text) } else { table::pools(&body) })
        }
        Command::Convergence { pool } => {
            let (text, body) = client
                .read(&["v1", "pools", &pool, "convergence"], &[])
                .await?;
            Ok(if json {
                raw(text)
            } else {
                table::convergence(&body)
            })
        }
        Command::Pool { name } => {
            let (text, body) = client.read(&["v1", "pools", &name], &[]).await?;
            Ok(if json {
                raw(text)
            } else {
                table::pool(&body, crate::clock::wall_secs())
            })
        }
        Command::Audit { pool, limit } => {
            let mut query = Vec::new();
            if let Some(p) = pool {
                query.push(("pool", p));
            }
            if let Some(n) = limit {
                query.push(("limit", n.to_string()));
            }
            let (text, body) = client.read(&["v1", "audit"], &query).await?;
            Ok(if json { raw(text) } else { table::audit(&body) })
        }
        Command::SetWeight {
            pool,
            group,
            weight,
            change,
        } => {
            let path = ["v1", "pools", &pool, "groups", &group, "weight"];
            let body = json!({ "weight": weight });
            let what = format!("{}: group {group} weight -> {weight}", shown(&pool));
            client
                .change(Method::PUT, &path, Some(body), &change, json, &what)
                .await
        }
        Command::Drain {
            pool,
            address,
            change,
        } => {
            let address = address.to_string();
            let path = ["v1", "pools", &pool, "endpoints", &address, "weight"];
            let what = format!("{}: endpoint {address} weight -> 0 (drained)", shown(&pool));
            let body = json!({ "weight": 0 });
            client
                .change(Method::PUT, &path, Some(body), &change, json, &what)
                .await
        }
        Command::Undrain {
            pool,
            address,
            change,
        } => {
            let address = address.to_string();
            let path = ["v1", "pools", &pool, "endpoints", &address, "weight"];
            let what = format!(
                "{}: endpoint {address} weight -> as configured",
                shown(&pool)
            );
            let body = json!({ "reset": true });
            client
                .change(Method::PUT, &path, Some(body), &change, json, &what)
                .await
        }
        Command::Force {
            pool,
            address,
            health,
            change,
        } => {
            let address = address.to_string();
            let path = ["v1", "pools", &pool, "endpoints", &address, "override"];
            let what = format!(
                "{}: endpoint {address} override -> {}",
                shown(&pool),
                health.as_str()
            );
            let body = json!({ "health": health.as_str() });
            client
                .change(Method::PUT, &path, Some(body), &change, json, &what)
                .await
        }
        Command::Add {
            pool,
            group,
            address,
            weight,
            change,
        } => {
            let path = ["v1", "pools", &pool, "groups", &group, "endpoints"];
            let what = format!(
                "{}: endpoint {address} added to group {group} with weight {weight}",
                shown(&pool)
            );
            let body = json!({ "address": address.to_string(), "weight": weight });
            client
                .change(Method::POST, &path, Some(body), &change, json, &what)
                .await
        }
        Command::Remove {
            pool,
            address,
            change,
        } => {
            let address = address.to_string();
            let path = ["v1", "pools", &pool, "endpoints", &address];
            let what = format!("{}: endpoint {address} removed", shown(&pool));
            client
                .change(Method::DELETE, &path, None, &change, json, &what)
                .await
        }
        Command::Rollout { command } => rollout(&client, command, json).await,
        Command::Nodes => {
            let (text, body) = client.read(&["v1", "nodes"], &[]).await?;
            Ok(if json { raw(text) } else { table::nodes(&body) })
        }
        Command::Changes { generation, wait } => {
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
        Command::Forget { node } => {
            let url = client.url(&["v1", "nodes", &node], &[]);
            client.expect_ok(Method::DELETE, url, None, None).await?;
            Ok(if json {
                "{}\n".into()
            } else {
                format!("nameserver {node} forgotten\n")
            })
        }
        Command::Reload => {
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
    }
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

/// `rollout ...`: the status view, or one rollout command (each a POST whose body carries the
/// reason) and its confirmation line.
async fn rollout(client: &Client, command: Rollout, json: bool) -> Result<String, CtlError> {
    let (pool, action, body, reason, what) = match command {
        Rollout::Status { pool } => {
            let (text, body) = client.read(&["v1", "pools", &pool, "rollout"], &[]).await?;
            return Ok(if json {
                raw(text)
            } else {
                table::rollout(&body)
            });
        }
        Rollout::Start { pool, plan, change } => {
            let what = match plan.as_ref().map(|p| (p.get("from"), p.get("to"))) {
                Some((Some(Value::String(from)), Some(Value::String(to)))) => {
                    format!("rollout {from} -> {to} started")
                }
                Some(_) => "rollout started".into(),
                None => "rollout started (plan from [pool.rollout])".into(),
            };
            let body = Value::Object(plan.unwrap_or_default());
            (pool, None, body, change.reason, what)
        }
        Rollout::Promote { pool, full, change } => {
            let what = if full {
                "rollout promoted to 100%"
            } else {
                "rollout promoted"
            };
            let body = json!({ "full": full });
            (pool, Some("promote"), body, change.reason, what.into())
        }
        Rollout::Pause { pool, change } => {
            let what = "rollout paused".into();
            (pool, Some("pause"), json!({}), change.reason, what)
        }
        Rollout::Resume { pool, change } => {
            let what = "rollout resumed".into();
            (pool, Some("resume"), json!({}), change.reason, what)
        }
        Rollout::Abort { pool, reason } => {
            let what = "rollout aborted".into();
            (pool, Some("abort"), json!({}), reason, what)
        }
        Rollout::Undo { pool, change } => {
            let what = "rollout undone to the previous weight (paused)".into();
            (pool, Some("undo"), json!({}), change.reason, what)
        }
    };
    let path: Vec<&str> = match action {
        Some(action) => vec!["v1", "pools", &pool, "rollout", action],
        None => vec!["v1", "pools", &pool, "rollouts"],
    };
    let change = ChangeArgs {
        reason,
        force: false,
        if_match: None,
        wait: WaitArgs {
            wait: false,
            wait_timeout: std::time::Duration::ZERO,
        },
    };
    let what = format!("{}: {what}", shown(&pool));
    client
        .change(Method::POST, &path, Some(body), &change, json, &what)
        .await
}

/// `--plan FILE.json`: the file's JSON object, sent as the start request's body (the API
/// checks the plan itself). A file that cannot be read, is not a JSON object or lacks `from`,
/// `to` or `steps` is a usage error: the API reads a body without a plan as "use
/// [pool.rollout]", which is not what `--plan` asks for.
fn read_plan(path: &str) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let plan = match serde_json::from_str(&text) {
        Ok(Value::Object(plan)) => plan,
        Ok(_) => return Err(format!("{path} holds no JSON object")),
        Err(e) => return Err(format!("{path} is not JSON: {e}")),
    };
    let missing: Vec<&str> = ["from", "to", "steps"]
        .into_iter()
        .filter(|k| !plan.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{path}: a plan needs \"from\", \"to\" and \"steps\"; missing \"{}\"",
            missing.join("\", \"")
        ));
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

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(format!("`{text}` is not an http:// or https:// URL"));
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
            let e = read_plan(name).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let missing = dir.path().join("missing.json");
        let e = read_plan(missing.to_str().unwrap()).unwrap_err();
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
