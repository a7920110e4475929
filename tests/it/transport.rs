//! Sizes and transports: UDP limits and truncation, TCP framing, pipelining, timeouts, the
//! connection cap.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A zone whose `big` TXT RRset is about 2.5 KB, and an MX RRset whose targets' addresses do not
/// fit a classic UDP response.
fn big_zone() -> String {
    let mut z = String::from(
        "$ORIGIN big.test.\n$TTL 300\n@ SOA ns hostmaster 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n",
    );
    for i in 0..40 {
        z.push_str(&format!("big TXT \"record {i:02} {}\"\n", "x".repeat(50)));
    }
    for i in 0..30 {
        z.push_str(&format!(
            "mx MX {i} mail{i:02}.big.test.\nmail{i:02} AAAA 2001:db8::{i:x}\n"
        ));
    }
    z
}

async fn big_server() -> Server {
    Server::builder()
        .zone("big.test.", &big_zone())
        .start()
        .await
}

#[tokio::test]
async fn udp_answers_that_do_not_fit_are_truncated_and_tcp_gets_them_whole() {
    let s = big_server().await;
    let q = query("big.big.test.", RecordType::TXT);
    // No EDNS: 512 bytes.
    let reply = s.udp_raw(&q.to_vec().unwrap()).await.unwrap();
    assert!(reply.len() <= 512, "{}", reply.len());
    let (_, flags, counts) = header(&reply);
    assert_ne!(flags & TC, 0, "TC set");
    assert_eq!(counts[1], 0);
    // EDNS 4096 from the client: still capped at 1232.
    let reply = s
        .udp_raw(&with_edns(q.clone(), 4096).to_vec().unwrap())
        .await
        .unwrap();
    assert!(reply.len() <= 1232, "{}", reply.len());
    assert_ne!(header(&reply).1 & TC, 0);
    // The client retries over TCP and gets everything.
    let r = s.tcp(&q).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 40);
    assert!(
        s.metrics()
            .contains("weir_dns_truncated_total{transport=\"udp\"} 2"),
        "{}",
        s.metrics()
    );
    s.stop().await;
}

