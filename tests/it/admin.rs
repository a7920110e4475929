//! The admin API over real HTTP against the real server: every endpoint, auth, validation that
//! changes nothing, If-Match, changes visible in DNS at once, reload, and persistence across
//! real process restarts (clean and kill -9) with the real sled store.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";
const POOL: &str = "[[pool]]\nname = \"app.example.com.\"\nanswers = 3\n[[pool.group]]\nname = \"blue\"\nweight = 90\nendpoints = [{ address = \"192.0.2.10\" }, { address = \"192.0.2.11\" }]\n[[pool.group]]\nname = \"green\"\nweight = 10\nendpoints = [{ address = \"192.0.2.20\" }]\n";

async fn get(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http(addr, Method::GET, path, &[], None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn put(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http(addr, Method::PUT, path, &[], Some(&body.to_string())).await
}

fn endpoint<'a>(pool: &'a Value, group: usize, address: &str) -> &'a Value {
    pool["groups"][group]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == address)
        .unwrap_or_else(|| panic!("no {address} in {pool}"))
}

#[tokio::test]
async fn reads_changes_and_audit_end_to_end() {
    let s = Server::serving(ZONE, POOL).await;
    let admin = s.admin();
    assert_eq!(
        get(admin, "/v1/zones").await,
        json!({ "generation": 0, "zones": ["example.com."] })
    );
    let pools = get(admin, "/v1/pools").await;
    assert_eq!(pools["pools"][0]["name"], "app.example.com.");
    let pool = get(admin, "/v1/pools/app.example.com").await;
    assert_eq!(
        pool["groups"][0]["weight"],
        json!({ "configured": 90, "effective": 90, "source": "config" })
    );
    assert_eq!(
        answered(s.addr, "app.example.com.", 50).await,
        ["192.0.2.10", "192.0.2.11", "192.0.2.20"]
    );

    // Drain: gone from DNS right after the 200.
    let (status, body) = put(
        admin,
        "/v1/pools/app.example.com/endpoints/192.0.2.10/weight",
        json!({ "weight": 0, "reason": "deploy" }),
    )
    .await;
    assert_eq!((status, body), (200, json!({ "generation": 1 })));
    assert_eq!(
        answered(s.addr, "app.example.com.", 200).await,
        ["192.0.2.11", "192.0.2.20"]
    );
    let pool = get(admin, "/v1/pools/app.example.com.").await;
    assert_eq!(pool["generation"], 1);
    assert_eq!(
        endpoint(&pool, 0, "192.0.2.10")["weight"],
        json!({ "configured": 1, "effective": 0, "source": "override" })
    );

    // Group weight, health override, add and remove.
    assert_eq!(
        put(
            admin,
            "/v1/pools/app.example.com/groups/green/weight",
            json!({ "weight": 25 })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        put(
            admin,
            "/v1/pools/app.example.com/endpoints/192.0.2.20/override",
            json!({ "health": "down" })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        answered(s.addr, "app.example.com.", 100).await,
        ["192.0.2.11"]
    );
    assert_eq!(
        put(
            admin,
            "/v1/pools/app.example.com/endpoints/192.0.2.20/override",
            json!({ "health": "auto" })
        )
        .await
        .0,
        200
    );
    let (status, _) = http(
        admin,
        Method::POST,
        "/v1/pools/app.example.com/groups/green/endpoints",
        &[],
        Some(r#"{"address": "192.0.2.99", "weight": 2}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answered(s.addr, "app.example.com.", 100).await,
        ["192.0.2.11", "192.0.2.20", "192.0.2.99"]
    );
    let pool = get(admin, "/v1/pools/app.example.com").await;
    assert_eq!(
        endpoint(&pool, 1, "192.0.2.99")["weight"]["source"],
        "runtime"
    );
    let (status, body) = http(
        admin,
        Method::DELETE,
        "/v1/pools/app.example.com/endpoints/192.0.2.11?reason=scale-in",
        &[],
        None,
    )
    .await;
    assert_eq!((status, body), (200, json!({ "generation": 6 })));
    assert_eq!(
        answered(s.addr, "app.example.com.", 100).await,
        ["192.0.2.20", "192.0.2.99"]
    );
    assert_eq!(
        get(admin, "/v1/pools/app.example.com").await["removed"],
        json!(["192.0.2.11"])
    );
    // Undrain goes back to the configured weight.
    assert_eq!(
        put(
            admin,
            "/v1/pools/app.example.com/endpoints/192.0.2.10/weight",
            json!({ "reset": true })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        answered(s.addr, "app.example.com.", 200).await,
        ["192.0.2.10", "192.0.2.20", "192.0.2.99"]
    );

    // The audit log, newest first, with who, from where, before, after and why.
    let audit = get(admin, "/v1/audit").await;
    let records = audit["records"].as_array().unwrap();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "set-endpoint-weight",
            "remove-endpoint",
            "add-endpoint",
            "override",
            "override",
            "set-group-weight",
            "set-endpoint-weight"
        ]
    );
    let first = &records[6];
    assert_eq!(first["generation"], 1);
    assert_eq!(first["actor"], "local");
    assert_eq!(first["source"], "127.0.0.1");
    assert_eq!(first["subject"], "endpoint 192.0.2.10");
    assert_eq!(
        (first["before"].clone(), first["after"].clone()),
        (json!({ "weight": 1 }), json!({ "weight": 0 }))
    );
    assert_eq!(first["reason"], "deploy");
    assert_eq!(records[1]["reason"], "scale-in");
    let (_, metrics) = http(admin, Method::GET, "/metrics", &[], None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("weir_admin_requests_total{route=\"/v1/pools/{pool}/endpoints/{address}/override\",status=\"200\"} 2"),
        "{metrics}"
    );
    let limited = get(admin, "/v1/audit?pool=app.example.com&limit=2").await;
    assert_eq!(limited["records"].as_array().unwrap().len(), 2);
    assert!(
        get(admin, "/v1/audit?pool=other.example.com").await["records"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_4xx_and_change_nothing() {
    let s = Server::serving(ZONE, POOL).await;
    let admin = s.admin();
    let big = format!("{{\"weight\": 1, \"reason\": \"{}\"}}", "x".repeat(70_000));
    // (method, path, body, headers, expected status, expected message part)
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            "/v1/pools/nope.example.com/groups/blue/weight",
            Some(r#"{"weight": 1}"#),
            &[],
            404,
            "no pool `nope.example.com.`",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/red/weight",
            Some(r#"{"weight": 1}"#),
            &[],
            404,
            "no group `red`",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/endpoints/192.0.2.77/weight",
            Some(r#"{"weight": 1}"#),
            &[],
            404,
            "no endpoint 192.0.2.77",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/endpoints/not-an-ip/weight",
            Some(r#"{"weight": 1}"#),
            &[],
            400,
            "is not an IP address",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/blue/weight",
            Some(r#"{"weight": "#),
            &[],
            400,
            "",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/blue/weight",
            Some(r#"{"weight": -1}"#),
            &[],
            400,
            "",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/blue/weight",
            Some(r#"{"weight": 1, "colour": "red"}"#),
            &[],
            400,
            "unknown field",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/blue/weight",
            Some(r#"{"weight": 2000000}"#),
            &[],
            400,
            "out of range",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/endpoints/192.0.2.10/weight",
            Some(r#"{"weight": 1, "reset": true}"#),
            &[],
            400,
            "either",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/endpoints/192.0.2.10/override",
            Some(r#"{"health": "sideways"}"#),
            &[],
            400,
            "",
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/groups/blue/endpoints",
            Some(r#"{"address": "192.0.2.20"}"#),
            &[],
            409,
            "already an endpoint",
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/groups/blue/endpoints",
            Some(r#"{"address": "0.0.0.0"}"#),
            &[],
            400,
            "0.0.0.0 is the unspecified address",
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/groups/blue/endpoints",
            Some(r#"{"address": "255.255.255.255"}"#),
            &[],
            400,
            "broadcast address",
        ),
        (
            Method::POST,
            "/v1/pools/app.example.com/groups/blue/endpoints",
            Some(r#"{"address": "ff02::1"}"#),
            &[],
            400,
            "multicast address",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/blue/weight",
            Some(r#"{"weight": 5}"#),
            &[("If-Match", "\"7\"")],
            412,
            "based on 7",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/blue/weight",
            Some(r#"{"weight": 5}"#),
            &[("If-Match", "soon")],
            400,
            "If-Match",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/blue/weight",
            Some(&big),
            &[],
            413,
            "",
        ),
        (
            Method::PUT,
            "/v1/pools/app.example.com/groups/blue/weight",
            Some("[]"),
            &[],
            400,
            "",
        ),
    ];
    for (method, path, body, headers, want, message) in cases {
        let (status, reply) = http(admin, method.clone(), path, headers, body).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {reply}");
        if !message.is_empty() {
            assert!(
                reply["error"].as_str().unwrap_or("").contains(message),
                "{path}: {reply}"
            );
        }
    }
    // Zero total weight is refused unless forced.
    put(
        admin,
        "/v1/pools/app.example.com/groups/green/weight",
        json!({ "weight": 0 }),
    )
    .await;
    let (status, reply) = put(
        admin,
        "/v1/pools/app.example.com/groups/blue/weight",
        json!({ "weight": 0 }),
    )
    .await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("zero total weight")
    );
    // Only the one accepted change happened.
    assert_eq!(
        get(admin, "/v1/pools/app.example.com").await["generation"],
        1
    );
    assert_eq!(
        get(admin, "/v1/audit").await["records"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, _) = put(
        admin,
        "/v1/pools/app.example.com/groups/blue/weight",
        json!({ "weight": 0, "force": true }),
    )
    .await;
    assert_eq!(status, 200, "forced");
    // A matching If-Match goes through.
    let (status, reply) = http(
        admin,
        Method::PUT,
        "/v1/pools/app.example.com/groups/blue/weight",
        &[("If-Match", "\"2\"")],
        Some(r#"{"weight": 90}"#),
    )
    .await;
    assert_eq!((status, reply), (200, json!({ "generation": 3 })));
    s.stop().await;
}

#[tokio::test]
async fn tokens_gate_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin.tokens");
    write_secret(
        &tokens,
        "# name scope token\nci read r-0123456789abcdef\nops write w-0123456789abcdef\n",
    );
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .admin_tokens(&tokens)
        .pools(POOL)
        .start()
        .await;
    let admin = s.admin();
    let path = "/v1/pools/app.example.com/groups/green/weight";
    let body = Some(r#"{"weight": 20}"#);
    assert_eq!(
        http(admin, Method::GET, "/healthz", &[], None).await.0,
        200,
        "liveness needs no token"
    );
    assert_eq!(
        http(admin, Method::GET, "/v1/pools", &[], None).await.0,
        401
    );
    assert_eq!(
        http(
            admin,
            Method::GET,
            "/v1/pools",
            &[("Authorization", "Bearer w-0123456789abcdeX")],
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        http(
            admin,
            Method::GET,
            "/v1/pools",
            &[("Authorization", "Bearer r-0123456789abcdef")],
            None
        )
        .await
        .0,
        200
    );
    // The scheme is case-insensitive (RFC 7235 2.1).
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let credentials = format!("{scheme} r-0123456789abcdef");
        let (status, reply) = http(
            admin,
            Method::GET,
            "/v1/pools",
            &[("Authorization", &credentials)],
            None,
        )
        .await;
        assert_eq!(status, 200, "{credentials}: {reply}");
    }
    assert_eq!(
        http(
            admin,
            Method::GET,
            "/v1/pools",
            &[("Authorization", "Basic r-0123456789abcdef")],
            None
        )
        .await
        .0,
        401
    );
    let (status, reply) = http(
        admin,
        Method::PUT,
        path,
        &[("Authorization", "Bearer r-0123456789abcdef")],
        body,
    )
    .await;
    assert_eq!(status, 403, "{reply}");
    assert_eq!(http(admin, Method::PUT, path, &[], body).await.0, 401);
    assert_eq!(
        http(
            admin,
            Method::PUT,
            path,
            &[("Authorization", "Bearer w-0123456789abcdef")],
            body
        )
        .await
        .0,
        200
    );
    let (_, audit) = http(
        admin,
        Method::GET,
        "/v1/audit",
        &[("Authorization", "Bearer r-0123456789abcdef")],
        None,
    )
    .await;
    assert_eq!(audit["records"][0]["actor"], "ops");
    assert_eq!(
        audit["records"].as_array().unwrap().len(),
        1,
        "refused requests leave no record"
    );
    s.stop().await;

    // A token file readable by others is refused at load.
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n",
            tokens.display()
        ),
    )
    .unwrap();
    let err = weir::config::load(&config).unwrap_err().to_string();
    assert!(err.contains("must be 0600"), "{err}");

    // A token file with no token is named even when another table has a problem too.
    std::fs::write(&tokens, "# nobody yet\n").unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(
        &config,
        format!(
            "[dns]\nudp_max_payload = 100\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n",
            tokens.display()
        ),
    )
    .unwrap();
    let err = weir::config::load(&config).unwrap_err().to_string();
    assert!(err.contains("udp_max_payload"), "{err}");
    assert!(err.contains("holds no token"), "{err}");
}

/// A config and zone on disk for real-process tests; the store lives beside them.
fn write_config(dir: &std::path::Path, pool: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("example.com.zone"), ZONE).unwrap();
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!("[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"state\"\n[log]\nformat = \"json\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n{pool}"),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn reload_through_the_api_is_all_or_nothing_and_drops_stale_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POOL);
    let weir = WeirProcess::start(&config, &[]).unwrap();
    let admin = weir.admin.unwrap();
    assert_eq!(
        put(
            admin,
            "/v1/pools/app.example.com/endpoints/192.0.2.11/override",
            json!({ "health": "down" })
        )
        .await
        .0,
        200
    );

    // A broken zone: 422 with the problems, the old data keeps serving.
    std::fs::write(
        dir.path().join("example.com.zone"),
        "$TTL 60\nwww A 192.0.2.1\n",
    )
    .unwrap();
    let (status, reply) = http(admin, Method::POST, "/v1/reload", &[], None).await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["problems"][0].as_str().unwrap().contains("no SOA"),
        "{reply}"
    );
    assert_eq!(
        answered(weir.dns, "app.example.com.", 50).await,
        ["192.0.2.10", "192.0.2.20"]
    );

    // A good config without 192.0.2.11: its override is dropped, with an audit record.
    std::fs::write(dir.path().join("example.com.zone"), ZONE).unwrap();
    write_config(
        dir.path(),
        &POOL.replace(", { address = \"192.0.2.11\" }", ""),
    );
    let (status, reply) = http(admin, Method::POST, "/v1/reload", &[], None).await;
    assert_eq!(
        (status, reply),
        (200, json!({ "generation": 2, "restart_required": [] }))
    );
    // Socket settings are reported, not silently ignored.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[store]\n", "[store]\naudit_retention = 50\n");
    std::fs::write(&config, text).unwrap();
    let (status, reply) = http(admin, Method::POST, "/v1/reload", &[], None).await;
    assert_eq!(
        (status, reply),
        (
            200,
            json!({ "generation": 2, "restart_required": ["store"] })
        )
    );
    let audit = get(admin, "/v1/audit").await;
    assert_eq!(audit["records"][0]["action"], "drop-stale-override");
    assert_eq!(audit["records"][0]["subject"], "endpoint 192.0.2.11");
    assert_eq!(audit["records"][0]["actor"], "weir");
}

/// Replaces `path` with a FIFO: whoever reads it blocks until `feed` writes it.
fn make_fifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    std::fs::remove_file(path).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Writes `text` into the FIFO at `path` (blocks until a reader opens it).
async fn feed(path: &std::path::Path, text: &str) {
    let (path, text) = (path.to_path_buf(), text.to_string());
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::task::spawn_blocking(move || std::fs::write(path, text).unwrap()),
    )
    .await
    .expect("a reload reads the zone file")
    .unwrap();
}

/// Issue 12, defect 8: a reload ran on the writer, so an admin write waited for the whole load
/// (35.7 s behind a 1M-record zone). The zone file here is a FIFO, so a reload stays in its
/// load until the test writes the zone: the write is acknowledged meanwhile, and reloads
/// asked for during a load coalesce into one more load after it.
#[tokio::test]
async fn an_admin_write_during_a_slow_reload_is_acknowledged_before_the_reload_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POOL);
    let weir = WeirProcess::start(&config, &[]).unwrap();
    let admin = weir.admin.unwrap();
    let zone = dir.path().join("example.com.zone");
    make_fifo(&zone);
    let reload = move || {
        tokio::spawn(async move { http(admin, Method::POST, "/v1/reload", &[], None).await })
    };
    let first = reload();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (second, third) = (reload(), reload());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let write = put(
        admin,
        "/v1/pools/app.example.com/groups/blue/weight",
        json!({ "weight": 5, "reason": "during a reload" }),
    );
    let (status, reply) = tokio::time::timeout(std::time::Duration::from_secs(5), write)
        .await
        .expect("the write waited for the reload");
    assert_eq!((status, &reply), (200, &json!({ "generation": 1 })));
    assert!(!first.is_finished(), "the reload is still reading its zone");

    // The first load gets the zone; the two asked for meanwhile wait for one more load.
    feed(&zone, ZONE).await;
    let (status, reply) = first.await.unwrap();
    assert_eq!(
        (status, reply),
        (200, json!({ "generation": 1, "restart_required": [] }))
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!second.is_finished() && !third.is_finished());
    feed(&zone, &ZONE.replace("192.0.2.1", "192.0.2.2")).await;
    for task in [second, third] {
        let (status, reply) = task.await.unwrap();
        assert_eq!(
            (status, reply),
            (200, json!({ "generation": 1, "restart_required": [] }))
        );
    }
    // The write is still served after both reloads.
    let pool = get(admin, "/v1/pools/app.example.com").await;
    assert_eq!(pool["groups"][0]["weight"]["effective"], 5, "{pool}");
}

#[tokio::test]
async fn changes_survive_a_restart_and_a_second_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POOL);
    let weir = WeirProcess::start(&config, &[]).unwrap();
    let admin = weir.admin.unwrap();
    assert_eq!(
        put(
            admin,
            "/v1/pools/app.example.com/endpoints/192.0.2.10/weight",
            json!({ "weight": 0 })
        )
        .await
        .0,
        200
    );
    assert_eq!(
        answered(weir.dns, "app.example.com.", 100).await,
        ["192.0.2.11", "192.0.2.20"]
    );

    // Same store, second process: refused at once, naming the store.
    let err = WeirProcess::start(&config, &[])
        .err()
        .expect("the second process must not start");
    assert!(
        err.contains("in use by another process") && err.contains("state"),
        "{err}"
    );

    weir.signal(libc::SIGTERM);
    let status = tokio::task::spawn_blocking(move || weir.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let weir = WeirProcess::start(&config, &[]).unwrap();
    assert_eq!(
        answered(weir.dns, "app.example.com.", 100).await,
        ["192.0.2.11", "192.0.2.20"],
        "still drained"
    );
    let admin = weir.admin.unwrap();
    let pool = get(admin, "/v1/pools/app.example.com").await;
    assert_eq!(pool["generation"], 1);
    assert_eq!(
        endpoint(&pool, 0, "192.0.2.10")["weight"]["source"],
        "override"
    );
    assert_eq!(
        get(admin, "/v1/audit").await["records"][0]["action"],
        "set-endpoint-weight"
    );
}

#[tokio::test]
async fn every_acknowledged_change_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POOL);
    for round in 0..3u64 {
        let weir = WeirProcess::start(&config, &[]).unwrap();
        let admin = weir.admin.unwrap();
        // Kill at a random moment while updates stream in: 10-210 ms after the first one is
        // acknowledged (counting from start-up instead let a slow first write on a loaded
        // machine lose the race, and the round then tested nothing).
        let kill_after = std::time::Duration::from_millis(10 + fastrand::u64(0..200));
        let pid = weir.pid();
        let mut killer = None;
        let mut acked: Vec<(u64, u64)> = Vec::new();
        for i in 1..=100_000u64 {
            let weight = round * 1000 + i;
            match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                http_maybe(
                    admin,
                    Method::PUT,
                    "/v1/pools/app.example.com/groups/green/weight",
                    Some(json!({ "weight": weight })),
                ),
            )
            .await
            {
                Ok(Some((200, reply))) => {
                    acked.push((reply["generation"].as_u64().unwrap(), weight));
                    killer.get_or_insert_with(|| {
                        std::thread::spawn(move || {
                            std::thread::sleep(kill_after);
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        })
                    });
                }
                _ => break,
            }
        }
        killer
            .expect("the first update was acknowledged, which starts the killer")
            .join()
            .unwrap();
        drop(weir);
        assert!(
            !acked.is_empty(),
            "round {round}: some updates were acknowledged before the kill"
        );

        // Every acknowledged update is in the restarted process's audit log, and the last one
        // acknowledged (or a later one that was stored but not yet acknowledged) is served.
        let weir = WeirProcess::start(&config, &[]).unwrap();
        let admin = weir.admin.unwrap();
        let (last_gen, last_weight) = *acked.last().unwrap();
        let pool = get(admin, "/v1/pools/app.example.com").await;
        let generation = pool["generation"].as_u64().unwrap();
        assert!(
            generation >= last_gen,
            "round {round}: generation {generation} < acknowledged {last_gen}"
        );
        let served = pool["groups"][1]["weight"]["effective"].as_u64().unwrap();
        assert!(
            served >= last_weight,
            "round {round}: weight {served} lost acknowledged {last_weight}"
        );
        let audit = get(admin, &format!("/v1/audit?limit={}", acked.len() + 10)).await;
        let stored: std::collections::HashMap<u64, u64> = audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["generation"].as_u64().unwrap(),
                    r["after"]["weight"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        for (generation, weight) in &acked {
            assert_eq!(
                stored.get(generation),
                Some(weight),
                "round {round}: acknowledged generation {generation} lost"
            );
        }
        drop(weir);
    }
}

#[tokio::test]
async fn a_corrupt_store_stops_start_up_and_reset_state_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POOL);
    let weir = WeirProcess::start(&config, &[]).unwrap();
    for w in 1..=5 {
        put(
            weir.admin.unwrap(),
            "/v1/pools/app.example.com/groups/green/weight",
            json!({ "weight": w }),
        )
        .await;
    }
    drop(weir);
    // Damage the data file.
    let db = dir.path().join("state").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 2..] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let err = WeirProcess::start(&config, &[])
        .err()
        .expect("a corrupt store must stop start-up");
    assert!(
        err.contains("corrupt") && err.contains("--reset-state") && err.contains("state"),
        "{err}"
    );
    // --reset-state moves it aside and starts empty.
    let weir = WeirProcess::start(&config, &["--reset-state"]).unwrap();
    assert_eq!(
        get(weir.admin.unwrap(), "/v1/pools/app.example.com").await["generation"],
        0
    );
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("state.reset-"));
    assert!(aside, "the damaged store is kept aside for inspection");
}

#[tokio::test]
async fn the_api_over_tls_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cert = AdminCert::new(dir.path());
    let tokens = dir.path().join("admin.tokens");
    write_secret(&tokens, "ops write w-0123456789abcdef\n");
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .admin_tokens(&tokens)
        .admin_tls(&cert)
        .pools(POOL)
        .start()
        .await;

    // A client that trusts exactly this certificate.
    let client = http_client(&[&cert.pem]);
    let pools = format!("https://127.0.0.1:{}/v1/pools", s.admin().port());
    let (status, body) = send(client.get(&pools)).await.unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = send(
        client
            .get(&pools)
            .header("Authorization", "Bearer w-0123456789abcdef"),
    )
    .await
    .unwrap();
    assert!(status == 200 && body.contains("app.example.com."), "{body}");
    // weir ctl reaches it when told to trust the certificate.
    let url = format!("https://127.0.0.1:{}", s.admin().port());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "ctl",
            "--url",
            &url,
            "--token",
            "w-0123456789abcdef",
            "--ca-file",
        ])
        .arg(&cert.cert)
        .arg("pools")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("app.example.com."));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "ctl",
            "--url",
            &url,
            "--token",
            "w-0123456789abcdef",
            "pools",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an untrusted certificate is refused"
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(s.admin()).await.unwrap();
    plain
        .write_all(b"GET /v1/pools HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = plain.read_to_end(&mut out).await;
    assert!(!String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    s.stop().await;

    // Beyond loopback, tokens alone are not enough.
    let d = dir.path().display();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!("[admin]\nlisten = \"0.0.0.0:8053\"\ntoken_file = \"{d}/admin.tokens\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n"),
    )
    .unwrap();
    let err = weir::config::load(&config).unwrap_err().to_string();
    assert!(
        err.contains("needs admin.token_file and admin.tls_cert/tls_key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rollout_resumes_at_the_same_step_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let pool = "[[pool]]\nname = \"app.example.com.\"\nttl = 0\n[pool.rollout]\nfrom = \"blue\"\nto = \"green\"\nslack = \"0s\"\nsteps = [{ set_weight = 10 }, { pause = \"manual\" }, { set_weight = 100 }]\n[[pool.group]]\nname = \"blue\"\nendpoints = [{ address = \"192.0.2.10\" }]\n[[pool.group]]\nname = \"green\"\nweight = 0\nendpoints = [{ address = \"192.0.2.20\" }]\n";
    let config = write_config(dir.path(), pool);
    let weir = WeirProcess::start(&config, &[]).unwrap();
    let admin = weir.admin.unwrap();
    assert_eq!(
        http(
            admin,
            Method::POST,
            "/v1/pools/app.example.com/rollouts",
            &[],
            None
        )
        .await
        .0,
        200
    );
    // TTL 0 and no slack: the first step is due at once; the driver runs it within a tick.
    let mut before = Value::Null;
    for _ in 0..100 {
        before = get(admin, "/v1/pools/app.example.com/rollout").await;
        if before["state"] == "waiting for promote" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        (before["state"].as_str(), before["weight"].as_u64()),
        (Some("waiting for promote"), Some(10)),
        "{before}"
    );

    weir.signal(libc::SIGKILL);
    drop(weir);
    let weir = WeirProcess::start(&config, &[]).unwrap();
    let admin = weir.admin.unwrap();
    let after = get(admin, "/v1/pools/app.example.com/rollout").await;
    for field in [
        "state",
        "step",
        "weight",
        "changed_at",
        "settled_at",
        "generation",
    ] {
        assert_eq!(after[field], before[field], "{field} after the restart");
    }
    let seen = answered(weir.dns, "app.example.com.", 400).await;
    assert_eq!(
        seen,
        ["192.0.2.10", "192.0.2.20"],
        "10% still goes to green"
    );
    let (status, _) = http(
        admin,
        Method::POST,
        "/v1/pools/app.example.com/rollout/promote",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answered(weir.dns, "app.example.com.", 100).await,
        ["192.0.2.20"]
    );
}

/// One nameserver on the local store: change status is INSYNC as soon as a write is
/// acknowledged, `/v1/nodes` lists this node alone, and the change feed replays from a
/// generation; bad generations get 400 or 404.
#[tokio::test]
async fn change_status_and_feed_on_the_local_store() {
    let s = Server::serving(ZONE, POOL).await;
    let admin = s.admin();
    for weight in [20, 30] {
        let (status, _) = put(
            admin,
            "/v1/pools/app.example.com/groups/green/weight",
            json!({ "weight": weight }),
        )
        .await;
        assert_eq!(status, 200);
    }
    let status = get(admin, "/v1/changes/2").await;
    assert_eq!(status["status"], "INSYNC", "{status}");
    assert_eq!(status["nodes"][0]["state"], "synced");
    let nodes = get(admin, "/v1/nodes").await;
    assert_eq!(nodes["shared"], false);
    assert_eq!(nodes["nodes"][0]["generation"], 2);
    let (code, body) = http(admin, Method::GET, "/v1/changes/3", &[], None).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = http(admin, Method::GET, "/v1/changes/latest", &[], None).await;
    assert_eq!(code, 400, "{body}");
    let feed = get(admin, "/v1/audit?since=1").await;
    let records = feed["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["after"]["weight"], 30);
    let (code, _) = http(admin, Method::DELETE, "/v1/nodes/ns9", &[], None).await;
    assert_eq!(code, 404);
}

/// (name, nice, scheduling policy) of every thread of `pid`, from /proc.
fn threads(pid: i32) -> Vec<(String, i64, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue;
        };
        let (head, tail) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        // Fields after the name start at field 3 (state): nice is field 19, policy field 41.
        let fields: Vec<&str> = tail.split_whitespace().collect();
        out.push((
            name,
            fields[16].parse().unwrap(),
            fields[38].parse().unwrap(),
        ));
    }
    out
}

/// The admin API, previews and audit pages leave CPU to DNS: the admin API runs on a thread
/// of its own at nice 10, previews and audit pages on threads in SCHED_IDLE, and DNS workers
/// and the writer stay at normal priority (bench/admin-hammer.py measures what this buys).
#[tokio::test]
async fn admin_work_runs_below_dns() {
    const SCHED_IDLE: u32 = 5;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POOL);
    let weir = WeirProcess::start(&config, &[]).unwrap();
    let admin = weir.admin.unwrap();
    let preview = http(
        admin,
        Method::GET,
        "/v1/pools/app.example.com./preview?weights=blue:50,green:50",
        &[],
        None,
    )
    .await;
    assert_eq!(preview.0, 200, "{preview:?}");
    assert_eq!(
        http(admin, Method::GET, "/v1/audit?since=0", &[], None)
            .await
            .0,
        200
    );
    assert_eq!(answered(weir.dns, "app.example.com.", 10).await.len(), 3);

    let threads = threads(weir.pid());
    let named = |prefix: &str| -> Vec<&(String, i64, u32)> {
        threads.iter().filter(|t| t.0.starts_with(prefix)).collect()
    };
    assert_eq!(named("weir-admin").len(), 1, "{threads:?}");
    assert!(
        named("weir-admin").iter().all(|t| t.1 == 10 && t.2 == 0),
        "{threads:?}"
    );
    for workers in ["weir-preview", "weir-audit"] {
        assert!(!named(workers).is_empty(), "{threads:?}");
        assert!(
            named(workers).iter().all(|t| t.2 == SCHED_IDLE),
            "{threads:?}"
        );
    }
    assert!(!named("weir-udp").is_empty(), "{threads:?}");
    let mut dns_and_writer = threads
        .iter()
        .filter(|t| t.0 == "weir" || t.0.starts_with("weir-udp"));
    assert!(dns_and_writer.all(|t| t.1 == 0 && t.2 == 0), "{threads:?}");
}
