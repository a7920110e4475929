//! The DNS protocol edge: sockets (UDP worker threads, TCP tasks) and the wire format, written
//! by hand (no hickory types here). Reads the published snapshot once per query; never locks,
//! never awaits anything but socket I/O, never writes state. Zone transfers (`xfr`, TCP only,
//! allow-listed) are the exception that allocates and waits on a blocking thread. A signed
//! query (TSIG, RFC 8945) takes the `#[cold]` `signed` path: verified with the snapshot's
//! keyring, answered signed, or NOTAUTH with the TSIG error.

pub mod cookie;
#[cfg(feature = "xdp")]
pub mod frame;
pub mod rrl;
pub mod tcp;
pub mod track;
pub mod udp;
pub mod updates;
pub mod wire;
#[cfg(feature = "xdp")]
pub mod xdp;
pub mod xfr;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::DnsConfig;
use crate::metrics::{self, Metrics, Transport};
use crate::model::{MAX_NAME_LEN, Name, Rcode};
use crate::snapshot::{self, Client, Question, Snapshot};
use wire::{CLASSIC_UDP_LIMIT, Reject, TCP_LIMIT};

/// Everything a DNS worker shares with the rest of the process.
#[derive(Clone, Debug)]
pub struct Context {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub config: DnsConfig,
    /// The sampled query log (`[log] query_sample`); `QueryLog::off()` when not configured.
    pub query_log: QueryLog,
    /// Where pool queries are counted for convergence tracking (`[dns] track_convergence`);
    /// `run` gives each UDP worker its own table. `Recorder::off()` when not tracking.
    pub recorder: track::Recorder,
    /// Response rate limiting on UDP (`[dns.rrl]`); `Limiter::off()` when its rate is 0. `run`
    /// gives each UDP worker its own slip counter over the one shared table.
    pub rrl: rrl::Limiter,
    /// The DNS cookie secrets (`[dns] cookie_secret_file`, or a random one).
    pub cookies: cookie::Cookies,
    /// Where RFC 2136 UPDATEs go (`Updates::off()`: answered NOTIMP).
    pub updates: updates::Updates,
}

