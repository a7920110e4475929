//! Test harness: a real weir server on 127.0.0.1 port 0 with a zone written to a temp folder,
//! and small UDP/TCP clients. Queries are built and responses decoded with hickory-proto, an
//! implementation independent of weir's own wire code.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The zone most tests use: every case of PROTOCOL.md's answer table has a name here.
pub(crate) const ZONE: &str = r#"
$ORIGIN example.com.
$TTL 3600
@       SOA ns1 hostmaster ( 2026112301 7200 3600 1209600 300 )
        NS  ns1
        NS  ns2
        MX  10 mail
        A   192.0.2.1
ns1     A   192.0.2.53
ns2     A   192.0.2.54
        AAAA 2001:db8::54
mail    A   192.0.2.25
www  60 A   192.0.2.80
     60 AAAA 2001:db8::80
web     CNAME www
alias   CNAME web
loop1   CNAME loop2
loop2   CNAME loop1
out     CNAME www.example.net.
gone    CNAME nothing
info    TXT "first string" "second string"
_sip._tcp SRV 10 60 5060 sip
sip     A   192.0.2.60
a.b.c   A   192.0.2.3
*.wild  A   192.0.2.99
*.wild  TXT "wildcard"
sub     NS  ns1.sub
        NS  ns.example.net.
ns1.sub A   192.0.2.153
"#;

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    running: Option<weir::app::Running>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Serves `ZONE` as example.com.
    pub(crate) async fn start() -> Server {
        Server::with(&[("example.com.", ZONE)], "").await
    }

    /// Serves the given zones; `dns_extra` is appended to the [dns] table.
    pub(crate) async fn with(zones: &[(&str, &str)], dns_extra: &str) -> Server {
        Server::with_pools(zones, dns_extra, "").await
    }

    /// Serves zones and the given `[[pool]]` tables.
    pub(crate) async fn with_pools(zones: &[(&str, &str)], dns_extra: &str, pools: &str) -> Server {
        // `dns_extra` may bring its own listen addresses.
        let listen = if dns_extra.contains("listen") {
            ""
        } else {
            "listen = [\"127.0.0.1:0\"]\n"
        };
        let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
        Server::configured(
            zones,
            &format!("{admin}[dns]\n{listen}udp_workers = 1\n{dns_extra}\n"),
            pools,
        )
        .await
    }

    /// Serves zones and pools with the given `[admin]` table.
    pub(crate) async fn with_admin(zones: &[(&str, &str)], admin: &str, pools: &str) -> Server {
        Server::configured(
            zones,
            &format!("{admin}[dns]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n"),
            pools,
        )
        .await
    }

    /// Writes `head` (top-level tables), the zones and `pools` as a config and starts it.
    async fn configured(zones: &[(&str, &str)], head: &str, pools: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = head.to_string();
        for (i, (origin, text)) in zones.iter().enumerate() {
            let file = format!("zone{i}.zone");
            std::fs::write(dir.path().join(&file), text).unwrap();
            config.push_str(&format!(
                "[[zone]]\norigin = \"{origin}\"\nfile = \"{file}\"\n"
            ));
        }
        config.push_str(pools);
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, config).unwrap();
        let loaded = weir::state::load(&path).unwrap();
        let store = weir::app::open_store(&loaded, false).unwrap();
        let running = weir::app::start(loaded, store).unwrap();
        Server {
            addr: running.dns_addrs[0],
            running: Some(running),
            _dir: dir,
        }
    }

    pub(crate) fn running(&self) -> &weir::app::Running {
        self.running.as_ref().unwrap()
    }

    pub(crate) fn metrics(&self) -> String {
        self.running.as_ref().unwrap().metrics.render()
    }

    pub(crate) async fn stop(mut self) {
        self.running.take().unwrap().shutdown().await.unwrap();
    }

    /// Sends raw bytes over UDP and returns the first reply (None if none within 2 s).
    pub(crate) async fn udp_raw(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(packet, self.addr).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        buf.truncate(n);
        Some(buf)
    }

    /// Sends `bad` and then a good query from the same socket; the first reply that arrives must
    /// be the good one's if `bad` was dropped (one worker answers a socket's packets in order),
    /// so a drop is observed without waiting for a timeout.
    pub(crate) async fn udp_dropped(&self, bad: &[u8]) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(bad, self.addr).await.unwrap();
        let mut good = query("www.example.com.", RecordType::A);
        good.metadata.id = 0xBEEF;
        socket
            .send_to(&good.to_vec().unwrap(), self.addr)
            .await
            .unwrap();
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .expect("the good query is answered")
            .unwrap();
        buf[..2] == [0xBE, 0xEF] && n > 12
    }

    pub(crate) async fn udp(&self, msg: &Message) -> Message {
        let bytes = self
            .udp_raw(&msg.to_vec().unwrap())
            .await
            .expect("a UDP reply");
        Message::from_vec(&bytes).unwrap()
    }

    pub(crate) async fn tcp(&self, msg: &Message) -> Message {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        Message::from_vec(
            &tcp_exchange(&mut stream, &msg.to_vec().unwrap())
                .await
                .unwrap(),
        )
        .unwrap()
    }

    /// Asks over `transport` ("udp" or "tcp").
    pub(crate) async fn ask(&self, transport: &str, msg: &Message) -> Message {
        match transport {
            "udp" => self.udp(msg).await,
            _ => self.tcp(msg).await,
        }
    }
}

/// Writes one length-prefixed message and reads one reply.
pub(crate) async fn tcp_exchange(
    stream: &mut TcpStream,
    packet: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    tcp_read(stream).await
}

