//! RFC 2136 UPDATE against real clients: `nsupdate` (bind9-dnsutils) and `knsupdate`
//! (knot-dnsutils) sign with keys `tsig-keygen` wrote; a key granted TXT under
//! `_acme-challenge` (what cert-manager's rfc2136 solver needs) adds and deletes its record,
//! which a query sees at once, with the serial bumped and an audit record naming the key;
//! every bad update gets its RCODE and changes nothing; a real `weir serve` killed with -9
//! serves the update again after restart, and a reload of an edited zone file keeps it.
//! A missing tool fails the test with the reason, never skips it.

use std::path::Path;
use std::process::Stdio;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use reqwest::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::support::{Server, WeirProcess, ZONE, find_program, http, lines, query, rcode};

/// A managed name, so updates touching its addresses can be refused.
const POOL: &str = r#"
[[pool]]
name = "app.example.com."
ttl = 30
[pool.check]
kind = "tcp"
port = 1
[[pool.group]]
name = "blue"
endpoints = [{ address = "192.0.2.10" }]
"#;

/// The grants: acme-key may change TXT at and under `_acme-challenge` only; ops-key anything.
const GRANTS: &str = "[[zone.update]]\nkey = \"acme-key\"\nnames = [\"_acme-challenge\", \"_acme-challenge.**\"]\ntypes = [\"TXT\"]\n[[zone.update]]\nkey = \"ops-key\"\n";

/// A key from the real `tsig-keygen` (`tsig::keygen`): the file's text and
/// `hmac-sha256:NAME:SECRET` for `-y`.
pub(crate) fn keygen(name: &str) -> (String, String) {
    let (text, secret) = crate::tsig::keygen(name);
    (text, format!("hmac-sha256:{name}:{secret}"))
}

struct Keys {
    acme: String,
    ops: String,
    files: Vec<(String, String)>,
}

fn keys() -> Keys {
    let (acme_file, acme) = keygen("acme-key");
    let (ops_file, ops) = keygen("ops-key");
    Keys {
        acme,
        ops,
        files: vec![("acme.key".into(), acme_file), ("ops.key".into(), ops_file)],
    }
}

async fn server(keys: &Keys) -> Server {
    let mut builder = Server::builder();
    for (name, text) in &keys.files {
        builder = builder.key_file(name, text);
    }
    builder
        .zone("example.com.", ZONE)
        .zone_keys(GRANTS)
        .pools(POOL)
        .start()
        .await
}

