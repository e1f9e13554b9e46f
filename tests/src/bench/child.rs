//! A measuring child process: this executable started again with a flag (`--idle`,
//! `--history`), so that what it reads from `/proc/self` is one node's alone, not the
//! main process's many. One JSON document per line on the child's stdout; the parent
//! writes a line to its stdin when the child is to go on.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdout, Command, Stdio};

use confer_node::api::{Reply, Request};
use confer_node::net::NetConfig;
use confer_node::{Node, NodeConfig};
use serde_json::Value;

/// Writes one JSON document as a line on stdout (in the child).
pub fn emit(value: &Value) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

/// Waits for the parent's go-ahead line on stdin (in the child).
pub async fn wait_for_parent() -> Result<(), String> {
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("stdin: {e}"))?;
    if line.trim().is_empty() {
        return Err("the parent went away".into());
    }
    Ok(())
}

/// The parent's side of a running child.
#[derive(Debug)]
pub struct Child {
    what: &'static str,
    child: std::process::Child,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Child {
    /// Starts this executable with `flag` and `args`; `what` names it in errors.
    pub fn spawn(what: &'static str, flag: &str, args: &[String]) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = Command::new(exe)
            .arg(flag)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning the {what}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Child {
            what,
            child,
            stdout: Some(BufReader::new(stdout)),
        })
    }

    /// The child's next line, as JSON.
    pub async fn line(&mut self) -> Result<Value, String> {
        let what = self.what;
        let mut stdout = self.stdout.take().ok_or("stdout already taken")?;
        let (stdout, line) = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let result = stdout.read_line(&mut line).map(|_| line);
            (stdout, result)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.stdout = Some(stdout);
        let line = line.map_err(|e| format!("{what}'s output: {e}"))?;
        if line.trim().is_empty() {
            return Err(format!("the {what} exited early"));
        }
        serde_json::from_str(&line).map_err(|e| format!("{what}'s output: {e}"))
    }

    /// Tells the child to go on.
    pub fn go(&mut self) -> Result<(), String> {
        let what = self.what;
        let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "go")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{what}'s input: {e}"))
    }

    /// Waits for the child to exit.
    pub async fn wait(mut self) {
        let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
    }
}

/// A number from a child's JSON object.
pub fn number(object: &Value, key: &str) -> Result<f64, String> {
    object[key]
        .as_f64()
        .ok_or_else(|| format!("the child's output has no {key}"))
}

/// Asks `node`; a refusal is an error.
pub async fn ask(node: &Node, request: Request) -> Result<Reply, String> {
    match node.request(request.clone()).await {
        Reply::Error { message } => Err(format!("{request:?} failed: {message}")),
        reply => Ok(reply),
    }
}

/// A benchmark node's configuration: on 127.0.0.1, with a control socket, as a person's.
pub fn loopback(net: NetConfig) -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        relays: Vec::new(),
        net,
        control_socket: true,
        follow_queue: confer_node::FOLLOW_QUEUE,
    }
}
