//! Real validating tools in front of an authoritative server, for the DNSSEC tests: unbound and
//! BIND's `named` as validating resolvers stubbed to the server, and BIND's `delv` asking it
//! directly, each trusting one [`Anchor`] for the zone. Everything is on loopback: neither
//! resolver can reach the internet (unbound refuses every name outside the zone, named's root
//! is a `static-stub` of the server itself).
//!
//! Everything here is async, even `delv`: the server under test (weir) usually runs on the
//! test's own tokio runtime, which a blocking wait would starve.
//!
//! The harness was proven against NSD serving a zone signed by BIND (keys by `dnssec-keygen -q
//! -a ECDSAP256SHA256 -f KSK example.com`, a CSK; zone by `dnssec-signzone -S -z -K . -o
//! example.com example.com.zone`, NSEC; anchor by `dnssec-dsfromkey -2 K….key`, or the `.key`
//! file itself): A, MX, TXT, a CNAME to an in-zone A and a wildcard validate with all three
//! tools (AD, `DelvStatus::Validated`), as do NXDOMAIN, NODATA and an empty non-terminal
//! (`NxDomain`, `NoData`); with the DS of another key as the anchor, both resolvers answer
//! SERVFAIL without AD and delv says `Failed("broken trust chain")`. Names outside the zone get
//! REFUSED from unbound and SERVFAIL from named, at once. The proof test itself is in the commit
//! that added this module. A test against weir reads:
//!
//! ```ignore
//! let anchor = Anchor::new("example.com. IN DS 18972 13 2 891A81...C78A");
//! let unbound = Unbound::start(server.addr, &anchor).await;
//! let r = unbound.ask("www.example.com.", RecordType::A).await;
//! assert!(r.rcode == ResponseCode::NoError && r.ad, "{r:?}\n{}", unbound.log());
//! let named = Named::start(server.addr, &anchor).await;
//! let r = named.ask("nope.example.com.", RecordType::A).await;
//! assert!(r.rcode == ResponseCode::NXDomain && r.ad, "{r:?}\n{}", named.log());
//! let d = delv(server.addr, &anchor, "www.example.com.", "A").await;
//! assert_eq!(d.status, DelvStatus::Validated, "{}", d.output);
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use tokio::net::UdpSocket;

use crate::support::{find_program, free_port, spawn_logged, tcp_exchange};