/// Answers one packet from `client` into `out` (appending). Returns false when the packet is
/// dropped.
pub fn respond(
    ctx: &Context,
    packet: &[u8],
    transport: Transport,
    client: IpAddr,
    out: &mut Vec<u8>,
) -> bool {
    let q = match wire::parse_query(packet) {
        Ok(q) => q,
        Err(Reject::Drop(reason)) => {
            ctx.metrics.dropped(reason);
            return false;
        }
        Err(Reject::Header {
            id,
            opcode,
            rd,
            rcode,
        }) => {
            // Errors are rate limited too (one bucket per prefix), so a spoofed flood of junk
            // reflects no more than the rate.
            let verdict = match transport {
                Transport::Udp => ctx.rrl.check(client, rrl::Class::Error, &[], 0, None),
                Transport::Tcp => rrl::Verdict::Send,
            };
            if verdict == rrl::Verdict::Drop {
                ctx.metrics.rrl_limited(rrl::Class::Error.index(), false);
                return false;
            }
            let base = out.len();
            wire::write_reject(out, id, opcode, rd, rcode);
            let slipped = verdict == rrl::Verdict::Slip;
            if slipped {
                wire::set_truncated(out, base);
                ctx.metrics.rrl_limited(rrl::Class::Error.index(), true);
            }
            ctx.metrics.answered(transport, rcode, slipped);
            ctx.metrics.outside_zones().inc();
            return true;
        }
    };
    ctx.metrics.query(q.qtype);
    // A signed query (RFC 8945) takes its own path; unsigned ones pay this one branch.
    if let Some(tsig_at) = q.tsig {
        return signed(
            ctx,
            packet,
            &q,
            usize::from(tsig_at),
            transport,
            client,
            out,
        );
    }
    let udp_payload = ctx.config.udp_max_payload;
    let limit = limit(ctx, &q, transport);
    let cookie = judge_cookie(ctx, &q, client);
    let snapshot = ctx.snapshot.load();
    let mut answer = match q.edns {
        // RFC 6891 6.1.3: a version we do not implement gets BADVERS and no data.
        // Counted under zone "none" like other rejections: a second zone lookup here would
        // stop the compiler from inlining the one in `snapshot::answer` (callgrind: +66
        // instructions per query).
        Some(edns) if edns.version > 0 => snapshot::Answer {
            rcode: Rcode::BadVers,
            ..snapshot::Answer::refused()
        },
        _ => snapshot::answer(
            &snapshot,
            Question {
                name: q.qname(),
                qtype: q.qtype,
                qclass: q.qclass,
                client: Client {
                    addr: client,
                    ecs: q.ecs,
                },
                dnssec: q.edns.is_some_and(|e| e.dnssec_ok),
                compact_ok: q.edns.is_some_and(|e| e.compact_ok),
            },
        ),
    };
    // Response rate limiting: UDP only (TCP proves the address), and never for a client that
    // returned a valid server cookie. Off: one branch on an `Option`.
    if transport == Transport::Udp
        && ctx.rrl.is_on()
        && !matches!(cookie, Some((cookie::Verdict::Valid, _)))
    {
        // A compact answer (RFC 9824) is an NXDOMAIN for rate limiting, whatever its RCODE.
        let class = rrl::Class::of(
            if answer.compact_nxdomain {
                Rcode::NxDomain
            } else {
                answer.rcode
            },
            answer.authoritative,
            !answer.answer.is_empty(),
            answer.wildcard,
        );
        match ctx
            .rrl
            .check(client, class, q.qname(), q.qtype, answer.zone)
        {
            rrl::Verdict::Send => {}
            rrl::Verdict::Drop => {
                ctx.metrics.rrl_limited(class.index(), false);
                return false;
            }
            rrl::Verdict::Slip => {
                let cookie = cookie.as_ref().map(|(_, option)| option);
                slip(ctx, &q, answer.rcode, cookie, limit, class, out);
                return true;
            }
        }
    }
    // DNSSEC records made on demand are signed only now, for an answer that goes out: a
    // rate-limited flood of new names costs no signatures. One branch when there are none.
    answer.sign();
    let cookie = cookie.as_ref().map(|(_, option)| option);
    let written = wire::write_response(out, &q, &answer, limit, udp_payload, cookie);
    ctx.metrics
        .answered(transport, written.rcode, written.truncated);
    snapshot.count_query(answer.zone);
    // Like the zone counter: the pool's index came back with the answer; a few atomic loads
    // and one add in this worker's table (or one `Option` test when tracking is off).
    if let Some(pool) = answer.pool {
        ctx.recorder.record(
            pool,
            snapshot.generation,
            &Client {
                addr: client,
                ecs: q.ecs,
            },
        );
    }
    // Off: one predictable branch on a plain field. On: the draw is inlined, the record is not.
    if ctx.query_log.sample > 0.0 && ctx.query_log.draw() {
        ctx.query_log.offer(
            &ctx.metrics,
            &snapshot,
            &q,
            client,
            written.rcode,
            transport,
            answer.zone,
        );
    }
    true
}

/// The size an answer to `q` may take (RFC 1035 4.2.1, RFC 6891 6.2.5, RFC 1035 4.2.2).
#[inline]
fn limit(ctx: &Context, q: &wire::Query<'_>, transport: Transport) -> usize {
    match (transport, q.edns) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => CLASSIC_UDP_LIMIT,
        // min(client buffer, our cap): answers never need IP fragmentation (DNS Flag Day 2020).
        (Transport::Udp, Some(edns)) => usize::from(edns.payload.min(ctx.config.udp_max_payload)),
    }
}

/// RFC 7873 5.2: a COOKIE option is judged, and answered with the client's cookie and a
/// server cookie, whatever else happens to the query; a valid one proves the source address.
#[inline]
fn judge_cookie(
    ctx: &Context,
    q: &wire::Query<'_>,
    client: IpAddr,
) -> Option<(cookie::Verdict, [u8; cookie::OPTION_LEN])> {
    q.cookie.map(|c| {
        let (verdict, option) = ctx.cookies.answer(&c, client, cookie::unix_now());
        ctx.metrics.cookie(verdict as usize);
        (verdict, option)
    })
}

