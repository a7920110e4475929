//! Holds the code map true (like rust-analyzer's tidy test): every source file says what it
//! owns, each heavy dependency is named only in its home, and only the state writer publishes
//! snapshots. A failure names the rule and the file.

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
    ("hickory_proto", &["src/dns/zonefile.rs"]),
    ("axum", &["src/admin.rs", "src/admin/"]),
    ("sled::", &["src/store/sled.rs"]),
    ("etcd_client", &["src/store/etcd.rs"]),
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

#[test]
fn the_code_map_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 20, "found the sources");
    let mut problems = Vec::new();
    for path in &files {
        let name = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
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
