//! The AF_XDP frame parser (`dns::frame`) on arbitrary frames: never a panic; a frame it takes
//! has its payload inside the frame, and the reply it writes around any payload reads back
//! as a datagram from the listen address to the sender.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::dns::frame::{Verdict, parse, reply};

fuzz_target!(|data: &[u8]| {
    let ours = |a: std::net::SocketAddr| a.port() == 53;
    if let Verdict::Dns(d) = parse(data, ours) {
        assert!(d.payload.end <= data.len() && d.payload.start <= d.payload.end);
        let mut out = Vec::new();
        let dns = &data[d.payload.clone()];
        if reply(data, &d, dns, &mut out).is_some() {
            let back = parse(&out, |a| a == d.src);
            assert!(
                matches!(&back, Verdict::Dns(r) if r.src == d.dst && r.dst == d.src && out[r.payload.clone()] == *dns),
                "{back:?}"
            );
        }
    }
});
