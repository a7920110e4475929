//! DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018): every nameserver that
//! holds the same secret makes and accepts the same cookies. Pure functions of (secrets, cookie,
//! client address, time), so the RFC's test vectors run as table tests; the query path calls
//! `Cookies::answer` only for queries that carry a COOKIE option.
//!
//! A server cookie is Version (1) | Reserved (3) | Timestamp (4, Unix seconds, serial number
//! arithmetic) | Hash (8), where Hash = SipHash-2-4(secret; Client Cookie | Version | Reserved |
//! Timestamp | Client-IP) (RFC 9018 4.4).

use std::net::IpAddr;

use crate::model::CookieSecrets;

/// Client cookie length (RFC 7873 4).
pub const CLIENT_LEN: usize = 8;
/// Server cookie length of RFC 9018 version 1.
pub const SERVER_LEN: usize = 16;
/// The COOKIE option weir sends: the client's cookie and a server cookie.
pub const OPTION_LEN: usize = CLIENT_LEN + SERVER_LEN;
/// RFC 9018 4.3: "The Server Cookie ... MUST be considered valid for at least 1 hour" after its
/// timestamp, and clocks may be up to 5 minutes apart.
const MAX_AGE: i32 = 3600;
const MAX_AHEAD: i32 = 300;
/// RFC 9018 4.3: a cookie older than half an hour is replaced by a fresh one.
const RENEW_AGE: i32 = 1800;

/// The COOKIE option of a query, checked for length (RFC 7873 5.2.2: 8 octets, or 16 to 40).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub client: [u8; CLIENT_LEN],
    server: [u8; 32],
    server_len: u8,
}

impl Cookie {
    /// The option body, or None when it is malformed (FORMERR).
    pub fn parse(data: &[u8]) -> Option<Cookie> {
        let (client, server) = data.split_first_chunk::<CLIENT_LEN>()?;
        if !server.is_empty() && !(8..=32).contains(&server.len()) {
            return None;
        }
        let mut cookie = Cookie {
            client: *client,
            server: [0; 32],
            server_len: server.len() as u8,
        };
        cookie.server[..server.len()].copy_from_slice(server);
        Some(cookie)
    }

    /// The server cookie the client sent back (empty when it sent only its own).
    pub fn server(&self) -> &[u8] {
        &self.server[..usize::from(self.server_len)]
    }
}

/// What a query's cookie proved (RFC 7873 5.2.3 to 5.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Only a client cookie (a first contact, or a client that lost its server cookie).
    ClientOnly,
    /// A server cookie that is not ours, expired, or for another address: treated as
    /// `ClientOnly` (RFC 7873 5.2.4), never as proof of the source address.
    Invalid,
    /// A server cookie we made for this address within the last hour: the source address is
    /// real, so response rate limiting leaves it alone.
    Valid,
}

/// SipHash-2-4 (Aumasson and Bernstein), 64-bit output, as RFC 9018 uses it.
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let (k0, k1) = key.split_at(8);
    let k0 = u64::from_le_bytes(k0.try_into().unwrap_or([0; 8]));
    let k1 = u64::from_le_bytes(k1.try_into().unwrap_or([0; 8]));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let m = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xFF;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The hash of RFC 9018 4.4 over the client cookie, the first 8 octets of the server cookie
/// (version, reserved, timestamp) and the client address (4 or 16 octets).
fn hash(secret: &[u8; 16], client: &[u8; CLIENT_LEN], head: &[u8; 8], ip: IpAddr) -> [u8; 8] {
    let mut msg = [0u8; CLIENT_LEN + 8 + 16];
    msg[..8].copy_from_slice(client);
    msg[8..16].copy_from_slice(head);
    let len = match ip {
        IpAddr::V4(a) => {
            msg[16..20].copy_from_slice(&a.octets());
            20
        }
        IpAddr::V6(a) => {
            msg[16..32].copy_from_slice(&a.octets());
            32
        }
    };
    // "the 8-byte result of SipHash-2-4" is sent in network order of its bytes as computed:
    // the reference implementation writes the u64 little-endian.
    siphash24(secret, &msg[..len]).to_le_bytes()
}

/// A fresh version-1 server cookie for `client` at `ip`, stamped `now` (Unix seconds).
pub fn make(secret: &[u8; 16], client: &[u8; CLIENT_LEN], ip: IpAddr, now: u32) -> [u8; 16] {
    let mut head = [1u8, 0, 0, 0, 0, 0, 0, 0];
    head[4..].copy_from_slice(&now.to_be_bytes());
    let mut out = [0u8; SERVER_LEN];
    out[..8].copy_from_slice(&head);
    out[8..].copy_from_slice(&hash(secret, client, &head, ip));
    out
}

