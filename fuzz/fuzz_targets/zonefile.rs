//! The zone-file reader and the zone checks on arbitrary text: never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(origin) = weir::model::Name::parse("example.com") {
        let _ = weir::zones::from_text(text, Path::new("fuzz.zone"), &origin);
    }
});