pub(crate) async fn tcp_read(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// A query without RD and without EDNS, with a fixed id.
pub(crate) fn query(name: &str, rtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.metadata.id = 4242;
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    msg
}

pub(crate) fn query_class(name: &str, rtype: RecordType, class: DNSClass) -> Message {
    let mut msg = query(name, rtype);
    let mut q = Query::query(Name::from_str(name).unwrap(), rtype);
    q.set_query_class(class);
    msg.queries = vec![q];
    msg
}

/// The same query with EDNS(0) and the given payload size.
pub(crate) fn with_edns(mut msg: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    msg.set_edns(edns);
    msg
}

pub(crate) fn rcode(msg: &Message) -> ResponseCode {
    msg.metadata.response_code
}

/// Records of a section as "owner TYPE rdata" lines, TTLs left out.
pub(crate) fn lines(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

pub(crate) fn ttls(records: &[Record]) -> Vec<u32> {
    records.iter().map(|r| r.ttl).collect()
}

pub(crate) fn is_response(msg: &Message) -> bool {
    msg.metadata.message_type == MessageType::Response && msg.metadata.op_code == OpCode::Query
}

/// Builds a raw query by hand: header fields, then `body` (question and more) verbatim.
pub(crate) fn raw(id: u16, flags: u16, counts: [u16; 4], body: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        p.extend_from_slice(&c.to_be_bytes());
    }
    p.extend_from_slice(body);
    p
}

/// The raw header of a reply: (id, flags, counts).
pub(crate) fn header(reply: &[u8]) -> (u16, u16, [u16; 4]) {
    let u = |i: usize| u16::from_be_bytes([reply[i], reply[i + 1]]);
    (u(0), u(2), [u(4), u(6), u(8), u(10)])
}

pub(crate) const RCODE_MASK: u16 = 0x000F;
pub(crate) const TC: u16 = 0x0200;
pub(crate) const AA: u16 = 0x0400;

/// A plain HTTP/1.1 GET; returns (status, body).
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One HTTP/1.1 exchange with a JSON body (or none), within 10 s; None if the server did not
/// answer (stopped, killed, restarting). A body that is not JSON comes back as a string.
pub(crate) async fn http_maybe(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text.get(9..12)?.parse().ok()?;
        let raw = text.split_once("\r\n\r\n")?.1.to_string();
        Some((
            status,
            serde_json::from_str(&raw).unwrap_or(Value::String(raw)),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// Sends `queries` pipelined on one TCP connection and returns the replies in order.
pub(crate) async fn tcp_pipeline(addr: SocketAddr, queries: &[Vec<u8>]) -> Vec<Message> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.split();
    let mut burst = Vec::new();
    for q in queries {
        burst.extend_from_slice(&(q.len() as u16).to_be_bytes());
        burst.extend_from_slice(q);
    }
    let writer = async {
        write.write_all(&burst).await.unwrap();
    };
    let reader = async {
        let mut reader = tokio::io::BufReader::new(&mut read);
        let mut out = Vec::with_capacity(queries.len());
        for _ in queries {
            let mut len = [0u8; 2];
            reader.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            reader.read_exact(&mut buf).await.unwrap();
            out.push(Message::from_vec(&buf).unwrap());
        }
        out
    };
    let ((), replies) = tokio::join!(writer, reader);
    replies
}

impl Server {
    pub(crate) fn admin(&self) -> SocketAddr {
        self.running.as_ref().unwrap().admin_addr.unwrap()
    }
}

/// A real `weir serve` process, killed when dropped (so a failing test never leaves it running,
/// holding the test's output pipe open).
pub(crate) struct WeirProcess {
    child: std::process::Child,
    pub(crate) dns: SocketAddr,
    pub(crate) admin: Option<SocketAddr>,
    /// Every log line after the startup line.
    pub(crate) log: std::sync::mpsc::Receiver<String>,
    /// The log lines before it.
    pub(crate) startup_log: Vec<String>,
}

impl WeirProcess {
    /// Starts `weir serve --config <config>` (plus `extra` args) and waits for its startup line.
    /// The config must set `[log] format = "json"`. Returns the stderr text on failure to start.
    pub(crate) fn start(config: &std::path::Path, extra: &[&str]) -> Result<WeirProcess, String> {
        WeirProcess::start_limited(config, extra, None)
    }

    /// `start`, with RLIMIT_NOFILE set to `nofile` (soft, hard) in the child when given.
    pub(crate) fn start_limited(
        config: &std::path::Path,
        extra: &[&str],
        nofile: Option<(u64, u64)>,
    ) -> Result<WeirProcess, String> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
        command
            .env_remove("WEIR_CONFIG")
            .env_remove("RUST_LOG")
            .args(["serve", "--config"])
            .arg(config)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some((soft, hard)) = nofile {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let started = loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("weir serving DNS") => break line,
                Some(Ok(line)) => seen.push(line),
                _ => {
                    let _ = child.wait();
                    return Err(seen.join("\n"));
                }
            }
        };
        let field = |name: &str| {
            started
                .split(&format!("\"{name}\":\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
        };
        let dns = field("listen").unwrap();
        let admin = field("admin");
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(WeirProcess {
            child,
            dns,
            admin,
            log,
            startup_log: seen,
        })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the process to exit (after a signal).
    pub(crate) fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// For `weir ctl` tests (ctl.rs): the config a server loaded, which a reload reads again.
impl Server {
    pub(crate) fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("weir.toml")
    }
}