/// How long a resolver may take to answer one query (validation included).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a resolver may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// `program`, found in PATH or an sbin folder, or a panic naming the Debian `package`.
fn need(program: &str, package: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!(
            "{program} is not installed: the DNSSEC tests validate weir's answers with it \
             (Debian: apt-get install {package}; .ci/test installs it)"
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Trust anchors

/// A trust anchor for one zone: DS or DNSKEY records, rendered in each tool's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Anchor {
    /// The zone, absolute (`example.com.`).
    zone: String,
    records: Vec<AnchorRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AnchorRecord {
    /// Key tag, algorithm, digest type, digest (hex).
    Ds(u16, u8, u8, String),
    /// Flags, protocol, algorithm, public key (base64).
    Dnskey(u16, u8, u8, String),
}

impl Anchor {
    /// Parses DS or DNSKEY records in zone-file form, one a line (`owner [ttl] [class] DS|DNSKEY
    /// rdata`), as `dnssec-dsfromkey` prints them or a `K*.key` file holds them. Lines starting
    /// with `;` and blank lines are skipped; every record must have the same owner. Panics on
    /// anything else.
    pub(crate) fn new(text: &str) -> Anchor {
        let mut zone: Option<String> = None;
        let mut records = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with(';') {
                continue;
            }
            let fields: Vec<&str> = line
                .split_whitespace()
                .filter(|f| *f != "(" && *f != ")")
                .collect();
            let at = fields
                .iter()
                .position(|f| f.eq_ignore_ascii_case("DS") || f.eq_ignore_ascii_case("DNSKEY"))
                .filter(|&i| i > 0 && fields.len() >= i + 5)
                .unwrap_or_else(|| panic!("not a DS or DNSKEY record: {line:?}"));
            let mut owner = fields[0].to_ascii_lowercase();
            if !owner.ends_with('.') {
                owner.push('.');
            }
            match &zone {
                Some(z) => assert_eq!(*z, owner, "an anchor is for one zone: {line:?}"),
                None => zone = Some(owner),
            }
            let number = |i: usize| -> u16 {
                fields[at + i]
                    .parse()
                    .unwrap_or_else(|_| panic!("field {i} of {line:?} is not a number"))
            };
            let rest = fields[at + 4..].concat();
            let (a, b, c) = (number(1), number(2) as u8, number(3) as u8);
            records.push(if fields[at].eq_ignore_ascii_case("DS") {
                AnchorRecord::Ds(a, b, c, rest.to_ascii_uppercase())
            } else {
                AnchorRecord::Dnskey(a, b, c, rest)
            });
        }
        Anchor {
            zone: zone.unwrap_or_else(|| panic!("no DS or DNSKEY record in {text:?}")),
            records,
        }
    }

    /// The zone the anchor is for, absolute (`example.com.`).
    pub(crate) fn zone(&self) -> &str {
        &self.zone
    }

    /// unbound.conf `server:` lines: `trust-anchor: "example.com. DS 12345 13 2 ABCD…"`.
    pub(crate) fn unbound(&self) -> String {
        self.records
            .iter()
            .map(|r| {
                let (kind, a, b, c, data) = match r {
                    AnchorRecord::Ds(a, b, c, d) => ("DS", a, b, c, d),
                    AnchorRecord::Dnskey(a, b, c, d) => ("DNSKEY", a, b, c, d),
                };
                format!(
                    "    trust-anchor: \"{} {kind} {a} {b} {c} {data}\"\n",
                    self.zone
                )
            })
            .collect()
    }

    /// A BIND `trust-anchors { … };` statement (`static-ds` or `static-key`), which named.conf
    /// and delv's `-a` file both take.
    pub(crate) fn bind(&self) -> String {
        let mut out = String::from("trust-anchors {\n");
        for r in &self.records {
            let (kind, a, b, c, data) = match r {
                AnchorRecord::Ds(a, b, c, d) => ("static-ds", a, b, c, d),
                AnchorRecord::Dnskey(a, b, c, d) => ("static-key", a, b, c, d),
            };
            out.push_str(&format!(
                "    {} {kind} {a} {b} {c} \"{data}\";\n",
                self.zone
            ));
        }
        out.push_str("};\n");
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Asking a resolver

/// A resolver's reply: its rcode, its AD flag and its answer section.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) rcode: ResponseCode,
    /// AD: the resolver validated the answer (it was asked with AD set, RFC 6840 5.7).
    pub(crate) ad: bool,
    /// The answer section (no RRSIGs: the query has no DO bit).
    pub(crate) answers: Vec<Record>,
}

impl Resolved {
    /// The answer records as "owner TYPE rdata" lines.
    pub(crate) fn lines(&self) -> Vec<String> {
        crate::support::lines(&self.answers)
    }
}

/// One query with RD and AD set and no EDNS to `resolver`, over UDP and again over TCP if
/// truncated; None if there is no reply within `timeout`.
async fn exchange(
    resolver: SocketAddr,
    name: &str,
    rtype: RecordType,
    class: DNSClass,
    timeout: Duration,
) -> Option<Message> {
    let mut msg = Message::query();
    msg.metadata.id = fastrand::u16(..);
    msg.metadata.recursion_desired = true;
    msg.metadata.authentic_data = true;
    let mut q = Query::query(Name::from_str(name).unwrap(), rtype);
    q.set_query_class(class);
    msg.add_query(q);
    let packet = msg.to_vec().unwrap();
    let ask = async {
        let socket = UdpSocket::bind("127.0.0.1:0").await.ok()?;
        socket.send_to(&packet, resolver).await.ok()?;
        let mut buf = vec![0u8; 65535];
        let reply = loop {
            let n = socket.recv(&mut buf).await.ok()?;
            match Message::from_vec(&buf[..n]) {
                Ok(reply) if reply.metadata.id == msg.metadata.id => break reply,
                _ => continue,
            }
        };
        if !reply.metadata.truncation {
            return Some(reply);
        }
        let mut stream = tokio::net::TcpStream::connect(resolver).await.ok()?;
        Message::from_vec(&tcp_exchange(&mut stream, &packet).await.ok()?).ok()
    };
    tokio::time::timeout(timeout, ask).await.ok()?
}

/// Asks `resolver` for `name` `rtype`; panics, with the resolver's `log`, without a reply.
async fn ask(
    resolver: SocketAddr,
    name: &str,
    rtype: RecordType,
    log: impl FnOnce() -> String,
) -> Resolved {
    let Some(reply) = exchange(resolver, name, rtype, DNSClass::IN, QUERY_TIMEOUT).await else {
        panic!(
            "no reply from the resolver for {name} {rtype} within {QUERY_TIMEOUT:?}:\n{}",
            log()
        );
    };
    Resolved {
        rcode: reply.metadata.response_code,
        ad: reply.metadata.authentic_data,
        answers: reply.answers,
    }
}

/// A resolver process, killed by its PID when dropped, with its folder and log.
#[derive(Debug)]
struct Process {
    child: std::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Process {
    /// Starts `binary` with `args(config)` after writing `config_text(dir, port)` to `config`
    /// in a temp folder, and waits until it replies on `port` (to `version.bind CH TXT`, which
    /// touches no zone and no cache). A port picked free may be taken before the resolver binds
    /// it, so this tries a few.
    async fn start(
        what: &str,
        binary: &Path,
        config: &str,
        config_text: impl Fn(&Path, u16) -> String,
        args: impl Fn(&Path) -> Vec<std::ffi::OsString>,
    ) -> Process {
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let conf = dir.path().join(config);
            std::fs::write(&conf, config_text(dir.path(), port)).unwrap();
            let log = dir.path().join(format!("{what}.log"));
            let args = args(&conf);
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            let child = spawn_logged(binary, &args, &log);
            let mut process = Process {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
                log,
            };
            let deadline = std::time::Instant::now() + START_TIMEOUT;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = process.child.try_wait() {
                    break;
                }
                let probe = Duration::from_millis(200);
                let ch = DNSClass::CH;
                if exchange(process.addr, "version.bind.", RecordType::TXT, ch, probe)
                    .await
                    .is_some()
                {
                    return process;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last_log = process.log();
        }
        panic!("{what} did not start or does not answer:\n{last_log}");
    }

    fn log(&self) -> String {
        let config = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "conf"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<String>();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- config:\n{config}--- log:\n{log}")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// unbound

/// A real unbound validating (`module-config: "validator iterator"`) on a free loopback port,
/// trusting one [`Anchor`], with the anchor's zone stubbed to the server under test. It never
/// reaches the internet: `local-zone: "." refuse` answers every other name REFUSED at once, and
/// the root is stubbed to 127.0.0.1 port 1 (nothing listens there) for its own lookups.
/// Killed by its PID when dropped.
#[derive(Debug)]
pub(crate) struct Unbound {
    process: Process,
}

impl Unbound {
    /// Starts unbound with `anchor` as its only trust anchor and `anchor.zone()` stubbed to
    /// `server`, and waits until it replies (it starts in well under a second).
    pub(crate) async fn start(server: SocketAddr, anchor: &Anchor) -> Unbound {
        let binary = need("unbound", "unbound");
        let config = |dir: &Path, port: u16| {
            let (d, zone) = (dir.display(), anchor.zone());
            // val-log-level 2 logs why an answer is bogus; trust-anchor-signaling off: no
            // `_ta-XXXX` queries to the server.
            format!(
                "server:\n    interface: 127.0.0.1@{port}\n    port: {port}\n    \
                 do-daemonize: no\n    chroot: \"\"\n    username: \"\"\n    \
                 directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n    logfile: \"\"\n    \
                 use-syslog: no\n    verbosity: 1\n    val-log-level: 2\n    \
                 num-threads: 1\n    so-reuseport: no\n    do-ip6: no\n    \
                 access-control: 127.0.0.0/8 allow\n    do-not-query-localhost: no\n    \
                 module-config: \"validator iterator\"\n    trust-anchor-signaling: no\n    \
                 local-zone: \".\" refuse\n    local-zone: \"{zone}\" transparent\n\
                 {}remote-control:\n    control-enable: no\n\
                 stub-zone:\n    name: \".\"\n    stub-addr: 127.0.0.1@1\n\
                 stub-zone:\n    name: \"{zone}\"\n    stub-addr: {}@{}\n",
                anchor.unbound(),
                server.ip(),
                server.port()
            )
        };
        let args = |conf: &Path| vec!["-c".into(), conf.as_os_str().to_owned()];
        let process = Process::start("unbound", &binary, "unbound.conf", config, args).await;
        Unbound { process }
    }

    /// Where unbound answers.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// Asks unbound for `name` `rtype` (RD and AD set): rcode, AD flag, answers. Panics, with
    /// its log, if it does not reply within 10 s.
    pub(crate) async fn ask(&self, name: &str, rtype: RecordType) -> Resolved {
        ask(self.addr(), name, rtype, || self.log()).await
    }

    /// unbound's config and log (why an answer was bogus, at val-log-level 2).
    pub(crate) fn log(&self) -> String {
        self.process.log()
    }
}

// ---------------------------------------------------------------------------------------------
// BIND

/// BIND's `named` as a validating resolver (`dnssec-validation yes`) on a free loopback port,
/// in the foreground (`named -g`), trusting one [`Anchor`] (`trust-anchors`), with the anchor's
/// zone a `static-stub` of the server under test. BIND's `static-stub` takes no port, so the
/// global `port` option (the port named sends queries to) is the server's; the root is a
/// `static-stub` of the server too, so nothing leaves loopback. Killed by its PID when dropped.
#[derive(Debug)]
pub(crate) struct Named {
    process: Process,
}

impl Named {
    /// Starts named with `anchor` as its only trust anchor and `anchor.zone()` stubbed to
    /// `server`, and waits until it replies (a quarter of a second here, as unbound).
    pub(crate) async fn start(server: SocketAddr, anchor: &Anchor) -> Named {
        let binary = need("named", "bind9");
        let config = |dir: &Path, port: u16| {
            let d = dir.display();
            let (ip, server_port) = (server.ip(), server.port());
            format!(
                "options {{\n    directory \"{d}\";\n    pid-file \"{d}/named.pid\";\n    \
                 managed-keys-directory \"{d}\";\n    session-keyfile \"{d}/session.key\";\n    \
                 listen-on port {port} {{ 127.0.0.1; }};\n    listen-on-v6 {{ none; }};\n    \
                 port {server_port};\n    recursion yes;\n    allow-query {{ any; }};\n    \
                 allow-recursion {{ any; }};\n    dnssec-validation yes;\n    notify no;\n    \
                 empty-zones-enable no;\n    max-cache-size 64m;\n}};\n\
                 controls {{ }};\n{}\
                 zone \".\" {{ type static-stub; server-addresses {{ {ip}; }}; }};\n\
                 zone \"{}\" {{ type static-stub; server-addresses {{ {ip}; }}; }};\n",
                anchor.bind(),
                anchor.zone()
            )
        };
        let args = |conf: &Path| vec!["-g".into(), "-c".into(), conf.as_os_str().to_owned()];
        let process = Process::start("named", &binary, "named.conf", config, args).await;
        Named { process }
    }

    /// Where named answers.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    /// Asks named for `name` `rtype` (RD and AD set): rcode, AD flag, answers. Panics, with its
    /// log, if it does not reply within 10 s.
    pub(crate) async fn ask(&self, name: &str, rtype: RecordType) -> Resolved {
        ask(self.addr(), name, rtype, || self.log()).await
    }

    /// named's config and log (validation failures are logged at its default level).
    pub(crate) fn log(&self) -> String {
        self.process.log()
    }
}

// ---------------------------------------------------------------------------------------------
// delv

/// What `delv` concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DelvStatus {
    /// `; fully validated`: a positive answer.
    Validated,
    /// `; negative response, fully validated` for a name that does not exist.
    NxDomain,
    /// `; negative response, fully validated` for a name without the type (NODATA).
    NoData,
    /// `; unsigned answer` (or `; negative response, unsigned answer`): an insecure answer.
    Unsigned,
    /// Anything else: the reason from `;; resolution failed: …` (`broken trust chain`,
    /// `no valid signature found`, …), or the whole output when there is none.
    Failed(String),
}

/// The outcome of one `delv` run.
#[derive(Debug, Clone)]
pub(crate) struct DelvResult {
    pub(crate) status: DelvStatus,
    /// The records printed (answer and RRSIGs), one a line, fields separated by one space:
    /// `owner ttl IN TYPE rdata`.
    pub(crate) records: Vec<String>,
    /// stdout then stderr, with the command line first, for failure messages.
    pub(crate) output: String,
}

impl DelvResult {
    /// The rdata of the printed records of type `rtype` (`"A"`, `"MX"`), in order.
    pub(crate) fn rdata(&self, rtype: &str) -> Vec<String> {
        self.records
            .iter()
            .filter_map(|r| {
                let fields: Vec<&str> = r.splitn(5, ' ').collect();
                (fields.len() == 5 && fields[3].eq_ignore_ascii_case(rtype))
                    .then(|| fields[4].to_string())
            })
            .collect()
    }
}

/// Runs BIND's `delv @IP -p PORT -a FILE +root=ZONE NAME RTYPE` against the authoritative
/// `server` directly, trusting `anchor` (a `trust-anchors` file; `+root` names the anchor's
/// zone). delv exits 0 even when validation fails, so the outcome is read from its output.
pub(crate) async fn delv(
    server: SocketAddr,
    anchor: &Anchor,
    name: &str,
    rtype: &str,
) -> DelvResult {
    let binary = need("delv", "bind9-dnsutils");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("anchor.conf");
    std::fs::write(&file, anchor.bind()).unwrap();
    let args: Vec<String> = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "-a".into(),
        file.display().to_string(),
        format!("+root={}", anchor.zone()),
        name.into(),
        rtype.into(),
    ];
    let run = tokio::process::Command::new(&binary)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("delv {} did not finish within 30 s", args.join(" ")))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let output = format!("$ delv {}\n{stdout}{stderr}", args.join(" "));
    let has = |line: &str| stdout.lines().any(|l| l.trim() == line);
    let status = if has("; fully validated") {
        DelvStatus::Validated
    } else if has("; negative response, fully validated") {
        if stdout.contains(";-$NXDOMAIN") {
            DelvStatus::NxDomain
        } else {
            DelvStatus::NoData
        }
    } else if has("; unsigned answer") || has("; negative response, unsigned answer") {
        DelvStatus::Unsigned
    } else {
        let reason = stderr
            .lines()
            .find_map(|l| l.strip_prefix(";; resolution failed: "))
            .map_or_else(|| output.clone(), str::to_string);
        DelvStatus::Failed(reason)
    };
    let records = stdout
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    DelvResult {
        status,
        records,
        output,
    }
}
