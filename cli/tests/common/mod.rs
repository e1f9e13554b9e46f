//! Helpers shared by the integration tests: running `confer` with a temporary home, and
//! running `confer node run` as a child process.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const PASSPHRASE: &str = "correct horse battery staple";

/// `confer --home HOME …` with the test passphrase and a quiet log.
pub fn confer(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confer"));
    cmd.arg("--home")
        .arg(home)
        .env("CONFER_PASSPHRASE", PASSPHRASE)
        .env_remove("CONFER_HOME")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `confer --home HOME args…` to completion.
pub fn run(home: &Path, args: &[&str]) -> Output {
    confer(home).args(args).output().unwrap()
}

/// Runs a command that must succeed and returns its stdout.
pub fn ok(home: &Path, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(
        out.status.success(),
        "confer {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a `--json` command that must succeed and parses its single JSON document.
pub fn ok_json(home: &Path, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(home, &args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("confer {args:?} printed invalid JSON ({e}): {stdout}"))
}

/// Asserts a failure with exit code 1 and exactly one `error: ` line on stderr; returns it.
pub fn fails(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1, got {}; stderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    assert!(
        lines[0].starts_with("error: "),
        "stderr does not start with `error: `: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout not empty: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    lines[0].to_owned()
}

/// Creates a profile named `name` in `home`.
pub fn init(home: &Path, name: &str) {
    ok(home, &["init", "--name", name]);
}

/// Reads the child's (piped) stdout line by line on a thread of its own, until it ends, so
/// that the caller can wait for lines with a timeout (and the child never finds its
/// output closed).
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Starts `confer ARGS…` as a child and returns it with its stdout lines as they come
/// (e.g. `read --follow`).
pub fn spawn_lines(home: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = confer(home)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    (child, lines)
}

/// Runs `confer ARGS… --json` as a child (stderr passed on) and waits up to 60 s for its
/// first stdout line, a JSON readiness document, which it returns with the child.
pub fn spawn_ready(home: &Path, args: &[&str]) -> (Child, serde_json::Value) {
    let (child, ready, _) = spawn_ready_lines(home, args);
    (child, ready)
}

/// [`spawn_ready`], also returning the child's later stdout lines.
pub fn spawn_ready_lines(
    home: &Path,
    args: &[&str],
) -> (Child, serde_json::Value, mpsc::Receiver<String>) {
    let mut child = confer(home)
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let line = match lines.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(mpsc::RecvTimeoutError::Disconnected) => String::new(),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!("confer {args:?} printed no readiness line within 60 s");
        }
    };
    match serde_json::from_str(&line) {
        Ok(ready) => (child, ready, lines),
        Err(e) => {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!(
                "the readiness line of confer {args:?} is not JSON ({e}): {line:?}; exit {status}"
            );
        }
    }
}

/// A `confer node run --json` child process, stopped (SIGKILL) if still running when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub peer_id: String,
    pub listen: Vec<String>,
    /// What it prints on stdout after its readiness line (JSON lines).
    pub lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts a node on loopback for the profile in `home` and waits for its readiness line.
    pub fn start(home: &Path) -> NodeProcess {
        Self::start_with(home, &["--listen", "/ip4/127.0.0.1/tcp/0"])
    }

    /// Starts `confer node run ARGS… --json` and waits for its readiness line.
    pub fn start_with(home: &Path, args: &[&str]) -> NodeProcess {
        let mut all = vec!["node", "run"];
        all.extend_from_slice(args);
        let (child, ready, lines) = spawn_ready_lines(home, &all);
        Self::from_ready(child, &ready, lines)
    }

    /// The node `child`, from its readiness line.
    fn from_ready(
        child: Child,
        ready: &serde_json::Value,
        lines: mpsc::Receiver<String>,
    ) -> NodeProcess {
        NodeProcess {
            child,
            lines,
            peer_id: ready["peer_id"].as_str().unwrap().to_owned(),
            listen: ready["listen"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect(),
        }
    }

    /// Sends SIGTERM (through kill(1): this workspace forbids `unsafe`) and waits for exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `confer node run --listen LISTEN --json` for the profile in `home` and waits up
/// to 60 s for its readiness line. `Err` holds how it ended if it exited instead (its
/// status, what it printed on stdout, and its stderr), for [`fails`]. The node's stderr
/// is passed on to the test's while it runs.
pub fn try_start_node(home: &Path, listen: &str) -> Result<NodeProcess, Output> {
    let mut child = confer(home)
        .args(["node", "run", "--listen", listen, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line_rx = stdout_lines(&mut child);
    let stderr = child.stderr.take().unwrap();
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[confer node run] {line}");
            if text.len() < 64 * 1024 {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let _ = err_tx.send(text);
    });
    let line = match line_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        // It closed its output without a line: it is exiting.
        Err(mpsc::RecvTimeoutError::Disconnected) => String::new(),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node neither became ready nor exited within 60 s");
        }
    };
    let ready = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .filter(|r| r["peer_id"].is_string() && r["listen"].is_array());
    let Some(ready) = ready else {
        // No readiness line: it is exiting (or printed something else: stop it).
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = err_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default();
        return Err(Output {
            status,
            stdout: line.into_bytes(),
            stderr: stderr.into_bytes(),
        });
    };
    Ok(NodeProcess::from_ready(child, &ready, line_rx))
}

/// Two people in one room, as they usually run Confer: profiles "Sam" and "Priya" in
/// `dirs[0]` and `dirs[1]`, each with `confer node run` started without `--listen` (the
/// same port every time), and Priya admitted to `room`, which Sam created and
/// facilitates. Returns the directories and the nodes (Sam's, Priya's).
pub fn sam_and_priya_in(room: &str) -> ([tempfile::TempDir; 2], NodeProcess, NodeProcess) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (sam, priya) = (dirs[0].path(), dirs[1].path());
    init(sam, "Sam");
    init(priya, "Priya");
    let sam_node = NodeProcess::start_with(sam, &[]);
    let priya_node = NodeProcess::start_with(priya, &[]);
    ok(sam, &["room", "create", room]);
    let invite = ok_json(sam, &["invite", room]);
    let code = invite["code"].as_str().unwrap();
    ok_json(priya, &["join", code, "--as", "Priya"]);
    (dirs, sam_node, priya_node)
}