/// Answers a signed query (RFC 8945 5.2, 5.3): a TSIG that does not verify gets NOTAUTH with
/// the TSIG error and no data (FORMERR for a malformed one); one that verifies gets the normal
/// answer, sized to leave room for the TSIG record, signed with the same key and chained to
/// the query's MAC. An IXFR over UDP signed with a key its zone's `allow_transfer` names gets
/// the SOA. Not rate limited when it verifies (the key proves the client, like a cookie); a
/// failure is, like other errors. Off the common path: signed queries come from secondaries
/// and tools, not resolvers.
#[cold]
#[inline(never)]
fn signed(
    ctx: &Context,
    packet: &[u8],
    q: &wire::Query<'_>,
    tsig_at: usize,
    transport: Transport,
    client: IpAddr,
    out: &mut Vec<u8>,
) -> bool {
    let udp_payload = ctx.config.udp_max_payload;
    let limit = limit(ctx, q, transport);
    let cookie = judge_cookie(ctx, q, client);
    let cookie = cookie.as_ref().map(|(_, option)| option);
    let snapshot = ctx.snapshot.load();
    let now = crate::clock::wall_secs();
    let verified = match crate::tsig::verify(snapshot.keyring(), packet, tsig_at, now) {
        Ok(verified) => verified,
        Err(failure) => {
            if transport == Transport::Udp
                && ctx.rrl.check(client, rrl::Class::Error, &[], 0, None) == rrl::Verdict::Drop
            {
                ctx.metrics.rrl_limited(rrl::Class::Error.index(), false);
                return false;
            }
            let rcode = match failure.error {
                crate::tsig::Error::FormErr => Rcode::FormErr,
                _ => Rcode::NotAuth,
            };
            let answer = snapshot::Answer {
                rcode,
                ..snapshot::Answer::refused()
            };
            let base = out.len();
            wire::write_response(out, q, &answer, limit, udp_payload, cookie);
            crate::tsig::sign_error(out, base, &failure, now);
            ctx.metrics.answered(transport, rcode, false);
            ctx.metrics.outside_zones().inc();
            return true;
        }
    };
    let question = Question {
        name: q.qname(),
        qtype: q.qtype,
        qclass: q.qclass,
        client: Client {
            addr: client,
            ecs: q.ecs,
        },
        dnssec: q.edns.is_some_and(|e| e.dnssec_ok),
        compact_ok: q.edns.is_some_and(|e| e.compact_ok),
    };
    let mut answer = match q.edns {
        Some(edns) if edns.version > 0 => snapshot::Answer {
            rcode: Rcode::BadVers,
            ..snapshot::Answer::refused()
        },
        _ if q.qtype == crate::model::rtype::IXFR => {
            snapshot.ixfr_soa(question, Some(&verified.key.name))
        }
        _ => snapshot::answer(&snapshot, question),
    };
    answer.sign();
    let base = out.len();
    let room = limit.saturating_sub(crate::tsig::space(verified.key));
    let written = wire::write_response(out, q, &answer, room, udp_payload, cookie);
    crate::tsig::sign_answer(out, base, &verified, now);
    ctx.metrics
        .answered(transport, written.rcode, written.truncated);
    snapshot.count_query(answer.zone);
    true
}

/// Sends a rate-limited response as a slip: a minimal reply with the question and no data,
/// TC=1 so a real client behind the address retries over TCP. A client that sent a cookie gets
/// BADCOOKIE with a fresh server cookie instead (RFC 7873 5.2.3: the server "MAY ... send a
/// BADCOOKIE error response"): retrying with that cookie exempts it from the limit.
#[inline(never)]
fn slip(
    ctx: &Context,
    q: &wire::Query<'_>,
    rcode: Rcode,
    cookie: Option<&[u8; cookie::OPTION_LEN]>,
    limit: usize,
    class: rrl::Class,
    out: &mut Vec<u8>,
) {
    ctx.metrics.rrl_limited(class.index(), true);
    let base = out.len();
    let (rcode, truncated) = match cookie {
        Some(_) => (Rcode::BadCookie, false),
        None => (rcode, true),
    };
    let empty = snapshot::Answer {
        rcode,
        ..snapshot::Answer::refused()
    };
    let written = wire::write_response(out, q, &empty, limit, ctx.config.udp_max_payload, cookie);
    if truncated {
        wire::set_truncated(out, base);
    }
    ctx.metrics
        .answered(Transport::Udp, written.rcode, truncated);
}

/// How many sampled records may wait for the log thread; more are dropped and counted.
const QUERY_LOG_QUEUE: usize = 4096;
/// How long the log thread sleeps when its queue is empty. It polls instead of blocking in
/// `recv`, so a query never has to wake it (no lock, no system call on the query path).
const QUERY_LOG_POLL: Duration = Duration::from_millis(10);
/// The tracing target of query log lines.
pub const QUERY_LOG_TARGET: &str = "weir::query";

/// The sampled query log: a fraction of queries, chosen on the worker with `fastrand`, goes as
/// a fixed-size record through a bounded queue (`try_send`, dropped and counted when full) to
/// one thread that formats it and logs it with tracing at target `weir::query`. Nothing is
/// formatted on the query path.
#[derive(Clone, Debug)]
pub struct QueryLog {
    /// Fraction of queries logged, 0.0..=1.0; 0 = off.
    sample: f64,
    queue: Option<SyncSender<QueryRecord>>,
}

