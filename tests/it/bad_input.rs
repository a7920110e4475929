//! PROTOCOL.md's bad-input table, as raw bytes over UDP.

use hickory_proto::rr::RecordType;

use crate::support::*;

const Q: &[u8] = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01";

fn formerr(reply: &[u8], id: u16) {
    let (got_id, flags, counts) = header(reply);
    assert_eq!(got_id, id, "id preserved");
    assert_ne!(flags & 0x8000, 0, "QR set");
    assert_eq!(flags & RCODE_MASK, 1, "FORMERR");
    assert_eq!(counts[1..], [0, 0, 0]);
}

#[tokio::test]
async fn short_packets_and_responses_are_dropped() {
    let s = Server::start().await;
    for bad in [&[][..], &[0x12], &[0; 11]] {
        assert!(s.udp_dropped(bad).await, "{bad:?}");
    }
    // QR=1, well-formed or not: never answered (reflection loops).
    assert!(s.udp_dropped(&raw(9, 0x8000, [1, 0, 0, 0], Q)).await);
    assert!(
        s.udp_dropped(&raw(9, 0x8400, [7, 7, 7, 7], b"\xff\xff"))
            .await
    );
    let m = s.metrics();
    assert!(
        m.contains("weir_dns_dropped_total{reason=\"short\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("weir_dns_dropped_total{reason=\"qr_set\"} 2"),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test]
async fn malformed_questions_get_formerr_with_the_id() {
    let s = Server::start().await;
    let mut long_name = Vec::new();
    for _ in 0..5 {
        long_name.push(60);
        long_name.extend_from_slice(&[b'a'; 60]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut label64 = vec![64];
    label64.extend_from_slice(&[b'a'; 64]);
    label64.extend_from_slice(&[0, 0, 1, 0, 1]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("qdcount 0", raw(1, 0, [0, 0, 0, 0], b"")),
        ("qdcount 2", raw(2, 0, [2, 0, 0, 0], &[Q, Q].concat())),
        ("truncated question", raw(3, 0, [1, 0, 0, 0], &Q[..10])),
        ("missing type", raw(4, 0, [1, 0, 0, 0], &Q[..17])),
        ("name over 255", raw(5, 0, [1, 0, 0, 0], &long_name)),
        ("label over 63", raw(6, 0, [1, 0, 0, 0], &label64)),
        (
            "pointer loop",
            raw(7, 0, [1, 0, 0, 0], b"\xc0\x0c\x00\x01\x00\x01"),
        ),
        (
            "forward pointer",
            raw(8, 0, [1, 0, 0, 0], b"\x01a\xc0\x20\x00\x01\x00\x01"),
        ),
        (
            "answer records",
            raw(
                9,
                0,
                [1, 1, 0, 0],
                &[
                    Q,
                    b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04",
                ]
                .concat(),
            ),
        ),
        ("authority records", raw(10, 0, [1, 0, 1, 0], Q)),
        (
            "two OPTs",
            raw(
                11,
                0,
                [1, 0, 0, 2],
                &[
                    Q,
                    b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
                    b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
                ]
                .concat(),
            ),
        ),
        (
            "OPT not at root",
            raw(
                12,
                0,
                [1, 0, 0, 1],
                &[Q, b"\x01x\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"].concat(),
            ),
        ),
        ("additional count too high", raw(13, 0, [1, 0, 0, 1], Q)),
        // ECS (RFC 7871 7.1.2): family 3; scope set in a query; address longer than the prefix;
        // bits set past the prefix.
        (
            "ECS bad family",
            raw(
                14,
                0,
                [1, 0, 0, 1],
                &[Q, &opt_with(&[0, 8, 0, 5, 0, 3, 8, 0, 10])].concat(),
            ),
        ),
        (
            "ECS scope in query",
            raw(
                15,
                0,
                [1, 0, 0, 1],
                &[Q, &opt_with(&[0, 8, 0, 5, 0, 1, 8, 8, 10])].concat(),
            ),
        ),
        (
            "ECS address too long",
            raw(
                16,
                0,
                [1, 0, 0, 1],
                &[Q, &opt_with(&[0, 8, 0, 6, 0, 1, 8, 0, 10, 1])].concat(),
            ),
        ),
        (
            "ECS bits past prefix",
            raw(
                17,
                0,
                [1, 0, 0, 1],
                &[Q, &opt_with(&[0, 8, 0, 5, 0, 1, 4, 0, 0x1F])].concat(),
            ),
        ),
    ];
    for (what, packet) in cases {
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        let reply = s
            .udp_raw(&packet)
            .await
            .unwrap_or_else(|| panic!("{what}: no reply"));
        formerr(&reply, id);
    }
    s.stop().await;
}

/// An OPT record carrying the given option bytes.
fn opt_with(options: &[u8]) -> Vec<u8> {
    let mut opt = vec![0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0];
    opt.extend_from_slice(&(options.len() as u16).to_be_bytes());
    opt.extend_from_slice(options);
    opt
}

/// Random bytes, and valid queries with random corruption, must never take the server down.
#[tokio::test]
async fn random_garbage_never_stops_the_server() {
    let s = Server::start().await;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let good = with_edns(query("www.example.com.", RecordType::A), 1232)
        .to_vec()
        .unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..3000 {
        let packet: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 80) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut p = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p.truncate(12 + (next() as usize) % (p.len() - 11));
            p
        };
        socket.send_to(&packet, s.addr).await.unwrap();
    }
    // Still answering, over both transports.
    for t in Transport::BOTH {
        let r = s.ask(t, &query("www.example.com.", RecordType::A)).await;
        assert_eq!(r.answers.len(), 1, "{t}");
    }
    s.stop().await;
}
