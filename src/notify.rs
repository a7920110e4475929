//! NOTIFY (RFC 1996): tells a zone's secondaries that its serial changed, so they transfer it
//! now instead of at their next refresh. One task watches the published snapshot (every
//! `LOOK`): when a zone's SOA serial differs from the one last announced (and once at start),
//! each of the zone's `notify` targets gets a NOTIFY over UDP, retried with growing timeouts
//! until it answers NOERROR or the tries run out. Never on the query path; never writes state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{Name, rtype};
use crate::snapshot::Snapshot;

/// How often the published snapshot is looked at.
const LOOK: Duration = Duration::from_millis(250);
/// The wait for an answer to each try: RFC 1996 3.6 asks for retries with growing intervals.
const TRIES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];
/// DNS opcode NOTIFY (RFC 1996 3.1).
const OPCODE_NOTIFY: u16 = 4;

/// Why a NOTIFY was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    #[error("no answer after {0} tries")]
    Unanswered(usize),
    #[error("answered with RCODE {0}")]
    Refused(u16),
    #[error("the answer to a signed NOTIFY was refused: {0}")]
    Unsigned(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Announces serial changes until `shutdown`.
pub(crate) async fn run(
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut announced: HashMap<Name, u32> = HashMap::new();
    // One NOTIFY in flight per zone and target: a newer serial aborts the older one's retries
    // (the secondary asks for the newest anyway), so a burst of changes spawns no pile of tasks.
    let mut in_flight: HashMap<(Name, SocketAddr), tokio::task::JoinHandle<()>> = HashMap::new();
    let mut looks = tokio::time::interval(LOOK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = looks.tick() => {}
        }
        let snap = snapshot.load();
        in_flight.retain(|_, task| !task.is_finished());
        for (origin, serial, targets) in snap.notify_targets() {
            if announced.get(origin) == Some(&serial) {
                continue;
            }
            announced.insert(origin.clone(), serial);
            for target in targets {
                let (zone, metrics) = (origin.clone(), metrics.clone());
                // The key as this snapshot holds it (config guarantees the name is one).
                let key = (target.key.as_ref()).and_then(|k| snap.keyring().get(k.wire()).cloned());
                let (addr, shown) = (target.addr, target.to_string());
                let task = tokio::spawn(async move {
                    let result = send(&zone, addr, key.as_ref(), &TRIES).await;
                    let target = shown;
                    match &result {
                        Ok(()) => {
                            tracing::info!(zone = %zone, serial, %target, "NOTIFY acknowledged")
                        }
                        Err(e) => {
                            tracing::warn!(zone = %zone, serial, %target, error = %e, "NOTIFY failed")
                        }
                    }
                    metrics.notify(&zone.to_string(), result.is_ok());
                });
                if let Some(older) = in_flight.insert((origin.clone(), target.addr), task) {
                    older.abort();
                }
            }
        }
    }
    for task in in_flight.into_values() {
        task.abort();
    }
}

