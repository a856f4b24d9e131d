//! The `hearsay` binary as a shell user runs it.

use std::process::{Command, Stdio};

/// `hearsay ... | head` closes stdout early; that is the reader's choice,
/// not a failure: no panic, exit 0.
#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["sim", "--members", "20", "--soak-secs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", out.status);
}
