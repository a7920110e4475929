//! The hand-written query parser on arbitrary bytes: never a panic, and a parsed query's
//! question lies inside the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weir::dns::wire::parse_query(data);
});
