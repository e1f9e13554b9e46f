//! The idle figure, measured in a process of its own (`confer-bench --idle`), since the
//! main benchmark process hosts many nodes: one node creates rooms, prints invites for
//! them, waits for the parent's nodes to join, settles, then samples its own CPU time and
//! resident memory from `/proc/self` over a window in which nobody sends anything.
//!
//! Protocol with the parent, one JSON document per line on the child's stdout:
//! `{"invites": [[code, ...], ...]}` (one list per room), then, after the parent writes a
//! line to the child's stdin once its nodes have joined, `{"idle": {...}}` with the sample.

use std::time::{Duration, Instant};

use confer_node::Node;
use confer_node::api::{Reply, Request};
use confer_node::net::NetConfig;
use confer_store::Profile;
use confer_tests::PASSPHRASE;
use serde_json::json;

use super::child::{Child, ask, emit, loopback, number, wait_for_parent};
use super::sys::{clock_ticks, cpu_ticks, status_bytes};

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
    let config = loopback(net);
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
    wait_for_parent().await?;
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

/// The parent's side of a running idle child.
#[derive(Debug)]
pub struct IdleChild(Child);

impl IdleChild {
    /// Starts `confer-bench --idle …` (this executable) and returns it with the invites
    /// it printed, one list per room.
    pub async fn spawn(args: Vec<String>) -> Result<(IdleChild, Vec<Vec<String>>), String> {
        let mut child = Child::spawn("idle child", "--idle", &args)?;
        let value = child.line().await?;
        let invites: Vec<Vec<String>> = serde_json::from_value(value["invites"].clone())
            .map_err(|e| format!("idle child's invites: {e}"))?;
        Ok((IdleChild(child), invites))
    }

    /// Tells the child its peers have joined, and waits for its sample.
    pub async fn measure(self) -> Result<IdleSample, String> {
        let mut child = self.0;
        child.go()?;
        let value = child.line().await?;
        let idle = &value["idle"];
        let sample = IdleSample {
            wall_secs: number(idle, "wall_secs")?,
            cpu_secs: number(idle, "cpu_secs")?,
            rss_bytes: number(idle, "rss_bytes")? as u64,
            hwm_bytes: number(idle, "hwm_bytes")? as u64,
            members: number(idle, "members")? as usize,
        };
        child.wait().await;
        Ok(sample)
    }
}