/// Runs an update client (`nsupdate` or `knsupdate`) with `-y key` (or unsigned) on `script`
/// against `dns`: whether it reported success, and its output.
pub(crate) async fn send(
    program: &str,
    dns: std::net::SocketAddr,
    key: Option<&str>,
    script: &str,
) -> (bool, String) {
    let binary = find_program(program).unwrap_or_else(|| {
        panic!(
            "{program} is not installed: the UPDATE tests drive weir with it \
             (Debian: bind9-dnsutils has nsupdate, knot-dnsutils has knsupdate; .ci/test installs both)"
        )
    });
    let mut command = tokio::process::Command::new(binary);
    if let Some(key) = key {
        command.args(["-y", key]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let full = format!(
        "server {} {}\nzone example.com.\n{script}\nsend\n",
        dns.ip(),
        dns.port()
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(full.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the update client finished within 20 s")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn answers(server: &Server, name: &str, rtype: RecordType) -> Vec<String> {
    lines(&server.udp(&query(name, rtype)).await.answers)
}

async fn serial(server: &Server) -> u32 {
    let soa = answers(server, "example.com.", RecordType::SOA).await;
    soa[0].split_whitespace().nth(4).unwrap().parse().unwrap()
}

async fn audit(server: &Server) -> Vec<Value> {
    let (status, body) = http(server.admin(), Method::GET, "/v1/audit", &[], None).await;
    assert_eq!(status, 200, "{body}");
    body["records"].as_array().unwrap().clone()
}

const CHALLENGE: &str = "_acme-challenge.www.example.com.";

#[tokio::test]
async fn nsupdate_and_knsupdate_add_and_delete_a_challenge_record() {
    let keys = keys();
    let server = server(&keys).await;
    let before = serial(&server).await;

    let (ok, out) = send(
        "nsupdate",
        server.addr,
        Some(&keys.acme),
        &format!("update add {CHALLENGE} 60 TXT \"token-1\""),
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(
        answers(&server, CHALLENGE, RecordType::TXT).await,
        [format!("{CHALLENGE} TXT token-1")]
    );
    assert_eq!(serial(&server).await, before + 1);
    let records = audit(&server).await;
    assert_eq!(records[0]["actor"], "key acme-key.");
    assert_eq!(records[0]["action"], "update");
    assert_eq!(records[0]["subject"], "zone example.com.");
    assert_eq!(
        records[0]["after"][0],
        format!("{CHALLENGE} 60 IN TXT \"token-1\"")
    );
    assert_eq!(records[0]["source"], "127.0.0.1");

    // knsupdate (Knot's client) deletes it, over TCP this time.
    let (ok, out) = send(
        "knsupdate",
        server.addr,
        Some(&keys.acme),
        &format!("update delete {CHALLENGE} TXT \"token-1\""),
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        answers(&server, CHALLENGE, RecordType::TXT)
            .await
            .is_empty()
    );
    assert_eq!(serial(&server).await, before + 2);
    // The zone apex's own challenge name is granted too.
    let apex = "_acme-challenge.example.com.";
    let (ok, out) = send(
        "knsupdate",
        server.addr,
        Some(&keys.acme),
        &format!("update add {apex} 60 TXT \"t\""),
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(answers(&server, apex, RecordType::TXT).await.len(), 1);
    let metrics = server.metrics();
    assert!(
        metrics.contains("weir_dns_updates_total{rcode=\"NOERROR\"} 3"),
        "{metrics}"
    );
    server.stop().await;
}

/// A raw UPDATE with EDNS: the refusal's extended DNS error text reaches the client.
fn raw_update_with_edns() -> Vec<u8> {
    let mut m = vec![0xab, 0xcd, 0x28, 0x00, 0, 1, 0, 0, 0, 1, 0, 1];
    m.extend_from_slice(b"\x07example\x03com\x00\x00\x06\x00\x01");
    m.extend_from_slice(b"\x01x\xc0\x0c\x00\x10\x00\x01\x00\x00\x00\x3c\x00\x02\x01t");
    m.extend_from_slice(b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00");
    m
}

#[tokio::test]
async fn bad_updates_get_their_rcode_and_change_nothing() {
    let keys = keys();
    let server = server(&keys).await;
    let before = serial(&server).await;
    let audited = audit(&server).await.len();
    let expect = |out: &str, want: &str| assert!(out.contains(want), "want {want} in {out}");

    // Unsigned: NOTAUTH.
    let (ok, out) = send(
        "nsupdate",
        server.addr,
        None,
        &format!("update add {CHALLENGE} 60 TXT \"x\""),
    )
    .await;
    assert!(!ok);
    expect(&out, "NOTAUTH");
    // A wrong secret (BADSIG), a key weir does not know (BADKEY).
    let (_, wrong) = keygen("acme-key");
    let (ok, out) = send(
        "nsupdate",
        server.addr,
        Some(&wrong),
        &format!("update add {CHALLENGE} 60 TXT \"x\""),
    )
    .await;
    assert!(!ok);
    expect(&out, "BADSIG");
    let (_, stranger) = keygen("stranger");
    let (ok, out) = send(
        "nsupdate",
        server.addr,
        Some(&stranger),
        &format!("update add {CHALLENGE} 60 TXT \"x\""),
    )
    .await;
    assert!(!ok);
    expect(&out, "BADKEY");
    // Not granted: an A record, or TXT elsewhere.
    for script in [
        format!("update add {CHALLENGE} 60 CAA 0 issue \"ca.example.net\""),
        "update add www.example.com. 60 TXT \"x\"".to_string(),
    ] {
        let (ok, out) = send("nsupdate", server.addr, Some(&keys.acme), &script).await;
        assert!(!ok, "{script}");
        expect(&out, "REFUSED");
    }
    // A zone weir does not serve.
    let (ok, out) = send(
        "nsupdate",
        server.addr,
        Some(&keys.ops),
        "zone example.org.\nupdate add x.example.org. 60 TXT \"x\"",
    )
    .await;
    assert!(!ok);
    expect(&out, "NOTAUTH");
    // Prerequisites that fail: the RFC's RCODEs.
    for (script, want) in [
        (
            "prereq yxrrset www.example.com. TXT\nupdate add www.example.com. 60 TXT \"x\"",
            "NXRRSET",
        ),
        (
            "prereq nxrrset www.example.com. A\nupdate add www.example.com. 60 TXT \"x\"",
            "YXRRSET",
        ),
        (
            "prereq yxdomain nowhere.example.com.\nupdate add www.example.com. 60 TXT \"x\"",
            "NXDOMAIN",
        ),
        (
            "prereq nxdomain www.example.com.\nupdate add www.example.com. 60 TXT \"x\"",
            "YXDOMAIN",
        ),
    ] {
        let (ok, out) = send("nsupdate", server.addr, Some(&keys.ops), script).await;
        assert!(!ok, "{script}");
        expect(&out, want);
    }
    // Updates that would break the zone, or touch a managed name's addresses: REFUSED.
    for script in [
        "update delete example.com. NS",
        "update delete example.com. SOA",
        "update add www.example.com. 60 CNAME web.example.com.",
        "update add web.example.com. 60 TXT \"beside a CNAME\"",
        "update add app.example.com. 60 A 192.0.2.99",
        "update add x.sub.example.com. 60 TXT \"below a delegation\"",
    ] {
        let (ok, out) = send("nsupdate", server.addr, Some(&keys.ops), script).await;
        assert!(!ok, "{script}");
        expect(&out, "REFUSED");
    }
    // The refusal's reason travels as an extended DNS error to a client with EDNS.
    let reply = server
        .udp_raw(&raw_update_with_edns())
        .await
        .expect("an answer");
    assert_eq!(reply[3] & 0xF, 9, "NOTAUTH");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("must be signed with a TSIG key"), "{text}");

    // Nothing changed.
    assert_eq!(serial(&server).await, before);
    assert_eq!(audit(&server).await.len(), audited);
    assert!(
        answers(&server, CHALLENGE, RecordType::TXT)
            .await
            .is_empty()
    );
    assert_eq!(
        answers(&server, "www.example.com.", RecordType::A).await,
        ["www.example.com. A 192.0.2.80"]
    );
    let r = server.udp(&query("example.com.", RecordType::NS)).await;
    assert_eq!((rcode(&r), r.answers.len()), (ResponseCode::NoError, 2));
    server.stop().await;
}

/// Writes a config for a real `weir serve` in `dir`: example.com with the grants, its store
/// in `dir/state`.
fn write_config(dir: &Path, keys: &Keys) {
    std::fs::write(dir.join("example.com.zone"), ZONE).unwrap();
    for (name, text) in &keys.files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let files: Vec<String> = keys.files.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let config = format!(
        "[log]\nformat = \"json\"\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n[tsig]\nkey_files = [{}]\n[[zone]]\norigin = \"example.com.\"\nfile = \"example.com.zone\"\n{GRANTS}",
        dir.join("state").display(),
        files.join(", ")
    );
    std::fs::write(dir.join("weir.toml"), config).unwrap();
}

async fn ask(dns: std::net::SocketAddr, name: &str, rtype: RecordType) -> Vec<String> {
    let msg = query(name, rtype).to_vec().unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&msg, dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    lines(
        &hickory_proto::op::Message::from_vec(&buf[..n])
            .unwrap()
            .answers,
    )
}

#[tokio::test]
async fn an_update_survives_kill_9_and_a_reload_of_an_edited_zone_file() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &keys);
    let config = dir.path().join("weir.toml");
    let weir = WeirProcess::start(&config, &[]).unwrap();
    let record = format!("{CHALLENGE} TXT kept");
    let (ok, out) = send(
        "nsupdate",
        weir.dns,
        Some(&keys.acme),
        &format!("update add {CHALLENGE} 60 TXT \"kept\""),
    )
    .await;
    assert!(ok, "{out}");
    weir.signal(libc::SIGKILL);
    let _ = weir.wait();

    let weir = WeirProcess::start(&config, &[]).unwrap();
    assert_eq!(
        ask(weir.dns, CHALLENGE, RecordType::TXT).await,
        std::slice::from_ref(&record)
    );
    let soa = ask(weir.dns, "example.com.", RecordType::SOA).await;
    assert!(soa[0].contains(" 2026112302 "), "{soa:?}");

    // The operator edits the file (a new record, a newer serial) and reloads: both are served.
    let edited = ZONE.replace("2026112301", "2026112310") + "late A 192.0.2.177\n";
    std::fs::write(dir.path().join("example.com.zone"), edited).unwrap();
    let admin = weir.admin.unwrap();
    let (status, body) = http(admin, Method::POST, "/v1/reload", &[], None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ask(weir.dns, CHALLENGE, RecordType::TXT).await, [record]);
    assert_eq!(
        ask(weir.dns, "late.example.com.", RecordType::A)
            .await
            .len(),
        1
    );
    let soa = ask(weir.dns, "example.com.", RecordType::SOA).await;
    assert!(
        soa[0].contains(" 2026112310 "),
        "the file's newer serial: {soa:?}"
    );
    // A file that now clashes with the update (a CNAME where it added TXT) fails the reload
    // and names the way out; the old data keeps serving.
    let clash = ZONE.replace("2026112301", "2026112311") + "_acme-challenge.www CNAME www\n";
    std::fs::write(dir.path().join("example.com.zone"), clash).unwrap();
    let (status, body) = http(admin, Method::POST, "/v1/reload", &[], None).await;
    assert_eq!(status, 422, "{body}");
    let problems = body.to_string();
    assert!(
        problems.contains("stored UPDATE changes") && problems.contains("--discard"),
        "{problems}"
    );
    assert_eq!(
        ask(weir.dns, "late.example.com.", RecordType::A)
            .await
            .len(),
        1
    );
    drop(weir);
}

/// `weir ctl updates` shows what UPDATE changed; `weir ctl records` prints the zone as served,
/// which, saved as the zone file, loads; `--discard` then drops the layer without changing
/// what is served. Discarding unfolded changes serves the file again, one serial later.
#[tokio::test]
async fn ctl_shows_updates_folds_them_into_the_file_and_discards_them() {
    use crate::ctl::{ok, row};
    let keys = keys();
    let server = server(&keys).await;
    let script =
        format!("update add {CHALLENGE} 60 TXT \"token\"\nupdate delete info.example.com. TXT");
    let (sent, out) = send("nsupdate", server.addr, Some(&keys.ops), &script).await;
    assert!(sent, "{out}");

    let shown = ok(&server, &["updates", "example.com."]).await;
    assert!(
        shown.starts_with("zone example.com.: serial 2026112302\n"),
        "{shown}"
    );
    assert_eq!(
        row(&shown, &[CHALLENGE]).unwrap(),
        [CHALLENGE, "TXT", "60", "\"token\""],
        "{shown}"
    );
    assert!(
        row(&shown, &["info.example.com.", "TXT"])
            .unwrap()
            .contains(&"(deleted:".to_string()),
        "{shown}"
    );
    assert!(
        shown.contains("journal: 1 changes, serial 2026112301 to 2026112302"),
        "{shown}"
    );

    // Fold: the served zone, saved as the file, reloads cleanly and serves the same.
    let text = ok(&server, &["records", "example.com."]).await;
    assert!(
        text.contains(&format!("{CHALLENGE} 60 IN TXT \"token\"")),
        "{text}"
    );
    assert!(!text.contains("info.example.com."), "{text}");
    std::fs::write(server.zone_path(0), &text).unwrap();
    let (status, body) = server.reload().await;
    assert_eq!(status, 200, "{body}");
    let line = ok(
        &server,
        &["updates", "example.com.", "--discard", "--reason", "folded"],
    )
    .await;
    assert!(
        line.starts_with("example.com.: UPDATE changes discarded (generation "),
        "{line}"
    );
    assert!(
        ok(&server, &["updates", "example.com."])
            .await
            .contains("no UPDATE changes")
    );
    assert_eq!(serial(&server).await, 2026112302, "nothing served changed");
    assert_eq!(answers(&server, CHALLENGE, RecordType::TXT).await.len(), 1);
    let records = audit(&server).await;
    assert_eq!(records[0]["action"], "discard-updates");
    assert_eq!(records[0]["reason"], "folded");

    // Discarding changes the file does not hold: the file's data again, a new serial.
    let (sent, out) = send(
        "nsupdate",
        server.addr,
        Some(&keys.acme),
        &format!("update delete {CHALLENGE} TXT"),
    )
    .await;
    assert!(sent, "{out}");
    assert!(
        answers(&server, CHALLENGE, RecordType::TXT)
            .await
            .is_empty()
    );
    ok(&server, &["updates", "example.com.", "--discard"]).await;
    assert_eq!(answers(&server, CHALLENGE, RecordType::TXT).await.len(), 1);
    assert_eq!(serial(&server).await, 2026112304);
    // Nothing left to discard: refused (exit 1), nothing changes.
    let out = crate::ctl::ctl(&server, &["updates", "example.com.", "--discard"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("has no UPDATE changes"), "{out:?}");
    server.stop().await;
}
