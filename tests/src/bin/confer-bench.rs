//! `confer-bench`: a benchmark of the room, not of the parts (issue 4).
//!
//! Starts real Confer nodes in this process on 127.0.0.1, each with a temporary profile
//! and a real sled store, forms a room of eight, and measures in one run: live delivery
//! latency and the fraction delivered, the same traffic over plain gossipsub between bare
//! libp2p swarms, catch-up of a member who was offline, key rotation after a removal, a
//! join, (in a child process, `--idle`) an idle node in three rooms and (in another,
//! `--history`) the memory of the member who caught up, holding the whole burst. Prints a table
//! (or JSON with `--json`) with each figure, its target and whether it was met.
//!
//! `cargo run --release -p confer-tests --bin confer-bench [-- --help]`; see
//! docs/ROOM_BENCH.md for what each figure measures exactly.

#[path = "../bench/baseline.rs"]
mod baseline;
#[path = "../bench/child.rs"]
mod child;
#[path = "../bench/history.rs"]
mod history;
#[path = "../bench/idle.rs"]
mod idle;
#[path = "../bench/record.rs"]
mod record;
#[path = "../bench/report.rs"]
mod report;
#[path = "../bench/sys.rs"]
mod sys;

use std::collections::BTreeSet;
use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use confer_node::api::{Reply, Request};
use confer_node::net::NetConfig;
use confer_node::{Node, NodeConfig};
use confer_store::{Profile, Store};
use confer_tests::{PASSPHRASE, TestNode};
use serde_json::json;
use tokio::task::JoinHandle;

use child::ask;
use record::{Latencies, Record, quantile_ms, text};
use report::{Figure, Verdict};
use sys::{CpuUse, CpuWatch};

/// The room every member node is in.
const ROOM: &str = "bench room";
/// Members of the room (the cap).
const MEMBERS: usize = 8;
/// The member removed in the rotation figure.
const REMOVED: usize = 7;
/// The member who goes offline in the catch-up figure.
const OFFLINE: usize = 2;
/// The member who sends the first message after a join.
const JOIN_SENDER: usize = 1;
/// The joiner's node index.
const JOINER: usize = 8;

// Phase letters carried at the start of each message text.
const WARM_UP: u8 = b'W';
const LIVE: u8 = b'L';
const GOSSIP_WARM_UP: u8 = b'V';
const GOSSIP: u8 = b'B';
const JOIN: u8 = b'J';
const CATCH_UP: u8 = b'C';

#[derive(Debug, Parser)]
#[command(
    name = "confer-bench",
    about = "A benchmark of a Confer room: 8 real nodes on 127.0.0.1 in this process, \
             plain gossipsub as the baseline; prints each figure with its target"
)]
struct Args {
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Live phase: messages sent (round-robin over the members).
    #[arg(long, default_value_t = 200)]
    messages: u32,
    /// Live phase: message text size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Live phase: messages per second, all senders together.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Live phase: how long to wait for stragglers after the last send, seconds.
    #[arg(long, default_value_t = 20)]
    straggler_secs: u64,
    /// Catch-up: messages the others send while one member is offline.
    #[arg(long, default_value_t = 10_000)]
    catchup_messages: u32,
    /// Catch-up: message text size in bytes.
    #[arg(long, default_value_t = 1024)]
    catchup_size: usize,
    /// Catch-up: longest wait for the returning member (and, before that, for the online
    /// members to hold the whole burst), seconds.
    #[arg(long, default_value_t = 60)]
    catchup_wait_secs: u64,
    /// gossipsub heartbeat of the Confer nodes, milliseconds (NetConfig::default(): 1000).
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Idle: length of the measuring window, seconds (15: one full period of the
    /// nodes' once-every-15-s sync with each member).
    #[arg(long, default_value_t = 15)]
    idle_secs: u64,
    /// Idle: seconds between the last join and the start of the window.
    #[arg(long, default_value_t = 3)]
    idle_settle_secs: u64,
    /// Idle: rooms the idle node is in.
    #[arg(long, default_value_t = 3)]
    idle_rooms: usize,
    /// Idle: other members (nodes of this process) in each of its rooms, at most 7.
    #[arg(long, default_value_t = 7)]
    idle_peers: usize,
    /// Catch-up: how many members are online when the offline one returns (default: all
    /// the senders); the others are stopped first, and started again afterwards.
    #[arg(long)]
    catchup_sources: Option<usize>,
    /// Live phase: rounds, alternating between Confer and plain gossipsub.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Worker threads of the async runtime every node of this process shares (default:
    /// one per core, like `confer node run`).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Live phase and its baseline only: members of the room and bare gossipsub swarms,
    /// 2 to 8 (an experiment: how the ratio depends on how many nodes share the cores;
    /// anything but 8 needs --skip rotation --skip join --skip catchup --skip idle).
    #[arg(long, default_value_t = MEMBERS, value_parser = parse_members)]
    members: usize,
    /// History: full reads of the caught-up member's history in the history phase.
    #[arg(long, default_value_t = 10)]
    history_reads: u32,
    /// History: seconds between the node's start and the first sample.
    #[arg(long, default_value_t = 3)]
    history_settle_secs: u64,
    /// Skip a phase: baseline, live, rotation, join, catchup, idle or history
    /// (repeatable; history needs catchup).
    #[arg(long, value_parser = ["baseline", "live", "rotation", "join", "catchup", "idle", "history"])]
    skip: Vec<String>,
    /// Run as the idle child process (started by the benchmark itself).
    #[arg(long)]
    idle: bool,
    /// Run as the history child process on this profile (started by the benchmark
    /// itself).
    #[arg(long, value_name = "HOME", conflicts_with = "idle")]
    history: Option<std::path::PathBuf>,
}

/// `--members`: 2 to [`MEMBERS`].
fn parse_members(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (2..=MEMBERS).contains(&n) => Ok(n),
        _ => Err(format!("a room of 2 to {MEMBERS} members, not {s:?}")),
    }
}

impl Args {
    fn net(&self) -> NetConfig {
        NetConfig {
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            ..NetConfig::default()
        }
    }

