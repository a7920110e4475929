//! IXFR from the UPDATE journal (RFC 1995) against real tools: `nsupdate -y` (bind9-dnsutils)
//! changes the zone, `kdig IXFR=serial` (knot-dnsutils) gets the differences from its serial,
//! the SOA alone when up to date and the whole zone for a serial the journal does not reach
//! (never served, trimmed after 100 updates, before a reload that brought a newer serial);
//! NSD (`/usr/sbin/nsd`) as a real secondary is NOTIFYed of an update, transfers it by IXFR
//! (it stores what it received and hands it on as IXFR itself) and serves it. A missing tool
//! fails the test with the reason, never skips it.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::{Server, ZONE, find_program, free_port};
use crate::transfers::{Nsd, POOLS, SOA, assert_whole_zone_with, kdig_at, nsd_serves};
use crate::tsig::keygen;

/// The `[[zone.update]]` grant: the key may change TXT records at `_acme-challenge` only.
const GRANT: &str = "[[zone.update]]\nkey = \"acme-key\"\nnames = [\"_acme-challenge\", \"_acme-challenge.**\"]\ntypes = [\"TXT\"]";

/// `SOA` at another serial.
fn soa(serial: u32) -> String {
    SOA.replace("2026112301", &serial.to_string())
}

/// Runs the real `nsupdate`, signed with `acme-key`, against `server` for example.com:
/// `commands` then `send`. Fails the test when nsupdate reports a failure.
async fn nsupdate(server: &Server, secret: &str, commands: &str) {
    use tokio::io::AsyncWriteExt;
    let program = find_program("nsupdate").unwrap_or_else(|| {
        panic!(
            "nsupdate is not installed: the IXFR tests change the zone with it \
             (Debian: apt-get install bind9-dnsutils)"
        )
    });
    let script = format!(
        "server {} {}\nzone example.com.\n{commands}\nsend\n",
        server.addr.ip(),
        server.addr.port()
    );
    let mut child = tokio::process::Command::new(program)
        .args(["-y", &format!("hmac-sha256:acme-key:{secret}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("nsupdate did not finish within 30 s")
        .unwrap();
    assert!(
        out.status.success(),
        "nsupdate failed on\n{script}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two updates of the tests: add a TXT (serial 02), then add another and delete the first
/// (serial 03).
async fn two_updates(server: &Server, secret: &str) {
    nsupdate(
        server,
        secret,
        "update add _acme-challenge.example.com. 60 TXT \"one\"",
    )
    .await;
    nsupdate(
        server,
        secret,
        "update add _acme-challenge.example.com. 60 TXT \"two\"\nupdate delete _acme-challenge.example.com. 60 TXT \"one\"",
    )
    .await;
}

/// The records in kdig's output (`transfers::records`) but the TSIG records of signed ones.
fn records(output: &str) -> Vec<String> {
    let all = crate::transfers::records(output);
    all.into_iter().filter(|l| !l.contains(" TSIG ")).collect()
}

const ONE: &str = "_acme-challenge.example.com. 60 IN TXT \"one\"";
const TWO: &str = "_acme-challenge.example.com. 60 IN TXT \"two\"";

/// Transfers by the key only (`key:acme-key`), asked signed by kdig: from the serial before
/// both updates, the two differences in order; from the current serial, the SOA alone; from
/// a serial the journal never held, the whole zone (with the managed name's addresses, which
/// the differences never carry); unsigned, REFUSED.
#[tokio::test]
async fn ixfr_from_a_journaled_serial_gets_the_differences() {
    let (file, secret) = keygen("acme-key");
    let server = Server::builder()
        .key_file("acme-key.conf", &file)
        .zone("example.com.", ZONE)
        .zone_keys(&format!("allow_transfer = [\"key:acme-key\"]\n{GRANT}"))
        .pools(POOLS)
        .start()
        .await;
    two_updates(&server, &secret).await;
    let key = format!("hmac-sha256:acme-key:{secret}");
    let addr = server.addr;
    let kdig = |args: &'static [&'static str]| {
        let key = key.clone();
        async move {
            let mut all = vec!["-y", key.as_str()];
            all.extend(args);
            kdig_at(addr, &all).await
        }
    };

    let out = kdig(&["example.com.", "IXFR=2026112301"]).await;
    // kdig verifies every TSIG (a bad one is a WARNING), and sees one message per answer.
    assert!(
        !out.contains("WARNING") && out.contains("(1 messages,"),
        "{out}"
    );
    let signatures = crate::transfers::records(&out).len() - records(&out).len();
    assert_eq!(signatures, 1, "{out}");
    let want = [
        soa(2026112303),
        soa(2026112301),
        soa(2026112302),
        ONE.to_string(),
        soa(2026112302),
        ONE.to_string(),
        soa(2026112303),
        TWO.to_string(),
        soa(2026112303),
    ];
    assert_eq!(records(&out), want, "{out}");

    let out = kdig(&["example.com.", "IXFR=2026112302"]).await;
    assert_eq!(records(&out)[..1], want[..1], "{out}");
    assert_eq!(records(&out)[1..], want[4..], "{out}");

    let out = kdig(&["example.com.", "IXFR=2026112303"]).await;
    assert_eq!(records(&out), [soa(2026112303)], "{out}");

    // 2026112300 was never served: not in the journal.
    let out = kdig(&["example.com.", "IXFR=2026112300"]).await;
    assert_whole_zone_with(&out, &soa(2026112303), &[TWO]);
    let out = kdig(&["example.com.", "AXFR"]).await;
    assert_whole_zone_with(&out, &soa(2026112303), &[TWO]);

    let out = kdig_at(server.addr, &["example.com.", "IXFR=2026112301"]).await;
    assert!(out.contains("REFUSED"), "{out}");
    assert!(records(&out).is_empty(), "{out}");
    server.stop().await;
}

/// NSD as a real secondary: it transfers the zone (AXFR), is NOTIFYed of an update and gets
/// it by IXFR within seconds. It keeps the IXFR it received (`store-ixfr`, and no
/// `create-ixfr`: it makes none from an AXFR) and hands it on: kdig's IXFR to NSD gets weir's
/// differences back, which it could not had weir answered in AXFR form.
#[tokio::test]
async fn nsd_gets_an_update_by_ixfr() {
    let (file, secret) = keygen("acme-key");
    let port = free_port();
    let server = Server::builder()
        .key_file("acme-key.conf", &file)
        .zone("example.com.", ZONE)
        .zone_keys(&format!(
            "allow_transfer = [\"127.0.0.1/32\"]\nnotify = [\"127.0.0.1:{port}\"]\n{GRANT}"
        ))
        .start()
        .await;
    let more = "    store-ixfr: yes\n    create-ixfr: no\n    provide-xfr: 127.0.0.1 NOKEY\n";
    let nsd = Nsd::start_with(port, "example.com", server.addr, None, more);
    let first = soa(2026112301);
    nsd_serves(
        &nsd,
        "example.com.",
        RecordType::SOA,
        &[&first],
        Duration::from_secs(20),
    )
    .await;

    nsupdate(
        &server,
        &secret,
        "update add _acme-challenge.example.com. 60 TXT \"one\"",
    )
    .await;
    nsd_serves(
        &nsd,
        "_acme-challenge.example.com.",
        RecordType::TXT,
        &[ONE],
        Duration::from_secs(10),
    )
    .await;
    let second = soa(2026112302);
    nsd_serves(
        &nsd,
        "example.com.",
        RecordType::SOA,
        &[&second],
        Duration::from_secs(1),
    )
    .await;

    let out = kdig_at(nsd.addr(), &["example.com.", "IXFR=2026112301"]).await;
    assert_eq!(
        records(&out),
        [
            second.clone(),
            first,
            second.clone(),
            ONE.to_string(),
            second
        ],
        "NSD's IXFR (what it received from weir):\n{out}\n{}",
        nsd.log()
    );
    drop(nsd);
    server.stop().await;
}

/// The journal's limits with the real system: after 101 updates (one nsupdate session, 101
/// `send`s) it keeps the last 100, so an IXFR from the first serial gets the whole zone and
/// one from the second the 100 differences; a reload of a zone file with a newer serial breaks
/// the chain (the whole zone from any older serial), and the next update starts a new one.
#[tokio::test]
async fn ixfr_past_the_journal_or_across_a_reload_gets_the_whole_zone() {
    let (file, secret) = keygen("acme-key");
    let server = Server::builder()
        .key_file("acme-key.conf", &file)
        .zone("example.com.", ZONE)
        .zone_keys(&format!("allow_transfer = [\"127.0.0.1/32\"]\n{GRANT}"))
        .pools(POOLS)
        .start()
        .await;
    let many: Vec<String> = (0..101)
        .map(|i| format!("update add _acme-challenge.example.com. 60 TXT \"n{i}\""))
        .collect();
    nsupdate(&server, &secret, &many.join("\nsend\n")).await;
    let kdig = |args: &'static [&'static str]| kdig_at(server.addr, args);
    // 2026112301 + 101.
    let current = soa(2026112402);
    let out = kdig(&["example.com.", "SOA", "+short"]).await;
    assert!(out.contains(" 2026112402 "), "{out}");
    let txts: Vec<String> = (0..101)
        .map(|i| format!("_acme-challenge.example.com. 60 IN TXT \"n{i}\""))
        .collect();
    let txts: Vec<&str> = txts.iter().map(String::as_str).collect();

    let out = kdig(&["example.com.", "IXFR=2026112301"]).await;
    assert_whole_zone_with(&out, &current, &txts);
    let out = kdig(&["example.com.", "IXFR=2026112302"]).await;
    let got = records(&out);
    // The current SOA, then per update the old SOA, the new SOA and the added TXT; the SOA.
    assert_eq!(got.len(), 1 + 100 * 3 + 1, "{out:.2000}");
    assert_eq!(got[1], soa(2026112302));
    assert_eq!(got[2], soa(2026112303));
    assert_eq!(got[3], txts[1]);
    assert_eq!(got[got.len() - 2], txts[100]);
    assert!(
        got[0] == current && got[got.len() - 1] == current,
        "{out:.2000}"
    );

    // A new file serial, by reload: no chain reaches it.
    let edited = ZONE.replace("2026112301", "2026112500");
    std::fs::write(server.zone_path(0), edited).unwrap();
    let (status, reply) = server.reload().await;
    assert_eq!(status, 200, "{reply}");
    let reloaded = soa(2026112500);
    let out = kdig(&["example.com.", "IXFR=2026112402"]).await;
    assert_whole_zone_with(&out, &reloaded, &txts);

    nsupdate(
        &server,
        &secret,
        "update delete _acme-challenge.example.com. TXT",
    )
    .await;
    let last = soa(2026112501);
    let out = kdig(&["example.com.", "IXFR=2026112500"]).await;
    let got = records(&out);
    assert_eq!(got.len(), 2 + 101 + 2, "{out:.3000}");
    assert_eq!(got[..2], [last.clone(), reloaded], "{out:.3000}");
    assert_eq!(got[103..], [last.clone(), last.clone()], "{out:.3000}");
    let mut removed = got[2..103].to_vec();
    removed.sort();
    let mut want: Vec<String> = txts.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(removed, want);
    let out = kdig(&["example.com.", "IXFR=2026112402"]).await;
    assert_whole_zone_with(&out, &last, &[]);
    server.stop().await;
}