#[tokio::test]
async fn udp_limit_is_the_smaller_of_client_buffer_and_1232() {
    let s = big_server().await;
    let q = query("mx.big.test.", RecordType::MX);
    // Below 512, the client means 512 (RFC 6891 6.2.5), where 30 MX records do not fit.
    let reply = s
        .udp_raw(&with_edns(q.clone(), 100).to_vec().unwrap())
        .await
        .unwrap();
    assert!(reply.len() <= 512);
    assert_ne!(header(&reply).1 & TC, 0);
    for (payload, limit) in [(800u16, 800usize), (1232, 1232), (1500, 1232)] {
        let reply = s
            .udp_raw(&with_edns(q.clone(), payload).to_vec().unwrap())
            .await
            .unwrap();
        assert!(
            reply.len() <= limit,
            "payload {payload}: {} > {limit}",
            reply.len()
        );
        // The MX answer fits; additional addresses are left out without TC (RFC 2181 9).
        let (_, flags, counts) = header(&reply);
        assert_eq!(flags & TC, 0, "payload {payload}");
        assert_eq!(counts[1], 30);
        assert!(counts[3] >= 1, "some additional data fits");
        assert!(
            reply.len() > limit - 60,
            "payload {payload}: the room is used ({} bytes)",
            reply.len()
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn tcp_pipelined_queries_are_all_answered_in_order() {
    let s = Server::start().await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let mut burst = Vec::new();
    let names = [
        "www.example.com.",
        "mail.example.com.",
        "nope.example.com.",
        "example.com.",
    ];
    for (i, name) in names.iter().enumerate() {
        let mut q = query(name, RecordType::A);
        q.metadata.id = 100 + i as u16;
        let bytes = q.to_vec().unwrap();
        burst.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        burst.extend_from_slice(&bytes);
    }
    stream.write_all(&burst).await.unwrap();
    for (i, name) in names.iter().enumerate() {
        let reply =
            hickory_proto::op::Message::from_vec(&tcp_read(&mut stream).await.unwrap()).unwrap();
        assert_eq!(reply.metadata.id, 100 + i as u16);
        assert_eq!(reply.queries[0].name().to_string(), *name);
    }
    // The connection stays open for more.
    let again = tcp_exchange(
        &mut stream,
        &query("www.example.com.", RecordType::A).to_vec().unwrap(),
    )
    .await;
    assert!(again.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn tcp_response_bit_is_dropped_without_closing_the_connection() {
    let s = Server::start().await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let mut bogus = query("www.example.com.", RecordType::A);
    bogus.metadata.message_type = hickory_proto::op::MessageType::Response;
    bogus.metadata.id = 1;
    let bogus = bogus.to_vec().unwrap();
    let mut good = query("www.example.com.", RecordType::A);
    good.metadata.id = 2;
    let good = good.to_vec().unwrap();
    let mut burst = (bogus.len() as u16).to_be_bytes().to_vec();
    burst.extend_from_slice(&bogus);
    burst.extend_from_slice(&(good.len() as u16).to_be_bytes());
    burst.extend_from_slice(&good);
    stream.write_all(&burst).await.unwrap();
    let reply = tcp_read(&mut stream).await.unwrap();
    assert_eq!(header(&reply).0, 2);
    s.stop().await;
}

async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(stream.read(&mut buf).await, Ok(0) | Err(_))
}

#[tokio::test(start_paused = true)]
async fn tcp_idle_and_slow_connections_are_closed_without_affecting_others() {
    let s = Server::start().await;
    // Idle: no bytes at all; closed after tcp_idle_timeout (10s, paused clock).
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    // Half-sent length prefix, and a length promising more than arrives.
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(&[0]).await.unwrap();
    let mut short = TcpStream::connect(s.addr).await.unwrap();
    short.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
    // Length 0 closes at once.
    let mut zero = TcpStream::connect(s.addr).await.unwrap();
    zero.write_all(&[0, 0]).await.unwrap();
    assert!(closed(&mut zero).await);
    let started = tokio::time::Instant::now();
    assert!(closed(&mut half).await);
    assert!(closed(&mut short).await);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed by the 5s I/O timeout"
    );
    assert!(closed(&mut idle).await);
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "closed by the 10s idle timeout"
    );
    // Everyone else is still served.
    let r = s.tcp(&query("www.example.com.", RecordType::A)).await;
    assert_eq!(r.answers.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_closed_at_once() {
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .dns("tcp_max_connections = 2")
        .start()
        .await;
    let q = query("www.example.com.", RecordType::A).to_vec().unwrap();
    let mut first = TcpStream::connect(s.addr).await.unwrap();
    let mut second = TcpStream::connect(s.addr).await.unwrap();
    tcp_exchange(&mut first, &q).await.unwrap();
    tcp_exchange(&mut second, &q).await.unwrap();
    let mut third = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        tcp_exchange(&mut third, &q).await.is_err(),
        "third connection refused"
    );
    assert!(
        s.metrics()
            .contains("weir_dns_tcp_connections_refused_total 1")
    );
    assert!(s.metrics().contains("weir_dns_tcp_connections_open 2"));
    // When one closes, a new one gets in.
    drop(first);
    let mut fourth = None;
    for _ in 0..50 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        if tcp_exchange(&mut c, &q).await.is_ok() {
            fourth = Some(c);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(fourth.is_some(), "a freed slot is reused");
    s.stop().await;
}

#[tokio::test]
async fn ipv6_and_ipv4_listeners_serve_udp_and_tcp() {
    let s = Server::builder()
        .zone("example.com.", ZONE)
        .listen(&["127.0.0.1:0", "[::1]:0"])
        .start()
        .await;
    let v6 = s.running().dns_addrs[1];
    assert!(v6.is_ipv6());
    let q = query("www.example.com.", RecordType::AAAA)
        .to_vec()
        .unwrap();
    let socket = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    socket.send_to(&q, v6).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(lines(&r.answers), ["www.example.com. AAAA 2001:db8::80"]);
    let mut stream = TcpStream::connect(v6).await.unwrap();
    let reply = tcp_exchange(&mut stream, &q).await.unwrap();
    assert_eq!(header(&reply).2[1], 1);
    s.stop().await;
}
