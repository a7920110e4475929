//! The guides run: every ```sh block of README.md and docs/{delegation,rollouts,operations,
//! routing,updates,dnssec,multi-node}.md (the last with the `etcd` feature) is
//! executed by bash against the real `weir` binary (with dig, curl and python3 as a reader has
//! them), and what the guides say the commands print is checked, so a guide cannot drift from
//! what weir does.
//!
//! The convention, for whoever writes a guide:
//!
//! - ```sh blocks run, in document order, in one `bash` per guide (`set -euo pipefail`), so
//!   variables, `cd` and background jobs carry from block to block as in a reader's terminal.
//!   No other block runs: ```output is checked (below), ```text shows commands that cannot run
//!   here (production hosts, the README's `cargo run` and `.ci/test`), ```toml and the like show
//!   file excerpts. A fence without a language, or ```bash/```shell/```console, is an error, so
//!   a command block is never skipped by accident.
//! - A command line may end in an expectation, checked against that line's stdout + stderr:
//!   `# expect: TEXT` (exit status 0 and some line contains TEXT), `# expect not: TEXT` (no line
//!   does), `# expect exit 1: TEXT` (that exit status), `# expect within 10s: TEXT` (run the
//!   line again every half second until the expectation holds, for up to 10 s; the test allows
//!   2 x 10 + 10 s, for loaded machines). The words combine (`# expect within 5s not: ...`); TEXT
//!   may be empty. In TEXT, any run of spaces matches any run of spaces or tabs and `...`
//!   matches anything within the line. Colour codes in the output are ignored.
//! - An ```output block right after an ```sh block is checked against the output of that block's
//!   last line (a whole command): each non-blank line of the output block must match a line of
//!   the real output (as TEXT above), in order; other lines may come between.
//! - Other lines run as they are (a block's run of them at once); a failing command fails the
//!   test (set -e). Expectations go on single-line commands only. No run of lines may take more
//!   than 60 s.
//! - Environment: the working folder is a scratch copy of the checkout's config/, zones/ and
//!   docs/ (so `config/weir.toml` and `docs/examples/...` resolve as in a checkout); `weir` on
//!   PATH is the binary under test; TMPDIR and HOME are inside the scratch folder (the guides
//!   work in `mktemp -d` labs; no ~/.digrc); stdin is /dev/null.
//! - Addresses: guides use the addresses a reader uses (127.0.0.1:5353, admin 127.0.0.1:8053,
//!   backends on 127.0.0.1:8081-8083). So that guides run side by side, and beside a weir a
//!   developer runs, each guide but delegation.md gets a loopback address of its own: every
//!   `127.0.0.1` in the guide and in the copied *.toml files becomes e.g. `127.0.0.22`, and
//!   WEIR_ADMIN_URL points `weir ctl` there. delegation.md's lab has its own addresses already
//!   (127.0.0.11-14, port 10053), used as written.
//! - Background processes (`weir serve ... &`, `python3 -m http.server ... &`) stay in the
//!   shell's process group, which the test kills at the end, pass or fail.
//! - Skipped: lines starting with `unshare -rm` (delegation.md's two `dig +trace` commands,
//!   which need the lab's host names in a private /etc/hosts), only where user namespaces are
//!   unavailable (`unshare -rm true` fails); the test then names them on stderr.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Longest a run of lines (or one attempt of an expectation) may take.
const STEP_LIMIT: Duration = Duration::from_secs(60);
/// What the shell prints after each run of lines, with the status of its last command.
const DONE: &str = "__WEIR_DOC_DONE__";

#[test]
fn readme() {
    // The two commands are shown, not run (one serves forever, the other is this test suite);
    // the tour runs `weir serve` with the same arguments as the first.
    let readme = read("README.md");
    for command in [
        "cargo run --release -- serve --config config/weir.toml",
        ".ci/test",
    ] {
        assert!(
            blocks(&readme)
                .iter()
                .any(|b| b.info == "text" && b.lines.iter().any(|(_, l)| l.trim() == command)),
            "README.md shows `{command}` in a ```text block"
        );
    }
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/test");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&ci).unwrap().permissions());
    assert!(mode & 0o111 != 0, ".ci/test is executable");
    assert!(
        readme.contains("weir serve --config config/weir.toml &"),
        "the tour serves config/weir.toml"
    );
    run_guide("README.md", Some("127.0.0.21"));
}

