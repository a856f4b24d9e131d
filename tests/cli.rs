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

/// An error is one line that names each cause once: the data dir that is a
/// file and the port in use, each with the OS's reason, and a node that
/// cannot be reached, with why.
#[test]
fn an_error_names_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    for (listen, data_dir, reason) in [(&free, &file, "Not a directory"), (&port, &data, "Address already in use")] {
        let out = Command::new(env!("CARGO_BIN_EXE_hearsay"))
            .args(["serve", "--node-id", "n1", "--insecure", "--listen", listen])
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {stderr}"));
        assert!(!out.status.success(), "{line}");
        assert_eq!(line.matches(reason).count(), 1, "{line}");
        assert_eq!(line.matches("storage I/O failed").count(), usize::from(reason == "Not a directory"), "{line}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hearsay")).args(["get", "--node", &format!("http://{free}"), "k"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.matches("Connection refused").count() == 1, "{stderr}");
}

/// A flag out of its range is refused at start, naming the flag and the
/// range, whether given as a flag or by its env twin, before the data dir is
/// created: not clamped to something the operator did not ask for, and
/// never a panic (sled panics on a page cache under 256 bytes; a grace of
/// u64::MAX seconds overflowed the purge horizon).
#[test]
fn out_of_range_flags_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    /// Flags, an env twin's name and value, and the flag the error names.
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>, &'a str);
    let cases: &[Case] = &[
        (&["--replication-factor", "0"], None, "--replication-factor"),
        (&["--shards", "0"], None, "--shards"),
        (&[], Some(("HEARSAY_SHARDS", "65537")), "--shards"),
        (&[], Some(("HEARSAY_REPLICATION_FACTOR", "0")), "--replication-factor"),
        (&["--write-timeout-ms", "0"], None, "--write-timeout-ms"),
        (&["--anti-entropy-interval", "0"], None, "--anti-entropy-interval"),
        (&["--cache-bytes", "1000"], None, "--cache-bytes"),
        (&[], Some(("HEARSAY_CACHE_BYTES", "0")), "--cache-bytes"),
        (&["--max-value-bytes", "1099511627776"], None, "--max-value-bytes"),
        (&["--tombstone-grace-secs", "18446744073709551615"], None, "--tombstone-grace-secs"),
        (&["--max-clock-drift-ms", "999999999999"], None, "--max-clock-drift-ms"),
    ];
    for (args, env, flag) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearsay"));
        cmd.args(["serve", "--insecure", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data).args(*args);
        if let Some((name, value)) = env {
            cmd.env(name, value);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?} was not refused: {stderr}");
        assert!(stderr.contains(&format!("for '{flag} ")) && stderr.contains("is not in"), "{args:?} {env:?}: {stderr}");
        assert!(!data.exists(), "{args:?} {env:?} created the data dir");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["cluster", "--replication-factor", "0", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && stderr.contains("'--replication-factor "), "{stderr}");
    assert!(!data.exists(), "the refused cluster created its data dir");
    // The load generator refuses the same way instead of running something
    // else than asked (it used to take --concurrency 0 as 1, and ignore
    // --nodes next to --target).
    let bench_cases: &[(&[&str], &str)] = &[
        (&["--concurrency", "0"], "'--concurrency "),
        (&["--rounds", "0"], "'--rounds "),
        (&["--duration", "0"], "'--duration "),
        (&["--read-percent", "101"], "'--read-percent "),
        (&["--levels", "one,most"], "'--levels "),
        (&["--scenario", "rebalance"], "'--scenario "),
        (&["--nodes", "3", "--target", "http://127.0.0.1:1"], "cannot be used with"),
    ];
    for (args, says) in bench_cases {
        let out = Command::new(env!("CARGO_BIN_EXE_hearsay")).arg("bench").args(*args).stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(2) && stderr.contains(says), "bench {args:?}: {:?} {stderr}", out.status);
    }
}

/// Lines a child prints on stdout, read on a thread so a test can wait for
/// one with a deadline.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line within 60 s that `pick` accepts, and its pick.
fn wait_for_line<T>(lines: &std::sync::mpsc::Receiver<String>, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => match pick(&line) {
                Some(v) => return v,
                None => seen.push(line),
            },
            Err(_) => break,
        }
    }
    panic!("no line with {what} within 60 s; saw: {seen:#?}");
}