    fn runs(&self, phase: &str) -> bool {
        !self.skip.iter().any(|s| s == phase)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let child = args.idle || args.history.is_some();
    if let Some(n) = args.worker_threads.filter(|_| !child) {
        builder.worker_threads(n.max(1));
    }
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => {
            eprintln!("confer-bench: could not start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    if args.idle {
        let result = idle::child(
            args.idle_rooms,
            args.idle_peers,
            Duration::from_secs(args.idle_settle_secs),
            Duration::from_secs(args.idle_secs),
            args.net(),
        )
        .await;
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("confer-bench --idle: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(home) = args.history.clone() {
        let result = history::child(
            home,
            ROOM,
            args.history_reads,
            Duration::from_secs(args.history_settle_secs),
            args.net(),
        )
        .await;
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("confer-bench --history: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Node and libp2p logs, to stderr, when RUST_LOG asks for them.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let needs_all = ["rotation", "join", "catchup", "idle", "history"];
    if args.members != MEMBERS && needs_all.iter().any(|p| args.runs(p)) {
        eprintln!(
            "confer-bench: --members {} measures only the live phase and its baseline; \
             add --skip rotation --skip join --skip catchup --skip idle --skip history",
            args.members
        );
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let mut bench = Bench::new(args);
    match bench.run().await {
        Ok(()) => {
            bench.finish(started.elapsed());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("confer-bench: {e}");
            if !bench.figures.is_empty() {
                eprintln!("figures so far:\n{}", report::table(&bench.figures));
            }
            ExitCode::FAILURE
        }
    }
}

fn say(what: &str) {
    eprintln!("[confer-bench] {what}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Polls `check` every millisecond until it returns `Some`, or `deadline` passes.
async fn poll<T, F, Fut>(deadline: Instant, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn epoch_and_members(node: &Node) -> Result<(u64, usize), String> {
    match ask(node, Request::Members { room: ROOM.into() }).await? {
        Reply::Members { epoch, members } => Ok((epoch, members.len())),
        other => Err(format!("unexpected {other:?}")),
    }
}

async fn invite(node: &Node, room: &str) -> Result<String, String> {
    match ask(
        node,
        Request::Invite {
            room: room.into(),
            expires_in_secs: 3600,
        },
    )
    .await?
    {
        Reply::Invite(invite) => Ok(invite.code),
        other => Err(format!("unexpected {other:?}")),
    }
}

/// Starts a node on a fresh temporary profile, on 127.0.0.1, with `net`.
async fn start_node(name: String, net: NetConfig) -> Result<TestNode, String> {
    let home = tempfile::Builder::new()
        .prefix("confer-bench-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let path = home.path().to_path_buf();
    let profile = tokio::task::spawn_blocking(move || Profile::create(&path, PASSPHRASE, &name))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("profile: {e}"))?;
    let node = Node::start(profile, child::loopback(net))
        .await
        .map_err(|e| format!("start: {e}"))?;
    Ok(TestNode { node, home })
}

/// Follows the room at `node`: notes in `record` every message it already has (as of
/// now) and every new one as it is stored. Returns once the follower is registered.
///
/// The stream is drained by a thread of its own, not a task: with every core busy
/// running nodes, a task can fall more than the node's follow queue (4,096) behind and be
/// dropped, and a thread also stamps arrivals without waiting for a runtime worker.
async fn follow(node: &Node, index: usize, record: &Record) -> Result<(), String> {
    let generation = record.next_generation(index);
    let confer_node::Following {
        history,
        updates: mut rx,
        ..
    } = node.follow(ROOM.into()).await?;
    let now = Instant::now();
    for m in &history {
        record.got(m.text.as_bytes(), index, now);
    }
    let record = record.clone();
    std::thread::Builder::new()
        .name(format!("follow-{index}"))
        .spawn(move || {
            while let Some(update) = rx.blocking_recv() {
                if let confer_node::FollowUpdate::Message(m) = update {
                    record.got(m.text.as_bytes(), index, Instant::now());
                }
            }
            // The node stopped, or this follower fell too far behind and was dropped.
            record.lose(index, generation);
        })
        .map_err(|e| format!("follower thread: {e}"))?;
    Ok(())
}

/// Follows `node` again if its follower was dropped (see [`follow`]).
async fn refollow_if_lost(node: &Node, index: usize, record: &Record) {
    if record.lost(index)
        && let Err(e) = follow(node, index, record).await
    {
        eprintln!("following member {index} again failed: {e}");
    }
}

#[derive(Debug)]
struct Member {
    tn: TestNode,
    online: bool,
    /// Where it listened when it was last stopped.
    listen: Vec<String>,
}

struct Bench {
    args: Args,
    record: Record,
    members: Vec<Option<Member>>,
    figures: Vec<Figure>,
    live_p50: Option<(f64, f64)>,
    gossip_p50: Option<(f64, f64)>,
    ticks: f64,
    machine: serde_json::Value,
}

impl Bench {
    fn new(args: Args) -> Self {
        Bench {
            args,
            record: Record::default(),
            members: Vec::new(),
            figures: Vec::new(),
            live_p50: None,
            gossip_p50: None,
            ticks: sys::clock_ticks(),
            machine: machine(),
        }
    }

    fn node(&self, i: usize) -> Result<Node, String> {
        self.members
            .get(i)
            .and_then(|m| m.as_ref())
            .filter(|m| m.online)
            .map(|m| m.tn.node.clone())
            .ok_or_else(|| format!("member {i} is not running"))
    }

    /// Indices of the running members of the room.
    fn online(&self) -> Vec<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.as_ref().is_some_and(|m| m.online))
            .map(|(i, _)| i)
            .collect()
    }

    async fn run(&mut self) -> Result<(), String> {
        say("store: insert + flush, one message at a time");
        self.store_flush().await?;
        say(&format!(
            "forming a room of {} Confer nodes",
            self.args.members
        ));
        self.form_room().await?;
        self.live().await?;
        if self.args.members < MEMBERS {
            // Only the live phase was asked for (see `--members`).
            self.figures.extend([
                Figure::skipped("rotation_ms", "rotation", "< 100 ms"),
                Figure::skipped("join_ms", "join", "< 500 ms"),
            ]);
        } else {
            self.rotation().await?;
            self.join().await?;
        }
        if self.args.runs("catchup") && self.args.members == MEMBERS {
            say("catch-up");
            self.catch_up().await?;
        } else {
            self.figures
                .push(Figure::skipped("catchup_s", "catch-up", "<= 2 s"));
        }
        if self.args.runs("idle") && self.args.members == MEMBERS {
            say("idle node (child process)");
            self.idle().await?;
        } else {
            self.figures
                .push(Figure::skipped("idle_cpu_percent", "idle CPU", "< 1%"));
        }
        if self.args.runs("history") && self.args.runs("catchup") && self.args.members == MEMBERS {
            say("a node with a long history (child process)");
            self.history().await?;
        }
        for i in 0..self.members.len() {
            self.stop(i).await;
        }
        Ok(())
    }

    fn finish(&self, elapsed: Duration) {
        let machine = self.machine.clone();
        let a = &self.args;
        let config = json!({
            "live_messages": a.messages,
            "live_size_bytes": a.size,
            "live_rate_per_s": a.rate,
            "live_rounds": a.rounds,
            "members": a.members,
            "catchup_sources": a.catchup_sources,
            "profiles_under": std::env::temp_dir().display().to_string(),
            "straggler_secs": a.straggler_secs,
            "catchup_messages": a.catchup_messages,
            "catchup_size_bytes": a.catchup_size,
            "heartbeat_ms": a.heartbeat_ms,
            "worker_threads": a.worker_threads.unwrap_or(machine["cores"].as_u64().unwrap_or(0) as usize),
            "idle_secs": a.idle_secs,
            "idle_rooms": a.idle_rooms,
            "idle_peers": a.idle_peers,
            "history_reads": a.history_reads,
            "run_secs": elapsed.as_secs_f64(),
        });
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report::json(&self.figures, machine, config))
                    .unwrap_or_default()
            );
        } else {
            println!("{}", report::table(&self.figures));
            println!(
                "machine: {} cores, {}; {}; {}; load average at start {}; run took {:.0} s; \
                 Confer heartbeat {} ms; {} runtime worker threads; profiles under {}",
                machine["cores"],
                machine["cpu"].as_str().unwrap_or("?"),
                machine["rustc"].as_str().unwrap_or("?"),
                machine["date"].as_str().unwrap_or("?"),
                machine["loadavg"].as_str().unwrap_or("?"),
                elapsed.as_secs_f64(),
                a.heartbeat_ms,
                a.worker_threads.map_or_else(
                    || format!("{} (one per core)", machine["cores"]),
                    |n| n.to_string()
                ),
                std::env::temp_dir().display()
            );
            let failed = self
                .figures
                .iter()
                .filter(|f| f.verdict == Verdict::Fail)
                .count();
            println!("{failed} figure(s) missed their target");
        }
    }

    // ---- baseline -------------------------------------------------------------------

    /// Starts the bare gossipsub swarms (8, or `--members`), connects each to every
    /// other, waits for their meshes and warms them up.
    async fn baseline_start(&mut self) -> Result<Vec<baseline::Bare>, String> {
        let mut bares = Vec::new();
        for i in 0..self.args.members {
            bares.push(baseline::Bare::start(i, self.record.clone()).await?);
        }
        for i in 0..self.args.members {
            for j in 0..i {
                bares[i].dial(bares[j].addr.clone()).await;
            }
        }
        // Connected to all, subscriptions known, meshes at least gossipsub's mesh_n_low
        // (the first heartbeat is 5 s after start by default).
        let deadline = Instant::now() + Duration::from_secs(20);
        let members = self.args.members;
        let ready = poll(deadline, || async {
            for b in &bares {
                let s = b.stats().await;
                if s.connected < members - 1
                    || s.subscribed < members - 1
                    || s.mesh < 5.min(members - 1)
                {
                    return None;
                }
            }
            Some(())
        })
        .await;
        if ready.is_none() {
            let stats: Vec<String> = futures::future::join_all(bares.iter().map(|b| b.stats()))
                .await
                .iter()
                .map(|s| format!("{}/{}/{}", s.connected, s.subscribed, s.mesh))
                .collect();
            return Err(format!(
                "baseline swarms not meshed (connected/subscribed/mesh: {})",
                stats.join(" ")
            ));
        }
        // Warm-up: one message from each.
        for (i, b) in bares.iter().enumerate() {
            self.record.sent(GOSSIP_WARM_UP, i as u32, i);
            b.publisher()
                .publish(text(GOSSIP_WARM_UP, i as u32, self.args.size).into_bytes())
                .await?;
        }
        let all: Vec<usize> = (0..self.args.members).collect();
        if !self
            .wait_all(
                GOSSIP_WARM_UP,
                &all,
                self.args.members,
                Duration::from_secs(10),
            )
            .await
        {
            return Err("the baseline's warm-up messages did not all arrive in 10 s".into());
        }
        Ok(bares)
    }

    /// Waits until every node in `nodes` has `count` messages of `phase` from the others
    /// (each node sent `count / nodes` of them itself, so it expects the rest), or `wait`
    /// passes. True if all arrived.
    async fn wait_all(&self, phase: u8, nodes: &[usize], count: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let record = self.record.clone();
        let handles: Vec<Option<Node>> = nodes.iter().map(|&i| self.node(i).ok()).collect();
        poll(deadline, || {
            let record = record.clone();
            let handles = handles.clone();
            async move {
                for (&n, node) in nodes.iter().zip(&handles) {
                    if let Some(node) = node {
                        refollow_if_lost(node, n, &record).await;
                    }
                }
                nodes
                    .iter()
                    .all(|&n| record.count(phase, n) >= expected_from_others(count, nodes, n))
                    .then_some(())
            }
        })
        .await
        .is_some()
    }

    // ---- the store alone ------------------------------------------------------------

    /// What one message costs the store on the path to "readable": an insert and a
    /// flush (sled), as `send` and every receiver do per live message. Measured with no
    /// node running, one message at a time.
    async fn store_flush(&mut self) -> Result<(), String> {
        let n = self.args.messages.max(1);
        let size = self.args.size;
        let times = tokio::task::spawn_blocking(move || -> Result<Vec<Duration>, String> {
            let home = tempfile::Builder::new()
                .prefix("confer-bench-store-")
                .tempdir()
                .map_err(|e| format!("temporary directory: {e}"))?;
            let profile = Profile::create(home.path(), PASSPHRASE, "store")
                .map_err(|e| format!("profile: {e}"))?;
            let store = Store::open(&profile).map_err(|e| format!("store: {e}"))?;
            let room = [7u8; 32];
            let value = text(LIVE, 0, size + 200).into_bytes();
            let mut times = Vec::new();
            for i in 0..n {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                let t0 = Instant::now();
                store
                    .insert_message(&room, &id, u64::from(i), &value)
                    .and_then(|_| store.flush())
                    .map_err(|e| format!("store: {e}"))?;
                times.push(t0.elapsed());
            }
            Ok(times)
        })
        .await
        .map_err(|e| e.to_string())??;
        self.figures.push(
            Figure::new(
                "store_flush_p50_ms",
                "store alone: insert + flush of one message, p50",
                quantile_ms(&times, 0.5),
                "ms",
            )
            .detail(format!(
                "p99 {:.2} ms; {} messages of {} bytes, sled on the profile's disk, nothing else running",
                quantile_ms(&times, 0.99),
                times.len(),
                size + 200
            )),
        );
        Ok(())
    }

    // ---- the room -------------------------------------------------------------------

    async fn form_room(&mut self) -> Result<(), String> {
        let net = self.args.net();
        for i in 0..self.args.members {
            let tn = start_node(format!("member {i}"), net.clone()).await?;
            self.members.push(Some(Member {
                tn,
                online: true,
                listen: Vec::new(),
            }));
        }
        let facilitator = self.node(0)?;
        ask(
            &facilitator,
            Request::CreateRoom {
                name: ROOM.into(),
                display_name: Some("member 0".into()),
            },
        )
        .await?;
        let mut joins = Vec::new();
        for i in 1..self.args.members {
            let code = invite(&facilitator, ROOM).await?;
            let node = self.node(i)?;
            joins.push(async move {
                let t0 = Instant::now();
                ask(
                    &node,
                    Request::Join {
                        code,
                        display_name: Some(format!("member {i}")),
                        wait_secs: 0,
                    },
                )
                .await
                .map(|_| t0.elapsed())
            });
        }
        let mut took = Vec::new();
        for result in futures::future::join_all(joins).await {
            took.push(format!("{:.0}", ms(result?)));
        }
        say(&format!(
            "{} concurrent joins took {} ms",
            took.len(),
            took.join(", ")
        ));
        let all: Vec<usize> = (0..self.args.members).collect();
        self.wait_members(&all, self.args.members, Duration::from_secs(30))
            .await?;
        for i in 0..self.args.members {
            self.attach(i).await?;
        }
        // Warm-up: every member says something and hears everyone else, so every node
        // knows every other's address and subscription; then let meshes settle.
        for i in 0..self.args.members {
            self.record.sent(WARM_UP, i as u32, i);
            ask(
                &self.node(i)?,
                Request::Send {
                    room: ROOM.into(),
                    text: text(WARM_UP, i as u32, self.args.size),
                },
            )
            .await?;
        }
        if !self
            .wait_all(WARM_UP, &all, self.args.members, Duration::from_secs(30))
            .await
        {
            return Err("the warm-up messages did not reach every member in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2 * self.args.heartbeat_ms + 500)).await;
        self.quiet(Duration::from_secs(15)).await;
        Ok(())
    }

    async fn attach(&mut self, i: usize) -> Result<(), String> {
        follow(&self.node(i)?, i, &self.record).await
    }

    /// Shuts member `i`'s node down (cleanly, keeping its profile), if it is running.
    async fn stop(&mut self, i: usize) {
        if let Some(Some(m)) = self.members.get_mut(i)
            && m.online
        {
            self.record.next_generation(i);
            m.listen = m.tn.node.listen_addrs();
            m.tn.node.clone().shutdown().await;
            m.online = false;
        }
    }

    /// Starts member `i`'s node again on the same profile and the same address, as a
    /// person would after closing their laptop. Returns the instant just before the node
    /// was started (after the passphrase was checked) and how long starting took.
    async fn restart(&mut self, i: usize) -> Result<(Instant, Duration), String> {
        let (home, listen) = match self.members.get(i) {
            Some(Some(m)) if !m.online => (m.tn.home().to_path_buf(), m.listen.clone()),
            _ => return Err(format!("member {i} is not stopped")),
        };
        let profile = tokio::task::spawn_blocking(move || Profile::unlock(&home, PASSPHRASE))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("unlock member {i}: {e}"))?;
        let t0 = Instant::now();
        let node = Node::start(
            profile,
            NodeConfig {
                listen,
                relays: Vec::new(),
                net: self.args.net(),
                control_socket: true,
                follow_queue: confer_node::FOLLOW_QUEUE,
            },
        )
        .await
        .map_err(|e| format!("restart member {i}: {e}"))?;
        let took = t0.elapsed();
        if let Some(Some(m)) = self.members.get_mut(i) {
            m.tn.node = node;
            m.online = true;
        }
        Ok((t0, took))
    }

    /// Waits until every node in `nodes` sees `count` members.
    async fn wait_members(
        &self,
        nodes: &[usize],
        count: usize,
        wait: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        let handles: Vec<Node> = nodes
            .iter()
            .map(|&i| self.node(i))
            .collect::<Result<_, _>>()?;
        let done = poll(deadline, || {
            let handles = handles.clone();
            async move {
                for n in &handles {
                    match epoch_and_members(n).await {
                        Ok((_, c)) if c == count => {}
                        _ => return None,
                    }
                }
                Some(())
            }
        })
        .await;
        done.ok_or_else(|| format!("members did not all see {count} members within {wait:?}"))
    }

    // ---- live delivery, Confer and plain gossipsub ----------------------------------

    /// Live delivery over Confer and over plain gossipsub, in alternating rounds (the
    /// machine's other load then weighs on both alike): each round sends its share of the
    /// messages through one system, waits until all 8 have them (or the straggler time
    /// passes), then through the other; the order alternates from round to round.
    async fn live(&mut self) -> Result<(), String> {
        let gossip = self.args.runs("baseline");
        let confer = self.args.runs("live");
        let bares = if gossip {
            say(&format!(
                "baseline: {} bare gossipsub swarms, full mesh",
                self.args.members
            ));
            Some(self.baseline_start().await?)
        } else {
            None
        };
        let gossip_senders = bares.as_ref().map(|b| {
            Senders::Gossip(std::sync::Arc::new(
                b.iter().map(|b| b.publisher()).collect(),
            ))
        });
        let confer_senders = if confer {
            Some(Senders::Confer(std::sync::Arc::new(
                (0..self.args.members)
                    .map(|i| self.node(i))
                    .collect::<Result<_, _>>()?,
            )))
        } else {
            None
        };
        let rounds = self.args.rounds.max(1);
        let n = self.args.messages;
        let mut results: [Chunks; 2] = Default::default();
        say(&format!(
            "live delivery: {n} messages through each system in {rounds} alternating rounds"
        ));
        for r in 0..rounds {
            let seqs = (r * n / rounds)..((r + 1) * n / rounds);
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let (senders, phase) = match k {
                    0 => (&gossip_senders, GOSSIP),
                    _ => (&confer_senders, LIVE),
                };
                if let Some(senders) = senders {
                    let chunk = self.chunk(senders, phase, seqs.clone()).await;
                    results[k].add(chunk);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if let Some(bares) = bares {
            for b in bares {
                b.stop();
            }
        }
        let all: Vec<usize> = (0..self.args.members).collect();
        if gossip {
            let [g, _] = &results;
            let lat = self.record.latencies(GOSSIP, &all);
            let ranks = rank_detail(&self.record.by_rank(GOSSIP, &all), self.args.members - 1);
            let (p50, p99) = (lat.quantile_ms(0.5), lat.quantile_ms(0.99));
            self.gossip_p50 = Some((p50, p99));
            self.figures.push(
                Figure::new("gossip_p50_ms", "plain gossipsub, live p50", p50, "ms")
                    .detail(latency_detail(&lat, g.complete, CpuUse::mean(&g.cpu))),
            );
            self.figures.push(
                Figure::new("gossip_p99_ms", "plain gossipsub, live p99", p99, "ms").detail(
                    format!(
                        "{ranks}; publish returned after p50 {:.2} ms",
                        quantile_ms(&g.send_times, 0.5)
                    ),
                ),
            );
            self.figures.push(
                Figure::new(
                    "gossip_delivered_percent",
                    "plain gossipsub, delivered",
                    100.0 * lat.delivered(),
                    "%",
                )
                .detail(format!(
                    "{} of {} (message, receiver) pairs",
                    lat.samples.len(),
                    lat.expected
                )),
            );
            say(&format!("baseline p50 {p50:.2} ms, p99 {p99:.2} ms"));
        } else {
            self.figures.push(Figure::skipped(
                "gossip_p50_ms",
                "plain gossipsub, live p50",
                "-",
            ));
        }
        if confer {
            let [_, c] = &results;
            let lat = self.record.latencies(LIVE, &all);
            let ranks = rank_detail(&self.record.by_rank(LIVE, &all), self.args.members - 1);
            let (p50, p99) = (lat.quantile_ms(0.5), lat.quantile_ms(0.99));
            self.live_p50 = Some((p50, p99));
            let delivered = lat.delivered();
            self.figures.push(
                Figure::new(
                    "live_p50_ms",
                    format!(
                        "live delivery p50 (send -> stored at each of {})",
                        self.args.members - 1
                    ),
                    p50,
                    "ms",
                )
                .detail(latency_detail(&lat, c.complete, CpuUse::mean(&c.cpu))),
            );
            self.figures.push(
                Figure::new("live_p99_ms", "live delivery p99", p99, "ms").detail(format!(
                    "{ranks}; Send returned (sealed, stored, flushed, published) after p50 {:.2} ms, p99 {:.2} ms",
                    quantile_ms(&c.send_times, 0.5),
                    quantile_ms(&c.send_times, 0.99)
                )),
            );
            self.figures.push(
                Figure::new(
                    "live_delivered_percent",
                    "live delivery, delivered",
                    100.0 * delivered,
                    "%",
                )
                .target("100%", delivered >= 1.0)
                .detail(format!(
                    "{} of {} (message, receiver) pairs{}",
                    lat.samples.len(),
                    lat.expected,
                    if c.complete {
                        String::new()
                    } else {
                        format!(
                            " (a round waited {} s for stragglers)",
                            self.args.straggler_secs
                        )
                    }
                )),
            );
            say(&format!("live p50 {p50:.2} ms, p99 {p99:.2} ms"));
        } else {
            self.figures
                .push(Figure::skipped("live_p50_ms", "live delivery p50", "-"));
        }
        self.ratio();
        Ok(())
    }

    /// Sends messages `seqs` of `phase` at the configured rate, sender `seq % 8`, and
    /// waits until all 8 have every message sent so far (or the straggler time passes).
    async fn chunk(&self, senders: &Senders, phase: u8, seqs: std::ops::Range<u32>) -> Chunk {
        let watch = CpuWatch::start(self.ticks);
        let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = self.record.clone();
        let size = self.args.size;
        let start = seqs.start;
        let end = seqs.end;
        let members = self.args.members;
        let sends = paced(end - start, self.args.rate, |k| {
            let seq = start + k;
            let sender = seq as usize % members;
            let senders = senders.clone();
            let record = record.clone();
            let times = times.clone();
            async move {
                let text = text(phase, seq, size);
                record.sent(phase, seq, sender);
                match senders.send(sender, text).await {
                    Ok(took) => {
                        if let Ok(mut times) = times.lock() {
                            times.push(took);
                        }
                    }
                    Err(e) => eprintln!("send failed: {e}"),
                }
            }
        })
        .await;
        futures::future::join_all(sends).await;
        let all: Vec<usize> = (0..self.args.members).collect();
        let complete = self
            .wait_all(
                phase,
                &all,
                end as usize,
                Duration::from_secs(self.args.straggler_secs),
            )
            .await;
        let cpu = watch.stop();
        let send_times = times.lock().map(|t| t.clone()).unwrap_or_default();
        Chunk {
            complete,
            cpu,
            send_times,
        }
    }

    fn ratio(&mut self) {
        match (self.live_p50, self.gossip_p50) {
            (Some((c50, c99)), Some((g50, g99))) => {
                let r50 = c50 / g50;
                self.figures.push(
                    Figure::new("ratio_p50", "Confer p50 / plain gossipsub p50", r50, "x")
                        .target("<= 1.3x", r50 <= 1.3)
                        .detail(format!("p99 ratio {:.2}x", c99 / g99)),
                );
            }
            _ => self.figures.push(Figure::skipped(
                "ratio_p50",
                "Confer p50 / plain gossipsub p50",
                "<= 1.3x",
            )),
        }
    }

    // ---- rotation -------------------------------------------------------------------

    async fn rotation(&mut self) -> Result<(), String> {
        let facilitator = self.node(0)?;
        let (old_epoch, _) = epoch_and_members(&facilitator).await?;
        let others: Vec<usize> = (1..self.args.members).filter(|i| *i != REMOVED).collect();
        let measured = self.args.runs("rotation");
        if measured {
            say("rotation");
        }
        // Pollers first, so each is already asking when the removal starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pollers = Vec::new();
        for &i in &others {
            let node = self.node(i)?;
            pollers.push(tokio::spawn(async move {
                poll(deadline, || {
                    let node = node.clone();
                    async move {
                        match epoch_and_members(&node).await {
                            Ok((epoch, _)) if epoch > old_epoch => Some((Instant::now(), epoch)),
                            _ => None,
                        }
                    }
                })
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        let reply = ask(
            &facilitator,
            Request::Remove {
                room: ROOM.into(),
                member: format!("member {REMOVED}"),
            },
        )
        .await?;
        let t_facilitator = Instant::now();
        let new_epoch = match reply {
            Reply::Changed(change) => change.epoch,
            other => return Err(format!("unexpected {other:?}")),
        };
        let mut latest = t_facilitator;
        let mut missing = 0;
        let mut wrong = 0;
        let mut each = Vec::new();
        for p in pollers {
            match p.await.map_err(|e| e.to_string())? {
                Some((at, epoch)) => {
                    latest = latest.max(at);
                    each.push(at.saturating_duration_since(t0));
                    if epoch != new_epoch {
                        wrong += 1;
                    }
                }
                None => missing += 1,
            }
        }
        // The removed member's node is no use any more.
        self.stop(REMOVED).await;
        // What the rotation set off: every member subscribes to the new topic, and each
        // one seeing that pushes its recent envelopes to the others. Wait it out, so the
        // join below starts in a quiet room.
        let (busy, slowest) = self.quiet(Duration::from_secs(15)).await;
        if !measured {
            self.figures
                .push(Figure::skipped("rotation_ms", "rotation", "< 100 ms"));
            return Ok(());
        }
        let total = ms(latest.saturating_duration_since(t0));
        let value = if missing > 0 { f64::NAN } else { total };
        let ok = missing == 0 && wrong == 0 && total < 100.0;
        self.figures.push(
            Figure::new(
                "rotation_ms",
                "rotation: remove -> all 7 remaining on the new epoch",
                value,
                "ms",
            )
            .target("< 100 ms", ok)
            .detail(format!(
                "facilitator's reply {:.1} ms; others median {:.1} ms; epoch {old_epoch} -> {new_epoch}{}{}; one sample, polled every 1 ms; afterwards event loops slow (Status round trip > 5 ms, up to {slowest:.0} ms) for {:.0} ms",
                ms(t_facilitator - t0),
                quantile_ms(&each, 0.5),
                if missing > 0 { format!("; {missing} never saw it within 10 s") } else { String::new() },
                if wrong > 0 { format!("; {wrong} reported another epoch") } else { String::new() },
                ms(busy),
            )),
        );
        say(&format!("rotation {total:.1} ms"));
        Ok(())
    }

    /// Probes every running node's event loop with a Status round trip every 10 ms until
    /// each has answered within 5 ms for a second in a row, or `max` passes. Returns how
    /// long after the start the last slow answer came, and the slowest answer (ms).
    async fn quiet(&self, max: Duration) -> (Duration, f64) {
        let start = Instant::now();
        let nodes: Vec<Node> = self
            .online()
            .iter()
            .filter_map(|&i| self.node(i).ok())
            .collect();
        let probes = nodes.into_iter().map(|node| async move {
            let mut last_slow = start;
            let mut slowest = Duration::ZERO;
            loop {
                let t = Instant::now();
                node.request(Request::Status).await;
                let rtt = t.elapsed();
                slowest = slowest.max(rtt);
                if rtt > Duration::from_millis(5) {
                    last_slow = Instant::now();
                }
                if last_slow.elapsed() >= Duration::from_secs(1) || start.elapsed() >= max {
                    return (last_slow - start, slowest);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let results = futures::future::join_all(probes).await;
        let busy = results.iter().map(|r| r.0).max().unwrap_or_default();
        let slowest = results.iter().map(|r| r.1).max().unwrap_or_default();
        (busy, ms(slowest))
    }

    // ---- join -----------------------------------------------------------------------

    async fn join(&mut self) -> Result<(), String> {
        let measured = self.args.runs("join");
        if measured {
            say("join");
        }
        let joiner = start_node(format!("member {JOINER}"), self.args.net()).await?;
        while self.members.len() <= JOINER {
            self.members.push(None);
        }
        let joiner_node = joiner.node.clone();
        self.members[JOINER] = Some(Member {
            tn: joiner,
            online: true,
            listen: Vec::new(),
        });
        let code = invite(&self.node(0)?, ROOM).await?;
        let sender = self.node(JOIN_SENDER)?;
        let t0 = Instant::now();
        ask(
            &joiner_node,
            Request::Join {
                code,
                display_name: Some(format!("member {JOINER}")),
                wait_secs: 0,
            },
        )
        .await?;
        let t_joined = Instant::now();
        self.attach(JOINER).await?;
        self.record.sent(JOIN, 0, JOIN_SENDER);
        let t_send = Instant::now();
        ask(
            &sender,
            Request::Send {
                room: ROOM.into(),
                text: text(JOIN, 0, self.args.size),
            },
        )
        .await?;
        let record = self.record.clone();
        let got = poll(Instant::now() + Duration::from_secs(30), || {
            let record = record.clone();
            async move { record.receipt(JOIN, 0, JOINER) }
        })
        .await;
        if measured {
            let value = got.map_or(f64::NAN, |at| ms(at.saturating_duration_since(t0)));
            self.figures.push(
                Figure::new(
                    "join_ms",
                    "join: Join request -> first message after it readable",
                    value,
                    "ms",
                )
                .target("< 500 ms", value < 500.0)
                .detail(match got {
                    Some(at) => format!(
                        "admitted after {:.1} ms; member {JOIN_SENDER} (not the facilitator) sent at once, readable {:.1} ms later; one sample",
                        ms(t_joined - t0),
                        ms(at.saturating_duration_since(t_send))
                    ),
                    None => format!(
                        "admitted after {:.1} ms; member {JOIN_SENDER}'s message not readable within 30 s",
                        ms(t_joined - t0)
                    ),
                }),
            );
            say(&format!("join {value:.1} ms"));
        } else {
            self.figures
                .push(Figure::skipped("join_ms", "join", "< 500 ms"));
        }
        // Everyone knows the joiner before the next phase.
        let online = self.online();
        self.wait_members(&online, self.args.members, Duration::from_secs(30))
            .await?;
        tokio::time::sleep(Duration::from_millis(2 * self.args.heartbeat_ms + 500)).await;
        self.quiet(Duration::from_secs(15)).await;
        Ok(())
    }

    // ---- catch-up -------------------------------------------------------------------

    async fn catch_up(&mut self) -> Result<(), String> {
        let total = self.args.catchup_messages;
        // Offline.
        self.stop(OFFLINE).await;
        let senders = self.online();
        let n_senders = senders.len();
        say(&format!(
            "catch-up: member {OFFLINE} offline; {n_senders} members send {total} messages"
        ));
        // The burst: each sender sends its share back to back.
        let t_burst = Instant::now();
        let mut tasks = Vec::new();
        for (k, &i) in senders.iter().enumerate() {
            let node = self.node(i)?;
            let record = self.record.clone();
            let size = self.args.catchup_size;
            let seqs: Vec<u32> = (0..total)
                .filter(|s| *s as usize % n_senders == k)
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut times = Vec::new();
                for seq in seqs {
                    record.sent(CATCH_UP, seq, i);
                    let t = Instant::now();
                    let reply = node
                        .request(Request::Send {
                            room: ROOM.into(),
                            text: text(CATCH_UP, seq, size),
                        })
                        .await;
                    times.push(t.elapsed());
                    match reply {
                        Reply::Sent { message_id, .. } => ids.push(message_id),
                        other => return Err(format!("catch-up send failed: {other:?}")),
                    }
                }
                Ok::<_, String>((ids, times))
            }));
        }
        let mut ids = BTreeSet::new();
        let mut send_times = Vec::new();
        for t in tasks {
            let (sent, times) = t.await.map_err(|e| e.to_string())??;
            ids.extend(sent);
            send_times.extend(times);
        }
        let burst = t_burst.elapsed();
        say(&format!(
            "catch-up: burst stored at the senders in {:.1} s",
            burst.as_secs_f64()
        ));
        let synced = self
            .wait_all(
                CATCH_UP,
                &senders,
                total as usize,
                Duration::from_secs(self.args.catchup_wait_secs),
            )
            .await;
        let t_synced = t_burst.elapsed();
        // How many of the facilitator's burst messages it still marks as not yet held by
        // anyone else, although every member holds them.
        let pending = match ask(
            &self.node(0)?,
            Request::Read {
                room: ROOM.into(),
                follow: false,
                last: None,
            },
        )
        .await?
        {
            Reply::History { messages, .. } => {
                let own = |m: &&confer_node::api::MessageInfo| {
                    record::parse(m.text.as_bytes()).is_some_and(|(p, seq)| {
                        p == CATCH_UP && (seq as usize).is_multiple_of(n_senders)
                    })
                };
                let mine = messages.iter().filter(own).count();
                let pending = messages.iter().filter(own).filter(|m| m.pending).count();
                format!("{pending} of its {mine}")
            }
            _ => "?".into(),
        };
        let behind: Vec<String> = senders
            .iter()
            .map(|&n| {
                format!(
                    "{}/{}",
                    self.record.count(CATCH_UP, n),
                    expected_from_others(total as usize, &senders, n)
                )
            })
            .collect();
        say(&format!(
            "catch-up: online members {} after {:.1} s ({})",
            if synced { "in sync" } else { "NOT in sync" },
            t_synced.as_secs_f64(),
            behind.join(" ")
        ));
        self.figures.push(
            Figure::new(
                "burst_send_per_s",
                format!("burst: {total} sends stored at the senders"),
                f64::from(total) / burst.as_secs_f64(),
                "msg/s",
            )
            .detail(format!(
                "{:.1} s; {n_senders} senders back to back, a send took {:.2} ms (mean), p99 {:.1} ms; the other online members held all after {:.1} s{}; member 0 then marked {pending} burst messages pending",
                burst.as_secs_f64(),
                mean_ms(&send_times),
                quantile_ms(&send_times, 0.99),
                t_synced.as_secs_f64(),
                if synced { String::new() } else { format!(" (NOT all: {})", behind.join(" ")) }
            )),
        );

        // Let the senders' own work after the burst die down first.
        let (busy, _) = self.quiet(Duration::from_secs(15)).await;
        say(&format!(
            "catch-up: senders quiet after {:.1} s more",
            busy.as_secs_f64()
        ));
        // Fewer members online when the offline one returns, if asked.
        let mut away = Vec::new();
        if let Some(k) = self.args.catchup_sources {
            for &i in senders.iter().skip(k.max(1)) {
                self.stop(i).await;
                away.push(i);
            }
        }
        let sources = senders.len() - away.len();
        // Back online: same profile, same address.
        let (t0, start_took) = self.restart(OFFLINE).await?;
        let node = self.node(OFFLINE)?;
        let watch = CpuWatch::start(self.ticks);
        self.attach(OFFLINE).await?;
        let deadline = Instant::now() + Duration::from_secs(self.args.catchup_wait_secs);
        let record = self.record.clone();
        let want = total as usize;
        let done = poll(deadline, || {
            let record = record.clone();
            let node = node.clone();
            async move {
                if record.count(CATCH_UP, OFFLINE) >= want {
                    return Some(());
                }
                refollow_if_lost(&node, OFFLINE, &record).await;
                None
            }
        })
        .await
        .is_some();
        let lost = self.record.losses(OFFLINE);
        let got = self.record.count(CATCH_UP, OFFLINE);
        let cpu = watch.stop();
        let arrivals = self.record.arrivals(CATCH_UP, OFFLINE);
        let t_done = if done { arrivals.last().copied() } else { None };
        // When the first message, and each quarter of them, had arrived.
        let curve: Vec<String> = [0.0, 0.25, 0.5, 0.75, 0.9]
            .iter()
            .filter_map(|q| {
                let k = ((q * f64::from(total)) as usize).min(arrivals.len().checked_sub(1)?);
                let at = arrivals.get(k)?;
                Some(format!(
                    "{}% {:.2} s",
                    (q * 100.0) as u32,
                    at.saturating_duration_since(t0).as_secs_f64()
                ))
            })
            .collect();
        // Verify against the node's own history: every id the senders were given.
        let history = match ask(
            &node,
            Request::Read {
                room: ROOM.into(),
                follow: false,
                last: None,
            },
        )
        .await?
        {
            Reply::History { messages, .. } => messages,
            other => return Err(format!("unexpected {other:?}")),
        };
        let held: BTreeSet<&str> = history.iter().map(|m| m.message_id.as_str()).collect();
        // Inputs the node threw away: undecodable or unverifiable traffic, and sync
        // requests that failed on the way in.
        let dropped = match node.request(Request::Status).await {
            Reply::Status(status) => status.dropped.to_string(),
            _ => "?".into(),
        };
        let verified = ids.iter().filter(|id| held.contains(id.as_str())).count();
        let value = t_done.map_or(f64::NAN, |t| t.saturating_duration_since(t0).as_secs_f64());
        let ok = done && verified == ids.len() && value <= 2.0;
        self.figures.push(
            Figure::new(
                "catchup_s",
                format!("catch-up: restart -> all {total} messages stored"),
                value,
                "s",
            )
            .target("<= 2 s", ok)
            .detail(format!(
                "from {sources} online member(s); node started in {:.0} ms; arrived: {} (first message at 0%); {verified}/{} verified in its history; it counted {dropped} dropped inputs; {cpu}{}{}",
                ms(start_took),
                curve.join(", "),
                ids.len(),
                if done { String::new() } else { format!("; only {got} within {} s", self.args.catchup_wait_secs) },
                if lost > 0 { format!("; follower dropped {lost} time(s), re-followed") } else { String::new() },
            )),
        );
        say(&format!(
            "catch-up: {} after {value:.2} s ({got}/{total})",
            if done { "complete" } else { "INCOMPLETE" }
        ));
        for i in away {
            self.restart(i).await?;
            self.attach(i).await?;
        }
        Ok(())
    }

    // ---- history --------------------------------------------------------------------

    /// The member who caught up, its node started again in a child process: its memory
    /// with the whole burst in its history.
    async fn history(&mut self) -> Result<(), String> {
        self.stop(OFFLINE).await;
        let home = match self.members.get(OFFLINE) {
            Some(Some(m)) => m.tn.home().to_path_buf(),
            _ => return Err(format!("member {OFFLINE} has no profile")),
        };
        let args = vec![
            home.display().to_string(),
            "--history-reads".to_owned(),
            self.args.history_reads.to_string(),
            "--history-settle-secs".to_owned(),
            self.args.history_settle_secs.to_string(),
            "--heartbeat-ms".to_owned(),
            self.args.heartbeat_ms.to_string(),
        ];
        let s = history::measure(args).await?;
        let mb = |bytes: u64| bytes as f64 / 1e6;
        let name = |what: &str| format!("node holding {} messages: memory {what}", s.messages);
        self.figures.push(
            Figure::new(
                "history_rss_mb",
                name("once started"),
                mb(s.started_bytes),
                "MB",
            )
            .detail(format!(
                "VmRSS {} s after the start (which took {:.0} ms), the other members online; \
                     the idle figure above is for new rooms",
                self.args.history_settle_secs, s.start_ms
            )),
        );
        self.figures.push(
            Figure::new(
                "history_read_rss_mb",
                name("after a full read"),
                mb(s.read_bytes),
                "MB",
            )
            .detail(format!(
                "VmRSS after one Read of the whole history (answered in {:.0} ms)",
                s.first_read_ms
            )),
        );
        self.figures.push(
            Figure::new(
                "history_reads_rss_mb",
                name(&format!("after {} full reads", s.reads)),
                mb(s.reads_bytes),
                "MB",
            )
            .detail(format!("a Read took {:.0} ms (median)", s.median_read_ms)),
        );
        say(&format!(
            "history: {} messages, {:.1} MB started, {:.1} MB after a read, {:.1} MB after {}",
            s.messages,
            mb(s.started_bytes),
            mb(s.read_bytes),
            mb(s.reads_bytes),
            s.reads
        ));
        Ok(())
    }

    // ---- idle -----------------------------------------------------------------------

    async fn idle(&mut self) -> Result<(), String> {
        let a = &self.args;
        let peers: Vec<usize> = self
            .online()
            .into_iter()
            .take(a.idle_peers.min(MEMBERS - 1))
            .collect();
        let args = vec![
            "--idle-secs".to_owned(),
            a.idle_secs.to_string(),
            "--idle-settle-secs".to_owned(),
            a.idle_settle_secs.to_string(),
            "--idle-rooms".to_owned(),
            a.idle_rooms.to_string(),
            "--idle-peers".to_owned(),
            peers.len().to_string(),
            "--heartbeat-ms".to_owned(),
            a.heartbeat_ms.to_string(),
        ];
        let (child, invites) = idle::IdleChild::spawn(args).await?;
        let mut joins = Vec::new();
        for (p, &i) in peers.iter().enumerate() {
            let node = self.node(i)?;
            let codes: Vec<String> = invites.iter().filter_map(|r| r.get(p).cloned()).collect();
            joins.push(async move {
                for code in codes {
                    ask(
                        &node,
                        Request::Join {
                            code,
                            display_name: Some(format!("member {i}")),
                            wait_secs: 0,
                        },
                    )
                    .await?;
                }
                Ok::<(), String>(())
            });
        }
        for r in futures::future::join_all(joins).await {
            r?;
        }
        let sample = child.measure().await?;
        let cpu = sample.cpu_percent();
        let mb = sample.rss_bytes as f64 / 1e6;
        let detail = format!(
            "{} rooms of {} members, {:.1} s window after {} s settling, heartbeat {} ms; CPU {:.3} s",
            self.args.idle_rooms,
            sample.members,
            sample.wall_secs,
            self.args.idle_settle_secs,
            self.args.heartbeat_ms,
            sample.cpu_secs
        );
        self.figures.push(
            Figure::new(
                "idle_cpu_percent",
                format!(
                    "idle node in {} rooms: CPU (of one core)",
                    self.args.idle_rooms
                ),
                cpu,
                "%",
            )
            .target("< 1%", cpu < 1.0)
            .detail(detail),
        );
        self.figures.push(
            Figure::new(
                "idle_rss_mb",
                format!(
                    "idle node in {} rooms: resident memory",
                    self.args.idle_rooms
                ),
                mb,
                "MB",
            )
            .target("< 40 MB", mb < 40.0)
            .detail(format!(
                "VmRSS at the end of the window; peak (VmHWM) {:.1} MB; MB = 10^6 bytes",
                sample.hwm_bytes as f64 / 1e6
            )),
        );
        say(&format!("idle CPU {cpu:.2}%, RSS {mb:.1} MB"));
        Ok(())
    }
}

/// Where live traffic goes in: the bare swarms or the Confer nodes, one per member.
#[derive(Debug, Clone)]
enum Senders {
    Gossip(std::sync::Arc<Vec<baseline::Publisher>>),
    Confer(std::sync::Arc<Vec<Node>>),
}

impl Senders {
    /// Sends `text` from member `sender`; returns how long until the send returned.
    async fn send(&self, sender: usize, text: String) -> Result<Duration, String> {
        let t0 = Instant::now();
        match self {
            Senders::Gossip(p) => p[sender].publish(text.into_bytes()).await?,
            Senders::Confer(n) => {
                let request = Request::Send {
                    room: ROOM.into(),
                    text,
                };
                if let Reply::Error { message } = n[sender].request(request).await {
                    return Err(message);
                }
            }
        }
        Ok(t0.elapsed())
    }
}

/// What one round of one system's live traffic saw.
#[derive(Debug)]
struct Chunk {
    complete: bool,
    cpu: CpuUse,
    send_times: Vec<Duration>,
}

/// All rounds of one system.
#[derive(Debug)]
struct Chunks {
    complete: bool,
    cpu: Vec<CpuUse>,
    send_times: Vec<Duration>,
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks {
            complete: true,
            cpu: Vec::new(),
            send_times: Vec::new(),
        }
    }
}

impl Chunks {
    fn add(&mut self, chunk: Chunk) {
        self.complete &= chunk.complete;
        self.cpu.push(chunk.cpu);
        self.send_times.extend(chunk.send_times);
    }
}

/// Messages of a phase a node expects from the others, when `count` were sent round-robin
/// over `nodes` (in that order).
fn expected_from_others(count: usize, nodes: &[usize], node: usize) -> usize {
    let k = nodes.iter().position(|n| *n == node).unwrap_or(usize::MAX);
    let n = nodes.len();
    let own = if k < n {
        count / n + usize::from(k < count % n)
    } else {
        0
    };
    count - own
}

fn mean_ms(samples: &[Duration]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    ms(samples.iter().sum::<Duration>()) / samples.len() as f64
}

fn latency_detail(lat: &Latencies, complete: bool, cpu: CpuUse) -> String {
    let max = lat.samples.iter().max().map_or(f64::NAN, |d| ms(*d));
    format!(
        "{} samples; max {:.1} ms{}; {cpu}",
        lat.samples.len(),
        max,
        if complete { "" } else { "; incomplete" }
    )
}

/// p50 latency of each message's fastest receiver and of its slowest (the
/// `receivers`-th, counting only messages every receiver had).
fn rank_detail(by_rank: &[Vec<Duration>], receivers: usize) -> String {
    let first: Vec<Duration> = by_rank.iter().filter_map(|l| l.first().copied()).collect();
    let last: Vec<Duration> = by_rank
        .iter()
        .filter(|l| l.len() == receivers)
        .filter_map(|l| l.last().copied())
        .collect();
    format!(
        "p50 of each message's first receiver {:.2} ms, of the last of {receivers} {:.2} ms",
        quantile_ms(&first, 0.5),
        quantile_ms(&last, 0.5)
    )
}

/// Starts `f(seq)` for seq in 0..n at `rate` per second, each in its own task.
async fn paced<F, Fut>(n: u32, rate: f64, mut f: F) -> Vec<JoinHandle<()>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut handles = Vec::new();
    for seq in 0..n {
        tokio::time::sleep_until(start + interval * seq).await;
        handles.push(tokio::spawn(f(seq)));
    }
    handles
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
}

fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let rustc = command("rustc", &["--version"]).unwrap_or_else(|| "rustc unknown".into());
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    json!({
        "cores": cores,
        "cpu": cpu,
        "rustc": rustc,
        "date": date,
        "loadavg": loadavg,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}