/// Whether `server` is a cookie `secret` made for `client` at `ip`; its age in seconds if so
/// (negative: stamped ahead of our clock).
fn made_by(
    secret: &[u8; 16],
    client: &[u8; CLIENT_LEN],
    server: &[u8],
    ip: IpAddr,
    now: u32,
) -> Option<i32> {
    let (head, mac) = server.split_first_chunk::<8>()?;
    if server.len() != SERVER_LEN || head[0] != 1 {
        return None;
    }
    let stamp = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    // Serial number arithmetic (RFC 1982): the age is the signed 32-bit difference.
    let age = now.wrapping_sub(stamp) as i32;
    if !(-MAX_AHEAD..=MAX_AGE).contains(&age) {
        return None;
    }
    // Compared in constant time: the MAC is the secret-derived part.
    use subtle::ConstantTimeEq;
    bool::from(hash(secret, client, head, ip).ct_eq(mac)).then_some(age)
}

/// The server's secrets and the verdicts and replies made with them.
#[derive(Clone, Debug)]
pub struct Cookies {
    secrets: CookieSecrets,
}

impl Cookies {
    pub fn new(secrets: CookieSecrets) -> Cookies {
        Cookies { secrets }
    }

    /// A random current secret, for a server given no `cookie_secret_file`: cookies still work
    /// against this one server, not across several.
    pub fn random() -> Cookies {
        let mut secret = [0u8; 16];
        // SAFETY: the buffer is valid for writes of its length.
        let n = unsafe { libc::getrandom(secret.as_mut_ptr().cast(), secret.len(), 0) };
        if n != secret.len() as isize {
            // getrandom cannot fail for 16 bytes after boot; fall back to a weaker seed anyway.
            for b in &mut secret {
                *b = fastrand::u8(..);
            }
        }
        Cookies::new(CookieSecrets {
            current: secret,
            previous: None,
        })
    }

    /// The verdict on a query's cookie and the COOKIE option to answer with: the client's
    /// cookie and either the server cookie it sent (ours, current secret, under half an hour
    /// old) or a fresh one (RFC 7873 5.2.3-5.2.5, RFC 9018 4.3).
    pub fn answer(&self, cookie: &Cookie, ip: IpAddr, now: u32) -> (Verdict, [u8; OPTION_LEN]) {
        let mut out = [0u8; OPTION_LEN];
        out[..CLIENT_LEN].copy_from_slice(&cookie.client);
        let server = cookie.server();
        if server.is_empty() {
            out[CLIENT_LEN..].copy_from_slice(&make(
                &self.secrets.current,
                &cookie.client,
                ip,
                now,
            ));
            return (Verdict::ClientOnly, out);
        }
        let current = made_by(&self.secrets.current, &cookie.client, server, ip, now);
        let verdict = match (current, self.secrets.previous) {
            (Some(age), _) if (0..=RENEW_AGE).contains(&age) => {
                out[CLIENT_LEN..].copy_from_slice(server);
                return (Verdict::Valid, out);
            }
            (Some(_), _) => Verdict::Valid,
            (None, Some(previous))
                if made_by(&previous, &cookie.client, server, ip, now).is_some() =>
            {
                Verdict::Valid
            }
            _ => Verdict::Invalid,
        };
        out[CLIENT_LEN..].copy_from_slice(&make(&self.secrets.current, &cookie.client, ip, now));
        (verdict, out)
    }
}

