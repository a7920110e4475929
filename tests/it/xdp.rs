//! The AF_XDP path (issue 18) for real, as root: a network namespace and a veth pair made by
//! the test, `weir serve` taking the host end's UDP queries through AF_XDP, and clients in the
//! namespace (dig, python3 sockets). Nothing is skipped: a kernel that refuses XDP fails the
//! test with weir's own error.

use std::process::Command;
use std::time::Duration;

use crate::support::WeirProcess;

const ZONE: &str = "$ORIGIN xdp.example.\n$TTL 300\n@ IN SOA ns1 h 1 7200 1800 1209600 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN A 192.0.2.20\nwww IN AAAA 2001:db8::20\n";

fn sh(args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A namespace with one end of a veth pair; the other end on the host. Removed on drop.
struct Veth {
    ns: String,
    host: String,
    v4: (String, String),
    v6: (String, String),
}

impl Veth {
    fn new(n: u8) -> Veth {
        Veth::with_queues(n, 1)
    }

    /// A pair whose ends have `queues` receive and transmit queues each (the namespace end
    /// spreads its flows over its transmit queues by hash; each lands on the host end's
    /// receive queue of the same number).
    fn with_queues(n: u8, queues: u8) -> Veth {
        let id = std::process::id() % 10000;
        let (ns, host, peer) = (
            format!("wx{id}n{n}"),
            format!("wx{id}h{n}"),
            format!("wx{id}p{n}"),
        );
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host]).output();
        sh(&["ip", "netns", "add", &ns]);
        let v = Veth {
            ns: ns.clone(),
            host: host.clone(),
            v4: (format!("10.97.{n}.1"), format!("10.97.{n}.2")),
            v6: (format!("fd97:{n}::1"), format!("fd97:{n}::2")),
        };
        let q = queues.to_string();
        sh(&[
            "ip",
            "link",
            "add",
            &host,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &ns,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ]);
        sh(&["ip", "addr", "add", &format!("{}/24", v.v4.0), "dev", &host]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", v.v6.0),
            "dev",
            &host,
            "nodad",
        ]);
        sh(&["ip", "link", "set", &host, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &ns];
            all.extend_from_slice(args);
            sh(&all);
        };
        inside(&["ip", "addr", "add", &format!("{}/24", v.v4.1), "dev", &peer]);
        inside(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", v.v6.1),
            "dev",
            &peer,
            "nodad",
        ]);
        inside(&["ip", "link", "set", &peer, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        v
    }

    /// Runs a command in the namespace; its stdout.
    fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        let out = Command::new(all[0]).args(&all[1..]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn dig(&self, server: &str, extra: &[&str]) -> String {
        let mut args = vec!["dig", "+short", "+time=2", "+tries=2", server];
        args.extend_from_slice(extra);
        self.run(&args).trim().to_string()
    }

    /// What `ip link` says of the host end.
    fn link(&self) -> String {
        String::from_utf8_lossy(&sh(&["ip", "link", "show", "dev", &self.host]).stdout).into_owned()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn config(dir: &std::path::Path, v: &Veth, admin: u16) -> std::path::PathBuf {
    config_with(dir, v, admin, "", "", "")
}

/// `config`, with `xdp` lines added to its `[[dns.xdp]]`, `log` lines to `[log]` and `tables`
/// (whole tables) at the end.
fn config_with(
    dir: &std::path::Path,
    v: &Veth,
    admin: u16,
    xdp: &str,
    log: &str,
    tables: &str,
) -> std::path::PathBuf {
    std::fs::write(dir.join("xdp.zone"), ZONE).unwrap();
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "[dns]\nlisten = [\"{}:53\", \"[{}]:53\"]\nudp_workers = 1\n\n[[dns.xdp]]\ninterface = \"{}\"\n{xdp}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[store]\npath = \"{}\"\n\n[log]\nformat = \"json\"\n{log}\n[[zone]]\norigin = \"xdp.example.\"\nfile = \"xdp.zone\"\n\n{tables}",
            v.v4.0,
            v.v6.0,
            v.host,
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn metric(admin: u16, series: &str) -> f64 {
    let out = sh(&["curl", "-sf", &format!("http://127.0.0.1:{admin}/metrics")]);
    let body = String::from_utf8_lossy(&out.stdout);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A Python snippet run in the namespace (sockets the test needs that no CLI tool sends).
fn python(v: &Veth, code: &str) -> String {
    v.run(&["python3", "-c", code])
}

#[test]
fn queries_from_a_namespace_are_answered_over_af_xdp_and_everything_else_stays_the_kernels() {
    let v = Veth::new(1);
    let dir = tempfile::tempdir().unwrap();
    let admin = crate::support::free_port();
    let weir = WeirProcess::start(&config(dir.path(), &v, admin), &[])
        .unwrap_or_else(|log| panic!("weir could not start with [[dns.xdp]]:\n{log}"));
    assert!(
        v.link().contains("prog/xdp"),
        "no program attached:\n{}",
        v.link()
    );
    let answered = format!("weir_xdp_queries_total{{interface=\"{}\"}}", v.host);
    let dropped = |reason: &str| {
        metric(
            admin,
            &format!(
                "weir_xdp_dropped_total{{interface=\"{}\",reason=\"{reason}\"}}",
                v.host
            ),
        )
    };

    // UDP over IPv4 and IPv6, answered through AF_XDP (counted there).
    assert_eq!(
        v.dig(&format!("@{}", v.v4.0), &["www.xdp.example", "A"]),
        "192.0.2.20"
    );
    assert_eq!(
        v.dig(&format!("@{}", v.v6.0), &["www.xdp.example", "AAAA"]),
        "2001:db8::20"
    );
    assert_eq!(metric(admin, &answered), 2.0);
    // An NXDOMAIN and a big answer too (EDNS, DO): the same bytes the socket path writes.
    let nx = v.run(&[
        "dig",
        "+time=2",
        "+tries=2",
        &format!("@{}", v.v4.0),
        "nope.xdp.example",
    ]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("flags: qr aa"),
        "{nx}"
    );
    assert_eq!(metric(admin, &answered), 3.0);

    // TCP to the same address is the kernel's (weir's TCP listener answers; not counted).
    assert_eq!(
        v.dig(&format!("@{}", v.v4.0), &["+tcp", "www.xdp.example"]),
        "192.0.2.20"
    );
    assert_eq!(metric(admin, &answered), 3.0);

    // UDP to another port reaches the kernel's socket on the host.
    let other = std::net::UdpSocket::bind((v.v4.0.as_str(), 0)).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = other.local_addr().unwrap().port();
    python(
        &v,
        &format!(
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'not dns', ('{}', {port}))",
            v.v4.0
        ),
    );
    let mut buf = [0u8; 64];
    let (n, from) = other
        .recv_from(&mut buf)
        .expect("UDP to another port never reached the kernel");
    assert_eq!(
        (&buf[..n], from.ip().to_string()),
        (&b"not dns"[..], v.v4.1.clone())
    );

    // ICMP echo is answered by the host's kernel.
    let ping = python(
        &v,
        &format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\ns.settimeout(5)\np = bytearray(b'\\x08\\x00\\x00\\x00\\x12\\x34\\x00\\x01weir')\nc = sum((p[i] << 8) + p[i + 1] for i in range(0, len(p), 2))\nc = (c & 0xffff) + (c >> 16)\np[2:4] = (~c & 0xffff).to_bytes(2, 'big')\ns.sendto(bytes(p), ('{}', 0))\nwhile True:\n    r, a = s.recvfrom(100)\n    if r[20] == 0:\n        print('echo reply from', a[0]); break\n",
            v.v4.0
        ),
    );
    assert!(
        ping.contains(&format!("echo reply from {}", v.v4.0)),
        "{ping}"
    );

    // Malformed DNS over XDP: too short to answer is dropped (as on sockets), a header whose
    // question is cut gets FORMERR; weir answers on after both.
    let formerr = python(
        &v,
        &format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(b'\\x00\\x07\\x01', ('{0}', 53))\ns.sendto(b'\\xab\\xcd\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x03ww', ('{0}', 53))\nr = s.recv(512)\nprint('id', r[0:2].hex(), 'rcode', r[3] & 15)\n",
            v.v4.0
        ),
    );
    assert!(formerr.contains("id abcd rcode 1"), "{formerr}");
    assert_eq!(dropped("query"), 1.0);

    // Frames sent raw on the wire (AF_PACKET in the namespace): a query with a broken IPv4
    // header checksum is taken by the program and refused by weir (the kernel drops such
    // packets too); a frame cut inside its UDP header goes to the kernel. No panic: weir
    // answers after them.
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", v.host)).unwrap();
    let peer = v.host.replace('h', "p");
    let raw = python(
        &v,
        &format!(
            "import socket\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('{peer}', 0))\ndst = bytes.fromhex('{}')\nsrc = open('/sys/class/net/{peer}/address').read().strip().replace(':', '')\neth = dst + bytes.fromhex(src) + b'\\x08\\x00'\ndns = b'\\x11\\x11\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x03www\\x03xdp\\x07example\\x00\\x00\\x01\\x00\\x01'\nudp = (40000).to_bytes(2, 'big') + (53).to_bytes(2, 'big') + (8 + len(dns)).to_bytes(2, 'big') + b'\\x00\\x00' + dns\nip = bytearray(b'\\x45\\x00' + (20 + len(udp)).to_bytes(2, 'big') + b'\\x00\\x00\\x40\\x00\\x40\\x11\\xde\\xad' + socket.inet_aton('{}') + socket.inet_aton('{}'))\ns.send(eth + bytes(ip) + udp)\ns.send(eth + bytes(ip)[:20] + udp[:4])\nprint('sent')\n",
            mac.trim().replace(':', ""),
            v.v4.1,
            v.v4.0
        ),
    );
    assert!(raw.contains("sent"), "{raw}");
    assert_eq!(
        v.dig(&format!("@{}", v.v4.0), &["www.xdp.example"]),
        "192.0.2.20"
    );
    assert_eq!(dropped("frame"), 1.0, "the bad-checksum frame");
    assert_eq!(metric(admin, &answered), 5.0);

    // Killed with -9, weir leaves no program behind (the link dies with the process), and a
    // new weir attaches and serves.
    weir.signal(libc::SIGKILL);
    let _ = weir.wait();
    assert!(
        !v.link().contains("prog/xdp"),
        "left attached:\n{}",
        v.link()
    );
    let weir = WeirProcess::start(&config(dir.path(), &v, admin), &[]).unwrap();
    assert_eq!(
        v.dig(&format!("@{}", v.v4.0), &["www.xdp.example"]),
        "192.0.2.20"
    );
    assert_eq!(metric(admin, &answered), 1.0);
    // A clean stop detaches too.
    weir.signal(libc::SIGTERM);
    let _ = weir.wait();
    assert!(
        !v.link().contains("prog/xdp"),
        "left attached:\n{}",
        v.link()
    );
}

#[test]
fn start_up_fails_naming_the_interface_when_xdp_cannot_attach() {
    let v = Veth::new(2);
    let dir = tempfile::tempdir().unwrap();
    let admin = crate::support::free_port();
    let path = config(dir.path(), &v, admin);
    // Another program already holds the interface (`ip link set ... xdp` is what an operator
    // or another tool does): weir refuses to stack or steal it.
    let first = WeirProcess::start(&path, &[]).unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let second = config(second_dir.path(), &v, crate::support::free_port());
    let text = std::fs::read_to_string(&second)
        .unwrap()
        .replace(":53\"", ":5354\"");
    std::fs::write(&second, text).unwrap();
    let err = WeirProcess::start(&second, &[])
        .err()
        .expect("a second weir on the same interface started");
    assert!(
        err.contains(&format!("AF_XDP on {}", v.host)) && err.contains("another XDP program"),
        "{err}"
    );
    drop(first);
    // An interface that is not there: `weir check` says so.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&v.host, "nosuchif0");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains("dns.xdp[0].interface") && text.contains("no network interface `nosuchif0`"),
        "{text}"
    );
}

/// Python (run in the namespace, argv: server count padding): sends one query for
/// www.xdp.example (A to an IPv4 server, AAAA to an IPv6 one) from each of `count` sockets,
/// so each flow is hashed to a queue of its own choosing, with an EDNS padding option of
/// `padding` bytes when not 0 (a query bigger than the MTU leaves fragmented); prints
/// `answered N`, the queries answered NOERROR with one record, untruncated.
const QUERIES: &str = r"
import socket, struct, sys
server, count, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ':' in server else socket.AF_INET
qtype = 28 if fam == socket.AF_INET6 else 1
def query(i):
    m = struct.pack('>HHHHHH', i, 0, 1, 0, 0, 1 if pad else 0)
    m += b'\x03www\x03xdp\x07example\x00' + struct.pack('>HH', qtype, 1)
    if pad:
        m += b'\x00' + struct.pack('>HHIH', 41, 1232, 0, 4 + pad) + struct.pack('>HH', 12, pad) + bytes(pad)
    return m
socks = []
for i in range(count):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(query(i), (server, 53))
    socks.append(s)
ok = 0
for i, s in enumerate(socks):
    try:
        r = s.recv(4096)
    except socket.timeout:
        continue
    rid, flags, qd, an = struct.unpack('>HHHH', r[:8])
    if rid == i and flags & 0x8000 and flags & 0x020F == 0 and an == 1:
        ok += 1
print('answered', ok)
";

fn answered(v: &Veth, server: &str, count: usize, padding: usize) -> usize {
    let out = v.run(&[
        "python3",
        "-c",
        QUERIES,
        server,
        &count.to_string(),
        &padding.to_string(),
    ]);
    out.trim()
        .strip_prefix("answered ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

#[test]
fn every_receive_queue_is_served_and_fragmented_queries_go_through_the_kernel() {
    const FLOWS: usize = 64;
    let v = Veth::with_queues(3, 2);
    // An MTU above what a UMEM frame holds (1792 bytes of frame).
    sh(&["ip", "link", "set", &v.host, "mtu", "3000"]);
    v.run(&[
        "ip",
        "link",
        "set",
        &v.host.replace('h', "p"),
        "mtu",
        "3000",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let admin = crate::support::free_port();
    let answered_xdp = || {
        metric(
            admin,
            &format!("weir_xdp_queries_total{{interface=\"{}\"}}", v.host),
        )
    };

    // Only queue 1 taken: flows the veth puts on queue 0 find no socket in the map and go on
    // to the kernel (weir's UDP socket answers them). 64 flows hashed over two queues: both
    // get some (all on one queue: odds 2 in 2^64).
    let path = config_with(dir.path(), &v, admin, "queues = [1]\n", "", "");
    let weir = WeirProcess::start(&path, &[])
        .unwrap_or_else(|log| panic!("weir could not start on a two-queue veth:\n{log}"));
    assert_eq!(answered(&v, &v.v4.0, FLOWS, 0), FLOWS);
    // One queue served, in native mode; veth has no zero-copy, so copy mode.
    let queues = |zero_copy: &str| {
        metric(
            admin,
            &format!(
                "weir_xdp_queues{{interface=\"{}\",mode=\"native\",zero_copy=\"{zero_copy}\"}}",
                v.host
            ),
        )
    };
    assert_eq!((queues("false"), queues("true")), (1.0, 0.0));
    let through_xdp = answered_xdp();
    assert!(
        through_xdp > 0.0 && through_xdp < FLOWS as f64,
        "{through_xdp} of {FLOWS} flows through queue 1's socket"
    );

    // Queries bigger than the MTU arrive as fragments, which the program leaves to the
    // kernel: it reassembles them and weir's socket answers (IPv4 fragments and IPv6's
    // fragment header alike). Not counted as XDP.
    assert_eq!(answered(&v, &v.v4.0, 4, 4000), 4);
    assert_eq!(answered(&v, &v.v6.0, 4, 4000), 4);
    // Whole frames longer than a UMEM frame holds go to the kernel too.
    assert_eq!(answered(&v, &v.v4.0, 4, 2000), 4);
    assert_eq!(answered_xdp(), through_xdp);
    weir.signal(libc::SIGTERM);
    let _ = weir.wait();

    // By default every receive queue is taken: every flow is answered through AF_XDP.
    let weir = WeirProcess::start(&config(dir.path(), &v, admin), &[]).unwrap();
    assert_eq!(answered(&v, &v.v4.0, FLOWS, 0), FLOWS);
    assert_eq!(answered(&v, &v.v6.0, FLOWS, 0), FLOWS);
    assert_eq!(answered_xdp(), 2.0 * FLOWS as f64);
    assert_eq!(queues("false"), 2.0);
    drop(weir);
}

/// Python (argv: server count): one socket sends `count` queries in bursts of 20, draining
/// replies between bursts; prints `answered slipped seconds` (seconds: how long the sending
/// took).
const FLOOD: &str = r"
import socket, struct, sys, time
server, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
answered = slipped = 0
def drain():
    global answered, slipped
    while True:
        try:
            r = s.recv(4096)
        except BlockingIOError:
            return
        flags, an = struct.unpack('>H', r[2:4])[0], struct.unpack('>H', r[6:8])[0]
        if flags & 0x0200:
            slipped += 1
        elif an == 1:
            answered += 1
start = time.monotonic()
for i in range(n):
    s.sendto(struct.pack('>HHHHHH', i, 0, 1, 0, 0, 0) + b'\x03www\x03xdp\x07example\x00\x00\x01\x00\x01', (server, 53))
    if i % 20 == 19:
        time.sleep(0.005)
        drain()
took = time.monotonic() - start
end = time.monotonic() + 0.5
while time.monotonic() < end:
    time.sleep(0.02)
    drain()
print(answered, slipped, took)
";

#[test]
fn rate_limiting_cookies_and_the_query_log_work_over_af_xdp_as_on_sockets() {
    const RATE: usize = 5;
    const SENT: usize = 80;
    let v = Veth::new(4);
    let dir = tempfile::tempdir().unwrap();
    let admin = crate::support::free_port();
    let path = config_with(
        dir.path(),
        &v,
        admin,
        "",
        "query_sample = 1.0\n",
        &format!("[dns.rrl]\nrate = {RATE}\nwindow = \"1s\"\nslip = 2\n"),
    );
    let weir = WeirProcess::start(&path, &[]).unwrap();
    let server = format!("@{}", v.v4.0);
    let m = |series: &str| metric(admin, series);
    let xdp_answered = format!("weir_xdp_queries_total{{interface=\"{}\"}}", v.host);

    // dig learns a server cookie through the XDP path, and it is judged valid there.
    let first = v.run(&[
        "dig",
        "+time=2",
        "+tries=1",
        "+cookie",
        &server,
        "www.xdp.example",
    ]);
    let line = first
        .lines()
        .find(|l| l.starts_with("; COOKIE: "))
        .unwrap_or_else(|| panic!("no COOKIE in {first}"));
    let cookie = line.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(cookie.len(), 48, "client and server cookie: {line}");
    let second = v.run(&[
        "dig",
        "+time=2",
        "+tries=1",
        &format!("+cookie={cookie}"),
        &server,
        "www.xdp.example",
    ]);
    assert!(
        second.contains(&format!("; COOKIE: {cookie} (good)")),
        "{second}"
    );
    assert_eq!(m("weir_dns_cookies_total{result=\"valid\"}"), 1.0);

    // The query log has both, with the namespace's address as the client, over UDP.
    let logged = crate::support::query_lines(&weir, 2, Duration::from_secs(3));
    assert_eq!(logged.len(), 2, "{logged:?}");
    for fields in &logged {
        assert_eq!(
            ["client", "qname", "rcode", "transport"].map(|k| fields[k].as_str().unwrap_or("")),
            [v.v4.1.as_str(), "www.xdp.example.", "NOERROR", "udp"],
            "{fields}"
        );
    }

    // A flood from one client is held to the rate: every other limited response is a TC=1
    // slip (from the XDP worker's own slip counter), the rest are dropped.
    let out = v.run(&["python3", "-c", FLOOD, &v.v4.0, &SENT.to_string()]);
    let fields: Vec<f64> = out
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [answered, slipped, took] = fields[..] else {
        panic!("{out}")
    };
    let (answered, slipped) = (answered as usize, slipped as usize);
    let bound = RATE + (RATE as f64 * took).ceil() as usize;
    assert!(
        (1..=bound).contains(&answered),
        "{answered} answered in {took:.2}s, at most {bound} allowed"
    );
    let limited = SENT - answered;
    assert!(
        slipped.abs_diff(limited / 2) <= 1,
        "{slipped} slips of {limited} limited"
    );
    assert_eq!(
        m("weir_dns_rrl_limited_total{class=\"answer\"}"),
        limited as f64
    );
    assert_eq!(
        m("weir_dns_rrl_slipped_total{class=\"answer\"}"),
        slipped as f64
    );
    assert_eq!(
        m(&format!(
            "weir_xdp_dropped_total{{interface=\"{}\",reason=\"query\"}}",
            v.host
        )),
        (limited - slipped) as f64,
        "rate-limited drops"
    );
    assert_eq!(m(&xdp_answered), (2 + answered + slipped) as f64);

    // ... while the client that returns its valid server cookie is not limited.
    let third = v.run(&[
        "dig",
        "+time=2",
        "+tries=1",
        "+ignore",
        &format!("+cookie={cookie}"),
        &server,
        "www.xdp.example",
    ]);
    assert!(
        third.contains("status: NOERROR") && !third.contains(" tc") && third.contains("192.0.2.20"),
        "{third}"
    );
    assert_eq!(m(&xdp_answered), (3 + answered + slipped) as f64);
    drop(weir);
}
