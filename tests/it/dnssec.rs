//! DNSSEC (issue 17) proven with real validators: `delv`, unbound and BIND as validating
//! resolvers (`validating`), each trusting the DS of the zone's key, against a real weir
//! serving a signed zone over loopback sockets: static data of every kind, compact denial,
//! wildcards, an insecure delegation, managed names (every endpoint, several draws, after a
//! weight change and after a real health flip), a broken chain (another key's DS), DO gating,
//! truncation to TCP, keys from BIND's `dnssec-keygen`, re-signing before expiry, and a
//! zone-signing key rollover through every phase with a resolver caching across them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;
use reqwest::Method;
use serde_json::Value;

use crate::backends::Backend;
use crate::support::{Server, answered, find_program, http, query, with_edns};
use crate::validating::{Anchor, DelvStatus, Named, Unbound, delv};
use weir::dnssec::{Algorithm, FLAGS_KSK, FLAGS_ZSK, SigningKey, ds_lines, format_time, write_key};
use weir::model::Name;

const ZONE: &str = "$ORIGIN example.com.
$TTL 2
@ SOA ns hostmaster 1 3600 600 86400 2
@ NS ns
ns A 127.0.0.1
www A 192.0.2.1
@ MX 10 mail
mail A 192.0.2.25
@ TXT \"v=spf1 -all\"
alias CNAME alias2
alias2 CNAME www
*.w A 192.0.2.99
a.b A 192.0.2.7
sub NS ns.sub
ns.sub A 192.0.2.53
secure NS ns.secure
ns.secure A 192.0.2.54
secure DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
big TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"
big TXT \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"
big TXT \"ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"
big TXT \"ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\"
";

/// What a validator must conclude for a name and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Data, validated.
    Data,
    /// No data (NODATA, or a name that does not exist: weir's compact answers are NODATA to
    /// a resolver, RFC 9824), validated.
    Nothing,
}

/// Every kind of answer the issue lists, for the zone above.
const CASES: &[(&str, RecordType, Want)] = &[
    ("www.example.com.", RecordType::A, Want::Data),
    ("example.com.", RecordType::MX, Want::Data),
    ("example.com.", RecordType::TXT, Want::Data),
    ("alias.example.com.", RecordType::A, Want::Data),
    ("x.w.example.com.", RecordType::A, Want::Data),
    ("deep.er.w.example.com.", RecordType::A, Want::Data),
    ("nope.example.com.", RecordType::A, Want::Nothing),
    ("www.example.com.", RecordType::TXT, Want::Nothing),
    ("b.example.com.", RecordType::A, Want::Nothing),
    ("x.w.example.com.", RecordType::TXT, Want::Nothing),
    ("sub.example.com.", RecordType::DS, Want::Nothing),
    ("secure.example.com.", RecordType::DS, Want::Data),
    ("example.com.", RecordType::DNSKEY, Want::Data),
    ("app.example.com.", RecordType::A, Want::Data),
    ("app.example.com.", RecordType::TXT, Want::Nothing),
    ("multi.example.com.", RecordType::A, Want::Data),
];

fn zone() -> Name {
    Name::parse("example.com.").unwrap()
}

/// Writes a new key of example.com. into `dir` with weir's own code (as `weir dnssec keygen`
/// does), `standby` or signing at once; returns it.
fn key(dir: &Path, flags: u16, algorithm: Algorithm, standby: bool) -> SigningKey {
    let key = SigningKey::generate(algorithm, flags).unwrap();
    let created = format_time(weir::clock::wall_secs());
    write_key(dir, &zone(), &key, 3600, &created, standby).unwrap();
    key
}

/// The trust anchor for `key`: its DS, as `weir dnssec ds` prints it.
fn anchor(key: &SigningKey) -> Anchor {
    Anchor::new(&ds_lines(&zone(), [key]))
}

