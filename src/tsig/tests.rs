//! TSIG round trips, every failure, key files, and interop with the signatures of kdig and
//! nsupdate captured on a loopback socket.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

const SECRET: &str = "Yc9AZD0H1CxI6XH+GutSy3ErAM/dFig+Ykok+3O5SCc=";
const NOW: u64 = 1_800_000_000;

fn key(name: &str, algorithm: Algorithm, secret: &str) -> Key {
    Key::new(
        Name::parse(name).unwrap(),
        algorithm,
        &base64_decode(secret).unwrap(),
    )
}

fn ring_of(keys: Vec<Key>) -> Keyring {
    Keyring::new(keys)
}

/// A query for `example.com. SOA` with id 0x1234 and no additional records.
fn query() -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(b"\x07example\x03com\x00\x00\x06\x00\x01");
    p
}

fn signed_query(k: &Key, now: u64) -> (Vec<u8>, Mac) {
    let mut p = query();
    let mac = sign_request(&mut p, 0, k, now);
    (p, mac)
}

fn verify_at(keyring: &Keyring, msg: &[u8], now: u64) -> Result<(), Error> {
    let at = locate(msg).map_err(|_| Error::FormErr)?.unwrap();
    verify(keyring, msg, at, now)
        .map(|_| ())
        .map_err(|f| f.error)
}

#[test]
fn a_signed_request_verifies_with_each_algorithm_and_case_of_key_name() {
    for algorithm in Algorithm::ALL {
        let k = key("Acme-Key.", algorithm, SECRET);
        let (p, _) = signed_query(&k, NOW);
        assert_eq!(
            u16::from_be_bytes([p[10], p[11]]),
            1,
            "ARCOUNT counts the TSIG"
        );
        assert_eq!(p.len(), query().len() + space(&k));
        let keyring = ring_of(vec![k.clone()]);
        assert_eq!(verify_at(&keyring, &p, NOW + 299), Ok(()));
        assert_eq!(verify_at(&keyring, &p, NOW - 300), Ok(()));
    }
}

#[test]
fn each_failure_is_named() {
    let k = key("acme-key", Algorithm::HmacSha256, SECRET);
    let keyring = ring_of(vec![k.clone()]);
    let (p, _) = signed_query(&k, NOW);
    // Every byte is covered by the MAC but the ID, which the MAC takes from the TSIG's
    // original ID (RFC 8945 4.3.3: forwarders may change it), and the record's TTL, which
    // the MAC takes as 0.
    let ttl_at = query().len() + k.name.wire().len() + 4;
    for i in (2..p.len()).filter(|i| !(ttl_at..ttl_at + 4).contains(i)) {
        let mut bad = p.clone();
        bad[i] ^= 0x01;
        let got = match locate(&bad) {
            Ok(Some(at)) => verify(&keyring, &bad, at, NOW)
                .map(|_| ())
                .map_err(|f| f.error),
            Ok(None) | Err(_) => Err(Error::FormErr),
        };
        assert!(got.is_err(), "byte {i} flipped still verifies");
    }
    let mut flipped = p.clone();
    flipped[14] ^= 0x20; // a letter of the question name changes case
    assert_eq!(verify_at(&keyring, &flipped, NOW), Err(Error::BadSig));
    // Other secret, other key name, other algorithm.
    let other = ring_of(vec![key(
        "acme-key",
        Algorithm::HmacSha256,
        "QvxoaeiJ4HNMQVdDNLEMkjJAlnSNnjs96cptwTDqyRo=",
    )]);
    assert_eq!(verify_at(&other, &p, NOW), Err(Error::BadSig));
    let unknown = ring_of(vec![key("other-key", Algorithm::HmacSha256, SECRET)]);
    assert_eq!(verify_at(&unknown, &p, NOW), Err(Error::BadKey));
    let mismatch = ring_of(vec![key("acme-key", Algorithm::HmacSha512, SECRET)]);
    assert_eq!(verify_at(&mismatch, &p, NOW), Err(Error::BadKey));
    assert_eq!(verify_at(&keyring, &p, NOW + 301), Err(Error::BadTime));
    assert_eq!(verify_at(&keyring, &p, NOW - 301), Err(Error::BadTime));
}

/// A TSIG record with its MAC cut to `len` bytes (and the sizes fixed up).
fn truncated(k: &Key, len: usize) -> Vec<u8> {
    let mut p = query();
    let base_len = p.len();
    sign_request(&mut p, 0, k, NOW);
    let mac_size_at = base_len + k.name.wire().len() + 10 + k.algorithm.wire().len() + 8;
    let full = k.algorithm.mac_len();
    let mut out = p[..mac_size_at].to_vec();
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&p[mac_size_at + 2..mac_size_at + 2 + len]);
    out.extend_from_slice(&p[mac_size_at + 2 + full..]);
    let rdlen_at = base_len + k.name.wire().len() + 8;
    let rdlen = u16::from_be_bytes([out[rdlen_at], out[rdlen_at + 1]]) - (full - len) as u16;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    out
}

