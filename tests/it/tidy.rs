//! Holds the code map true (like rust-analyzer's tidy test): every source file says what it
//! owns, each heavy dependency is named only in its home, only the state writer publishes
//! snapshots, and no module imports one above it in the layer order that ARCHITECTURE.md
//! states (the table `LAYERS` below is that order; ARCHITECTURE.md's copy is checked against
//! it). A failure names the rule and the file.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file under `src/`, by its name relative to the crate (`src/dns/wire.rs`).
fn source_files() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found the sources");
    files
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (name, path)
        })
        .collect()
}

/// The file's code without its unit tests and comments: what the rules are about.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// (what is named, the files allowed to name it): the heavy dependencies' homes.
const HOMES: &[(&str, &[&str])] = &[
    ("hickory_proto", &["src/zones/zonefile.rs"]),
    ("axum", &["src/admin.rs", "src/admin/"]),
    ("sled::", &["src/store/sled.rs"]),
    ("etcd_client", &["src/store/etcd.rs"]),
    ("maxminddb", &["src/geo.rs"]),
    (
        "reqwest",
        &[
            "src/health/probe.rs",
            "src/health/metric.rs",
            "src/ctl.rs",
            "src/ctl/",
        ],
    ),
    // Only the writer publishes a snapshot.
    ("snapshot.store(", &["src/state.rs"]),
];

/// The layers, lowest first: a module may use its own layer's and lower layers' modules, never
/// a higher one's. `main.rs` (the binary) and `lib.rs` sit above them all.
const LAYERS: &[&[&str]] = &[
    &["clock", "model"],
    &["config", "metrics", "ctl", "geo", "tsig", "dnssec"],
    &["zones", "update"],
    &["snapshot", "health", "store"],
    &["rollout", "dns"],
    &["convergence", "split", "notify"],
    &["state"],
    &["admin"],
    &["app"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level module a source file belongs to (`src/dns/wire.rs` -> `dns`).
fn module_of(name: &str) -> &str {
    let rest = name.trim_start_matches("src/");
    let end = rest.find(['/', '.']).unwrap_or(rest.len());
    &rest[..end]
}

/// The crate modules `code` uses: every path that starts at `crate::` (`crate::a::b`,
/// `crate::{a, b::c}` over several lines), by its first segment.
fn uses(code: &str) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let heads: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            // Top-level entries of the group, split at commas outside nested braces.
            let mut depth = 0;
            let mut entries = Vec::new();
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        entries.push(&group[start..i]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        entries.push(&group[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            entries
        } else {
            vec![rest]
        };
        for head in heads {
            let head = head.trim_start();
            let end = head
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(head.len());
            if end > 0 {
                found.insert(head[..end].to_string());
            }
        }
    }
    found
}

#[test]
fn the_layer_table_is_the_one_architecture_md_states() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let stated: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Layers, lowest first"))
        .skip(1)
        .take_while(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_once(". ").map_or("", |(_, m)| m).replace('`', ""))
        .collect();
    let table: Vec<String> = LAYERS.iter().map(|l| l.join(", ")).collect();
    assert_eq!(
        stated, table,
        "ARCHITECTURE.md's numbered list after `Layers, lowest first` must match tests/it/tidy.rs LAYERS"
    );
    for (name, _) in source_files() {
        let module = module_of(&name);
        assert!(
            layer(module).is_some() || module == "main" || module == "lib",
            "{name}: module `{module}` has no layer in LAYERS (tests/it/tidy.rs) and ARCHITECTURE.md"
        );
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let mut problems = Vec::new();
    for (name, path) in source_files() {
        let module = module_of(&name);
        let Some(mine) = layer(module) else { continue };
        let code = code(&std::fs::read_to_string(path).unwrap());
        for used in uses(&code) {
            if let Some(theirs) = layer(&used)
                && theirs > mine
            {
                problems.push(format!(
                    "{name}: `{module}` (layer {}) uses `crate::{used}` (layer {}), which sits above it",
                    mine + 1,
                    theirs + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_use_reader_sees_grouped_and_nested_paths() {
    let code = "use crate::{\n    config::{self, Config},\n    model::Name,\n};\nlet x = crate::dns::respond(y);";
    let found: Vec<String> = uses(code).into_iter().collect();
    assert_eq!(found, ["config", "dns", "model"]);
}

#[test]
fn the_code_map_holds() {
    let mut problems = Vec::new();
    for (name, path) in source_files() {
        let text = std::fs::read_to_string(path).unwrap();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{name}: does not open with a `//!` line saying what it owns"
            ));
        }
        let code = code(&text).replace("self::sled", "");
        for (needle, homes) in HOMES {
            if code.contains(needle) && !homes.iter().any(|h| name.starts_with(h)) {
                problems.push(format!(
                    "{name}: names `{needle}`, which lives only in {}",
                    homes.join(", ")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