/// One sampled query, as the log thread receives it.
#[derive(Debug)]
struct QueryRecord {
    client: IpAddr,
    /// The question name, lowercase wire form.
    qname: [u8; MAX_NAME_LEN],
    qname_len: u8,
    /// Where the zone's origin starts in `qname`; None: outside every zone.
    zone_at: Option<u8>,
    qtype: u16,
    rcode: Rcode,
    transport: Transport,
}

impl QueryLog {
    /// No query log: the query path only tests `sample > 0.0`.
    pub fn off() -> QueryLog {
        QueryLog {
            sample: 0.0,
            queue: None,
        }
    }

    /// Logs `sample` (0.0..=1.0, as validated by config) of the queries; 0 starts nothing. The
    /// log thread ends once every clone of the returned `QueryLog` is gone (the DNS side
    /// stopped) and the queue is drained.
    pub fn start(sample: f64) -> io::Result<QueryLog> {
        if sample.is_nan() || sample <= 0.0 {
            return Ok(QueryLog::off());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(QUERY_LOG_QUEUE);
        std::thread::Builder::new()
            .name("weir-query-log".into())
            .spawn(move || log_queries(&rx))?;
        Ok(QueryLog {
            sample: sample.min(1.0),
            queue: Some(tx),
        })
    }

    /// True for the fraction `sample` of calls. fastrand's generator is thread-local: no lock,
    /// no system call.
    #[inline]
    fn draw(&self) -> bool {
        fastrand::f64() < self.sample
    }

    /// Queues the record of one sampled query for the log thread; counts it as dropped when
    /// the queue is full.
    #[inline(never)]
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one record, borrowed from the query path"
    )]
    fn offer(
        &self,
        metrics: &Metrics,
        snapshot: &Snapshot,
        q: &wire::Query<'_>,
        client: IpAddr,
        rcode: Rcode,
        transport: Transport,
        zone: Option<usize>,
    ) {
        let Some(queue) = &self.queue else { return };
        let name = q.qname();
        let mut qname = [0u8; MAX_NAME_LEN];
        let Some(dst) = qname.get_mut(..name.len()) else {
            return;
        };
        dst.copy_from_slice(name);
        let zone_at = zone
            .and_then(|z| snapshot.zone_origin(z))
            .and_then(|origin| name.len().checked_sub(origin.wire().len()))
            .map(|at| at as u8);
        let record = QueryRecord {
            client,
            qname,
            qname_len: name.len() as u8,
            zone_at,
            qtype: q.qtype,
            rcode,
            transport,
        };
        if queue.try_send(record).is_err() {
            metrics.query_log_dropped();
        }
    }
}

/// The log thread: drains the queue, sleeps while it is empty, ends when every sender is gone.
fn log_queries(queue: &Receiver<QueryRecord>) {
    loop {
        match queue.try_recv() {
            Ok(record) => log_query(&record),
            Err(TryRecvError::Empty) => std::thread::sleep(QUERY_LOG_POLL),
            Err(TryRecvError::Disconnected) => return,
        }
    }
}

fn log_query(r: &QueryRecord) {
    if !tracing::enabled!(target: QUERY_LOG_TARGET, tracing::Level::INFO) {
        return;
    }
    let wire = &r.qname[..usize::from(r.qname_len)];
    let qname = Name::from_lower_wire(wire);
    let zone = match r.zone_at.and_then(|at| wire.get(usize::from(at)..)) {
        Some(origin) => Name::from_lower_wire(origin).to_string(),
        None => metrics::NO_ZONE.to_string(),
    };
    let qtype = match metrics::qtype_name(r.qtype) {
        Some(name) => name.to_string(),
        // RFC 3597 5: the generic presentation of other types.
        None => format!("TYPE{}", r.qtype),
    };
    tracing::info!(
        target: QUERY_LOG_TARGET,
        client = %r.client,
        qname = %qname,
        qtype = %qtype,
        rcode = metrics::rcode_name(r.rcode),
        transport = r.transport.name(),
        zone = %zone,
        "query"
    );
}

/// Bound sockets, ready to serve. Binding happens before `run` so the caller learns the real
/// ports (tests bind port 0) and bind errors surface before anything starts.
#[derive(Debug)]
pub struct Listeners {
    /// Per listen address, one SO_REUSEPORT socket per UDP worker.
    pub udp: Vec<Vec<std::net::UdpSocket>>,
    pub tcp: Vec<std::net::TcpListener>,
    /// `[[dns.xdp]]` interfaces taken over (program attached, sockets open).
    #[cfg(feature = "xdp")]
    pub xdp: Vec<xdp::Attached>,
}

