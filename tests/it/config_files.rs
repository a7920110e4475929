//! Every shipped config and zone loads, and config/weir.toml shows every key with its default.

use std::path::Path;

fn root(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn shipped_config_loads_and_states_the_defaults() {
    let loaded = weir::state::load(&root("config/weir.toml")).unwrap();
    assert_eq!(loaded.zones.len(), 1);
    let shipped = loaded.config;
    // The same file with every default key removed must mean the same thing.
    let text = std::fs::read_to_string(root("config/weir.toml")).unwrap();
    let zones_only = &text[text.find("\n[[zone]]").unwrap()..];
    let minimal = weir::config::parse(zones_only, &root("config/weir.toml")).unwrap();
    assert_eq!(
        shipped.dns, minimal.dns,
        "config/weir.toml must show the defaults"
    );
    assert_eq!(
        shipped.log, minimal.log,
        "config/weir.toml must show the defaults"
    );
}

#[test]
fn every_shipped_zone_file_loads() {
    let mut loaded = 0;
    for (dir, origin_of) in [("zones", "example.com."), ("bench/zones", "bench.example.")] {
        for entry in std::fs::read_dir(root(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "zone") {
                continue;
            }
            let zc = weir::config::ZoneConfig {
                origin: weir::model::Name::parse(origin_of).unwrap(),
                file: path.clone(),
                allow_transfer: Vec::new(),
                notify: Vec::new(),
                update: Vec::new(),
                dnssec: None,
            };
            if let Err(problems) = weir::zones::load(&zc) {
                panic!("{}: {problems}", path.display());
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 2);
}