#[test]
fn rollouts() {
    run_guide("docs/rollouts.md", Some("127.0.0.22"));
}

#[test]
fn operations() {
    run_guide("docs/operations.md", Some("127.0.0.23"));
}

#[test]
fn routing() {
    run_guide("docs/routing.md", Some("127.0.0.24"));
}

#[test]
fn updates() {
    run_guide("docs/updates.md", Some("127.0.0.25"));
}

#[test]
fn dnssec() {
    run_guide("docs/dnssec.md", Some("127.0.0.26"));
}

#[test]
fn delegation() {
    run_guide("docs/delegation.md", None);
}

/// Two weir nodes on a 3-member etcd (127.0.0.31-32, 127.0.0.41-43, as written): needs a weir
/// built with the `etcd` feature, and etcd (`.ci/test` installs both).
#[cfg(feature = "etcd")]
#[test]
fn multi_node() {
    run_guide("docs/multi-node.md", None);
}

#[test]
fn expectations_parse_and_match() {
    let e = expectation("dig x   # expect within 10s not: a  b...c").unwrap();
    assert_eq!(
        e,
        Expect {
            within: Some(10),
            exit: 0,
            not: true,
            patterns: vec!["a  b...c".into()],
        }
    );
    let e = expectation("weir ctl reload   # expect exit 1").unwrap();
    assert_eq!((e.exit, e.patterns), (1, vec![String::new()]));
    assert!(expectation("echo '#' # nothing").is_none());
    assert!(matches(
        "\x1b[2mstate\x1b[0m\t  aborted: health gate: endpoint 192.0.2.20 of group `green` is down",
        "state aborted: health gate: endpoint ... is down"
    ));
    assert!(!matches("weight  10% green", "weight 50%"));
    assert_eq!(
        rewrite_loopback("127.0.0.1:53 127.0.0.11 @127.0.0.1 -p", "127.0.0.9"),
        "127.0.0.9:53 127.0.0.11 @127.0.0.9 -p"
    );

    let doc = "```sh\na=1\nb=2\necho $a   # expect: 1\nunshare -rm true\nls\n```\n\n```output\nx  y\n```\n";
    let shape: Vec<String> = units(doc, "t.md")
        .iter()
        .map(|u| match u {
            Unit::Lines { first, text } => format!("{first}: {text:?}"),
            Unit::Check { line, expect, .. } => format!("{line}: {:?}", expect.patterns),
        })
        .collect();
    assert_eq!(
        shape,
        ["2: \"a=1\\nb=2\"", "4: [\"1\"]", "5: []", "6: [\"x  y\"]"]
    );
    for bad in ["```bash\nls\n```\n", "```\nls\n```\n", "```text\nls\n"] {
        assert!(
            std::panic::catch_unwind(|| units(bad, "t.md")).is_err(),
            "{bad}"
        );
    }
}

/// What a line (or an output block) promises about its output.
#[derive(Clone, Debug, Default, PartialEq)]
struct Expect {
    /// Retry for up to this many seconds (as the guide states it).
    within: Option<u64>,
    exit: i32,
    /// No line matches (the single pattern).
    not: bool,
    /// Each must match a line, in order.
    patterns: Vec<String>,
}

/// A fenced block: its language and its lines with their 1-based line numbers.
struct Block {
    info: String,
    lines: Vec<(usize, String)>,
}

