//! Memory of a node with a long history, measured in a process of its own
//! (`confer-bench --history HOME`): after the catch-up, the member who caught up holds the
//! burst's messages; its node is stopped in the main process and started here on the
//! same profile (it redials the other members and reconciles with them, as after any
//! restart). The child samples `VmRSS` once the node has settled, after one full read of
//! the room's history (`Request::Read`, as `confer read` asks it), and after more reads.
//!
//! Protocol with the parent: the child prints one line, `{"history": {...}}`, and exits.

use std::time::{Duration, Instant};

use confer_node::Node;
use confer_node::api::{Reply, Request};
use confer_node::net::NetConfig;
use confer_store::Profile;
use confer_tests::PASSPHRASE;
use serde_json::json;

use super::child::{Child, ask, emit, loopback, number};
use super::sys::status_bytes;

/// What the history child measured.
#[derive(Debug, Clone, Copy)]
pub struct HistorySample {
    /// Messages in the room's history.
    pub messages: usize,
    /// Resident memory once the node had settled, bytes.
    pub started_bytes: u64,
    /// Resident memory after one full read, bytes.
    pub read_bytes: u64,
    /// Resident memory after all the reads, bytes.
    pub reads_bytes: u64,
    /// Reads in all.
    pub reads: u32,
    /// How long the node took to answer the first read, and the median over all.
    pub first_read_ms: f64,
    pub median_read_ms: f64,
    /// How long the node took to start.
    pub start_ms: f64,
}

/// The child: start a node on the profile in `home`, settle, read `room`'s history
/// `reads` times, and report.
pub async fn child(
    home: std::path::PathBuf,
    room: &str,
    reads: u32,
    settle: Duration,
    net: NetConfig,
) -> Result<(), String> {
    let profile = tokio::task::spawn_blocking(move || Profile::unlock(&home, PASSPHRASE))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("profile: {e}"))?;
    let config = loopback(net);
    let t0 = Instant::now();
    let node = Node::start(profile, config)
        .await
        .map_err(|e| format!("start: {e}"))?;
    let start_ms = t0.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(settle).await;
    let started = status_bytes("VmRSS:")?;
    let mut read_bytes = 0;
    let mut messages = 0;
    let mut times = Vec::new();
    for k in 0..reads.max(1) {
        let t = Instant::now();
        let reply = ask(
            &node,
            Request::Read {
                room: room.into(),
                follow: false,
                last: None,
            },
        )
        .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        match reply {
            Reply::History { messages: m, .. } => messages = m.len(),
            other => return Err(format!("unexpected {other:?}")),
        }
        if k == 0 {
            read_bytes = status_bytes("VmRSS:")?;
        }
    }
    let reads_bytes = status_bytes("VmRSS:")?;
    let first = times.first().copied().unwrap_or(f64::NAN);
    times.sort_by(f64::total_cmp);
    emit(&json!({
        "history": {
            "messages": messages,
            "started_bytes": started,
            "read_bytes": read_bytes,
            "reads_bytes": reads_bytes,
            "reads": times.len(),
            "first_read_ms": first,
            "median_read_ms": times[times.len() / 2],
            "start_ms": start_ms,
        }
    }))?;
    node.shutdown().await;
    Ok(())
}

/// Runs `confer-bench --history …` (this executable) and returns its sample.
pub async fn measure(args: Vec<String>) -> Result<HistorySample, String> {
    let mut child = Child::spawn("history child", "--history", &args)?;
    let value = child.line().await?;
    child.wait().await;
    let h = &value["history"];
    Ok(HistorySample {
        messages: number(h, "messages")? as usize,
        started_bytes: number(h, "started_bytes")? as u64,
        read_bytes: number(h, "read_bytes")? as u64,
        reads_bytes: number(h, "reads_bytes")? as u64,
        reads: number(h, "reads")? as u32,
        first_read_ms: number(h, "first_read_ms")?,
        median_read_ms: number(h, "median_read_ms")?,
        start_ms: number(h, "start_ms")?,
    })
}