/// The NOTIFY message for `origin` with id `id`: opcode NOTIFY, AA, one question (origin SOA IN).
pub(crate) fn message(origin: &Name, id: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + origin.wire().len() + 4);
    m.extend_from_slice(&id.to_be_bytes());
    let flags: u16 = OPCODE_NOTIFY << 11 | 0x0400;
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(origin.wire());
    m.extend_from_slice(&rtype::SOA.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// Sends NOTIFY for `origin` to `target`, waiting `tries[i]` for the answer to try `i`. An
/// answer counts when it has our id, QR and opcode NOTIFY; anything else is ignored.
pub(crate) async fn send(
    origin: &Name,
    target: SocketAddr,
    key: Option<&crate::tsig::Key>,
    tries: &[Duration],
) -> Result<(), NotifyError> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(target).await?;
    let id = fastrand::u16(..);
    let mut query = message(origin, id);
    // RFC 8945: signed with the target's key; its answer must then verify against our MAC.
    let mac =
        key.map(|key| crate::tsig::sign_request(&mut query, 0, key, crate::clock::wall_secs()));
    let mut buf = [0u8; 512];
    for wait in tries {
        socket.send(&query).await?;
        let deadline = tokio::time::Instant::now() + *wait;
        loop {
            let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await
            else {
                break;
            };
            // A refused port (ICMP) shows as an error here: wait out the try and send again.
            let Ok(n) = received else {
                tokio::time::sleep_until(deadline).await;
                break;
            };
            let Some(header) = buf.get(..n.min(4)).filter(|h| h.len() == 4) else {
                continue;
            };
            let flags = u16::from_be_bytes([header[2], header[3]]);
            let is_answer = header[..2] == id.to_be_bytes()
                && flags & 0x8000 != 0
                && (flags >> 11) & 0xF == OPCODE_NOTIFY;
            if !is_answer {
                continue;
            }
            if let (Some(key), Some(mac)) = (key, &mac) {
                let reply = &buf[..n];
                let checked = match crate::tsig::locate(reply) {
                    Ok(Some(at)) => {
                        crate::tsig::verify_reply(key, reply, at, mac, crate::clock::wall_secs())
                            .map(|_| ())
                            .map_err(|e| format!("its TSIG does not verify ({e:?})"))
                    }
                    _ => Err("it is not signed".to_string()),
                };
                if let Err(why) = checked {
                    return Err(NotifyError::Unsigned(why));
                }
            }
            return match flags & 0xF {
                0 => Ok(()),
                rcode => Err(NotifyError::Refused(rcode)),
            };
        }
    }
    Err(NotifyError::Unanswered(tries.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secondary on a real socket: it drops the first NOTIFY, sends a stray reply with
    /// another id after the second, then answers it with `rcode`. Returns what it received.
    async fn secondary(rcode: u8) -> (SocketAddr, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            let mut from = addr;
            for _ in 0..2 {
                let (n, f) = socket.recv_from(&mut buf).await.unwrap();
                seen.push(buf[..n].to_vec());
                from = f;
            }
            let mut reply = seen[1].clone();
            reply[2] |= 0x80;
            reply[3] = (reply[3] & 0xF0) | rcode;
            let mut stray = reply.clone();
            stray[0] ^= 0xFF;
            socket.send_to(&stray, from).await.unwrap();
            socket.send_to(&reply, from).await.unwrap();
            seen
        });
        (addr, task)
    }

    const FAST: [Duration; 3] = [
        Duration::from_millis(200),
        Duration::from_millis(400),
        Duration::from_millis(800),
    ];

    #[tokio::test]
    async fn a_notify_is_retried_until_answered_and_stray_replies_are_ignored() {
        let origin = Name::parse("example.com.").unwrap();
        let (addr, secondary) = secondary(0).await;
        send(&origin, addr, None, &FAST).await.unwrap();
        let seen = secondary.await.unwrap();
        assert_eq!(seen[0], seen[1], "the same NOTIFY, sent again");
        let m = &seen[0];
        assert_eq!(
            u16::from_be_bytes([m[2], m[3]]),
            4 << 11 | 0x0400,
            "opcode NOTIFY, AA"
        );
        assert_eq!(m[4..12], [0, 1, 0, 0, 0, 0, 0, 0], "one question");
        assert_eq!(&m[12..m.len() - 4], origin.wire());
        assert_eq!(m[m.len() - 4..], [0, 6, 0, 1], "SOA IN");
    }

    #[tokio::test]
    async fn a_refusal_or_silence_is_an_error() {
        let origin = Name::parse("example.com.").unwrap();
        let (addr, secondary) = secondary(5).await;
        let err = send(&origin, addr, None, &FAST).await.unwrap_err();
        assert!(matches!(err, NotifyError::Refused(5)), "{err}");
        secondary.await.unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let err = send(&origin, silent.local_addr().unwrap(), None, &FAST[..2])
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Unanswered(2)), "{err}");
    }
}
