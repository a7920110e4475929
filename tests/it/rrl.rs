//! Response rate limiting and DNS cookies over real UDP and TCP sockets: a flood from one source
//! is held to the rate (plus slips), other sources, exempt prefixes, TCP and clients with a
//! valid server cookie are not; `dig +cookie` learns a server cookie and is accepted with it;
//! bad and malformed cookies get what RFC 7873 5.2 says.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::support::*;

const RATE: usize = 10;
const WINDOW: usize = 1;

/// `www.example.com. A` with an OPT, and a COOKIE option when `cookie` is not empty (any
/// length, so malformed ones can be sent too).
fn packet(id: u16, name: &[u8], cookie: &[u8]) -> Vec<u8> {
    let mut p = raw(id, 0x0100, [1, 0, 0, 1], name);
    p.extend_from_slice(&[0, 1, 0, 1]);
    p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    if cookie.is_empty() {
        p.extend_from_slice(&[0, 0]);
    } else {
        p.extend_from_slice(&(4 + cookie.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0, 10]);
        p.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
        p.extend_from_slice(cookie);
    }
    p
}

const WWW: &[u8] = b"\x03www\x07example\x03com\x00";

/// The COOKIE option a reply carries for `client` (client cookie + server cookie), and the
/// reply's full RCODE (header bits plus the OPT's extended bits).
fn reply_cookie(reply: &[u8], client: &[u8; 8]) -> Option<([u8; 24], u16)> {
    let mut pattern = vec![0, 10, 0, 24];
    pattern.extend_from_slice(client);
    let at = reply.windows(pattern.len()).position(|w| w == pattern)?;
    let mut cookie = [0u8; 24];
    cookie.copy_from_slice(reply.get(at + 4..at + 28)?);
    // The COOKIE is weir's first option: the OPT's TTL (extended RCODE first) and RDLENGTH
    // come just before it.
    let ext = u16::from(reply[at - 6]);
    let rcode = ext << 4 | u16::from(reply[3] & 0x0F);
    Some((cookie, rcode))
}

#[derive(Debug, Default)]
struct Tally {
    answered: usize,
    slipped: usize,
    badcookie: usize,
    silent: usize,
    last_badcookie: Option<Vec<u8>>,
}

/// Sends `n` queries from a socket bound to `from` in bursts of 50, draining replies between
/// bursts (so the client's own receive buffer never overflows), then collects replies until
/// 300 ms pass without one.
async fn flood(
    to: SocketAddr,
    from: &str,
    n: usize,
    make: impl Fn(u16) -> Vec<u8>,
) -> (Tally, Duration) {
    let socket = UdpSocket::bind(format!("{from}:0")).await.unwrap();
    let start = Instant::now();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 4096];
    for i in 0..n {
        socket.send_to(&make(i as u16), to).await.unwrap();
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            while let Ok(len) = socket.try_recv(&mut buf) {
                tally.count(&buf[..len]);
            }
        }
    }
    while let Ok(Ok(len)) =
        tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await
    {
        tally.count(&buf[..len]);
    }
    let elapsed = start.elapsed();
    tally.silent = n - tally.answered - tally.slipped - tally.badcookie;
    (tally, elapsed)
}

impl Tally {
    fn count(&mut self, reply: &[u8]) {
        let (_, flags, counts) = header(reply);
        if flags & 0x0200 != 0 {
            assert_eq!(counts[1..3], [0, 0], "a slip carries no data");
            self.slipped += 1;
        } else if flags & 0x000F == 7 {
            self.badcookie += 1;
            self.last_badcookie = Some(reply.to_vec());
        } else {
            self.answered += 1;
        }
    }
}

/// Most answers a bucket can give in `elapsed`: the burst plus the refill.
fn bound(elapsed: Duration) -> usize {
    RATE * WINDOW + (RATE as f64 * elapsed.as_secs_f64()).ceil() as usize
}

fn rrl_config(slip: usize) -> String {
    format!(
        "[dns.rrl]\nrate = {RATE}\nwindow = \"{WINDOW}s\"\nslip = {slip}\nexempt = [\"127.0.3.0/24\"]\n"
    )
}

