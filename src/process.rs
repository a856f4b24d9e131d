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
            // Its stdout closed without the line: it exited (or is exiting).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                Err(std::io::Error::other(format!("hearsay serve exited ({status}) before it was listening")))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(format!("hearsay serve was not listening within {timeout:?}, so it was stopped")))
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
        // A child already reaped has no pid of its own any more: the OS may
        // have given it to another process, which must not get the signal.
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
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

/// A local cluster of child nodes on loopback, each seeded with the others.
pub struct LocalCluster {
    pub nodes: Vec<ChildNode>,
    exe: std::path::PathBuf,
    args: Vec<Vec<String>>,
    logs: Vec<std::path::PathBuf>,
    /// Whether node i's exit was already reported by [`Self::newly_exited`].
    exit_reported: Vec<bool>,
}

/// How to start a [`LocalCluster`].
pub struct ClusterSpec<'a> {
    pub exe: &'a Path,
    /// One `host:port` per node; node i is named `n{i+1}`.
    pub addrs: Vec<String>,
    pub data_dir: &'a Path,
    /// File with the shared cluster secret.
    pub secret_file: &'a Path,
    /// Extra `serve` flags for every node.
    pub extra_args: Vec<String>,
}

impl LocalCluster {
    pub fn spawn(spec: &ClusterSpec<'_>) -> std::io::Result<LocalCluster> {
        let mut cluster =
            LocalCluster { nodes: Vec::new(), exe: spec.exe.to_path_buf(), args: Vec::new(), logs: Vec::new(), exit_reported: Vec::new() };
        for (i, addr) in spec.addrs.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let seeds: Vec<&str> = spec.addrs.iter().filter(|a| *a != addr).map(String::as_str).collect();
            let mut args = vec![
                "--node-id".to_string(),
                name.clone(),
                "--listen".into(),
                addr.clone(),
                "--data-dir".into(),
                spec.data_dir.join(&name).display().to_string(),
                "--cluster-secret-file".into(),
                spec.secret_file.display().to_string(),
                "--seeds".into(),
                seeds.join(","),
            ];
            args.extend(spec.extra_args.iter().cloned());
            let log = spec.data_dir.join(format!("{name}.log"));
            let started = std::fs::File::create(&log).and_then(|f| ChildNode::spawn(spec.exe, &args, Some(f), Duration::from_secs(30)));
            match started {
                Ok(node) => cluster.nodes.push(node),
                Err(e) => {
                    // The nodes already up stop cleanly rather than die with the error.
                    cluster.terminate();
                    return Err(start_failed(&name, &log, e));
                }
            }
            cluster.args.push(args);
            cluster.logs.push(log);
            cluster.exit_reported.push(false);
        }
        Ok(cluster)
    }

    /// Stops node `i` cleanly (SIGTERM) and starts it again on the same data and port.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.nodes[i].terminate()?;
        self.start(i)
    }

    /// Starts node `i` again after it was stopped.
    pub fn start(&mut self, i: usize) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new().append(true).create(true).open(&self.logs[i])?;
        let started = ChildNode::spawn(&self.exe, &self.args[i], Some(log), Duration::from_secs(30));
        self.nodes[i] = started.map_err(|e| start_failed(&format!("n{}", i + 1), &self.logs[i], e))?;
        self.exit_reported[i] = false;
        Ok(())
    }

    /// Nodes that exited (crashed, were killed, or stopped) since the last
    /// call, with how each ended.
    pub fn newly_exited(&mut self) -> Vec<(usize, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !self.exit_reported[i] {
                if let Ok(Some(status)) = node.child.try_wait() {
                    self.exit_reported[i] = true;
                    exited.push((i, status));
                }
            }
        }
        exited
    }

    /// Whether every node has exited and been reported.
    pub fn all_exited(&self) -> bool {
        self.exit_reported.iter().all(|r| *r)
    }

    /// The shell command that starts node `i` as this cluster did, from the
    /// same working directory.
    pub fn command_line(&self, i: usize) -> String {
        let exe = self.exe.display().to_string();
        std::iter::once(exe.as_str())
            .chain(["serve"])
            .chain(self.args[i].iter().map(String::as_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn log_path(&self, i: usize) -> &Path {
        &self.logs[i]
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    pub fn terminate(&mut self) {
        for n in &mut self.nodes {
            let _ = n.terminate();
        }
    }
}

/// Node `name` did not start: says which node, where its log is, and the
/// error line its log ends with (`hearsay serve` prints its reason there),
/// so a port in use or a bad data dir is named, not guessed at.
fn start_failed(name: &str, log: &Path, e: std::io::Error) -> std::io::Error {
    let logged = std::fs::read_to_string(log).ok();
    let reason = logged.as_deref().and_then(|text| text.lines().rev().find_map(|l| l.strip_prefix("error: ")));
    let reason = reason.map(|r| format!(": {r}")).unwrap_or_default();
    std::io::Error::new(e.kind(), format!("{name} did not start (log: {}): {e}{reason}", log.display()))
}

/// `word` as one POSIX shell word: as is when plainly safe, else in single quotes.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,=@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Writes a fresh random cluster secret to `path` unless one is there.
pub fn ensure_secret_file(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        let secret: [u8; 32] = rand::random();
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(path, hex)?;
    }
    Ok(())
}

/// `n` loopback addresses with ports the OS reports free right now.
pub fn free_loopback_addrs(n: usize) -> std::io::Result<Vec<String>> {
    let listeners: Vec<std::net::TcpListener> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("127.0.0.1:7001,127.0.0.1:7002"), "127.0.0.1:7001,127.0.0.1:7002");
        assert_eq!(shell_quote("/tmp/my cluster/n1"), "'/tmp/my cluster/n1'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