#[test]
fn truncated_macs_below_the_limit_are_badtrunc() {
    let k = key("acme-key", Algorithm::HmacSha256, SECRET);
    let keyring = ring_of(vec![k.clone()]);
    // Half of SHA-256 is 16 octets: the limit (RFC 8945 5.2.2.1). The MAC itself must match.
    assert_eq!(
        verify_at(&keyring, &truncated(&k, 15), NOW),
        Err(Error::BadTrunc)
    );
    assert_eq!(verify_at(&keyring, &truncated(&k, 16), NOW), Ok(()));
    let mut wrong = truncated(&k, 16);
    let last = wrong.len() - 7;
    wrong[last] ^= 1;
    assert_eq!(verify_at(&keyring, &wrong, NOW), Err(Error::BadSig));
}

#[test]
fn a_tsig_anywhere_but_last_is_malformed() {
    let k = key("acme-key", Algorithm::HmacSha256, SECRET);
    let (p, _) = signed_query(&k, NOW);
    let tsig = p[query().len()..].to_vec();
    assert_eq!(locate(&p), Ok(Some(query().len())));
    assert_eq!(locate(&query()), Ok(None));
    // Two TSIGs.
    let mut two = p.clone();
    two.extend_from_slice(&tsig);
    two[11] = 2;
    assert_eq!(locate(&two), Err(Malformed));
    // A TSIG followed by an OPT.
    let mut before_opt = p.clone();
    before_opt.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    before_opt[11] = 2;
    assert_eq!(locate(&before_opt), Err(Malformed));
    // In ANSWER.
    let mut in_answer = p.clone();
    in_answer[7] = 1;
    in_answer[11] = 0;
    assert_eq!(locate(&in_answer), Err(Malformed));
    // Records past the end.
    let mut overrun = p.clone();
    overrun[11] = 2;
    assert_eq!(locate(&overrun), Err(Malformed));
}

#[test]
fn a_compressed_key_name_is_read_and_loops_are_not() {
    let k = key("example.com", Algorithm::HmacSha256, SECRET);
    let keyring = ring_of(vec![k.clone()]);
    // The owner written as a pointer to the question name (offset 12): the MAC covers the
    // canonical name, so it still verifies.
    let (p, _) = signed_query(&k, NOW);
    let at = query().len();
    let mut compressed = p[..at].to_vec();
    compressed.extend_from_slice(&[0xC0, 12]);
    compressed.extend_from_slice(&p[at + k.name.wire().len()..]);
    assert_eq!(verify_at(&keyring, &compressed, NOW), Ok(()));
    // A pointer to itself.
    let mut looped = compressed.clone();
    looped[at..at + 2].copy_from_slice(&[0xC0 | (at >> 8) as u8, at as u8]);
    assert!(matches!(
        verify(&keyring, &looped, at, NOW),
        Err(Failure {
            error: Error::FormErr,
            ..
        })
    ));
}

#[test]
fn answers_chain_to_the_request_and_streams_chain_to_each_other() {
    let k = key("acme-key", Algorithm::HmacSha384, SECRET);
    let keyring = ring_of(vec![k.clone()]);
    let (p, request_mac) = signed_query(&k, NOW);
    let at = locate(&p).unwrap().unwrap();
    let verified = verify(&keyring, &p, at, NOW).unwrap();
    // The answer: the query with QR set, signed.
    let mut answer = vec![0xAA, 0xBB];
    answer.extend_from_slice(&query());
    answer[4] |= 0x80;
    let base = 2;
    let mac = sign_answer(&mut answer, base, &verified, NOW + 1);
    let msg = &answer[base..];
    let at = locate(msg).unwrap().unwrap();
    assert_eq!(
        verify_reply(&k, msg, at, &request_mac, NOW)
            .unwrap()
            .as_bytes(),
        mac.as_bytes()
    );
    // Not against another request's MAC.
    let (_, other_mac) = signed_query(&k, NOW + 5);
    assert_eq!(
        verify_reply(&k, msg, at, &other_mac, NOW).err(),
        Some(Error::BadSig)
    );
    // A second message of the stream, chained: check it by recomputing RFC 8945 5.3.1.
    let mut next = query();
    next[2] |= 0x80;
    let next_mac = sign_next(&mut next, 0, &k, &mac, NOW + 2);
    let mut ctx = hmac::Context::with_key(&k.secret);
    ctx.update(&(mac.as_bytes().len() as u16).to_be_bytes());
    ctx.update(mac.as_bytes());
    ctx.update(
        &query()
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 2 { b | 0x80 } else { *b })
            .collect::<Vec<u8>>(),
    );
    ctx.update(&(NOW + 2).to_be_bytes()[2..]);
    ctx.update(&FUDGE.to_be_bytes());
    assert_eq!(ctx.sign().as_ref(), next_mac.as_bytes());
    assert_eq!(u16::from_be_bytes([next[10], next[11]]), 1);
}