/// A base port whose next port is free too (`hearsay cluster` takes
/// consecutive ports), as the OS reports right now.
fn two_free_ports() -> u16 {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

/// A child process stopped with SIGTERM when the test ends, failed or not:
/// `hearsay cluster` stops its nodes on SIGTERM, never on SIGKILL.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// A local cluster whose second node cannot start says which node, why (the
/// reason from its log) and where its log is, at once rather than after a
/// 30 s wait, and stops the node that did start.
#[test]
fn a_cluster_node_that_cannot_start_is_named_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let port = two_free_ports();
    let taken = std::net::TcpListener::bind(("127.0.0.1", port + 1)).unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hearsay"))
        .args(["cluster", "--nodes", "2", "--base-port", &port.to_string(), "--data-dir"])
        .arg(dir.path().join("c"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    drop(taken);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {stderr}"));
    let log = dir.path().join("c").join("n2.log");
    assert!(line.contains(&format!("n2 did not start (log: {})", log.display())), "{line}");
    assert!(line.contains("before it was listening") && line.matches("Address already in use").count() == 1, "{line}");
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}: the exit was not noticed");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "n1 was left running on its port");
    let n1_log = std::fs::read_to_string(dir.path().join("c").join("n1.log")).unwrap();
    assert!(n1_log.contains("stopped cleanly"), "n1 was killed, not stopped: {n1_log}");
}

/// `hearsay cluster` reports a node that dies (it was killed here) with the
/// command that starts it again, and that command brings it back into the
/// cluster: with the cluster's replication factor and shard count, or its
/// peer would refuse it. Once none of its nodes runs, the command fails
/// instead of waiting for a Ctrl-C that can stop nothing.
#[test]
fn the_local_cluster_reports_a_node_that_died_and_how_to_start_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = two_free_ports();
    let mut cluster = Stopped(
        Command::new(env!("CARGO_BIN_EXE_hearsay"))
            .args(["cluster", "--nodes", "2", "--base-port", &port.to_string(), "--replication-factor", "1", "--shards", "8"])
            .arg("--data-dir")
            .arg(dir.path().join("c"))
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("cluster.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let lines = stdout_lines(&mut cluster.0);
    let pid_of =
        |node: &'static str| move |line: &str| line.strip_prefix(node)?.split("(pid ").nth(1)?.split(',').next()?.parse::<u32>().ok();
    let n1 = wait_for_line(&lines, "n1's pid", pid_of("n1: "));
    let n2 = wait_for_line(&lines, "n2's pid", pid_of("n2: "));
    wait_for_line(&lines, "the cluster up", |l| l.contains("is up").then_some(()));
    // Once n1 places shards on both nodes, each shard has one replica, as
    // --replication-factor 1 asks (the default, 3, would give each two).
    let shards_of_n1 = || -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_hearsay"))
            .args(["admin", "--node", &format!("http://127.0.0.1:{port}"), "/admin/shards"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let replicas = |shards: &serde_json::Value| -> Vec<Vec<String>> {
        shards["shards"].as_array().into_iter().flatten().map(|s| serde_json::from_value(s["replicas"].clone()).unwrap()).collect()
    };
    let shards = (0..300)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            shards_of_n1()
        })
        .find(|s| replicas(s).concat().contains(&"n2".to_string()))
        .expect("n1 placed no shard on n2 within 30 s");
    assert_eq!(shards["shard_count"], 8);
    assert!(replicas(&shards).iter().all(|r| r.len() == 1), "replicas per shard: {:?}", replicas(&shards));

    kill("-KILL", n2);
    let exit = wait_for_line(&lines, "n2's exit", |l| l.starts_with("n2 exited").then(|| l.to_string()));
    assert!(exit.contains("SIGKILL") && exit.contains("n2.log"), "{exit}");
    wait_for_line(&lines, "how to start it", |l| l.starts_with("To start it again").then_some(()));
    let command = wait_for_line(&lines, "the command", |l| l.strip_prefix("  ").map(str::to_string));

    let mut again = Stopped(
        Command::new("sh")
            .args(["-c", &format!("exec {command}")])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = wait_for_line(&stdout_lines(&mut again.0), "n2 listening", |l| l.strip_prefix("hearsay listening on ").map(str::to_string));
    assert_eq!(url, format!("http://127.0.0.1:{}", port + 1));
    // Ready means its storage is open and its seed, n1, answered it.
    let ready = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        Command::new(env!("CARGO_BIN_EXE_hearsay"))
            .args(["admin", "--node", &url, "/ready"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    drop(again);
    assert!(ready, "n2, started again by the printed command, was not ready within 30 s");

    kill("-KILL", n1);
    let status = (0..300)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            cluster.0.try_wait().unwrap()
        })
        .expect("hearsay cluster still runs 30 s after its last node died");
    let stderr = std::fs::read_to_string(dir.path().join("cluster.err")).unwrap();
    assert!(!status.success() && stderr.contains("every node has exited"), "{status:?}: {stderr}");
}
