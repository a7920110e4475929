//! Test harness: a real weir server on 127.0.0.1 port 0 with a zone written to a temp folder,
//! and small UDP/TCP clients. Queries are built and responses decoded with hickory-proto, an
//! implementation independent of weir's own wire code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
pub(crate) use reqwest::Method;
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

/// How a query travels to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub(crate) const BOTH: [Transport; 2] = [Transport::Udp, Transport::Tcp];
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// The weir.toml of a test server, field by field: zones (written beside it), DNS listen
/// addresses, more `[dns]` keys, admin tokens and TLS, and `[[pool]]` tables. The admin API
/// listens on 127.0.0.1 port 0; DNS on 127.0.0.1 port 0 unless told otherwise, with one UDP
/// worker.
#[derive(Debug, Default)]
pub(crate) struct ServerBuilder {
    /// (origin, zone text, more `[[zone]]` keys as TOML).
    zones: Vec<(String, String, String)>,
    listen: Vec<String>,
    dns: Vec<String>,
    admin: Vec<String>,
    pools: String,
    /// More top-level tables (`[dnssec]`), as TOML, at the end.
    tables: String,
    /// TSIG key files (name, text), written beside the config and listed in `[tsig]`.
    key_files: Vec<(String, String)>,
}

impl ServerBuilder {
    /// Serves `text` as the zone `origin`.
    pub(crate) fn zone(mut self, origin: &str, text: &str) -> ServerBuilder {
        self.zones
            .push((origin.to_string(), text.to_string(), String::new()));
        self
    }

    /// More keys for the last zone's `[[zone]]` table, as TOML.
    pub(crate) fn zone_keys(mut self, toml: &str) -> ServerBuilder {
        if let Some(zone) = self.zones.last_mut() {
            zone.2.push_str(toml);
            zone.2.push('\n');
        }
        self
    }

    /// DNS listens on `addrs` instead of 127.0.0.1 port 0.
    pub(crate) fn listen(mut self, addrs: &[&str]) -> ServerBuilder {
        self.listen = addrs.iter().map(|a| a.to_string()).collect();
        self
    }

    /// More `[dns]` keys (and `[dns.*]` tables after them), as TOML.
    pub(crate) fn dns(mut self, toml: &str) -> ServerBuilder {
        self.dns.push(toml.to_string());
        self
    }

    /// Bearer tokens for the admin API (`admin.token_file`).
    pub(crate) fn admin_tokens(mut self, file: &Path) -> ServerBuilder {
        self.admin
            .push(format!("token_file = {}", toml_string(file.display())));
        self
    }

    /// HTTPS for the admin API with `cert` (`admin.tls_cert`, `admin.tls_key`).
    pub(crate) fn admin_tls(mut self, cert: &AdminCert) -> ServerBuilder {
        for (key, path) in [("tls_cert", &cert.cert), ("tls_key", &cert.key)] {
            self.admin
                .push(format!("{key} = {}", toml_string(path.display())));
        }
        self
    }

    /// A TSIG key file `name` holding `text`, listed in `[tsig] key_files`.
    pub(crate) fn key_file(mut self, name: &str, text: &str) -> ServerBuilder {
        self.key_files.push((name.to_string(), text.to_string()));
        self
    }

    /// `[[pool]]` tables, as TOML.
    pub(crate) fn pools(mut self, toml: &str) -> ServerBuilder {
        self.pools.push_str(toml);
        self
    }

    /// More top-level tables (`[dnssec]`), as TOML, written last.
    pub(crate) fn tables(mut self, toml: &str) -> ServerBuilder {
        self.tables.push_str(toml);
        self.tables.push('\n');
        self
    }

    /// The config; zone `i` is read from `zone_file(i)`.
    fn toml(&self) -> String {
        let listen: Vec<String> = if self.listen.is_empty() {
            vec![toml_string("127.0.0.1:0")]
        } else {
            self.listen.iter().map(toml_string).collect()
        };
        let mut config = String::from("[admin]\nlisten = \"127.0.0.1:0\"\n");
        for line in &self.admin {
            config.push_str(&format!("{line}\n"));
        }
        config.push_str(&format!(
            "[dns]\nlisten = [{}]\nudp_workers = 1\n",
            listen.join(", ")
        ));
        for toml in &self.dns {
            config.push_str(&format!("{toml}\n"));
        }
        if !self.key_files.is_empty() {
            let files: Vec<String> = self.key_files.iter().map(|(n, _)| toml_string(n)).collect();
            config.push_str(&format!("[tsig]\nkey_files = [{}]\n", files.join(", ")));
        }
        for (i, (origin, _, keys)) in self.zones.iter().enumerate() {
            config.push_str(&format!(
                "[[zone]]\norigin = {}\nfile = {}\n{keys}",
                toml_string(origin),
                toml_string(zone_file(i))
            ));
        }
        config.push_str(&self.pools);
        config.push_str(&self.tables);
        config
    }