/// What the shell is sent: lines run as they are, or one line with an expectation.
enum Unit {
    Lines {
        first: usize,
        text: String,
    },
    Check {
        line: usize,
        text: String,
        expect: Expect,
    },
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    lines: Vec::new(),
                })
            }
            (Some(_), Some(_)) => out.push(open.take().unwrap()),
            (Some(block), None) => block.lines.push((i + 1, line.to_string())),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a ``` fence is not closed");
    out
}

/// The expectation at the end of a command line, if any.
fn expectation(line: &str) -> Option<Expect> {
    let at = line.find("# expect")?;
    let rest = &line[at + "# expect".len()..];
    if !(rest.is_empty() || rest.starts_with([' ', ':'])) {
        return None;
    }
    let (words, text) = rest.split_once(':').unwrap_or((rest, ""));
    let mut e = Expect {
        patterns: vec![text.trim().to_string()],
        ..Expect::default()
    };
    let mut words = words.split_whitespace();
    while let Some(word) = words.next() {
        match word {
            "not" => e.not = true,
            "within" => {
                let secs = words.next().and_then(|w| w.strip_suffix('s'));
                e.within = Some(
                    secs.and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("`within` takes seconds like `10s`: {line}")),
                );
            }
            "exit" => {
                e.exit = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .unwrap_or_else(|| panic!("`exit` takes a status: {line}"));
            }
            other => panic!("unknown word `{other}` in an expectation: {line}"),
        }
    }
    Some(e)
}

/// The guide as units to run. Panics on a block the convention does not allow.
fn units(doc: &str, name: &str) -> Vec<Unit> {
    let blocks = blocks(doc);
    let mut units = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        let first = block.lines.first().map_or(0, |(n, _)| *n);
        match block.info.as_str() {
            "sh" => {}
            "output" => {
                assert!(
                    b > 0 && blocks[b - 1].info == "sh",
                    "{name}:{first}: an ```output block must follow an ```sh block"
                );
                continue;
            }
            "text" | "toml" | "json" | "yaml" | "promql" => continue,
            other => panic!(
                "{name}:{first}: a ```{other} block; use ```sh (run by tests/it/docs.rs) or \
                 ```text (shown only)"
            ),
        }
        let mut pending: Vec<(usize, String)> = Vec::new();
        let flush = |pending: &mut Vec<(usize, String)>, units: &mut Vec<Unit>| {
            if let Some((first, _)) = pending.first() {
                let text: Vec<&str> = pending.iter().map(|(_, l)| l.as_str()).collect();
                units.push(Unit::Lines {
                    first: *first,
                    text: text.join("\n"),
                });
            }
            pending.clear();
        };
        let output = blocks
            .get(b + 1)
            .filter(|next| next.info == "output")
            .map(|next| {
                next.lines
                    .iter()
                    .map(|(_, l)| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
            });
        let last = block.lines.len().saturating_sub(1);
        for (i, (n, line)) in block.lines.iter().enumerate() {
            let mut expect = expectation(line);
            // On its own, so that it can be skipped (see the module comment).
            if line.trim_start().starts_with("unshare -rm") {
                expect.get_or_insert_with(Expect::default);
            }
            if i == last
                && let Some(out) = &output
            {
                let e = expect.get_or_insert_with(|| Expect {
                    patterns: Vec::new(),
                    ..Expect::default()
                });
                assert!(!e.not, "{name}:{n}: `not` and an ```output block");
                e.patterns.retain(|p| !p.is_empty());
                e.patterns.extend(out.iter().cloned());
            }
            match expect {
                None => pending.push((*n, line.clone())),
                Some(expect) => {
                    let continued = i > 0 && block.lines[i - 1].1.trim_end().ends_with('\\');
                    assert!(
                        !continued && !line.trim_end().ends_with('\\'),
                        "{name}:{n}: expectations go on single-line commands"
                    );
                    flush(&mut pending, &mut units);
                    units.push(Unit::Check {
                        line: *n,
                        text: line.clone(),
                        expect,
                    });
                }
            }
        }
        flush(&mut pending, &mut units);
    }
    units
}