/// A pool of `answers` answers over `addresses`, each probed by TCP at its backend.
fn pool(name: &str, answers: usize, endpoints: &[(&str, &Backend)]) -> String {
    let list: Vec<String> = (endpoints.iter())
        .map(|(a, b)| format!("{{ address = \"{a}\", probe = \"{}\" }}", b.addr()))
        .collect();
    format!(
        "[[pool]]\nname = \"{name}\"\nttl = 2\nanswers = {answers}\n[pool.check]\nkind = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n[[pool.group]]\nname = \"g\"\nendpoints = [{}]\n",
        list.join(", ")
    )
}

fn dnssec_table(dir: &Path, extra: &str) -> String {
    format!("[dnssec]\nkey_dir = \"{}\"\n{extra}", dir.display())
}

async fn signed_server(dir: &Path, pools: &str, extra: &str) -> Server {
    Server::builder()
        .zone("example.com.", ZONE)
        .zone_keys("dnssec = true")
        .pools(pools)
        .tables(&dnssec_table(dir, extra))
        .start()
        .await
}

/// delv's verdict on `name`/`rtype` must be `want`'s.
async fn delv_sees(server: SocketAddr, anchor: &Anchor, name: &str, rtype: RecordType, want: Want) {
    let d = delv(server, anchor, name, &rtype.to_string()).await;
    let ok = match want {
        Want::Data => d.status == DelvStatus::Validated,
        Want::Nothing => matches!(d.status, DelvStatus::NoData | DelvStatus::NxDomain),
    };
    assert!(
        ok,
        "delv {name} {rtype}: {:?}, want {want:?}\n{}",
        d.status, d.output
    );
}

/// A validating resolver's answer (`ask`) must be `want`'s, with AD.
fn resolver_sees(
    who: &str,
    r: &crate::validating::Resolved,
    name: &str,
    rtype: RecordType,
    want: Want,
    log: &dyn Fn() -> String,
) {
    let data = !r
        .answers
        .iter()
        .all(|a| a.record_type() == RecordType::CNAME);
    let ok = r.rcode == ResponseCode::NoError
        && r.ad
        && match want {
            Want::Data => data,
            Want::Nothing => r.answers.is_empty(),
        };
    assert!(
        ok,
        "{who} {name} {rtype}: {r:?}, want {want:?} with AD\n{}",
        log()
    );
}

/// The addresses delv validated for `name` over `draws` lookups.
async fn validated_draws(
    server: SocketAddr,
    anchor: &Anchor,
    name: &str,
    draws: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..draws {
        let d = delv(server, anchor, name, "A").await;
        assert_eq!(d.status, DelvStatus::Validated, "{name}: {}", d.output);
        seen.extend(d.rdata("A"));
    }
    seen.sort();
    seen.dedup();
    seen
}