#[tokio::test]
async fn a_flood_from_one_prefix_is_limited_and_nobody_else_is() {
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .dns(&rrl_config(2))
        .start()
        .await;
    let (flood1, elapsed) = flood(s.addr, "127.0.0.1", 400, |i| packet(i, WWW, &[])).await;
    assert!(
        flood1.answered >= RATE * WINDOW && flood1.answered <= bound(elapsed),
        "{flood1:?} in {elapsed:?}"
    );
    // slip = 2: every other limited response is a TC=1 reply, the rest are dropped.
    let limited = 400 - flood1.answered;
    assert!(
        flood1.slipped.abs_diff(limited / 2) <= 1,
        "{flood1:?}, {limited} limited"
    );

    // Another /24 has its own buckets: its queries are answered.
    let (other, _) = flood(s.addr, "127.0.1.1", RATE, |i| packet(i, WWW, &[])).await;
    assert_eq!(other.answered, RATE, "{other:?}");
    // An exempt prefix is never limited.
    let (exempt, _) = flood(s.addr, "127.0.3.9", 400, |i| packet(i, WWW, &[])).await;
    assert_eq!(exempt.answered, 400, "{exempt:?}");
    // Another name from the flooding prefix has its own bucket too.
    let (mail, _) = flood(s.addr, "127.0.0.1", 5, |i| {
        packet(i, b"\x04mail\x07example\x03com\x00", &[])
    })
    .await;
    assert_eq!(mail.answered, 5, "{mail:?}");
    // TCP is never limited: the flooding address still gets full answers over TCP.
    for _ in 0..20 {
        let reply = s.tcp(&query("www.example.com.", RecordType::A)).await;
        assert_eq!(reply.answers.len(), 1);
    }
    // NXDOMAIN is counted per zone: random names do not get a bucket each.
    let (nx, elapsed) = flood(s.addr, "127.0.4.1", 200, |i| {
        let mut name = format!("\x05r{i:04}").into_bytes();
        name.extend_from_slice(b"\x07example\x03com\x00");
        packet(i, &name, &[])
    })
    .await;
    assert!(nx.answered <= bound(elapsed), "{nx:?}");

    let m = s.metrics();
    let value = |needle: &str| -> usize {
        m.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        value("weir_dns_rrl_limited_total{class=\"answer\"}"),
        limited,
        "{m}"
    );
    assert_eq!(
        value("weir_dns_rrl_slipped_total{class=\"answer\"}"),
        flood1.slipped
    );
    assert!(value("weir_dns_rrl_limited_total{class=\"nxdomain\"}") > 0);
    s.stop().await;
}

