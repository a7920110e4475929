//! The program as the kernel runs it (BPF_PROG_TEST_RUN, as root): it takes exactly the frames
//! `frame::parse` answers, and passes the rest. Loading it also runs the kernel's verifier.

use std::net::SocketAddr;

use super::frame::{self, Datagram};
use super::{program, sys, taken};

const LISTEN: [&str; 3] = ["10.77.0.1:53", "[fd00::1]:53", "0.0.0.0:5353"];

fn listen() -> Vec<SocketAddr> {
    LISTEN.iter().map(|a| a.parse().unwrap()).collect()
}

/// A DNS query (`id`, flags byte `flags`) in a frame from `src` to `dst`, built by
/// `frame::reply` around a mirror datagram.
fn query_frame(src: &str, dst: &str, flags: u8) -> Vec<u8> {
    padded_query_frame(src, dst, flags, 0)
}

/// `query_frame` with `padding` zero bytes after the question.
fn padded_query_frame(src: &str, dst: &str, flags: u8, padding: usize) -> Vec<u8> {
    let mirror = Datagram {
        src: dst.parse().unwrap(),
        dst: src.parse().unwrap(),
        payload: 0..0,
    };
    let mut dns = vec![0x12, 0x34, flags, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
    dns.resize(dns.len() + padding, 0);
    let eth = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0, 0];
    let mut out = Vec::new();
    frame::reply(&eth, &mirror, &dns, &mut out).unwrap();
    let ethertype: u16 = if mirror.src.is_ipv4() { 0x0800 } else { 0x86DD };
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
    out
}

/// Sets an IPv4 frame's header checksum right (other frames unchanged).
fn resum(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return f;
    }
    f[24..26].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for w in f[14..34].chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f
}

struct Loaded {
    prog: std::os::fd::OwnedFd,
    _map: std::os::fd::OwnedFd,
}

/// The program over an empty map with fallback DROP: a frame it takes comes out XDP_DROP, one
/// it leaves to the kernel XDP_PASS.
fn load() -> Loaded {
    let map = sys::xsk_map(4).expect("BPF_MAP_CREATE (XSKMAP) as root");
    let insns = program::build(
        &listen(),
        super::map_fd(&map),
        program::XDP_DROP,
        sys::RX_ROOM as u16,
    );
    let prog = sys::load(&insns).unwrap_or_else(|e| {
        panic!(
            "the kernel refused the program: {e}\n{}",
            program::listing(&insns)
        )
    });
    Loaded { prog, _map: map }
}

fn takes(l: &Loaded, f: &[u8]) -> bool {
    match sys::test_run(&l.prog, f).expect("BPF_PROG_TEST_RUN") {
        1 => true,
        2 => false,
        other => panic!("unexpected verdict {other}"),
    }
}

fn parses(f: &[u8]) -> bool {
    taken(&listen(), f).is_some()
}

#[test]
fn the_kernel_runs_the_program_and_it_takes_exactly_the_queries_weir_answers() {
    let l = load();
    let take = [
        (
            "IPv4 query",
            query_frame("10.77.0.2:40000", "10.77.0.1:53", 0x01),
        ),
        (
            "IPv6 query",
            query_frame("[fd00::2]:40000", "[fd00::1]:53", 0x01),
        ),
        (
            "any IPv4 address on 5353",
            query_frame("10.77.0.2:40000", "192.0.2.9:5353", 0x01),
        ),
    ];
    for (what, f) in &take {
        assert!(parses(f), "{what}: parse");
        assert!(takes(&l, f), "{what}: the program passed it");
    }
    let good = &take[0].1;
    let mut pass: Vec<(&str, Vec<u8>)> = vec![
        (
            "another port",
            query_frame("10.77.0.2:40000", "10.77.0.1:54", 0x01),
        ),
        (
            "another address",
            query_frame("10.77.0.2:40000", "10.77.0.9:53", 0x01),
        ),
        (
            "IPv6 on 5353 (only 0.0.0.0 listens there)",
            query_frame("[fd00::2]:1", "[fd00::1]:5353", 0x01),
        ),
        (
            "an UPDATE",
            query_frame("10.77.0.2:40000", "10.77.0.1:53", 5 << 3),
        ),
        (
            "an IPv6 UPDATE",
            query_frame("[fd00::2]:40000", "[fd00::1]:53", 5 << 3),
        ),
        ("Ethernet header only", good[..14].to_vec()),
        ("cut in the UDP header", good[..40].to_vec()),
    ];
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    pass.push(("ARP", arp));
    let mut tcp = good.clone();
    tcp[14 + 9] = 6;
    pass.push(("TCP", resum(tcp)));
    let mut icmp = good.clone();
    icmp[14 + 9] = 1;
    pass.push(("ICMP", resum(icmp)));
    let mut options = good.clone();
    options[14] = 0x46;
    pass.push(("IPv4 options", resum(options)));
    let mut fragment = good.clone();
    fragment[14 + 6] = 0x20;
    pass.push(("a first fragment", resum(fragment)));
    let mut later = good.clone();
    later[14 + 7] = 0x10;
    pass.push(("a later fragment", resum(later)));
    let mut ext = take[1].1.clone();
    ext[14 + 6] = 0;
    pass.push(("IPv6 hop-by-hop header", ext));
    for (what, f) in &pass {
        assert!(!parses(f), "{what}: parse took it");
        assert!(!takes(&l, f), "{what}: the program took it");
    }
    // A frame longer than a UMEM frame holds goes to the kernel (weir's socket answers it);
    // one of exactly that length is taken.
    let room = sys::RX_ROOM as usize;
    let fits = padded_query_frame("10.77.0.2:1", "10.77.0.1:53", 1, room - good.len());
    assert_eq!(fits.len(), room);
    assert!(takes(&l, &fits), "a frame of {room} bytes");
    let long = padded_query_frame("10.77.0.2:1", "10.77.0.1:53", 1, room + 1 - good.len());
    assert!(
        parses(&long) && !takes(&l, &long),
        "a frame of {} bytes",
        room + 1
    );
    // Random damage: whatever weir would answer, the program takes (it never leaves one of
    // weir's queries to the kernel), and nothing it takes but weir refuses is more than a
    // frame the kernel would drop too (bad checksum, lengths, port 0: counted as `frame`).
    fastrand::seed(7);
    for _ in 0..3000 {
        let mut f = if fastrand::bool() {
            take[0].1.clone()
        } else {
            take[1].1.clone()
        };
        for _ in 0..fastrand::usize(1..4) {
            let at = fastrand::usize(..f.len());
            f[at] = fastrand::u8(..);
        }
        if fastrand::u8(..4) == 0 {
            f = resum(f);
        }
        if parses(&f) {
            assert!(
                takes(&l, &f),
                "weir would answer it, the program passed it: {f:02x?}"
            );
        }
    }
}
