//! TSIG (RFC 8945) against real tools: the key file is the one `tsig-keygen` (bind9-utils)
//! writes; `kdig -y` (knot-dnsutils) signs queries and transfers over UDP and TCP and verifies
//! weir's signed answers (it reports a reply whose TSIG fails); wrong secrets and unknown keys
//! get NOTAUTH with BADSIG and BADKEY; a transfer is allowed by a `key:` entry from a source no
//! prefix lists, and refused unsigned or from outside a `key:NAME@PREFIX` prefix; NSD
//! (`/usr/sbin/nsd`) as a secondary signs its SOA queries and transfers with the key, checks
//! weir's signatures and serves the zone. A missing tool fails the test with the reason.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::{Server, ZONE, find_program, query, rcode};
use crate::transfers::{BIG, Nsd, big_zone, counts, kdig_at, records};

/// A key made by the real `tsig-keygen`: the file's text and the secret in it.
pub(crate) fn keygen(name: &str) -> (String, String) {
    let program = find_program("tsig-keygen").unwrap_or_else(|| {
        panic!(
            "tsig-keygen is not installed: the TSIG tests use the key file it writes \
             (Debian: apt-get install bind9-utils)"
        )
    });
    let out = std::process::Command::new(program)
        .args(["-a", "hmac-sha256", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "tsig-keygen failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .split("secret \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no secret in tsig-keygen's output:\n{text}"))
        .to_string();
    (text, secret)
}

/// weir with the `tsig-keygen` key `acme-key`: big.test (several messages) transferable by
/// the key from anywhere, example.com by the key from 127.0.0.2 only; no prefix lists
/// 127.0.0.1.
async fn server() -> (Server, String) {
    let (file, secret) = keygen("acme-key");
    let server = Server::builder()
        .key_file("acme-key.conf", &file)
        .zone("example.com.", ZONE)
        .zone_keys("allow_transfer = [\"key:acme-key@127.0.0.2/32\", \"192.0.2.0/24\"]")
        .zone("big.test.", &big_zone())
        .zone_keys("allow_transfer = [\"key:acme-key\"]")
        .start()
        .await;
    (server, secret)
}

async fn kdig(server: &Server, args: &[&str]) -> String {
    kdig_at(server.addr, args).await
}

fn key_arg(secret: &str) -> String {
    format!("hmac-sha256:acme-key:{secret}")
}

/// kdig printed an answer whose TSIG it verified: NOERROR, a TSIG record of our key, and no
/// complaint about the reply's signature.
fn assert_signed_ok(out: &str) {
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains(";; TSIG PSEUDOSECTION:"), "{out}");
    assert!(out.contains("acme-key."), "{out}");
    assert_verified(out);
}

/// kdig verified every signed message it got: it warns "reply verification ... (failed to
/// verify TSIG)" otherwise.
fn assert_verified(out: &str) {
    for bad in [
        "WARNING", ";; ERROR", "BADSIG", "BADKEY", "BADTIME", "failed",
    ] {
        assert!(!out.contains(bad), "{bad} in {out:.3000}");
    }
}

#[tokio::test]
async fn signed_queries_are_answered_signed_over_udp_and_tcp() {
    let (server, secret) = server().await;
    let key = key_arg(&secret);
    for transport in ["+notcp", "+tcp"] {
        let out = kdig(&server, &["-y", &key, transport, "example.com.", "SOA"]).await;
        assert_signed_ok(&out);
        assert!(out.contains("IN\tSOA") || out.contains("IN SOA"), "{out}");
        let out = kdig(&server, &["-y", &key, transport, "www.example.com.", "A"]).await;
        assert_signed_ok(&out);
        assert!(out.contains("192.0.2.80"), "{out}");
        let out = kdig(
            &server,
            &["-y", &key, transport, "nothing.example.com.", "A"],
        )
        .await;
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        assert_verified(&out);
    }
    // A signed IXFR over UDP for a zone only the key may transfer: the SOA, signed.
    let out = kdig(&server, &["-y", &key, "+notcp", "big.test.", "IXFR=1"]).await;
    assert_verified(&out);
    let got = records(&out);
    assert_eq!(got.len(), 2, "the SOA and the TSIG record: {out}");
    assert!(
        got[0].contains(" SOA ") && got[1].starts_with("acme-key. 0 ANY TSIG hmac-sha256."),
        "{out}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_is_badsig_and_an_unknown_key_badkey() {
    let (server, _) = server().await;
    let (_, other_secret) = keygen("acme-key");
    for transport in ["+notcp", "+tcp"] {
        let wrong = key_arg(&other_secret);
        let out = kdig(&server, &["-y", &wrong, transport, "www.example.com.", "A"]).await;
        // kdig shows the TSIG error as the status; the header's NOTAUTH is checked below.
        assert!(out.contains("status: BADSIG"), "{out}");
        assert!(
            out.contains("TSIG\thmac-sha256.") && out.contains(" 0 "),
            "{out}"
        );
        assert!(!out.contains("192.0.2.80"), "no data: {out}");
        let unknown = format!("hmac-sha256:nobody:{other_secret}");
        let out = kdig(
            &server,
            &["-y", &unknown, transport, "www.example.com.", "A"],
        )
        .await;
        assert!(out.contains("status: BADKEY"), "{out}");
        assert!(!out.contains("192.0.2.80"), "no data: {out}");
    }
    // A transfer with a bad signature: NOTAUTH, no records.
    let out = kdig(
        &server,
        &["-y", &key_arg(&other_secret), "example.com.", "AXFR"],
    )
    .await;
    assert!(out.contains("BADSIG"), "{out}");
    assert!(records(&out).is_empty(), "{out}");
    // The header's RCODE is NOTAUTH (9), with no data, over both transports.
    let wrong = weir::tsig::Key::new(
        weir::model::Name::parse("acme-key").unwrap(),
        weir::tsig::Algorithm::HmacSha256,
        &[7; 32],
    );
    let mut packet = query("www.example.com.", RecordType::A).to_vec().unwrap();
    weir::tsig::sign_request(&mut packet, 0, &wrong, weir::clock::wall_secs());
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    for reply in [
        server.udp_raw(&packet).await.unwrap(),
        crate::support::tcp_exchange(&mut stream, &packet)
            .await
            .unwrap(),
    ] {
        let (_, flags, counts) = crate::support::header(&reply);
        assert_eq!(flags & 0xF, 9, "NOTAUTH");
        assert_eq!(
            counts,
            [1, 0, 0, 1],
            "the question and the TSIG record only"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_signed_transfer_is_allowed_by_its_key_and_every_message_signed() {
    let (server, secret) = server().await;
    let key = key_arg(&secret);
    // big.test: key:acme-key, from anywhere.
    let out = kdig(&server, &["-y", &key, "big.test.", "AXFR"]).await;
    let (messages, total) = counts(&out);
    assert!(messages > 1, "{messages} messages: {out:.500}");
    assert_eq!(total, BIG + 4, "{out:.500}");
    assert_verified(&out);
    // The same request unsigned: REFUSED, no records.
    let out = kdig(&server, &["big.test.", "AXFR"]).await;
    assert!(out.contains("REFUSED"), "{out}");
    assert!(records(&out).is_empty(), "{out}");
    // example.com: key:acme-key@127.0.0.2/32. From 127.0.0.2 signed: the zone; from
    // 127.0.0.1 signed, or from 127.0.0.2 unsigned: REFUSED.
    let out = kdig(
        &server,
        &["-y", &key, "-b", "127.0.0.2", "example.com.", "AXFR"],
    )
    .await;
    assert!(counts(&out).1 > 2, "{out}");
    assert_verified(&out);
    let out = kdig(&server, &["-y", &key, "example.com.", "AXFR"]).await;
    assert!(out.contains("REFUSED"), "{out}");
    assert!(records(&out).is_empty(), "{out}");
    let out = kdig(&server, &["-b", "127.0.0.2", "example.com.", "AXFR"]).await;
    assert!(out.contains("REFUSED"), "{out}");
    assert!(records(&out).is_empty(), "{out}");
    server.stop().await;
}

#[tokio::test]
async fn nsd_transfers_with_the_key_and_serves_the_zone() {
    let (server, secret) = server().await;
    // big.test takes several messages: NSD checks the TSIG of each (RFC 8945 5.3.1 chaining).
    let nsd = Nsd::start_keyed(
        "big.test",
        server.addr,
        Some(("acme-key", "hmac-sha256", &secret)),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = nsd.ask("t4999.big.test.", RecordType::TXT).await;
        if last
            .as_ref()
            .is_some_and(|m| rcode(m) == ResponseCode::NoError && !m.answers.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "NSD did not serve big.test from weir with the key within 20 s:\n{}",
            nsd.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        nsd.answers("t0.big.test.", RecordType::TXT).await,
        vec![
            "t0.big.test. 300 IN TXT \"record 0 of a zone large enough for several messages\""
                .to_string()
        ]
    );
    // NSD's log names the key it used and no TSIG failure.
    let log = nsd.log();
    assert!(
        !log.contains("bad tsig") && !log.contains("BADSIG"),
        "{log}"
    );
    drop(nsd);
    server.stop().await;
}

#[tokio::test]
async fn a_reload_reads_the_key_files_again() {
    let (server, old_secret) = server().await;
    let (file, new_secret) = keygen("acme-key");
    let key_file = server.config_path().with_file_name("acme-key.conf");
    std::fs::write(&key_file, &file).unwrap();
    let (status, reply) = server.reload().await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["restart_required"], serde_json::json!([]), "{reply}");
    let out = kdig(
        &server,
        &["-y", &key_arg(&new_secret), "www.example.com.", "A"],
    )
    .await;
    assert_signed_ok(&out);
    let out = kdig(
        &server,
        &["-y", &key_arg(&old_secret), "www.example.com.", "A"],
    )
    .await;
    assert!(out.contains("status: BADSIG"), "{out}");
    // A key file that no longer parses fails the reload; the keys before keep working.
    std::fs::write(&key_file, "key \"acme-key\" {\n algorithm hmac-md5;\n};\n").unwrap();
    let (status, reply) = server.reload().await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply.to_string().contains("acme-key.conf:2"), "{reply}");
    let out = kdig(
        &server,
        &["-y", &key_arg(&new_secret), "www.example.com.", "A"],
    )
    .await;
    assert_signed_ok(&out);
    server.stop().await;
}

/// `notify = ["key:NAME@ADDR"]`: the NOTIFY is signed, so NSD, which takes NOTIFY for the zone
/// only with the key (`allow-notify: ... acme-key`), fetches the new serial at once (the
/// zone's refresh is 7200 s). Unsigned, NSD ignores it and the test times out (checked).
#[tokio::test]
async fn a_signed_notify_reaches_a_secondary_that_requires_the_key() {
    let (file, secret) = keygen("acme-key");
    let port = crate::support::free_port();
    let server = Server::builder()
        .key_file("acme-key.conf", &file)
        .zone("example.com.", ZONE)
        .zone_keys(&format!(
            "allow_transfer = [\"key:acme-key\"]\nnotify = [\"key:acme-key@127.0.0.1:{port}\"]"
        ))
        .start()
        .await;
    let key = Some(("acme-key", "hmac-sha256", secret.as_str()));
    let nsd = Nsd::start_on(port, "example.com", server.addr, key);
    crate::transfers::a_new_serial_reaches(&server, &nsd).await;
    let acked = "weir_notify_total{result=\"acked\",zone=\"example.com.\"}";
    let metrics = server.metrics();
    assert!(metrics.contains(acked), "{metrics}");
    assert!(
        !metrics.contains("weir_notify_total{result=\"failed\""),
        "{metrics}"
    );
    drop(nsd);
    server.stop().await;
}
