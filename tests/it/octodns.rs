//! The octoDNS provider (`integrations/octodns`) against the real weir binary: its pytest suite,
//! run by `integrations/octodns/test.sh` in a virtual environment the script creates (the
//! published `octodns` package from PyPI, its real `octodns-sync` and `octodns-dump`), each test
//! starting this build's `weir serve` on loopback with a `tsig-keygen` key. Needs python3 with
//! venv (3.10+), pip's access to PyPI and tsig-keygen (`.ci/test` installs them); a missing one
//! fails the test with the script's reason, never skips it.

#[test]
fn the_octodns_provider_plans_applies_and_reads_a_running_weir() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/integrations/octodns/test.sh");
    let out = std::process::Command::new("sh")
        .arg(script)
        .env("WEIR_BIN", env!("CARGO_BIN_EXE_weir"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
