//! The admin API under abuse, over real sockets: idle, slowloris and handshake-less
//! connections are closed by the server and never keep `/healthz` (or DNS) from answering;
//! one source cannot hold more than its share; a body that never arrives gets 408.
//! Latencies are printed (for bench notes), never asserted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

const ZONE: &str =
    "$ORIGIN example.com.\n$TTL 300\n@ SOA ns hm 1 2 3 4 60\n@ NS ns\nns A 192.0.2.1\n";

/// Connects to `to` from 127.0.0.`host` (all of 127/8 is loopback on Linux), so a test can
/// play many sources.
async fn connect_from(host: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)),
            0,
        ))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// True when the server closes `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

/// `GET /healthz` on a fresh connection from 127.0.0.1: (status, how long it took).
async fn healthz(admin: SocketAddr) -> (u16, Duration) {
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), http_get(admin, "/healthz"))
        .await
        .expect("/healthz answers within 5 s");
    (status, started.elapsed())
}

#[tokio::test]
async fn admin_closes_slowloris_and_idle_connections() {
    let s = Server::builder().zone("example.com.", ZONE).start().await;
    let mut slowloris = TcpStream::connect(s.admin()).await.unwrap();
    slowloris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(s.admin()).await.unwrap();
    // A kept-alive connection that goes quiet after one answer.
    let mut kept = TcpStream::connect(s.admin()).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    for (what, stream) in [
        ("slowloris", &mut slowloris),
        ("idle", &mut idle),
        ("kept-alive", &mut kept),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(15)).await,
            "a {what} connection is closed by the server"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn admin_answers_while_2000_bad_connections_are_held() {
    let s = Server::builder().zone("example.com.", ZONE).start().await;
    let admin = s.admin();
    // 2,000 connections from 40 sources (50 each, under the per-source cap): past the global
    // cap, so the oldest silent ones are evicted to make room. Half idle, half slowloris.
    let mut bad = Vec::new();
    for i in 0..2000usize {
        let mut stream = connect_from(2 + (i % 40) as u8, admin).await;
        if i % 2 == 1 {
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await;
        }
        bad.push(stream);
    }
    let mut took = Vec::new();
    for _ in 0..10 {
        let (status, elapsed) = healthz(admin).await;
        assert_eq!(status, 200);
        took.push(elapsed);
    }
    took.sort();
    println!(
        "/healthz with 2,000 bad connections held: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    for transport in Transport::BOTH {
        let reply = s
            .ask(transport, &query("example.com.", RecordType::SOA))
            .await;
        assert_eq!(reply.answers.len(), 1, "DNS over {transport} answers");
    }

    // One source gets at most its share: beyond 64, connections are closed at once.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(connect_from(99, admin).await);
    }
    let mut refused = 0;
    for stream in &mut flood {
        if closed_within(stream, Duration::from_millis(300)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 36,
        "{refused} of 100 connections from one source were closed at once"
    );
    assert_eq!(healthz(admin).await.0, 200);
    drop((bad, flood));
    s.stop().await;
}

#[tokio::test]
async fn admin_body_that_never_arrives_gets_408() {
    let s = Server::builder().zone("example.com.", ZONE).start().await;
    let mut stream = TcpStream::connect(s.admin()).await.unwrap();
    stream
        .write_all(b"POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"reason\":")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if out.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server answers a stalled body");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn admin_tls_handshakes_never_block_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let cert = AdminCert::new(dir.path());
    let tokens = dir.path().join("admin.tokens");
    write_secret(&tokens, "ops write w-0123456789abcdef\n");
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .admin_tokens(&tokens)
        .admin_tls(&cert)
        .start()
        .await;
    let client = http_client(&[&cert.pem]);
    let url = format!("https://127.0.0.1:{}/healthz", s.admin().port());
    let healthz = || async {
        let started = Instant::now();
        let (status, _) = send(client.get(&url)).await.unwrap();
        (status, started.elapsed())
    };

    // 200 connections (from 4 sources) that never send a ClientHello.
    let mut silent = Vec::new();
    for i in 0..200usize {
        silent.push(connect_from(2 + (i % 4) as u8, s.admin()).await);
    }
    let mut took = Vec::new();
    for _ in 0..5 {
        let (status, elapsed) = tokio::time::timeout(Duration::from_secs(3), healthz())
            .await
            .expect("/healthz over TLS answers within 3 s beside silent handshakes");
        assert_eq!(status, 200);
        took.push(elapsed);
    }
    took.sort();
    println!(
        "/healthz over TLS with 200 silent handshakes held: median {:?}, max {:?}",
        took[2], took[4]
    );
    // The silent ones are closed once the handshake deadline passes.
    assert!(closed_within(&mut silent[0], Duration::from_secs(15)).await);
    s.stop().await;
}

#[tokio::test]
async fn admin_closes_connections_that_stop_reading_their_answers() {
    let s = Server::builder().zone("example.com.", ZONE).start().await;
    let mut stream = TcpStream::connect(s.admin()).await.unwrap();
    // Far more answers than the socket buffers hold, asked for at once and never read.
    let requests = 5000;
    let burst = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);
    let (mut read, mut write) = stream.split();
    let _ = tokio::time::timeout(Duration::from_secs(5), write.write_all(burst.as_bytes())).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    // Now read: what was buffered arrives, then the server's close.
    let mut received = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let answers = received
        .windows(15)
        .filter(|w| w == b"HTTP/1.1 200 OK")
        .count();
    assert!(drained.is_ok(), "the server closed the stalled connection");
    assert!(
        answers < requests,
        "{answers} answers: the connection was closed before all {requests}"
    );
    assert_eq!(healthz(s.admin()).await.0, 200);
    s.stop().await;
}