async fn until_answers(server: SocketAddr, name: &str, want: &[&str]) {
    let start = Instant::now();
    loop {
        let got = answered(server, name, 40).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} answers {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_validates_in_delv_unbound_and_bind() {
    let keys = tempfile::tempdir().unwrap();
    let csk = key(keys.path(), FLAGS_KSK, Algorithm::EcdsaP256Sha256, false);
    let anchor = anchor(&csk);
    let b: Vec<Backend> = futures_backends(5).await;
    let pools = pool(
        "app.example.com.",
        1,
        &[
            ("192.0.2.10", &b[0]),
            ("192.0.2.11", &b[1]),
            ("192.0.2.12", &b[2]),
        ],
    ) + &pool(
        "multi.example.com.",
        2,
        &[
            ("192.0.2.20", &b[3]),
            ("192.0.2.21", &b[4]),
            ("192.0.2.22", &b[4]),
        ],
    );
    let dark = "[[pool]]\nname = \"dark.example.com.\"\nttl = 2\non_all_down = \"nodata\"\n[[pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.30\" }]\n";
    let s = signed_server(keys.path(), &(pools + dark), "").await;

    for &(name, rtype, want) in CASES {
        delv_sees(s.addr, &anchor, name, rtype, want).await;
    }
    let unbound = Unbound::start(s.addr, &anchor).await;
    let named = Named::start(s.addr, &anchor).await;
    for &(name, rtype, want) in CASES {
        let r = unbound.ask(name, rtype).await;
        resolver_sees("unbound", &r, name, rtype, want, &|| unbound.log());
        let r = named.ask(name, rtype).await;
        resolver_sees("named", &r, name, rtype, want, &|| named.log());
    }

    // A managed name: every endpoint shows up, each answer validated.
    let all = ["192.0.2.10", "192.0.2.11", "192.0.2.12"];
    assert_eq!(
        validated_draws(s.addr, &anchor, "app.example.com.", 30).await,
        all
    );
    // Several answers: sets signed on first use, each validated.
    let multi = validated_draws(s.addr, &anchor, "multi.example.com.", 12).await;
    assert_eq!(multi, ["192.0.2.20", "192.0.2.21", "192.0.2.22"]);

    // A weight change: the drained endpoint leaves, what is left validates.
    let (status, body) = http(
        s.admin(),
        Method::PUT,
        "/v1/pools/app.example.com./endpoints/192.0.2.10/weight",
        &[],
        Some(r#"{"weight": 0}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until_answers(s.addr, "app.example.com.", &all[1..]).await;
    assert_eq!(
        validated_draws(s.addr, &anchor, "app.example.com.", 16).await,
        all[1..]
    );

    // A health flip (its backend stops accepting): the dead endpoint leaves, validated.
    let mut b = b;
    b[2].stop().await;
    until_answers(s.addr, "app.example.com.", &all[1..2]).await;
    assert_eq!(
        validated_draws(s.addr, &anchor, "app.example.com.", 4).await,
        all[1..2]
    );
    let r = named.ask("app.example.com.", RecordType::A).await;
    resolver_sees(
        "named",
        &r,
        "app.example.com.",
        RecordType::A,
        Want::Data,
        &|| named.log(),
    );
    let r = unbound.ask("app.example.com.", RecordType::A).await;
    resolver_sees(
        "unbound",
        &r,
        "app.example.com.",
        RecordType::A,
        Want::Data,
        &|| unbound.log(),
    );

    // Every endpoint down with on_all_down = "nodata": a NODATA whose NSEC does not list A.
    let (status, body) = http(
        s.admin(),
        Method::PUT,
        "/v1/pools/dark.example.com./endpoints/192.0.2.30/override",
        &[],
        Some(r#"{"health": "down"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until_answers(s.addr, "dark.example.com.", &[]).await;
    delv_sees(
        s.addr,
        &anchor,
        "dark.example.com.",
        RecordType::A,
        Want::Nothing,
    )
    .await;
    s.stop().await;
}

async fn futures_backends(n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Backend::tcp().await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_ds_is_a_broken_chain_everywhere() {
    let keys = tempfile::tempdir().unwrap();
    key(keys.path(), FLAGS_KSK, Algorithm::EcdsaP256Sha256, false);
    let s = signed_server(keys.path(), "", "").await;
    let elsewhere = tempfile::tempdir().unwrap();
    let wrong = anchor(&key(
        elsewhere.path(),
        FLAGS_KSK,
        Algorithm::EcdsaP256Sha256,
        false,
    ));
    let d = delv(s.addr, &wrong, "www.example.com.", "A").await;
    assert!(matches!(d.status, DelvStatus::Failed(_)), "{}", d.output);
    let unbound = Unbound::start(s.addr, &wrong).await;
    let named = Named::start(s.addr, &wrong).await;
    for (who, r) in [
        (
            "unbound",
            unbound.ask("www.example.com.", RecordType::A).await,
        ),
        ("named", named.ask("www.example.com.", RecordType::A).await),
    ] {
        assert!(r.rcode == ResponseCode::ServFail && !r.ad, "{who}: {r:?}");
    }
    s.stop().await;
}

/// A query with EDNS and the DO bit.
fn with_do(msg: Message) -> Message {
    with_do_payload(msg, 1232)
}

fn with_do_payload(msg: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload).set_dnssec_ok(true);
    let mut msg = msg;
    msg.set_edns(edns);
    msg
}

fn types(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

/// The rdata of a record in wire form (names uncompressed), read here byte by byte.
fn raw(r: &hickory_proto::rr::Record) -> Vec<u8> {
    use hickory_proto::serialize::binary::BinEncodable;
    r.data.to_bytes().unwrap()
}

/// The length of the uncompressed name at the start of `wire`.
fn name_len(wire: &[u8]) -> usize {
    let mut at = 0;
    while wire[at] != 0 {
        at += 1 + usize::from(wire[at]);
    }
    at + 1
}

/// The types of an NSEC type bitmap (RFC 4034 4.1.2).
fn bitmap(mut bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    while let [window, len, rest @ ..] = bytes {
        let (map, after) = rest.split_at(usize::from(*len));
        for (i, byte) in map.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    out.push(u16::from(*window) << 8 | (i * 8 + bit) as u16);
                }
            }
        }
        bytes = after;
    }
    out
}

#[tokio::test]
async fn dnssec_records_only_with_do_and_compact_denial_on_the_wire() {
    let keys = tempfile::tempdir().unwrap();
    key(keys.path(), FLAGS_KSK, Algorithm::Ed25519, false);
    let s = signed_server(keys.path(), "", "").await;

    // Without DO: the unsigned answers of before, NXDOMAIN included.
    let plain = s
        .udp(&with_edns(query("www.example.com.", RecordType::A), 1232))
        .await;
    assert_eq!(types(&plain.answers), [RecordType::A]);
    let plain = s.udp(&query("nope.example.com.", RecordType::A)).await;
    assert_eq!(plain.response_code, ResponseCode::NXDomain);
    assert_eq!(types(&plain.authorities), [RecordType::SOA]);

    // With DO: RRSIGs; a name that does not exist is NOERROR with its NSEC listing NXNAME.
    let signed = s
        .udp(&with_do(query("www.example.com.", RecordType::A)))
        .await;
    assert_eq!(types(&signed.answers), [RecordType::A, RecordType::RRSIG]);
    let denied = s
        .udp(&with_do(query("nope.example.com.", RecordType::A)))
        .await;
    assert_eq!(denied.response_code, ResponseCode::NoError);
    assert!(denied.answers.is_empty());
    let nsec = (denied.authorities.iter())
        .find(|r| r.record_type() == RecordType::NSEC)
        .expect("an NSEC in AUTHORITY");
    assert_eq!(nsec.name.to_ascii().to_lowercase(), "nope.example.com.");
    let rdata = raw(nsec);
    let next_len = name_len(&rdata);
    assert_eq!(
        &rdata[..next_len],
        b"\x01\x00\x04nope\x07example\x03com\x00"
    );
    assert_eq!(
        bitmap(&rdata[next_len..]),
        [46, 47, 128],
        "RRSIG, NSEC, NXNAME"
    );

    // RRSIG and ANY questions keep RFC 8482's one RRset: the signatures of one type.
    let sigs = s
        .udp(&with_do(query("example.com.", RecordType::RRSIG)))
        .await;
    assert!(!sigs.answers.is_empty());
    let covered: Vec<Vec<u8>> = sigs.answers.iter().map(|r| raw(r)[..2].to_vec()).collect();
    assert!(
        sigs.answers
            .iter()
            .all(|r| r.record_type() == RecordType::RRSIG)
            && covered.iter().all(|c| *c == covered[0]),
        "{sigs:?}"
    );
    let any = s
        .udp(&with_do(query("example.com.", RecordType::ANY)))
        .await;
    let any_types: Vec<RecordType> = types(&any.answers);
    assert_eq!(any_types.len(), 2, "one RRset and its RRSIG: {any_types:?}");
    assert_eq!(any_types[1], RecordType::RRSIG);

    // Each new name costs a signature on demand, counted (the counter is the process's, and
    // other tests run beside this one: at least these two).
    let counted = |s: &Server| -> u64 {
        let metrics = s.metrics();
        let line = (metrics.lines())
            .find(|l| l.starts_with("weir_dnssec_signed_on_demand_total "))
            .unwrap_or_else(|| panic!("no on-demand counter:\n{metrics}"))
            .to_string();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = counted(&s);
    for name in [
        "new1.example.com.",
        "new2.example.com.",
        "new1.example.com.",
    ] {
        s.udp(&with_do(query(name, RecordType::A))).await;
    }
    assert!(counted(&s) - before >= 2);

    // Referrals: the child's DS and its RRSIG, or the NSEC proving it has none; only with DO.
    let referral = |name: &str| with_do(query(name, RecordType::A));
    let secure = s.udp(&referral("www.secure.example.com.")).await;
    assert_eq!(
        types(&secure.authorities),
        [RecordType::NS, RecordType::DS, RecordType::RRSIG]
    );
    let insecure = s.udp(&referral("www.sub.example.com.")).await;
    assert_eq!(
        types(&insecure.authorities),
        [RecordType::NS, RecordType::NSEC, RecordType::RRSIG]
    );
    let nsec = raw(&insecure.authorities[1]);
    assert_eq!(
        bitmap(&nsec[name_len(&nsec)..]),
        [2, 46, 47],
        "NS, RRSIG, NSEC: no DS"
    );
    let plain = s
        .udp(&with_edns(
            query("www.secure.example.com.", RecordType::A),
            1232,
        ))
        .await;
    assert_eq!(types(&plain.authorities), [RecordType::NS]);

    // kdig says the same: RRSIGs only with +dnssec.
    let kdig = find_program("kdig").expect("kdig (Debian: knot-dnsutils; .ci/test installs it)");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&kdig)
            .args([
                format!("@{}", s.addr.ip()).as_str(),
                "-p",
                &s.addr.port().to_string(),
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!run(&["example.com.", "MX"]).contains("RRSIG"));
    assert!(run(&["+dnssec", "example.com.", "MX"]).contains("RRSIG\tMX 15 2 2"));

    // Too big for the client's 512 bytes with its signatures: TC, then whole over TCP.
    let small = with_do_payload(query("big.example.com.", RecordType::TXT), 512);
    let truncated = s.udp(&small).await;
    assert!(
        truncated.metadata.truncation && truncated.answers.is_empty(),
        "{truncated:?}"
    );
    let whole = s.tcp(&small).await;
    assert_eq!(whole.answers.len(), 5, "4 TXT and their RRSIG");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_bind_dnssec_keygen_sign_and_bad_key_files_are_refused() {
    let keygen = find_program("dnssec-keygen")
        .expect("dnssec-keygen (Debian: bind9-utils, with bind9; .ci/test installs it)");
    let keys = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&keygen)
        .args(["-q", "-a", "ECDSAP256SHA256", "-f", "KSK", "-K"])
        .arg(keys.path())
        .arg("example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stem = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let text = std::fs::read_to_string(keys.path().join(format!("{stem}.key"))).unwrap();
    let dnskey = text.lines().find(|l| !l.starts_with(';')).unwrap();
    let s = signed_server(keys.path(), "", "").await;
    let d = delv(s.addr, &Anchor::new(dnskey), "www.example.com.", "A").await;
    assert_eq!(d.status, DelvStatus::Validated, "{}", d.output);
    s.stop().await;

    // A private key others may read, and a zone with no key: `weir check` names both.
    let private = keys.path().join(format!("{stem}.private"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z"), ZONE).unwrap();
    std::fs::write(
        dir.path().join("o"),
        ZONE.replace("example.com.", "example.org."),
    )
    .unwrap();
    // A zone whose only key is a standby: it would be served unsigned.
    let net = Name::parse("example.net.").unwrap();
    std::fs::write(
        dir.path().join("n"),
        ZONE.replace("example.com.", "example.net."),
    )
    .unwrap();
    let standby = SigningKey::generate(Algorithm::EcdsaP256Sha256, FLAGS_ZSK).unwrap();
    write_key(keys.path(), &net, &standby, 3600, "20261203000000", true).unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\ndnssec = true\n[[zone]]\norigin = \"example.org.\"\nfile = \"o\"\ndnssec = true\n[[zone]]\norigin = \"example.net.\"\nfile = \"n\"\ndnssec = true\n{}",
            dnssec_table(keys.path(), "")
        ),
    )
    .unwrap();
    let problems = weir::app::check(&config).unwrap_err().to_string();
    assert!(
        problems.contains(&format!("zone[0].dnssec: {}", private.display()))
            && problems.contains("chmod 600"),
        "{problems}"
    );
    assert!(
        problems.contains("zone[1].dnssec: no keys for example.org.")
            && problems.contains("weir dnssec keygen example.org."),
        "{problems}"
    );
    assert!(
        problems.contains("zone[2].dnssec: no key of example.net.")
            && problems.contains("signs now"),
        "{problems}"
    );
}

/// The RRSIG expiration of www.example.com.'s A over DO.
async fn expiration(s: &Server) -> u32 {
    let r = s
        .udp(&with_do(query("www.example.com.", RecordType::A)))
        .await;
    let sig = (r.answers.iter())
        .find(|r| r.record_type() == RecordType::RRSIG)
        .unwrap();
    let rdata = raw(sig);
    u32::from_be_bytes(rdata[8..12].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_made_again_before_they_expire() {
    let keys = tempfile::tempdir().unwrap();
    let csk = key(keys.path(), FLAGS_KSK, Algorithm::EcdsaP256Sha256, false);
    let s = signed_server(
        keys.path(),
        "",
        "signature_validity = \"6s\"\nsignature_refresh = \"4s\"\ninception_skew = \"1s\"",
    )
    .await;
    let first = expiration(&s).await;
    let (_, status) = http(
        s.admin(),
        Method::GET,
        "/v1/zones/example.com./dnssec",
        &[],
        None,
    )
    .await;
    let renew_at = status["renew_at"].as_u64().unwrap();
    assert_eq!(u64::from(first), status["expiration"].as_u64().unwrap());
    assert_eq!(renew_at, u64::from(first) - 4, "refresh before expiry");
    // Wait on weir's own status: a new validity window once renew_at passed.
    let start = Instant::now();
    loop {
        let (_, status) = http(
            s.admin(),
            Method::GET,
            "/v1/zones/example.com./dnssec",
            &[],
            None,
        )
        .await;
        if status["expiration"].as_u64().unwrap() > u64::from(first) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not signed again: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(expiration(&s).await > first);
    let gauge = format!(
        "weir_dnssec_signatures_expire_timestamp_seconds{{zone=\"example.com.\"}} {}",
        expiration(&s).await
    );
    assert!(s.metrics().contains(&gauge), "{gauge}");
    let d = delv(s.addr, &anchor(&csk), "www.example.com.", "A").await;
    assert_eq!(d.status, DelvStatus::Validated, "{}", d.output);
    s.stop().await;
}

async fn dnssec_status(s: &Server) -> Value {
    http(
        s.admin(),
        Method::GET,
        "/v1/zones/example.com./dnssec",
        &[],
        None,
    )
    .await
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_signing_key_rollover_validates_through_every_phase() {
    let keys = tempfile::tempdir().unwrap();
    let ksk = key(keys.path(), FLAGS_KSK, Algorithm::EcdsaP256Sha256, false);
    let old = key(keys.path(), FLAGS_ZSK, Algorithm::EcdsaP256Sha256, false);
    let new = key(keys.path(), FLAGS_ZSK, Algorithm::EcdsaP256Sha256, true);
    let anchor = anchor(&ksk);
    let s = signed_server(keys.path(), "", "propagation_delay = \"1s\"").await;
    let status = dnssec_status(&s).await;
    let signing: Vec<u64> = (status["keys"].as_array().unwrap().iter())
        .filter(|k| k["signing"] == true)
        .map(|k| k["tag"].as_u64().unwrap())
        .collect();
    let mut want = vec![u64::from(ksk.tag), u64::from(old.tag)];
    want.sort();
    let mut signing = signing;
    signing.sort();
    assert_eq!(signing, want, "the standby key does not sign: {status}");

    // unbound caches the DNSKEY set and answers across the phases.
    let unbound = Unbound::start(s.addr, &anchor).await;
    let r = unbound.ask("www.example.com.", RecordType::A).await;
    assert!(r.ad, "{r:?}");

    let (code, body) = http(
        s.admin(),
        Method::POST,
        "/v1/zones/example.com./dnssec/rollover",
        &[],
        Some(r#"{"reason": "scheduled"}"#),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        s.admin(),
        Method::POST,
        "/v1/zones/example.com./dnssec/rollover",
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(code, 409, "one rollover at a time: {body}");

    let rrsig_tag = |m: &Message| -> Vec<u16> {
        (m.answers.iter())
            .filter(|r| r.record_type() == RecordType::RRSIG)
            .map(|r| u16::from_be_bytes(raw(r)[16..18].try_into().unwrap()))
            .collect()
    };
    let mut phases = Vec::new();
    let start = Instant::now();
    loop {
        let status = dnssec_status(&s).await;
        let phase = status["rollover"]["phase"].as_str().unwrap().to_string();
        let m = s
            .udp(&with_do(query("www.example.com.", RecordType::A)))
            .await;
        let keys = s
            .udp(&with_do(query("example.com.", RecordType::DNSKEY)))
            .await;
        let published = (keys.answers.iter())
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .count();
        let tags = rrsig_tag(&m);
        match phase.as_str() {
            "publishing" => assert_eq!((tags, published), (vec![old.tag], 3), "{status}"),
            "active" => assert_eq!((tags, published), (vec![new.tag], 3), "{status}"),
            _ => assert_eq!((tags, published), (vec![new.tag], 2), "{status}"),
        }
        let r = unbound.ask("www.example.com.", RecordType::A).await;
        assert!(
            r.rcode == ResponseCode::NoError && r.ad,
            "{phase}: {r:?}\n{}",
            unbound.log()
        );
        if phases.last() != Some(&phase) {
            phases.push(phase.clone());
        }
        if phase == "done" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(phases, ["publishing", "active", "done"]);
    let (_, audit) = http(s.admin(), Method::GET, "/v1/audit", &[], None).await;
    let record = &audit["records"][0];
    assert_eq!(record["action"], "dnssec-rollover", "{audit}");
    assert_eq!(record["reason"], "scheduled");
    assert_eq!(record["after"]["key"], new.tag);
    s.stop().await;
}

/// Two nameservers given the same key files serve the same DNSKEY set, and a resolver
/// validates whichever it asks (their signatures differ: ECDSA signs with a fresh nonce).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nameservers_sharing_the_key_files_both_validate() {
    let keys = tempfile::tempdir().unwrap();
    let csk = key(keys.path(), FLAGS_KSK, Algorithm::EcdsaP256Sha256, false);
    let anchor = anchor(&csk);
    let one = signed_server(keys.path(), "", "").await;
    let two = signed_server(keys.path(), "", "").await;
    let dnskeys = |m: &Message| {
        let mut keys: Vec<Vec<u8>> = (m.answers.iter())
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .map(raw)
            .collect();
        keys.sort();
        keys
    };
    let ask = with_do(query("example.com.", RecordType::DNSKEY));
    assert_eq!(dnskeys(&one.udp(&ask).await), dnskeys(&two.udp(&ask).await));
    for s in [&one, &two] {
        for (name, want) in [
            ("www.example.com.", DelvStatus::Validated),
            ("nope.example.com.", DelvStatus::NoData),
        ] {
            let d = delv(s.addr, &anchor, name, "A").await;
            assert_eq!(d.status, want, "{}", d.output);
        }
    }
    one.stop().await;
    two.stop().await;
}

/// The counter of sets signed on the query path, from a real weir's `/metrics`.
async fn signed_on_demand(admin: SocketAddr) -> u64 {
    let (_, text) = crate::support::http_get(admin, "/metrics").await;
    (text.lines())
        .find_map(|l| l.strip_prefix("weir_dnssec_signed_on_demand_total "))
        .unwrap_or_else(|| panic!("no on-demand counter:\n{text}"))
        .parse()
        .unwrap()
}

/// A flood of new names over the rate limit costs no signatures: the limit is decided before
/// anything is signed (a real `weir serve`, so the process-wide counter is this server's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_denials_are_never_signed() {
    let dir = tempfile::tempdir().unwrap();
    key(dir.path(), FLAGS_KSK, Algorithm::EcdsaP256Sha256, false);
    std::fs::write(dir.path().join("z"), ZONE).unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[dns]\nlisten = [\"127.0.0.1:0\"]\n[dns.rrl]\nrate = 1\nwindow = \"1s\"\nslip = 0\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"state\"\n[log]\nformat = \"json\"\n[dnssec]\nkey_dir = \".\"\n[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\ndnssec = true\n",
    )
    .unwrap();
    let weir = crate::support::WeirProcess::start(&config, &[]).unwrap();
    let admin = weir.admin.unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut answered = 0;
    for i in 0..100 {
        let q = with_do(query(&format!("flood{i}.example.com."), RecordType::A));
        socket
            .send_to(&q.to_vec().unwrap(), weir.dns)
            .await
            .unwrap();
        let mut buf = [0u8; 2048];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(50), socket.recv_from(&mut buf)).await
        {
            answered += 1;
        }
    }
    assert!(
        answered < 10,
        "{answered} of 100 answered: the limit did not hold"
    );
    assert_eq!(
        signed_on_demand(admin).await,
        answered,
        "one signature per answer sent"
    );
}

/// An RFC 2136 UPDATE to a signed zone (nsupdate, TSIG) is served signed at once: the new
/// record validates, and so does the denial of the one it deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_to_a_signed_zone_validate_at_once() {
    let keys = tempfile::tempdir().unwrap();
    let csk = key(keys.path(), FLAGS_KSK, Algorithm::EcdsaP256Sha256, false);
    let anchor = anchor(&csk);
    let (key_file, secret) = crate::updates::keygen("ops-key");
    let s = Server::builder()
        .key_file("ops.key", &key_file)
        .zone("example.com.", ZONE)
        .zone_keys("dnssec = true\n[[zone.update]]\nkey = \"ops-key\"")
        .tables(&dnssec_table(keys.path(), ""))
        .start()
        .await;
    let script = "update add fresh.example.com. 60 A 192.0.2.77\nupdate delete mail.example.com. A";
    let (ok, out) = crate::updates::send("nsupdate", s.addr, Some(&secret), script).await;
    assert!(ok, "{out}");
    let d = delv(s.addr, &anchor, "fresh.example.com.", "A").await;
    assert_eq!(d.status, DelvStatus::Validated, "{}", d.output);
    assert_eq!(d.rdata("A"), ["192.0.2.77"]);
    let d = delv(s.addr, &anchor, "mail.example.com.", "A").await;
    assert!(
        matches!(d.status, DelvStatus::NoData | DelvStatus::NxDomain),
        "{}",
        d.output
    );
    s.stop().await;
}