impl Listeners {
    /// UDP worker sockets across every listen address (one worker thread each).
    pub fn udp_workers(&self) -> usize {
        self.udp.iter().map(Vec::len).sum()
    }

    /// The bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Binds every configured address for UDP and TCP on the same port. With port 0 the UDP port is
/// chosen first and TCP follows it, retrying a few times if that port is taken for TCP.
pub fn bind(config: &DnsConfig) -> io::Result<Listeners> {
    let workers = match config.udp_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for &addr in &config.listen {
        let mut attempt = 0;
        let (sockets, listener) = loop {
            attempt += 1;
            let first = udp::bind(addr)?;
            let port_addr = first.local_addr()?;
            let listener = match tcp::bind(port_addr) {
                Ok(l) => l,
                Err(e) if addr.port() == 0 && attempt < 8 => {
                    tracing::debug!(error = %e, "TCP port taken, choosing another");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut sockets = vec![first];
            for _ in 1..workers {
                sockets.push(udp::bind(port_addr)?);
            }
            break (sockets, listener);
        };
        udp.push(sockets);
        tcp.push(listener);
    }
    #[cfg_attr(not(feature = "xdp"), allow(unused_mut))]
    let mut listeners = Listeners {
        udp,
        tcp,
        #[cfg(feature = "xdp")]
        xdp: Vec::new(),
    };
    // The program needs the bound addresses (port 0 is chosen above).
    #[cfg(feature = "xdp")]
    {
        let bound = listeners.local_addrs();
        for x in &config.xdp {
            listeners.xdp.push(xdp::attach(x, &bound)?);
        }
    }
    Ok(listeners)
}

/// Serves until `shutdown` is cancelled. Returns an error if a listener dies, so the process
/// goes down loudly instead of silently losing a transport.
pub async fn run(
    listeners: Listeners,
    mut ctx: Context,
    shutdown: CancellationToken,
) -> Result<(), ListenerDied> {
    updates::start_udp(&mut ctx);
    let (died_tx, mut died_rx) = tokio::sync::mpsc::channel::<ListenerDied>(16);
    let mut threads = Vec::new();
    let mut worker = 0;
    for sockets in listeners.udp {
        for (i, socket) in sockets.into_iter().enumerate() {
            let ctx = Context {
                recorder: ctx.recorder.for_udp_worker(worker),
                rrl: ctx.rrl.for_worker(),
                ..ctx.clone()
            };
            worker += 1;
            threads.push(udp::spawn(
                socket,
                i,
                ctx,
                shutdown.clone(),
                died_tx.clone(),
            )?);
        }
    }
    // Held until the workers are joined; dropping one detaches its interface's program.
    #[cfg(feature = "xdp")]
    let mut attached = Vec::new();
    #[cfg(feature = "xdp")]
    for x in listeners.xdp {
        let (workers, keep) = xdp::spawn(x, &ctx, &shutdown, &died_tx)?;
        threads.extend(workers);
        attached.push(keep);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(ctx.config.tcp_max_connections));
    for listener in listeners.tcp {
        let listener = tcp::Listener::new(listener, connections.clone(), ctx.clone())?;
        let (shutdown, died_tx) = (shutdown.clone(), died_tx.clone());
        tasks.spawn(async move {
            if let Err(e) = listener.run(shutdown).await {
                let _ = died_tx.send(e).await;
            }
        });
    }
    drop(died_tx);
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        Some(died) = died_rx.recv() => Err(died),
    };
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    // UDP workers notice the cancellation within their receive timeout.
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await
    .ok();
    #[cfg(feature = "xdp")]
    drop(attached);
    // Wait for open TCP connections to finish their current exchange.
    let _ = connections
        .acquire_many(ctx.config.tcp_max_connections as u32)
        .await;
    result
}

/// A listener that stopped for good.
#[derive(Debug, thiserror::Error)]
#[error("{transport} listener on {addr} died: {source}")]
pub struct ListenerDied {
    pub transport: &'static str,
    pub addr: String,
    #[source]
    pub source: io::Error,
}

impl From<io::Error> for ListenerDied {
    fn from(source: io::Error) -> Self {
        ListenerDied {
            transport: "DNS",
            addr: "?".into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name as HName, RecordType};

    use super::*;

    fn context() -> Context {
        context_with(&crate::tsig::Keyring::default(), "")
    }

    /// `context()` with TSIG keys and more zone lines.
    fn context_with(keyring: &crate::tsig::Keyring, more: &str) -> Context {
        let zone = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.2\nalias CNAME www\n*.w TXT \"wild\"\nsub NS ns.sub\nns.sub A 192.0.2.3\nmx MX 1 www\n".to_string() + more;
        let zone = zone.as_str();
        let pools = "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\n[[pool]]\nname = \"app.example.com.\"\nanswers = 2\nsticky = \"client-subnet\"\n[[pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.10\" }, { address = \"2001:db8::1\" }, { address = \"192.0.2.11\" }]\n";
        let config = crate::config::parse(pools, Path::new("w.toml")).unwrap();
        let origin = crate::model::Name::parse("example.com").unwrap();
        let zones = vec![crate::zones::from_text(zone, Path::new("z"), &origin).unwrap()];
        let index = crate::snapshot::index(&zones, &config.pools, &config.routing, keyring);
        let view = crate::model::View {
            pools: config.pools.clone().into(),
            ..Default::default()
        };
        let metrics = Arc::new(Metrics::new());
        let snapshot = crate::snapshot::build(&index, Arc::new(view), &metrics, 1);
        Context {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            metrics,
            config: config.dns,
            query_log: QueryLog::off(),
            recorder: track::Recorder::off(),
            rrl: rrl::Limiter::off(),
            cookies: cookie::Cookies::random(),
            updates: updates::Updates::off(),
        }
    }

    /// A signed answer keeps room for its TSIG record: an answer that fits 512 bytes unsigned
    /// but not with the record is truncated (TC=1, no data), the signed message within 512
    /// bytes and verifying; over TCP the same query gets the data, signed.
    #[test]
    fn signed_answers_keep_room_for_the_tsig_record() {
        use crate::tsig;
        let key = tsig::Key::new(
            Name::parse("k").unwrap(),
            tsig::Algorithm::HmacSha256,
            &[1; 32],
        );
        let keyring = tsig::Keyring::new(vec![key.clone()]);
        let more = format!("fit TXT \"{}\" \"{}\"\n", "a".repeat(254), "b".repeat(179));
        let ctx = context_with(&keyring, &more);
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(b"\x03fit\x07example\x03com\x00\x00\x10\x00\x01");
        let client: IpAddr = "192.0.2.99".parse().unwrap();
        let mut out = Vec::new();
        assert!(respond(&ctx, &packet, Transport::Udp, client, &mut out));
        assert_eq!(out.len(), 480, "unsigned: the answer fits");
        assert_eq!(out[2] & 0x02, 0);
        let now = crate::clock::wall_secs();
        let request_mac = tsig::sign_request(&mut packet, 0, &key, now);
        for (transport, truncated) in [(Transport::Udp, true), (Transport::Tcp, false)] {
            let mut out = Vec::new();
            assert!(respond(&ctx, &packet, transport, client, &mut out));
            assert!(out.len() <= 512 || !truncated, "{} bytes", out.len());
            assert_eq!(out[2] & 0x02 != 0, truncated, "TC over {transport:?}");
            let ancount = u16::from_be_bytes([out[6], out[7]]);
            assert_eq!(ancount, u16::from(!truncated));
            let at = tsig::locate(&out).unwrap().unwrap();
            tsig::verify_reply(&key, &out, at, &request_mac, now).unwrap();
        }
    }

    /// A zone with an RRset larger than a TCP message, a delegation with glue and a routed
    /// name, transferred: every message within 64 KiB and valid to an independent parser, the
    /// question in the first only, SOA first and last, every record once, the RRset split
    /// between messages, the route as the union of its pools' endpoints; other sources refused.
    /// A snapshot of example.com (transfers allowed to 192.0.2.0/24) with an RRset larger than
    /// a TCP message, a delegation with glue and a routed name.
    fn transfer_snapshot() -> Snapshot {
        let mut zone = String::from(
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\nsub NS ns.sub\nns.sub A 192.0.2.3\n",
        );
        let long = "x".repeat(250);
        for i in 0..300 {
            zone.push_str(&format!("big TXT \"{i} {long}\"\n"));
        }
        let config = "[[zone]]\norigin = \"example.com.\"\nfile = \"z\"\nallow_transfer = [\"192.0.2.0/24\"]\n[[route]]\nname = \"www.example.com.\"\n[[route.rule]]\npool = \"eu\"\nsubnets = [\"198.51.100.0/24\"]\n[[route.rule]]\npool = \"us\"\n[[route.pool]]\nname = \"eu\"\nttl = 30\n[[route.pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.10\" }]\n[[route.pool]]\nname = \"us\"\nttl = 20\n[[route.pool.group]]\nname = \"g\"\nendpoints = [{ address = \"192.0.2.20\" }, { address = \"2001:db8::20\" }, { address = \"192.0.2.21\", weight = 0 }]\n";
        let config = crate::config::parse(config, Path::new("w.toml")).unwrap();
        let origin = crate::model::Name::parse("example.com").unwrap();
        let mut zones = vec![crate::zones::from_text(&zone, Path::new("z"), &origin).unwrap()];
        zones[0]
            .allow_transfer
            .clone_from(&config.zones[0].allow_transfer);
        let index = crate::snapshot::index(&zones, &config.pools, &config.routing, &config.keyring);
        let view = crate::model::View {
            pools: config.pools.clone().into(),
            ..Default::default()
        };
        crate::snapshot::build(&index, Arc::new(view), &Metrics::new(), 1)
    }

    #[test]
    fn a_transfer_is_the_whole_zone_in_messages_of_at_most_64_kib() {
        let snapshot = transfer_snapshot();
        let mut q = Message::query();
        q.add_query(Query::query(
            HName::from_ascii("Example.COM.").unwrap(),
            RecordType::AXFR,
        ));
        let packet = q.to_vec().unwrap();

        let built = xfr::build(&snapshot, &packet, "192.0.2.99".parse().unwrap(), 1232, 0).unwrap();
        assert_eq!(built.rcode, Rcode::NoError);
        assert!(built.messages >= 2, "{} messages", built.messages);
        let mut rest = &built.out[..];
        let mut records = Vec::new();
        let mut messages = 0;
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let message = Message::from_vec(&rest[2..2 + len]).unwrap();
            assert!(message.metadata.authoritative);
            assert_eq!(message.queries.len(), usize::from(messages == 0));
            records.extend(message.answers);
            rest = &rest[2 + len..];
            messages += 1;
        }
        assert_eq!(messages, built.messages);
        assert_eq!(records.len(), built.records);
        let types: Vec<RecordType> = records.iter().map(|r| r.record_type()).collect();
        assert_eq!(types.first(), Some(&RecordType::SOA));
        assert_eq!(types.last(), Some(&RecordType::SOA));
        assert_eq!(types.iter().filter(|t| **t == RecordType::SOA).count(), 2);
        assert_eq!(types.iter().filter(|t| **t == RecordType::TXT).count(), 300);
        assert_eq!(types.iter().filter(|t| **t == RecordType::NS).count(), 2);
        let www: Vec<String> = (records.iter())
            .filter(|r| r.name.to_ascii() == "www.example.com.")
            .map(|r| format!("{} {}", r.ttl, r.data))
            .collect();
        assert_eq!(www, ["20 192.0.2.10", "20 192.0.2.20", "20 2001:db8::20"]);
        assert_eq!(records.len(), 2 + 1 + 1 + 1 + 1 + 300 + 3);

        let refused =
            xfr::build(&snapshot, &packet, "198.51.100.1".parse().unwrap(), 1232, 0).unwrap();
        assert_eq!(refused.rcode, Rcode::Refused);
        assert_eq!(refused.records, 0);
    }

    /// Beyond `MAX_TRANSFERS` at once, an allowed transfer is REFUSED; a refused source never
    /// takes a slot.
    #[tokio::test]
    async fn transfers_beyond_the_cap_are_refused() {
        let ctx = Context {
            snapshot: Arc::new(ArcSwap::from_pointee(transfer_snapshot())),
            ..context()
        };
        let mut q = Message::query();
        q.add_query(Query::query(
            HName::from_ascii("example.com.").unwrap(),
            RecordType::AXFR,
        ));
        let packet = q.to_vec().unwrap();
        let rcode_of = |t: &xfr::Transfer| t.bytes[2 + 3] & 0x0F;
        let allowed: IpAddr = "192.0.2.1".parse().unwrap();
        let busy = xfr::TRANSFERS
            .try_acquire_many(xfr::MAX_TRANSFERS as u32)
            .unwrap();
        let refused = xfr::serve(&ctx, &packet, allowed).await;
        assert_eq!(rcode_of(&refused), Rcode::Refused as u8);
        drop(busy);
        let first = xfr::serve(&ctx, &packet, allowed).await;
        assert_eq!(rcode_of(&first), Rcode::NoError as u8);
        assert!(first.bytes.len() > 65_535);
        // Slots are held until the messages are sent (dropped): three more fit, not four.
        let more: Vec<xfr::Transfer> = serve_n(&ctx, &packet, allowed, 3).await;
        assert!(more.iter().all(|t| rcode_of(t) == Rcode::NoError as u8));
        let over = xfr::serve(&ctx, &packet, allowed).await;
        assert_eq!(rcode_of(&over), Rcode::Refused as u8);
        // A source not allowed is refused without a slot, and without waiting for one.
        let outsider = xfr::serve(&ctx, &packet, "198.51.100.1".parse().unwrap()).await;
        assert_eq!(rcode_of(&outsider), Rcode::Refused as u8);
        drop((first, more));
        let again = xfr::serve(&ctx, &packet, allowed).await;
        assert_eq!(rcode_of(&again), Rcode::NoError as u8);
    }

    async fn serve_n(ctx: &Context, packet: &[u8], client: IpAddr, n: usize) -> Vec<xfr::Transfer> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(xfr::serve(ctx, packet, client).await);
        }
        out
    }

