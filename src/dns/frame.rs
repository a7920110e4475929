//! Ethernet frames carrying DNS over UDP, for the AF_XDP fast path (issue 18, feature `xdp`):
//! `parse` finds the DNS payload of a frame addressed to one of our listen addresses, and
//! `reply` writes the answering frame around a DNS reply (addresses and ports swapped, IPv4
//! header checksum, UDP checksum). Everything is bounds-checked, nothing allocates but the
//! output, and nothing here is `unsafe`: the UMEM and rings live in their own module.
//!
//! What `parse` does not take is the kernel's (`Verdict::Pass`): anything but Ethernet II with
//! IPv4 or IPv6, IPv4 with options or fragmented, IPv6 with extension headers, not UDP, another
//! port or address, a bad IPv4 header checksum, lengths that disagree. The kernel then does
//! what it always does with such packets (reassembly, ICMP, its own sockets).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const PROTO_UDP: u8 = 17;

/// A DNS query found in a frame: who sent it, to which of our addresses, and where its DNS
/// message lies in the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Range<usize>,
}

/// What to do with a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A UDP datagram to a listen address: answer it here.
    Dns(Datagram),
    /// Not ours, or not simple: the kernel's.
    Pass,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(p.get(at..at + 2)?.try_into().ok()?))
}

/// Reads `frame`; `ours` says whether a destination (address and port) is a listen address.
pub fn parse(frame: &[u8], ours: impl Fn(SocketAddr) -> bool) -> Verdict {
    parse_inner(frame, ours).map_or(Verdict::Pass, Verdict::Dns)
}

fn parse_inner(frame: &[u8], ours: impl Fn(SocketAddr) -> bool) -> Option<Datagram> {
    let (src_ip, dst_ip, udp_at, ip_end) = match u16_at(frame, 12)? {
        ETHERTYPE_IPV4 => {
            let ip = frame.get(ETH_LEN..ETH_LEN + IPV4_LEN)?;
            // Version 4, no options (IHL 5), UDP, not a fragment (MF clear, offset 0).
            if ip[0] != 0x45 || ip[9] != PROTO_UDP || u16_at(ip, 6)? & 0x3FFF != 0 {
                return None;
            }
            if checksum(0, ip) != 0 {
                return None;
            }
            let total = usize::from(u16_at(ip, 2)?);
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?);
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                ETH_LEN + IPV4_LEN,
                ETH_LEN + total,
            )
        }
        ETHERTYPE_IPV6 => {
            let ip = frame.get(ETH_LEN..ETH_LEN + IPV6_LEN)?;
            // Version 6, next header UDP (no extension headers).
            if ip[0] >> 4 != 6 || ip[6] != PROTO_UDP {
                return None;
            }
            let payload = usize::from(u16_at(ip, 4)?);
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
            let start = ETH_LEN + IPV6_LEN;
            (IpAddr::V6(src), IpAddr::V6(dst), start, start + payload)
        }
        _ => return None,
    };
    // The IP length may be shorter than the frame (Ethernet padding), never longer.
    if ip_end > frame.len() || ip_end < udp_at + UDP_LEN {
        return None;
    }
    let udp = &frame[udp_at..ip_end];
    let (sport, dport, len) = (
        u16_at(udp, 0)?,
        u16_at(udp, 2)?,
        usize::from(u16_at(udp, 4)?),
    );
    if len != udp.len() {
        return None;
    }
    let dst = SocketAddr::new(dst_ip, dport);
    if sport == 0 || !ours(dst) {
        return None;
    }
    Some(Datagram {
        src: SocketAddr::new(src_ip, sport),
        dst,
        payload: udp_at + UDP_LEN..ip_end,
    })
}

