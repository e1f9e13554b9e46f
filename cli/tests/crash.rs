//! Crash safety through the real binary (issue 4, "Crash safety"): three members talk in
//! a burst while, round after round, one of their nodes is killed with SIGKILL at a
//! varying moment and restarted on the same home and the same listen port. Afterwards
//! nothing any `confer send` reported as stored is missing, neither from its sender nor
//! from any other member, and every restart reopened its store and came up.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{NodeProcess, eventually, init, ok_json, run};
use serde_json::Value;

const ROOM: &str = "Crash group";
const ROUNDS: usize = 5;

/// Ports free now, distinct, so each node can be restarted on its own port.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Starts `confer node run` for `home` on `127.0.0.1:port` (0: any port) and waits for
/// its readiness line; `Err` (how it exited, and what it said) if it never became ready.
fn start_node(home: &Path, port: u16) -> Result<NodeProcess, String> {
    let node =
        common::try_start_node(home, &format!("/ip4/127.0.0.1/tcp/{port}")).map_err(|out| {
            format!(
                "`confer node run` on port {port} exited with {} without becoming ready; \
                 stdout: {:?}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    assert!(
        port == 0
            || node
                .listen
                .iter()
                .any(|a| a.ends_with(&format!("/tcp/{port}"))),
        "the node did not listen on its port {port}: {:?}",
        node.listen
    );
    Ok(node)
}

/// Kills the node with SIGKILL (through kill(1): this workspace forbids `unsafe`) and
/// reaps it.
fn kill_hard(mut node: NodeProcess) {
    let status = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(node.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL failed");
    let status = node.child.wait().unwrap();
    assert!(
        !status.success(),
        "the node exited with {status} before SIGKILL"
    );
}

/// The message ids a home's node holds for the room.
fn held_ids(home: &Path) -> Option<BTreeSet<String>> {
    let out = run(home, &["read", ROOM, "--json"]);
    if !out.status.success() {
        return None;
    }
    let read: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        read.as_array()?
            .iter()
            .filter_map(|m| m["message_id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// What one sender's thread saw.
#[derive(Default)]
struct SendLog {
    /// Ids printed by `confer send --json` that exited 0: reported stored.
    reported: Vec<String>,
    /// Failed sends (the node was down or being killed): (exit code, stderr).
    failed: Vec<(Option<i32>, String)>,
}

/// The burst: one thread per member sending from its home until stopped.
struct Burst {
    stop: AtomicBool,
    logs: Vec<Mutex<SendLog>>,
}

impl Burst {
    fn start(homes: &[PathBuf]) -> (Arc<Burst>, Vec<JoinHandle<()>>) {
        let burst = Arc::new(Burst {
            stop: AtomicBool::new(false),
            logs: homes.iter().map(|_| Mutex::default()).collect(),
        });
        let threads = homes
            .iter()
            .enumerate()
            .map(|(who, home)| {
                let (burst, home) = (burst.clone(), home.clone());
                std::thread::spawn(move || burst.send_until_stopped(&home, who))
            })
            .collect();
        (burst, threads)
    }

    fn send_until_stopped(&self, home: &Path, who: usize) {
        let mut n = 0usize;
        while !self.stop.load(Ordering::SeqCst) {
            n += 1;
            let text = format!("member {who}, message {n}: a burst of casework notes");
            let out = run(home, &["send", ROOM, &text, "--json"]);
            if out.status.success() {
                let sent: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "send exited 0 but printed invalid JSON ({e}): {}",
                        String::from_utf8_lossy(&out.stdout)
                    )
                });
                let id = sent["message_id"].as_str().unwrap().to_owned();
                self.logs[who].lock().unwrap().reported.push(id);
                std::thread::sleep(Duration::from_millis(15));
            } else {
                self.logs[who].lock().unwrap().failed.push((
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The ids `who` has had reported so far.
    fn reported(&self, who: usize) -> Vec<String> {
        self.logs[who].lock().unwrap().reported.clone()
    }

    /// How many sends have been reported, by everyone.
    fn total(&self) -> usize {
        (0..self.logs.len()).map(|w| self.reported(w).len()).sum()
    }

    /// Waits until `more` further sends have been reported.
    fn wait_for_more(&self, more: usize) {
        let target = self.total() + more;
        eventually(
            &format!("{target} reported sends"),
            Duration::from_secs(20),
            || (self.total() >= target).then_some(()),
        );
    }
}

/// Stops a burst when dropped.
struct StopOnDrop(Arc<Burst>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn sigkill_during_a_burst_loses_nothing_reported_stored() {
    let started = Instant::now();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let homes: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    for (home, name) in homes.iter().zip(["Sam", "Priya", "Jo"]) {
        init(home, name);
    }
    let ports = free_ports(3);
    let mut nodes: Vec<Option<NodeProcess>> = homes
        .iter()
        .zip(&ports)
        .map(|(home, port)| Some(start_node(home, *port).unwrap()))
        .collect();

    // The facilitator creates the room and admits the two others.
    ok_json(&homes[0], &["room", "create", ROOM]);
    for (home, name) in homes[1..].iter().zip(["Priya", "Jo"]) {
        let invite = ok_json(&homes[0], &["invite", ROOM, "--expires", "1h"]);
        ok_json(
            home,
            &["join", invite["code"].as_str().unwrap(), "--as", name],
        );
    }
    // Everyone hears everyone before the crashes begin.
    let warmup: Vec<String> = homes
        .iter()
        .map(|h| {
            ok_json(h, &["send", ROOM, "Check-in before the burst."])["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for home in &homes {
        eventually(
            &format!("the check-ins to reach {}", home.display()),
            Duration::from_secs(20),
            || {
                let held = held_ids(home)?;
                warmup.iter().all(|id| held.contains(id)).then_some(())
            },
        );
    }

    let (burst, threads) = Burst::start(&homes);
    // Stops the senders however this test ends.
    let _stop = StopOnDrop(burst.clone());
    for round in 0..ROUNDS {
        let victim = round % 3;
        // A varying moment: after 2 to 12 more reported sends.
        burst.wait_for_more(2 + (round * 7) % 11);
        kill_hard(nodes[victim].take().unwrap());
        let reported_before_kill = burst.reported(victim);
        // The others talk on while it is down: what it must catch up on.
        burst.wait_for_more(4 + round);
        // (c) it restarts cleanly: its store reopens and it prints its readiness line.
        match start_node(&homes[victim], ports[victim]) {
            Ok(node) => nodes[victim] = Some(node),
            Err(e) => panic!("round {round}: member {victim}'s node did not restart: {e}"),
        }
        // (a) at once, before catch-up from the others could hide a loss: everything
        // `send` reported stored before the kill is in the restarted node's history.
        let held = held_ids(&homes[victim]).unwrap();
        let lost: Vec<&String> = reported_before_kill
            .iter()
            .chain([&warmup[victim]])
            .filter(|id| !held.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: after SIGKILL, member {victim} lost {} of the {} messages \
             `send` had reported stored: {lost:?}",
            lost.len(),
            reported_before_kill.len() + 1
        );
        // It is back in the room: it receives what another member says after its restart.
        let since: Vec<usize> = (0..3).map(|w| burst.reported(w).len()).collect();
        eventually(
            &format!("round {round}: restarted member {victim} to hear the others again"),
            Duration::from_secs(20),
            || {
                let held = held_ids(&homes[victim])?;
                (0..3)
                    .filter(|w| *w != victim)
                    .flat_map(|w| burst.reported(w).split_off(since[w]))
                    .any(|id| held.contains(&id))
                    .then_some(())
            },
        );
    }
    burst.stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    let logs: Vec<SendLog> = burst
        .logs
        .iter()
        .map(|l| std::mem::take(&mut *l.lock().unwrap()))
        .collect();

    // A failed send is one clear sentence (exit 1), never a crash of the client.
    for log in &logs {
        for (code, stderr) in &log.failed {
            assert_eq!(*code, Some(1), "a send failed oddly: {stderr}");
            assert!(stderr.starts_with("error: "), "{stderr}");
        }
    }
    let reported: Vec<BTreeSet<String>> = logs
        .iter()
        .zip(&warmup)
        .map(|(log, w)| {
            let mut ids: BTreeSet<String> = log.reported.iter().cloned().collect();
            assert_eq!(ids.len(), log.reported.len(), "an id was reported twice");
            ids.insert(w.clone());
            ids
        })
        .collect();
    assert!(
        logs.iter().all(|l| l.reported.len() >= 5),
        "every member should have sent during the burst: {:?}",
        logs.iter().map(|l| l.reported.len()).collect::<Vec<_>>()
    );
    let all: BTreeSet<String> = reported.iter().flatten().cloned().collect();

    // (a) again, for everything: nothing reported stored is missing from its sender.
    for (who, (home, ids)) in homes.iter().zip(&reported).enumerate() {
        let held = held_ids(home).unwrap();
        let lost: Vec<&String> = ids.iter().filter(|id| !held.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "member {who} lost {} of the {} messages `send` reported stored: {lost:?}",
            lost.len(),
            ids.len()
        );
    }

    // (b) every member comes to hold every reported message (catch-up after restarts),
    // and the members end up with the same history (a message stored by a sender killed
    // before `send` could report it is delivered too, or nowhere but there).
    let limit = Duration::from_secs(30);
    let settling = Instant::now();
    let deadline = settling + limit;
    loop {
        let held: Vec<BTreeSet<String>> = homes
            .iter()
            .map(|h| held_ids(h).unwrap_or_default())
            .collect();
        let missing: Vec<(usize, usize)> = held
            .iter()
            .enumerate()
            .map(|(who, held)| (who, all.difference(held).count()))
            .filter(|(_, n)| *n > 0)
            .collect();
        if missing.is_empty() && held.iter().all(|h| *h == held[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?} members still miss reported messages \
             (member, how many of {}): {missing:?}; histories of {:?} messages",
            all.len(),
            held.iter().map(BTreeSet::len).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "crash test: {} messages reported stored, {} sends refused while a node was down; \
         settled in {:?}, {:?} in all",
        all.len(),
        logs.iter().map(|l| l.failed.len()).sum::<usize>(),
        settling.elapsed(),
        started.elapsed()
    );

    for node in nodes.into_iter().flatten() {
        let status = node.terminate();
        assert!(
            status.success(),
            "a node exited with {status} after SIGTERM"
        );
    }
}

/// A member whose node is killed right after `confer join` reported success, and comes
/// back on another address (a laptop that crashed, then rejoined another network), must
/// still reach the room: the invite told it where the facilitator is.
#[test]
fn a_member_killed_right_after_joining_still_reaches_the_room() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (sam, priya) = (dirs[0].path(), dirs[1].path());
    init(sam, "Sam");
    init(priya, "Priya");
    let _sam_node = start_node(sam, 0).unwrap();
    let priya_node = start_node(priya, 0).unwrap();
    ok_json(sam, &["room", "create", ROOM]);
    let invite = ok_json(sam, &["invite", ROOM, "--expires", "1h"]);
    ok_json(
        priya,
        &["join", invite["code"].as_str().unwrap(), "--as", "Priya"],
    );
    // Killed at once, and back on a new port, which Sam has never heard of.
    kill_hard(priya_node);
    let _priya_node = start_node(priya, 0).unwrap();
    // The room itself survived (it was stored before `join` answered).
    let rooms = ok_json(priya, &["room", "list"]);
    assert_eq!(rooms.as_array().unwrap().len(), 1, "{rooms}");

    let from_sam = ok_json(sam, &["send", ROOM, "Welcome, Priya."]);
    let from_sam = from_sam["message_id"].as_str().unwrap().to_owned();
    let from_priya = ok_json(priya, &["send", ROOM, "Thank you; glad to be here."]);
    let from_priya = from_priya["message_id"].as_str().unwrap().to_owned();
    eventually(
        "Priya and Sam to hold each other's message",
        Duration::from_secs(20),
        || {
            let priya_has = held_ids(priya)?.contains(&from_sam);
            let sam_has = held_ids(sam)?.contains(&from_priya);
            (priya_has && sam_has).then_some(())
        },
    );
}