#[tokio::test]
async fn slip_zero_drops_and_slip_one_truncates_every_limited_response() {
    for (slip, want_slipped) in [(0, false), (1, true)] {
        let s = Server::builder()
            .zone("example.com.", ZONE)
            .dns(&rrl_config(slip))
            .start()
            .await;
        let (t, elapsed) = flood(s.addr, "127.0.0.1", 100, |i| packet(i, WWW, &[])).await;
        assert!(t.answered <= bound(elapsed), "{t:?}");
        let limited = 100 - t.answered;
        if want_slipped {
            assert_eq!((t.slipped, t.silent), (limited, 0), "slip 1: {t:?}");
        } else {
            assert_eq!((t.slipped, t.silent), (0, limited), "slip 0: {t:?}");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn cookies_learned_returned_and_judged_per_rfc7873() {
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .dns(&rrl_config(1))
        .start()
        .await;
    let client = *b"\x24\x64\xc4\xab\xcf\x10\xc9\x57";
    let ask = |p: Vec<u8>| {
        let s = &s;
        async move { s.udp_raw(&p).await.expect("a reply") }
    };

    // A client cookie alone: a normal answer with our server cookie (RFC 7873 5.2.3).
    let first = ask(packet(1, WWW, &client)).await;
    let (cookie, rcode) = reply_cookie(&first, &client).expect("a COOKIE back");
    assert_eq!(rcode, 0);
    assert_eq!(header(&first).2[1], 1, "answered");
    assert_eq!(cookie[8], 1, "RFC 9018 version 1");

    // Sent back: valid, answered, and the same cookie comes back (under half an hour old).
    let second = ask(packet(2, WWW, &cookie)).await;
    let (again, rcode) = reply_cookie(&second, &client).unwrap();
    assert_eq!((rcode, again), (0, cookie));
    assert_eq!(header(&second).2[1], 1);

    // A server cookie that is not ours: answered normally, with a fresh one (5.2.4).
    let mut forged = cookie;
    forged[23] ^= 0xFF;
    let third = ask(packet(3, WWW, &forged)).await;
    let (fresh, rcode) = reply_cookie(&third, &client).unwrap();
    assert_eq!(rcode, 0);
    assert_eq!(header(&third).2[1], 1);
    assert_ne!(fresh, forged);

    // Malformed COOKIE options (5.2.2): FORMERR.
    for len in [1, 7, 9, 15, 41] {
        let reply = ask(packet(4, WWW, &vec![7u8; len])).await;
        assert_eq!(header(&reply).1 & RCODE_MASK, 1, "{len} octets");
    }

    // Rate limiting: a valid server cookie proves the address, so it is never limited...
    let valid = cookie;
    let (t, _) = flood(s.addr, "127.0.0.1", 100, |i| packet(i, WWW, &valid)).await;
    assert_eq!(t.answered, 100, "{t:?}");
    // ... while a client cookie alone is, and its slips are BADCOOKIE with a cookie to retry
    // with (RFC 7873 5.2.3, "Send a BADCOOKIE error response").
    let (t, elapsed) = flood(s.addr, "127.0.0.1", 100, |i| packet(i, WWW, &client)).await;
    assert!(t.answered <= bound(elapsed), "{t:?}");
    assert_eq!(t.badcookie, 100 - t.answered, "{t:?}");
    let slip = t.last_badcookie.expect("a BADCOOKIE slip");
    let (retry, rcode) = reply_cookie(&slip, &client).unwrap();
    assert_eq!(rcode, 23, "BADCOOKIE");
    let reply = ask(packet(10, WWW, &retry)).await;
    assert_eq!(
        header(&reply).2[1],
        1,
        "the retry with the cookie is answered"
    );

    let m = s.metrics();
    assert!(
        m.contains("weir_dns_cookies_total{result=\"valid\"}"),
        "{m}"
    );
    assert!(m.contains("weir_dns_responses_total{rcode=\"BADCOOKIE\",transport=\"udp\"}"));
    s.stop().await;
}

/// dig's own cookie handling: `+cookie` sends a client cookie and reports whether the reply's
/// cookie matched; `+cookie=<hex>` sends one it learned.
#[tokio::test]
async fn dig_learns_a_server_cookie_and_is_accepted_with_it() {
    let s = Server::start().await;
    let port = s.addr.port().to_string();
    let dig = |extra: String| {
        let port = port.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &port,
                    "+norec",
                    &extra,
                    "www.example.com",
                    "A",
                ])
                .output()
                .expect("dig runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let first = dig("+cookie".into()).await.unwrap();
    let line = first
        .lines()
        .find(|l| l.starts_with("; COOKIE: "))
        .unwrap_or_else(|| panic!("no COOKIE in {first}"));
    assert!(line.ends_with("(good)"), "{line}");
    let cookie = line.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(cookie.len(), 48, "client and server cookie: {line}");
    assert!(first.contains("status: NOERROR"), "{first}");

    let second = dig(format!("+cookie={cookie}")).await.unwrap();
    assert!(second.contains("status: NOERROR"), "{second}");
    assert!(
        second.contains(&format!("; COOKIE: {cookie} (good)")),
        "{second}"
    );
    let m = s.metrics();
    assert!(
        m.contains("weir_dns_cookies_total{result=\"valid\"} 1"),
        "{m}"
    );
    s.stop().await;
}

/// Nameservers given the same secret file accept each other's cookies (RFC 9018's point), and
/// a server that rotated to a new secret still accepts cookies of the previous one.
#[tokio::test]
async fn a_shared_secret_file_makes_cookies_interoperable_and_rotation_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        write_secret(&path, text);
        format!("cookie_secret_file = \"{}\"\n", path.display())
    };
    let old = write("old", "e5e973e5a6b2a43f48e7dc849e37bfcf\n");
    let rotated = write(
        "rotated",
        "445536bcd2513298075a5d379663c962\ne5e973e5a6b2a43f48e7dc849e37bfcf\n",
    );
    let a = Server::builder()
        .zone("example.com.", ZONE)
        .dns(&old)
        .start()
        .await;
    let b = Server::builder()
        .zone("example.com.", ZONE)
        .dns(&old)
        .start()
        .await;
    let c = Server::builder()
        .zone("example.com.", ZONE)
        .dns(&rotated)
        .start()
        .await;
    let client = *b"\x01\x02\x03\x04\x05\x06\x07\x08";
    let first = a.udp_raw(&packet(1, WWW, &client)).await.unwrap();
    let (cookie, _) = reply_cookie(&first, &client).unwrap();
    // B answers A's cookie as its own: the same cookie comes back.
    let reply = b.udp_raw(&packet(2, WWW, &cookie)).await.unwrap();
    assert_eq!(reply_cookie(&reply, &client).unwrap().0, cookie);
    // C accepts it with its previous secret and hands out one of its current secret.
    let reply = c.udp_raw(&packet(3, WWW, &cookie)).await.unwrap();
    let (renewed, rcode) = reply_cookie(&reply, &client).unwrap();
    assert_eq!(rcode, 0);
    assert_ne!(renewed, cookie);
    for s in [&b, &c] {
        let m = s.metrics();
        assert!(
            m.contains("weir_dns_cookies_total{result=\"valid\"} 1"),
            "{m}"
        );
    }
    // A, which never had C's new secret, does not take C's cookie as proof.
    let reply = a.udp_raw(&packet(4, WWW, &renewed)).await.unwrap();
    assert_ne!(reply_cookie(&reply, &client).unwrap().0, renewed);
    assert!(
        a.metrics()
            .contains("weir_dns_cookies_total{result=\"invalid\"} 1")
    );
    for s in [a, b, c] {
        s.stop().await;
    }
}

/// BIND's `named` as a resolver, forwarding example.com to weir: a real resolver's cookie
/// handling (it sends a client cookie, learns the server cookie, returns it).
struct Named {
    child: std::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Named {
    async fn start(weir: SocketAddr) -> Named {
        let binary = ["/usr/sbin/named", "/usr/bin/named", "/usr/local/sbin/named"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or_else(|| panic!("named is not installed (Debian: apt-get install bind9)"));
        let mut log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = loop {
                let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let port = udp.local_addr().unwrap().port();
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    break port;
                }
            };
            let d = dir.path().display();
            let config = format!(
                "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; \
                 listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; \
                 recursion yes; allow-query {{ any; }}; dnssec-validation no; }};\n\
                 zone \"example.com\" {{ type forward; forward only; \
                 forwarders {{ {} port {}; }}; }};\n",
                weir.ip(),
                weir.port()
            );
            std::fs::write(dir.path().join("named.conf"), config).unwrap();
            let out = std::fs::File::create(dir.path().join("named.log")).unwrap();
            let child = std::process::Command::new(binary)
                .arg("-g")
                .arg("-c")
                .arg(dir.path().join("named.conf"))
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            let mut named = Named {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
            };
            for _ in 0..50 {
                if let Ok(Some(_)) = named.child.try_wait() {
                    break;
                }
                if named
                    .resolve("example.com.", RecordType::SOA)
                    .await
                    .is_some()
                {
                    return named;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            log = std::fs::read_to_string(named.dir.path().join("named.log")).unwrap_or_default();
        }
        panic!("named did not start or does not answer:\n{log}");
    }

    async fn resolve(&self, name: &str, rtype: RecordType) -> Option<usize> {
        let mut msg = query(name, rtype);
        msg.metadata.recursion_desired = true;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(&msg.to_vec().unwrap(), self.addr)
            .await
            .ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let reply = hickory_proto::op::Message::from_vec(&buf[..n]).ok()?;
        (!reply.answers.is_empty()).then_some(reply.answers.len())
    }
}

#[tokio::test]
async fn bind_as_a_resolver_learns_and_returns_weirs_cookie() {
    let s = Server::start().await;
    let named = Named::start(s.addr).await;
    for name in ["www.example.com.", "mail.example.com.", "info.example.com."] {
        let rtype = if name.starts_with("info") {
            RecordType::TXT
        } else {
            RecordType::A
        };
        assert!(named.resolve(name, rtype).await.is_some(), "{name}");
    }
    let m = s.metrics();
    let value = |result: &str| -> u64 {
        let needle = format!("weir_dns_cookies_total{{result=\"{result}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(needle.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // named's first query carries a client cookie alone; every later one returns ours.
    assert!(value("client_only") >= 1, "{m}");
    assert!(value("valid") >= 3, "{m}");
    assert_eq!(value("invalid"), 0, "{m}");
    drop(named);
    s.stop().await;
}