    /// Writes the config and zones to a temp folder and starts the server in this process.
    pub(crate) async fn start(self) -> Server {
        let dir = tempfile::tempdir().unwrap();
        for (i, (_, text, _)) in self.zones.iter().enumerate() {
            std::fs::write(dir.path().join(zone_file(i)), text).unwrap();
        }
        for (name, text) in &self.key_files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, self.toml()).unwrap();
        let loaded = weir::state::load(&path).unwrap();
        let store = weir::app::open_store(&loaded, false).unwrap();
        let running = weir::app::start(loaded, store).unwrap();
        Server {
            addr: running.dns_addrs[0],
            running: Some(running),
            dir,
        }
    }
}

/// A self-signed admin certificate for 127.0.0.1, written to a folder as admin.pem and
/// admin.key.
#[derive(Debug)]
pub(crate) struct AdminCert {
    /// The certificate, PEM: what a client trusts.
    pub(crate) pem: String,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl AdminCert {
    pub(crate) fn new(dir: &Path) -> AdminCert {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (cert, key) = (dir.join("admin.pem"), dir.join("admin.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        AdminCert {
            pem: certified.cert.pem(),
            cert,
            key,
        }
    }
}

/// Writes `text` to `path` readable by its owner only (weir refuses secrets others can read).
pub(crate) fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A program in PATH or one of the sbin folders (unbound lives in /usr/sbin, often not in a
/// user's PATH).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Starts `binary` with `args`, stdin empty and stdout and stderr both into the file `log`.
pub(crate) fn spawn_logged(
    binary: &Path,
    args: &[&std::ffi::OsStr],
    log: &Path,
) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    std::process::Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A loopback port free for both UDP and TCP right now.
pub(crate) fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn zone_file(i: usize) -> String {
    format!("zone{i}.zone")
}

/// `text` as a TOML string (quoted, escaped).
fn toml_string(text: impl std::fmt::Display) -> String {
    toml::Value::String(text.to_string()).to_string()
}

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    running: Option<weir::app::Running>,
    dir: tempfile::TempDir,
}

impl Server {
    /// Serves `ZONE` as example.com.
    pub(crate) async fn start() -> Server {
        Server::builder().zone("example.com.", ZONE).start().await
    }

    pub(crate) fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// A server for `example.com.` with `zone` as its file and `pools`.
    pub(crate) async fn serving(zone: &str, pools: &str) -> Server {
        Server::builder()
            .zone("example.com.", zone)
            .pools(pools)
            .start()
            .await
    }

    pub(crate) fn running(&self) -> &weir::app::Running {
        self.running.as_ref().unwrap()
    }

    pub(crate) fn admin(&self) -> SocketAddr {
        self.running().admin_addr.unwrap()
    }

    pub(crate) fn metrics(&self) -> String {
        self.running().metrics.render()
    }

    /// The file of the `i`th zone the builder was given (a test rewrites it before a reload).
    pub(crate) fn zone_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(zone_file(i))
    }

    /// `POST /v1/reload`: the status and the reply.
    pub(crate) async fn reload(&self) -> (u16, Value) {
        http(self.admin(), Method::POST, "/v1/reload", &[], None).await
    }

    /// The config the server loaded, which a reload reads again (`weir ctl` tests).
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.path().join("weir.toml")
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

    pub(crate) async fn ask(&self, transport: Transport, msg: &Message) -> Message {
        match transport {
            Transport::Udp => self.udp(msg).await,
            Transport::Tcp => self.tcp(msg).await,
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

/// `msg` with EDNS(0) (1232 bytes) carrying a Client Subnet option for `subnet`
/// (`198.51.100.0/24`), as a resolver sends it on a client's behalf.
pub(crate) fn with_ecs(msg: Message, subnet: &str) -> Message {
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    let (addr, len) = subnet.split_once('/').unwrap();
    let mut msg = with_edns(msg, 1232);
    let option = ClientSubnet::new(addr.parse().unwrap(), len.parse().unwrap(), 0);
    if let Some(edns) = msg.edns.as_mut() {
        edns.options_mut().insert(EdnsOption::Subnet(option));
    }
    msg
}

/// The SCOPE PREFIX-LENGTH of a reply's Client Subnet option; None without one.
pub(crate) fn ecs_scope(msg: &Message) -> Option<u8> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match msg.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some(s.scope_prefix()),
        _ => None,
    }
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

/// The tests' one HTTP client: reqwest as weir's own clients use it (rustls on ring), with no
/// proxy and no connection kept for reuse, so every request has a connection of its own. No
/// deadline either: a test that wants one sets it (under a paused clock it would fire at once).
/// It trusts no certificate but `trusted` (the system's roots are not even read: loading them
/// takes longer than a test's request).
pub(crate) fn http_client(trusted: &[&str]) -> reqwest::Client {
    // reqwest is built without a rustls provider (see `health::probe::install_crypto_provider`).
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let trusted = trusted
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .pool_idle_timeout(None)
        .tls_certs_only(trusted)
        .build()
        .unwrap()
}

/// Sends `request`: (status, body), or the error if there was no answer.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> reqwest::Result<(u16, String)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// A body as JSON, or as a JSON string when it is not JSON.
pub(crate) fn json_or_string(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// `method path` (the path with its query) to the plain-HTTP server at `addr`, with `headers`
/// and a JSON `body`.
pub(crate) fn http_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = http_client(&[]).request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    request
}

/// One request that must be answered: (status, body as JSON, or a string when it is not JSON).
pub(crate) async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) = send(http_request(addr, method.clone(), path, headers, body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (status, json_or_string(text))
}

/// A GET that must be answered: (status, body).
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    send(http_request(addr, Method::GET, path, &[], None))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// One request with a JSON body (or none), within 10 s; None if the server did not answer
/// (stopped, killed, restarting). A body that is not JSON comes back as a string.
pub(crate) async fn http_maybe(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let body = body.map(|b| b.to_string());
    let exchange = send(http_request(addr, method, path, &[], body.as_deref()));
    let (status, text) = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()?
        .ok()?;
    Some((status, json_or_string(text)))
}

/// The sorted set of addresses answered for `name` A over `n` queries pipelined on one TCP
/// connection.
pub(crate) async fn answered(dns: SocketAddr, name: &str, n: usize) -> Vec<String> {
    let q = query(name, RecordType::A).to_vec().unwrap();
    let mut seen: Vec<String> = tcp_pipeline(dns, &vec![q; n])
        .await
        .iter()
        .flat_map(|r| r.answers.iter().map(|a| a.data.to_string()))
        .collect();
    seen.sort();
    seen.dedup();
    seen
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

/// The `fields` of a JSON log line (its `message` among them); None for a line that is not
/// JSON.
pub(crate) fn log_fields(line: &str) -> Option<Value> {
    let mut line: Value = serde_json::from_str(line).ok()?;
    Some(line["fields"].take())
}

/// Query log lines (their `fields`) until `want` of them arrived, or until none came for
/// `quiet`.
pub(crate) fn query_lines(weir: &WeirProcess, want: usize, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < want && std::time::Instant::now() < deadline {
        match weir.log.recv_timeout(quiet) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["target"] == "weir::query" {
                    assert_eq!(v["level"], "INFO", "{line}");
                    out.push(v["fields"].clone());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("weir exited"),
        }
    }
    out
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
    pub(crate) fn start(config: &Path, extra: &[&str]) -> Result<WeirProcess, String> {
        WeirProcess::start_limited(config, extra, None)
    }

    /// `start`, with RLIMIT_NOFILE set to `nofile` (soft, hard) in the child when given.
    pub(crate) fn start_limited(
        config: &Path,
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
                Some(Ok(line)) => match log_fields(&line) {
                    Some(fields)
                        if fields["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("weir serving DNS")) =>
                    {
                        break fields;
                    }
                    _ => seen.push(line),
                },
                _ => {
                    let _ = child.wait();
                    return Err(seen.join("\n"));
                }
            }
        };
        // `listen` is every DNS address, comma-separated; `admin` is an address or "off".
        let dns = started["listen"]
            .as_str()
            .and_then(|listen| listen.split(',').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no DNS address in {started}"));
        let admin = started["admin"].as_str().and_then(|a| a.parse().ok());
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
