//! Starting `hearsay serve` as a child process and learning its address from
//! the one line it prints on stdout. Used by `hearsay bench`, `hearsay
//! cluster` and the crash tests, so they all launch nodes the same way.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The line prefix `hearsay serve` prints once it is accepting requests.
pub const LISTENING_PREFIX: &str = "hearsay listening on ";

/// A running child node.
pub struct ChildNode {
    pub child: Child,
    pub url: String,
}

impl ChildNode {
    /// Starts `exe serve <args>` and waits (up to `timeout`) for its address.
    /// The child's stderr (its logs) goes to `log` when given, else nowhere.
    pub fn spawn(exe: &Path, args: &[String], log: Option<std::fs::File>, timeout: Duration) -> std::io::Result<ChildNode> {
        let stderr = log.map_or_else(Stdio::null, Stdio::from);
        let mut child = Command::new(exe).arg("serve").args(args).stdout(Stdio::piped()).stderr(stderr).stdin(Stdio::null()).spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(url) = line.strip_prefix(LISTENING_PREFIX) {
                        let _ = tx.send(url.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(url) => Ok(ChildNode { child, url }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                Err(std::io::Error::other(format!("hearsay serve did not report its address within {timeout:?} (exit: {status:?})")))
            }
        }
    }

    /// SIGKILL: no shutdown path runs, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.child.wait()
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