/// Unix seconds now, from the coarse real-time clock (no system call: vDSO).
pub fn unix_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    ts.tv_sec as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key(s: &str) -> [u8; 16] {
        hex(s).try_into().unwrap()
    }

    #[test]
    fn siphash_reference_vector() {
        // The SipHash paper's Appendix A: key 00..0f, message 00..0e.
        let k: [u8; 16] = std::array::from_fn(|i| i as u8);
        let m: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(&k, &m), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&k, &[]), 0x726f_db47_dd0e_0e31);
    }

    /// RFC 9018 Appendix A: the cookies a server makes.
    #[test]
    fn rfc9018_vectors_make() {
        for (secret, client, ip, now, want) in [
            (
                "e5e973e5a6b2a43f48e7dc849e37bfcf",
                "2464c4abcf10c957",
                "198.51.100.100",
                1559731985,
                "010000005cf79f111f8130c3eee29480",
            ),
            (
                "e5e973e5a6b2a43f48e7dc849e37bfcf",
                "2464c4abcf10c957",
                "198.51.100.100",
                1559734385,
                "010000005cf7a871d4a564a1442aca77",
            ),
            (
                "e5e973e5a6b2a43f48e7dc849e37bfcf",
                "fc93fc62807ddb86",
                "203.0.113.203",
                1559734700,
                "010000005cf7a9acf73a7810aca2381e",
            ),
            (
                "445536bcd2513298075a5d379663c962",
                "22681ab97d52c298",
                "2001:db8:220:1:59de:d0f4:8769:82b8",
                1559741961,
                "010000005cf7c609a6bb79d16625507a",
            ),
        ] {
            let client: [u8; 8] = hex(client).try_into().unwrap();
            let got = make(&key(secret), &client, ip.parse().unwrap(), now);
            assert_eq!(got.to_vec(), hex(want), "{ip} at {now}");
        }
    }

    /// RFC 9018 Appendix A, the other direction: the cookies clients send back, as
    /// `Cookies::answer` judges and answers them.
    #[test]
    fn rfc9018_vectors_verify_and_answer() {
        let a = key("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let only = |k| {
            Cookies::new(CookieSecrets {
                current: k,
                previous: None,
            })
        };
        // (secrets, option sent, client address, now, verdict, option answered)
        let cases = [
            // A.1: a client cookie alone gets a fresh server cookie.
            (
                only(a),
                "2464c4abcf10c957",
                "198.51.100.100",
                1559731985,
                Verdict::ClientOnly,
                "2464c4abcf10c957010000005cf79f111f8130c3eee29480",
            ),
            // A.2: 40 minutes later the cookie is valid but past half an hour: renewed.
            (
                only(a),
                "2464c4abcf10c957010000005cf79f111f8130c3eee29480",
                "198.51.100.100",
                1559734385,
                Verdict::Valid,
                "2464c4abcf10c957010000005cf7a871d4a564a1442aca77",
            ),
            // A.3: the reserved octets the client's cookie carries are hashed as sent.
            (
                only(a),
                "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5",
                "203.0.113.203",
                1559727985 + 60,
                Verdict::Valid,
                "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5",
            ),
            // A.3 again at the RFC's reply time (1h52m later): expired, so a fresh one.
            (
                only(a),
                "fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5",
                "203.0.113.203",
                1559734700,
                Verdict::Invalid,
                "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e",
            ),
            // A.4: a cookie of the previous secret is still valid after the rotation, and the
            // answer carries one of the new secret.
            (
                Cookies::new(CookieSecrets {
                    current: key("445536bcd2513298075a5d379663c962"),
                    previous: Some(key("dd3bdf9344b678b185a6f5cb60fca715")),
                }),
                "22681ab97d52c298010000005cf7c57926556bd0934c72f8",
                "2001:db8:220:1:59de:d0f4:8769:82b8",
                1559741961,
                Verdict::Valid,
                "22681ab97d52c298010000005cf7c609a6bb79d16625507a",
            ),
            // A.4 without the previous secret: not ours.
            (
                only(key("445536bcd2513298075a5d379663c962")),
                "22681ab97d52c298010000005cf7c57926556bd0934c72f8",
                "2001:db8:220:1:59de:d0f4:8769:82b8",
                1559741961,
                Verdict::Invalid,
                "22681ab97d52c298010000005cf7c609a6bb79d16625507a",
            ),
            // A cookie made for another address is not valid from this one.
            (
                only(a),
                "2464c4abcf10c957010000005cf79f111f8130c3eee29480",
                "198.51.100.101",
                1559731985 + 10,
                Verdict::Invalid,
                "",
            ),
            // Too far in the future (more than 5 minutes of clock skew).
            (
                only(a),
                "2464c4abcf10c957010000005cf79f111f8130c3eee29480",
                "198.51.100.100",
                1559731985 - 301,
                Verdict::Invalid,
                "",
            ),
        ];
        for (cookies, sent, ip, now, verdict, want) in cases {
            let cookie = Cookie::parse(&hex(sent)).unwrap();
            let (got, option) = cookies.answer(&cookie, ip.parse().unwrap(), now);
            assert_eq!(got, verdict, "{sent} from {ip} at {now}");
            assert_eq!(option[..8], hex(sent)[..8], "client cookie echoed");
            if !want.is_empty() {
                assert_eq!(option.to_vec(), hex(want), "{sent} from {ip} at {now}");
            }
            // Whatever came back is a cookie the same server accepts from the same address.
            let back = Cookie::parse(&option).unwrap();
            assert_eq!(
                cookies.answer(&back, ip.parse().unwrap(), now).0,
                Verdict::Valid
            );
        }
    }

    #[test]
    fn option_lengths() {
        // RFC 7873 5.2.2: 8 octets, or 16 to 40; anything else is malformed.
        for len in 0..50 {
            let ok = len == 8 || (16..=40).contains(&len);
            assert_eq!(Cookie::parse(&vec![7; len]).is_some(), ok, "{len} octets");
        }
    }
}