    fn seeds() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (name, t) in [
            ("www.example.com.", RecordType::A),
            ("app.example.com.", RecordType::AAAA),
            ("alias.example.com.", RecordType::A),
            ("x.w.example.com.", RecordType::TXT),
            ("a.sub.example.com.", RecordType::A),
            ("mx.example.com.", RecordType::MX),
            ("nope.example.com.", RecordType::ANY),
        ] {
            let mut m = Message::query();
            m.add_query(Query::query(HName::from_ascii(name).unwrap(), t));
            out.push(m.to_vec().unwrap());
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(
                    "198.51.100.0".parse().unwrap(),
                    24,
                    0,
                )));
            m.set_edns(edns.clone());
            out.push(m.to_vec().unwrap());
            // With a COOKIE option too: a client cookie and a (not ours) server cookie.
            let mut cookie = vec![7u8; 8];
            cookie.extend_from_slice(&[1, 0, 0, 0, 0x5c, 0xf7, 0x9f, 0x11, 9, 9, 9, 9, 9, 9, 9, 9]);
            edns.options_mut().insert(EdnsOption::Unknown(10, cookie));
            m.set_edns(edns);
            out.push(m.to_vec().unwrap());
        }
        out
    }

    /// A million mutated queries through the whole path: never a panic, and
    /// every reply is a DNS message an independent parser accepts, with the query's id, QR set,
    /// and within the size limit of its transport.
    #[test]
    fn mutated_queries_never_panic_and_replies_are_valid() {
        // Rate limited (slip 1: every limited reply is a minimal TC=1 or BADCOOKIE), so the
        // slip path is checked too.
        let ctx = Context {
            rrl: rrl::Limiter::new(&crate::config::RrlConfig {
                rate: 5_000,
                window: 1,
                slip: 1,
                exempt: Vec::new(),
            }),
            ..context()
        };
        let seeds = seeds();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::with_capacity(65536);
        let mut answered = 0;
        for i in 0..1_000_000 {
            let mut p = seeds[i % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % p.len();
                p[at] = match next() % 4 {
                    0 => 0,
                    1 => 0xC0,
                    2 => p[at].wrapping_add(1),
                    _ => next() as u8,
                };
            }
            if next() % 5 == 0 {
                p.truncate((next() as usize) % p.len());
            }
            let tcp = i % 3 == 0;
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            out.clear();
            if !respond(&ctx, &p, transport, "192.0.2.99".parse().unwrap(), &mut out) {
                continue;
            }
            answered += 1;
            assert_eq!(out[..2], p[..2], "id preserved");
            assert_ne!(out[2] & 0x80, 0, "QR set");
            if !tcp {
                assert!(out.len() <= 1232, "UDP reply of {} bytes", out.len());
            }
            if let Err(e) = Message::from_vec(&out) {
                panic!("invalid reply {e} to {p:02x?}: {out:02x?}");
            }
        }
        assert!(
            answered > 500_000,
            "most mutations still get an answer ({answered})"
        );
        let m = ctx.metrics.render();
        // Most mutations are FORMERR (one error bucket); cookie seeds slip as BADCOOKIE.
        for unexercised in [
            "weir_dns_rrl_slipped_total{class=\"error\"} 0\n",
            "weir_dns_responses_total{rcode=\"BADCOOKIE\",transport=\"udp\"} 0\n",
        ] {
            assert!(!m.contains(unexercised), "{unexercised} in {m}");
        }
    }
}