/// Whitespace runs as one space, colour codes dropped.
fn normalize(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, then a final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `line` matches `pattern` (`...` = anything, whitespace runs equal).
fn matches(line: &str, pattern: &str) -> bool {
    let line = normalize(line);
    let pattern = normalize(pattern);
    let mut at = 0;
    for piece in pattern.split("...") {
        match line[at..].find(piece) {
            Some(i) => at += i + piece.len(),
            None => return false,
        }
    }
    true
}

/// Why `output` (with `status`) does not meet `e`, or None if it does.
fn unmet(e: &Expect, status: i32, output: &[String]) -> Option<String> {
    if status != e.exit {
        return Some(format!("exit status {status}, expected {}", e.exit));
    }
    if e.not {
        let pattern = &e.patterns[0];
        return output
            .iter()
            .find(|l| matches(l, pattern))
            .map(|l| format!("a line matches `{pattern}`: {l}"));
    }
    let mut lines = output.iter();
    for pattern in e.patterns.iter().filter(|p| !p.is_empty()) {
        if !lines.any(|l| matches(l, pattern)) {
            return Some(format!("no line matches `{pattern}` (in order)"));
        }
    }
    None
}

/// Every bare `127.0.0.1` (not 127.0.0.11) as `to`.
fn rewrite_loopback(text: &str, to: &str) -> String {
    const FROM: &str = "127.0.0.1";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(FROM) {
        let after = rest[i + FROM.len()..].chars().next();
        let before = rest[..i].chars().next_back().or(out.chars().next_back());
        let bare = !after.is_some_and(|c| c.is_ascii_digit())
            && !before.is_some_and(|c| c.is_ascii_digit() || c == '.');
        out.push_str(&rest[..i]);
        out.push_str(if bare { to } else { FROM });
        rest = &rest[i + FROM.len()..];
    }
    out.push_str(rest);
    out
}

/// Copies `from` into `to` (folders recursively), leaving out state stores and logs a reader's
/// checkout may hold.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.contains("-state") || name.ends_with(".log") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// One bash, fed a unit at a time; its process group (it and every background job) is killed
/// when dropped.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Shell {
    fn start(dir: &Path, env: &[(&str, String)]) -> Shell {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new("bash");
        command
            .args(["--noprofile", "--norc"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        for var in [
            "WEIR_CONFIG",
            "WEIR_TOKEN",
            "WEIR_ADMIN_URL",
            "WEIR_CA_FILE",
            "RUST_LOG",
        ] {
            command.env_remove(var);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("bash");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches('\n')
                    .to_string();
                if tx.send(line).is_err() {
                    return;
                }
                buf.clear();
            }
        });
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"exec 2>&1\nset -euo pipefail\n").unwrap();
        Shell {
            child,
            stdin,
            lines,
        }
    }

    /// Runs `text` (its status is reported if `status`, else the shell's `set -e` handles
    /// failures); returns (status, output lines) or why it did not finish.
    fn run(&mut self, text: &str, status: bool) -> Result<(i32, Vec<String>), String> {
        let tail = if status {
            "&& __weir_status=0 || __weir_status=$?"
        } else {
            "; __weir_status=0"
        };
        let script = format!(
            "{{\n{text}\n}} </dev/null 2>&1 {tail}\nprintf '\\n{DONE} %s\\n' \"$__weir_status\"\n"
        );
        if self.stdin.write_all(script.as_bytes()).is_err() {
            return Err("the shell has exited".into());
        }
        let _ = self.stdin.flush();
        let deadline = Instant::now() + STEP_LIMIT;
        let mut output = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => match line.strip_prefix(DONE) {
                    Some(code) => {
                        // The printf starts on a new line of its own.
                        if output.last().is_some_and(|l: &String| l.is_empty()) {
                            output.pop();
                        }
                        return Ok((code.trim().parse().unwrap_or(-1), output));
                    }
                    None => output.push(line),
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                // Whatever it printed last is still in the channel.
                output.extend(self.lines.try_iter());
                output.push(format!("[the shell exited: {exit}]"));
                return Err(output.join("\n"));
            }
            if Instant::now() > deadline {
                output.push(format!("[still running after {STEP_LIMIT:?}]"));
                return Err(output.join("\n"));
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let group = self.child.id() as i32;
        unsafe { libc::killpg(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever ignored SIGTERM (or is still shutting down).
        std::thread::sleep(Duration::from_millis(200));
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Runs every ```sh block of `guide` and checks its expectations; `loopback` replaces
/// 127.0.0.1 (see the module comment).
fn run_guide(guide: &str, loopback: Option<&str>) {
    let started = Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("weir");
    for dir in ["config", "zones", "docs"] {
        copy_tree(&repo.join(dir), &root.join(dir));
    }
    let mut text = read(guide);
    if let Some(address) = loopback {
        text = rewrite_loopback(&text, address);
        let mut all = Vec::new();
        files(&root, &mut all);
        for file in all
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "toml"))
        {
            let toml = std::fs::read_to_string(file).unwrap();
            std::fs::write(file, rewrite_loopback(&toml, address)).unwrap();
        }
    }
    let bin = scratch.path().join("bin");
    let tmp = scratch.path().join("tmp");
    let home = scratch.path().join("home");
    for dir in [&bin, &tmp, &home] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_weir"), bin.join("weir")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = vec![
        ("PATH", path),
        ("TMPDIR", tmp.display().to_string()),
        ("HOME", home.display().to_string()),
    ];
    if let Some(address) = loopback {
        env.push(("WEIR_ADMIN_URL", format!("http://{address}:8053")));
    }

    let userns = Command::new("unshare")
        .args(["-rm", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());

    let units = units(&text, guide);
    let mut shell = Shell::start(&root, &env);
    let mut transcript: Vec<String> = Vec::new();
    let mut checks = 0;
    for unit in &units {
        match unit {
            Unit::Lines { first, text } => {
                for l in text.lines() {
                    transcript.push(format!("$ {l}"));
                }
                match shell.run(text, false) {
                    Ok((_, output)) => transcript.extend(output),
                    Err(why) => {
                        transcript.push(why);
                        fail(
                            guide,
                            scratch.path(),
                            &transcript,
                            *first,
                            "these lines failed",
                        )
                    }
                }
            }
            Unit::Check { line, text, expect } => {
                checks += 1;
                transcript.push(format!("$ {text}"));
                if text.trim_start().starts_with("unshare -rm") && !userns {
                    eprintln!(
                        "{guide}:{line}: skipped, user namespaces are unavailable here: {text}"
                    );
                    transcript.push("[skipped: no user namespaces]".into());
                    continue;
                }
                let limit = expect
                    .within
                    .map_or(Duration::ZERO, |s| Duration::from_secs(2 * s + 10));
                let until = Instant::now() + limit;
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let (status, output) = match shell.run(text, true) {
                        Ok(done) => done,
                        Err(why) => {
                            transcript.push(why);
                            fail(
                                guide,
                                scratch.path(),
                                &transcript,
                                *line,
                                "the command did not finish",
                            )
                        }
                    };
                    match unmet(expect, status, &output) {
                        None => {
                            transcript.extend(output);
                            break;
                        }
                        Some(why) if Instant::now() >= until => {
                            transcript.extend(output);
                            fail(
                                guide,
                                scratch.path(),
                                &transcript,
                                *line,
                                &format!("{why} (after {attempts} attempt(s))"),
                            );
                        }
                        Some(_) => std::thread::sleep(Duration::from_millis(500)),
                    }
                }
            }
        }
    }
    drop(shell);
    eprintln!(
        "{guide}: {} runs, {checks} checked, in {:.1} s",
        units.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Panics with the guide's line, why, the end of the transcript and of every log file.
fn fail(guide: &str, scratch: &Path, transcript: &[String], line: usize, why: &str) -> ! {
    let tail = &transcript[transcript.len().saturating_sub(80)..];
    let mut logs = String::new();
    let mut all = Vec::new();
    files(scratch, &mut all);
    for log in all
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        logs.push_str(&format!(
            "\n--- {} (last 20 lines)\n{}",
            log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        ));
    }
    panic!(
        "{guide}:{line}: {why}\n--- transcript (last 80 lines)\n{}{logs}",
        tail.join("\n")
    );
}