#[test]
fn error_answers_follow_rfc_8945_5_3_2() {
    let k = key("acme-key", Algorithm::HmacSha256, SECRET);
    let keyring = ring_of(vec![k.clone()]);
    let (p, request_mac) = signed_query(&k, NOW);
    let at = locate(&p).unwrap().unwrap();
    let header_only = |rcode: u8| {
        let mut out = query();
        out[2] |= 0x80;
        out[3] = rcode;
        out
    };
    // BADTIME: signed, the server's time in other data.
    let failure = verify(&keyring, &p, at, NOW + 1000).unwrap_err();
    assert_eq!(failure.error, Error::BadTime);
    let mut out = header_only(9);
    sign_error(&mut out, 0, &failure, NOW + 1000);
    let tsig = locate(&out).unwrap().unwrap();
    assert_eq!(&out[out.len() - 8..out.len() - 6], &[0, 6]);
    assert_eq!(&out[out.len() - 6..], &(NOW + 1000).to_be_bytes()[2..]);
    assert_eq!(
        verify_reply(&k, &out, tsig, &request_mac, NOW).err(),
        Some(Error::BadTime)
    );
    // BADSIG and BADKEY: unsigned, MAC size 0, the error code.
    let other = ring_of(vec![key(
        "acme-key",
        Algorithm::HmacSha256,
        "QvxoaeiJ4HNMQVdDNLEMkjJAlnSNnjs96cptwTDqyRo=",
    )]);
    for (keyring, code) in [(other, 16u16), (Keyring::default(), 17)] {
        let failure = verify(&keyring, &p, at, NOW).unwrap_err();
        assert_eq!(failure.error.code(), code);
        let mut out = header_only(9);
        let len = out.len();
        sign_error(&mut out, 0, &failure, NOW);
        let rr = &out[len..];
        let rdata = &rr[k.name.wire().len() + 10..];
        let mac_size_at = k.algorithm.wire().len() + 8;
        assert_eq!(&rdata[mac_size_at..mac_size_at + 2], &[0, 0]);
        assert_eq!(
            &rdata[mac_size_at + 4..mac_size_at + 6],
            &code.to_be_bytes()
        );
        assert_eq!(out[11], 1);
        let tsig = locate(&out).unwrap().unwrap();
        assert_eq!(
            verify_reply(&k, &out, tsig, &request_mac, NOW)
                .err()
                .map(Error::code),
            Some(code),
            "a client reads the error"
        );
    }
}

#[test]
fn key_files_in_bind_and_knot_format() {
    let bind = "# made by tsig-keygen\nkey \"acme-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"Yc9AZD0H1CxI6XH+GutSy3ErAM/dFig+Ykok+3O5SCc=\";\n};\n// another\nkey second. { algorithm HMAC-SHA512; secret \"Yc9AZD0H1CxI6XH+GutSy3ErAM/dFig+Ykok+3O5SCc=\"; };\n";
    let keys = parse_keys(bind).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].name.wire(), b"\x08acme-key\x00");
    assert_eq!(keys[1].algorithm, Algorithm::HmacSha512);
    let knot = "# hmac-sha256:acme-key:QvxoaeiJ4HNMQVdDNLEMkjJAlnSNnjs96cptwTDqyRo=\nkey:\n  - id: acme-key\n    algorithm: hmac-sha256\n    secret: QvxoaeiJ4HNMQVdDNLEMkjJAlnSNnjs96cptwTDqyRo=\n  - id: b\n    algorithm: hmac-sha384\n    secret: QvxoaeiJ4HNMQVdDNLEMkjJAlnSNnjs96cptwTDqyRo=\n";
    let keys = parse_keys(knot).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].algorithm, Algorithm::HmacSha384);

    let problems = |text: &str| {
        parse_keys(text)
            .unwrap_err()
            .into_iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        problems(
            "key \"a\" {\n algorithm hmac-md5;\n secret \"Yc9AZD0H1CxI6XH+GutSy3ErAM/dFig+Ykok+3O5SCc=\";\n};\nkey \"b\" {\n algorithm hmac-sha256;\n secret \"not base64!\";\n};\nkey \"c\" {\n algorithm hmac-sha256;\n secret \"YWJj\";\n};\n"
        ),
        [
            "2: key `a.`: algorithm `hmac-md5` is not supported (supported: hmac-sha256, hmac-sha384, hmac-sha512)",
            "7: key `b.`: the secret is not base64",
            "11: key `c.`: the secret is 3 bytes; hmac-sha256 needs at least 16 (tsig-keygen makes 32)",
        ]
    );
    assert_eq!(
        problems("key \"a\" {\n algorithm hmac-sha256;\n"),
        ["1: expected `};` closing the key"]
    );
    assert_eq!(problems("# nothing\n"), ["1: no key in the file"]);
    assert_eq!(
        problems("key:\n  - id: a\n    algorithm: hmac-sha1\n    secret: YWJj\n"),
        [
            "3: key `a.`: algorithm `hmac-sha1` is not supported (supported: hmac-sha256, hmac-sha384, hmac-sha512)"
        ]
    );
}