/// The ones' complement sum of `bytes` (16-bit words, big-endian) over `start`, folded and
/// complemented (RFC 1071): 0 over a header with a valid checksum.
fn checksum(start: u32, bytes: &[u8]) -> u16 {
    let mut sum = start;
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header sum of a UDP datagram of `len` bytes between `src` and `dst`.
fn pseudo(src: IpAddr, dst: IpAddr, len: usize) -> u32 {
    let mut sum = u32::from(PROTO_UDP) + len as u32;
    let mut add = |b: &[u8]| {
        for w in b.chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            add(&v6(s));
            add(&v6(d));
        }
    }
    sum
}

/// Writes into `out` (cleared first) the frame answering `query` (the frame `parse` read as
/// `d`) with the DNS message `dns`: MAC addresses, IP addresses and ports swapped, IPv4 TTL or
/// IPv6 hop limit 64, checksums computed. None if the reply would not fit an IP length.
pub fn reply(query: &[u8], d: &Datagram, dns: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let eth = query.get(..ETH_LEN)?;
    out.extend_from_slice(&eth[6..12]);
    out.extend_from_slice(&eth[0..6]);
    out.extend_from_slice(&eth[12..14]);
    let udp_len = UDP_LEN + dns.len();
    match (d.dst.ip(), d.src.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let total = u16::try_from(IPV4_LEN + udp_len).ok()?;
            let mut ip = [0u8; IPV4_LEN];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = PROTO_UDP;
            ip[12..16].copy_from_slice(&from.octets());
            ip[16..20].copy_from_slice(&to.octets());
            let sum = checksum(0, &ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let payload = u16::try_from(udp_len).ok()?;
            let mut ip = [0u8; IPV6_LEN];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&payload.to_be_bytes());
            ip[6] = PROTO_UDP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&from.octets());
            ip[24..40].copy_from_slice(&to.octets());
            out.extend_from_slice(&ip);
        }
        _ => return None,
    }
    let udp_at = out.len();
    out.extend_from_slice(&d.dst.port().to_be_bytes());
    out.extend_from_slice(&d.src.port().to_be_bytes());
    out.extend_from_slice(&u16::try_from(udp_len).ok()?.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(dns);
    let sum = checksum(pseudo(d.dst.ip(), d.src.ip(), udp_len), &out[udp_at..]);
    // RFC 768: a computed zero is sent as all ones (zero means "no checksum", not allowed in
    // IPv6).
    let sum = if sum == 0 { 0xFFFF } else { sum };
    out[udp_at + 6..udp_at + 8].copy_from_slice(&sum.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTEN4: &str = "10.77.0.1:53";
    const LISTEN6: &str = "[fd00::1]:53";

    fn ours(a: SocketAddr) -> bool {
        a == LISTEN4.parse().unwrap() || a == LISTEN6.parse().unwrap()
    }

    /// A query frame from `src` to `dst` built by `reply` itself from a mirror datagram, so
    /// the test also checks that what `reply` writes `parse` reads back.
    fn frame(src: &str, dst: &str, dns: &[u8]) -> Vec<u8> {
        let mirror = Datagram {
            src: dst.parse().unwrap(),
            dst: src.parse().unwrap(),
            payload: 0..0,
        };
        let eth = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0, 0];
        let mut out = Vec::new();
        reply(&eth, &mirror, dns, &mut out).unwrap();
        let ethertype = if mirror.src.is_ipv4() {
            ETHERTYPE_IPV4
        } else {
            ETHERTYPE_IPV6
        };
        out[12..14].copy_from_slice(&ethertype.to_be_bytes());
        out
    }

    #[test]
    fn a_query_to_a_listen_address_is_ours_and_the_reply_swaps_everything() {
        for (client, listen) in [("10.77.0.2:40000", LISTEN4), ("[fd00::2]:40000", LISTEN6)] {
            let q = frame(client, listen, b"query");
            let Verdict::Dns(d) = parse(&q, ours) else {
                panic!("{client} -> {listen}: passed")
            };
            assert_eq!(d.src, client.parse().unwrap());
            assert_eq!(d.dst, listen.parse().unwrap());
            assert_eq!(&q[d.payload.clone()], b"query");
            let mut out = Vec::new();
            reply(&q, &d, b"the answer", &mut out).unwrap();
            assert_eq!(&out[0..6], &q[6..12], "to the sender's MAC");
            assert_eq!(&out[6..12], &q[0..6]);
            // The reply, read as a frame, goes from the listen address to the client, with
            // checksums that verify (IPv4 header inside `parse`, UDP over the pseudo-header).
            let back = parse(&out, |a| a == client.parse().unwrap());
            let Verdict::Dns(r) = back else {
                panic!("reply unreadable")
            };
            assert_eq!((r.src, r.dst), (d.dst, d.src));
            assert_eq!(&out[r.payload.clone()], b"the answer");
            let udp_at = r.payload.start - UDP_LEN;
            let sum = checksum(
                pseudo(r.src.ip(), r.dst.ip(), out.len() - udp_at),
                &out[udp_at..],
            );
            assert_eq!(sum, 0, "UDP checksum verifies");
        }
    }

    /// Sets a mutated IPv4 frame's header checksum right, so only the mutation is judged.
    fn resum(mut frame: Vec<u8>) -> Vec<u8> {
        frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&[0, 0]);
        let sum = checksum(0, &frame[ETH_LEN..ETH_LEN + IPV4_LEN]);
        frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&sum.to_be_bytes());
        frame
    }

    #[test]
    fn what_is_not_simply_ours_goes_to_the_kernel() {
        let good = frame("10.77.0.2:40000", LISTEN4, b"query");
        assert!(matches!(parse(&good, ours), Verdict::Dns(_)));
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        cases.push((
            "another port",
            frame("10.77.0.2:40000", "10.77.0.1:5353", b"q"),
        ));
        cases.push((
            "another address",
            frame("10.77.0.2:40000", "10.77.0.9:53", b"q"),
        ));
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        cases.push(("ARP", arp));
        let mut tcp = good.clone();
        tcp[ETH_LEN + 9] = 6;
        cases.push(("TCP", resum(tcp)));
        let mut options = good.clone();
        options[ETH_LEN] = 0x46;
        cases.push(("IPv4 options", resum(options)));
        let mut fragment = good.clone();
        fragment[ETH_LEN + 6] = 0x20; // more fragments
        cases.push(("a fragment", resum(fragment)));
        let mut offset = good.clone();
        offset[ETH_LEN + 7] = 0x01; // fragment offset 8
        cases.push(("a later fragment", resum(offset)));
        assert!(
            matches!(parse(&resum(good.clone()), ours), Verdict::Dns(_)),
            "resum keeps a good frame good"
        );
        let mut bad_sum = good.clone();
        bad_sum[ETH_LEN + 10] ^= 0xFF;
        cases.push(("a bad IPv4 checksum", bad_sum));
        let mut long = good.clone();
        long[ETH_LEN + UDP_LEN + IPV4_LEN - 4] ^= 0x01; // UDP length off by one
        cases.push(("UDP length disagrees", long));
        let mut zero_port = good.clone();
        zero_port[ETH_LEN + IPV4_LEN..ETH_LEN + IPV4_LEN + 2].copy_from_slice(&[0, 0]);
        cases.push(("source port 0", zero_port));
        let mut v6ext = frame("[fd00::2]:40000", LISTEN6, b"q");
        v6ext[ETH_LEN + 6] = 0; // hop-by-hop options header
        cases.push(("IPv6 extension header", v6ext));
        for (what, frame) in &cases {
            assert_eq!(parse(frame, ours), Verdict::Pass, "{what}");
        }
        // Every truncation of a good frame is passed or read within bounds, never a panic.
        for len in 0..good.len() {
            let _ = parse(&good[..len], ours);
        }
        // Ethernet padding after the IP packet is allowed.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 8]);
        assert!(
            matches!(parse(&padded, ours), Verdict::Dns(d) if padded[d.payload.clone()] == *b"query")
        );
    }
}
