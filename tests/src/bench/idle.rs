//! The idle figure, measured in a process of its own (`confer-bench --idle`), since the
//! main benchmark process hosts many nodes: one node creates rooms, prints invites for
//! them, waits for the parent's nodes to join, settles, then samples its own CPU time and
//! resident memory from `/proc/self` over a window in which nobody sends anything.
//!
//! Protocol with the parent, one JSON document per line on the child's stdout:
//! `{"invites": [[code, ...], ...]}` (one list per room), then, after the parent writes a
//! line to the child's stdin once its nodes have joined, `{"idle": {...}}` with the sample.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

use super::sys::{clock_ticks, cpu_ticks, status_bytes};
use std::time::{Duration, Instant};

use confer_node::api::{Reply, Request};
use confer_node::net::NetConfig;
use confer_node::{Node, NodeConfig};
use confer_store::Profile;
use confer_tests::PASSPHRASE;
use serde_json::{Value, json};

/// What the idle child measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleSample {
    /// Length of the window, seconds.
    pub wall_secs: f64,
    /// CPU time (user + system) used in the window, seconds.
    pub cpu_secs: f64,
    /// Resident memory at the end of the window, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory of the process, bytes.
    pub hwm_bytes: u64,
    /// Members in each room when the window started (the node included).
    pub members: usize,
}

impl IdleSample {
    /// CPU use as a percentage of one core.
    pub fn cpu_percent(&self) -> f64 {
        if self.wall_secs > 0.0 {
            100.0 * self.cpu_secs / self.wall_secs
        } else {
            f64::NAN
        }
    }
}

fn emit(value: &Value) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

/// The child: run one node in `rooms` rooms, each with `peers` invites, and measure.
pub async fn child(
    rooms: usize,
    peers: usize,
    settle: Duration,
    window: Duration,
    net: NetConfig,
) -> Result<(), String> {
    let home = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let path = home.path().to_path_buf();
    let profile = tokio::task::spawn_blocking(move || Profile::create(&path, PASSPHRASE, "idle"))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("profile: {e}"))?;
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        relays: Vec::new(),
        net,
        control_socket: true,
        follow_queue: confer_node::FOLLOW_QUEUE,
    };
    let node = Node::start(profile, config)
        .await
        .map_err(|e| format!("start: {e}"))?;
    let mut invites = Vec::new();
    for r in 0..rooms {
        let name = format!("idle room {r}");
        ask(
            &node,
            Request::CreateRoom {
                name: name.clone(),
                display_name: Some("idle node".into()),
            },
        )
        .await?;
        let mut codes = Vec::new();
        for _ in 0..peers {
            match ask(
                &node,
                Request::Invite {
                    room: name.clone(),
                    expires_in_secs: 3600,
                },
            )
            .await?
            {
                Reply::Invite(invite) => codes.push(invite.code),
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        invites.push(codes);
    }
    emit(&json!({ "invites": invites }))?;
    // Wait for the parent's go-ahead (its nodes have joined).
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
    // Every room has all its members, then let joins, dials and first syncs finish.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut members = 0;
    loop {
        if let Reply::Rooms { rooms: list } = ask(&node, Request::ListRooms).await? {
            members = list.iter().map(|r| r.members).min().unwrap_or(0);
            if list.len() == rooms && members == peers + 1 {
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(settle).await;

    let ticks = clock_ticks();
    let cpu0 = cpu_ticks()?;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1 = cpu_ticks()?;
    let wall = t0.elapsed().as_secs_f64();
    let rss = status_bytes("VmRSS:")?;
    let hwm = status_bytes("VmHWM:")?;
    emit(&json!({
        "idle": {
            "wall_secs": wall,
            "cpu_secs": (cpu1.saturating_sub(cpu0)) as f64 / ticks,
            "rss_bytes": rss,
            "hwm_bytes": hwm,
            "members": members,
        }
    }))?;
    node.shutdown().await;
    drop(home);
    Ok(())
}

async fn ask(node: &Node, request: Request) -> Result<Reply, String> {
    match node.request(request.clone()).await {
        Reply::Error { message } => Err(format!("{request:?}: {message}")),
        reply => Ok(reply),
    }
}

/// The parent's side of a running idle child.
#[derive(Debug)]
pub struct IdleChild {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
}

impl IdleChild {
    /// Starts `confer-bench --idle …` (this executable) and returns it with the invites
    /// it printed, one list per room.
    pub async fn spawn(args: Vec<String>) -> Result<(IdleChild, Vec<Vec<String>>), String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = Command::new(exe)
            .arg("--idle")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning the idle child: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut this = IdleChild {
            child,
            stdout: Some(BufReader::new(stdout)),
        };
        let value = this.line().await?;
        let invites: Vec<Vec<String>> = serde_json::from_value(value["invites"].clone())
            .map_err(|e| format!("idle child's invites: {e}"))?;
        Ok((this, invites))
    }

    async fn line(&mut self) -> Result<Value, String> {
        let mut stdout = self.stdout.take().ok_or("stdout already taken")?;
        let (stdout, line) = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let result = stdout.read_line(&mut line).map(|_| line);
            (stdout, result)
        })
        .await
        .map_err(|e| e.to_string())?;
        self.stdout = Some(stdout);
        let line = line.map_err(|e| format!("idle child's output: {e}"))?;
        if line.trim().is_empty() {
            return Err("the idle child exited early".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("idle child's output: {e}"))
    }

    /// Tells the child its peers have joined, and waits for its sample.
    pub async fn measure(mut self) -> Result<IdleSample, String> {
        {
            let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
            writeln!(stdin, "go").map_err(|e| format!("idle child's input: {e}"))?;
            stdin
                .flush()
                .map_err(|e| format!("idle child's input: {e}"))?;
        }
        let value = self.line().await?;
        let idle = &value["idle"];
        let number = |k: &str| idle[k].as_f64().ok_or(format!("idle child: no {k}"));
        let sample = IdleSample {
            wall_secs: number("wall_secs")?,
            cpu_secs: number("cpu_secs")?,
            rss_bytes: number("rss_bytes")? as u64,
            hwm_bytes: number("hwm_bytes")? as u64,
            members: number("members")? as usize,
        };
        let _ = tokio::task::spawn_blocking(move || self.child.wait()).await;
        Ok(sample)
    }
}