#[test]
fn base64_is_strict() {
    assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
    assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
    assert_eq!(base64_decode("YQ==").unwrap(), b"a");
    for bad in ["YWJ", "Y=Jj", "YQ===", "", "YW!j"] {
        assert_eq!(base64_decode(bad), None, "{bad}");
    }
}

/// A program in PATH or the sbin folders; the test fails with the reason when it is missing.
fn program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (Debian package {package}); this interop test needs it")
        })
}

/// Runs `command` (which sends one UDP message to `socket`) and returns the message.
fn capture(socket: &UdpSocket, mut command: Command) -> Vec<u8> {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let got = socket.recv_from(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let (n, _) = got.expect("no message from the tool within 10 s");
    buf[..n].to_vec()
}

fn now() -> u64 {
    crate::clock::wall_secs()
}

fn check_interop(msg: &[u8], keyring: &Keyring) {
    let at = locate(msg)
        .unwrap()
        .expect("the tool's message carries a TSIG");
    assert!(
        verify(keyring, msg, at, now()).is_ok(),
        "the tool's signature does not verify"
    );
    let mut bad = msg.to_vec();
    bad[12] ^= 0x01; // the first label's length byte of the question... or the zone name
    bad[2] ^= 0x01; // and the RD bit (or the opcode's low bit)
    assert_eq!(
        verify(keyring, &bad, at, now())
            .map(|_| ())
            .map_err(|f| f.error),
        Err(Error::BadSig)
    );
}

#[test]
fn kdig_signatures_verify() {
    let kdig = program("kdig", "knot-dnsutils");
    for algorithm in Algorithm::ALL {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut command = Command::new(&kdig);
        command.args([
            "-y",
            &format!("{}:Acme-Key:{SECRET}", algorithm.name()),
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+retry=0",
            "+timeout=5",
            "example.com.",
            "SOA",
        ]);
        let msg = capture(&socket, command);
        check_interop(&msg, &ring_of(vec![key("acme-key", algorithm, SECRET)]));
    }
}

#[test]
fn nsupdate_signatures_verify() {
    let nsupdate = program("nsupdate", "bind9-dnsutils");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let script = std::env::temp_dir().join(format!("weir-tsig-nsupdate-{}", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "server 127.0.0.1 {port}\nzone example.com.\nupdate add www.example.com. 300 A 192.0.2.7\nsend\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(nsupdate);
    command.args(["-y", &format!("hmac-sha256:acme-key:{SECRET}"), "-t", "5"]);
    command.arg(&script);
    let msg = capture(&socket, command);
    let _ = std::fs::remove_file(&script);
    assert_eq!((msg[2] >> 3) & 0xF, 5, "nsupdate sends an UPDATE");
    check_interop(
        &msg,
        &ring_of(vec![key("acme-key", Algorithm::HmacSha256, SECRET)]),
    );
}

/// The files the real tools write load: `tsig-keygen` (BIND format) and `keymgr -t` (Knot
/// format, its first line a `#` comment), each with the secret the tool chose.
#[test]
fn key_files_from_tsig_keygen_and_keymgr_load() {
    for (tool, package, args) in [
        (
            "tsig-keygen",
            "bind9-utils",
            &["-a", "hmac-sha384", "made-by-bind"][..],
        ),
        ("keymgr", "knot", &["-t", "made-by-knot", "hmac-sha384"][..]),
    ] {
        let out = Command::new(program(tool, package))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let keys = parse_keys(&text).unwrap_or_else(|p| panic!("{tool}: {p:?} in\n{text}"));
        assert_eq!(keys.len(), 1, "{text}");
        assert_eq!(keys[0].algorithm, Algorithm::HmacSha384);
        let name = args.iter().find(|a| a.starts_with("made-by")).unwrap();
        assert_eq!(keys[0].name, Name::parse(name).unwrap());
    }
}
