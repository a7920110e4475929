//! The UPDATE path on arbitrary bytes: the TSIG locator and the RFC 2136 parser never panic,
//! and a message that parses is applied to a small zone (prerequisites, every update, the
//! zone checks, the journal) without a panic either.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir::model::{Name, ZoneEdits};
use weir::zones::Zone;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 7 7200 3600 1209600 60\n@ NS ns1\nns1 A 192.0.2.1\nwww A 192.0.2.80\nalias CNAME www\ntxt TXT \"one\"\nsub NS ns.sub\nns.sub A 192.0.2.3\n";

fn zone() -> &'static Zone {
    static ZONE_DATA: OnceLock<Zone> = OnceLock::new();
    ZONE_DATA.get_or_init(|| {
        let origin = Name::parse("example.com.").unwrap();
        weir::zones::from_text(ZONE, Path::new("z"), &origin).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let tsig = weir::tsig::locate(data).ok().flatten();
    let Ok(update) = weir::update::parse(data, tsig) else {
        return;
    };
    let file = zone();
    if update.zone != file.origin {
        return;
    }
    let edits = ZoneEdits::default();
    let managed = |n: &Name| n.wire().starts_with(b"\x03app");
    if let Ok(Some(applied)) = weir::update::apply(file, file, &edits, &update, &managed) {
        let served = weir::update::served(file, &applied.edits).expect("a layer just made decodes");
        assert!(weir::zones::check(&served).is_empty());
    }
});
