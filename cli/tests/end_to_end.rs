//! Three real `confer node run` processes on loopback, driven only through the `confer`
//! binary: create a room, invite two people, let them join, discuss, and check that all
//! three nodes show the same history; then stop the nodes with SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{NodeProcess, eventually, fails, init, ok, ok_json, run};
use serde_json::Value;

const ROOM: &str = "Peer group";

/// A new invite code to [`ROOM`] from its facilitator at `home`.
fn invite_code(home: &Path) -> String {
    ok_json(home, &["invite", ROOM])["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn read(home: &Path, room: &str) -> Vec<Value> {
    ok_json(home, &["read", room]).as_array().unwrap().clone()
}

/// Sam alone: a profile, a running node and a room called `room` (the room's JSON).
fn sam_alone_in(room: &str) -> (tempfile::TempDir, NodeProcess, Value) {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Sam");
    let node = NodeProcess::start(dir.path());
    let created = ok_json(dir.path(), &["room", "create", room]);
    (dir, node, created)
}

/// Sends `text` from `from` and waits until every home in `others` shows it.
fn send_and_wait(from: &Path, room: &str, text: &str, others: &[&Path]) -> String {
    let sent = ok_json(from, &["send", room, text]);
    let id = sent["message_id"].as_str().unwrap().to_owned();
    for home in others {
        eventually(
            &format!("{text:?} to reach {}", home.display()),
            Duration::from_secs(20),
            || {
                read(home, room)
                    .iter()
                    .any(|m| m["message_id"] == id.as_str())
                    .then_some(())
            },
        );
    }
    id
}

#[test]
fn three_nodes_discuss_through_the_binary() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [sam, priya, jo] = [dirs[0].path(), dirs[1].path(), dirs[2].path()];
    for (home, name) in [(sam, "Sam"), (priya, "Priya"), (jo, "Jo")] {
        init(home, name);
    }
    let nodes: Vec<NodeProcess> = [sam, priya, jo]
        .iter()
        .map(|h| NodeProcess::start(h))
        .collect();
    for node in &nodes {
        assert!(node.peer_id.starts_with("12D3KooW"), "{}", node.peer_id);
        assert!(
            node.listen
                .iter()
                .any(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
            "{:?}",
            node.listen
        );
    }

    let status = ok_json(sam, &["status"]);
    assert_eq!(status["peer_id"], nodes[0].peer_id.as_str());
    assert!(status["listen"].is_array() && status["rooms"].as_array().unwrap().is_empty());

    let room = ok_json(sam, &["room", "create", ROOM]);
    assert_eq!(room["name"], ROOM);
    let room_id = room["room_id"].as_str().unwrap().to_owned();

    for (home, name) in [(priya, "Priya"), (jo, "Jo")] {
        let invite = ok_json(sam, &["invite", ROOM, "--expires", "1h"]);
        let code = invite["code"].as_str().unwrap();
        assert!(invite["expires_at"].is_string());
        let joined = ok_json(home, &["join", code, "--as", name]);
        assert_eq!(joined["room_id"], room_id.as_str());
        assert_eq!(joined["name"], ROOM);
    }

    // Human output of invite: the code alone on the first line.
    let human = ok(sam, &["invite", ROOM, "--expires", "90s"]);
    let first = human.lines().next().unwrap();
    assert!(!first.contains(' ') && !first.is_empty(), "{human}");

    let members = ok_json(sam, &["members", ROOM]);
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0]["role"], "facilitator");
    assert_eq!(members[0]["name"], "Sam");
    for m in members {
        assert!(m["member_id"].is_string() && m["name"].is_string() && m["role"].is_string());
    }

    let list = ok_json(jo, &["room", "list"]);
    assert_eq!(list[0]["room_id"], room_id.as_str());
    assert_eq!(list[0]["members"], 3);

    // Each member speaks in turn, waiting until the others have it, so the order is defined.
    let prefix = &room_id[..8];
    let ids = [
        send_and_wait(
            sam,
            ROOM,
            "Welcome both. Check-in: how are you arriving today?",
            &[priya, jo],
        ),
        send_and_wait(
            priya,
            prefix,
            "A full week; I would like time on a grievance.",
            &[sam, jo],
        ),
        send_and_wait(
            jo,
            ROOM,
            "Steady. Happy for Priya to go first.",
            &[sam, priya],
        ),
    ];

    // Compare what each node holds; `pending` is each sender's own delivery mark.
    let histories: Vec<Vec<Value>> = [sam, priya, jo]
        .iter()
        .map(|h| {
            read(h, ROOM)
                .into_iter()
                .map(|mut m| {
                    assert!(
                        m["pending"].is_boolean(),
                        "read --json marks pending messages"
                    );
                    m.as_object_mut().unwrap().remove("pending");
                    m
                })
                .collect()
        })
        .collect();
    for history in &histories {
        assert_eq!(
            history, &histories[0],
            "the nodes disagree about the history"
        );
    }
    let got: Vec<&str> = histories[0]
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let authors: Vec<&str> = histories[0]
        .iter()
        .map(|m| m["author"].as_str().unwrap())
        .collect();
    assert_eq!(authors, ["Sam", "Priya", "Jo"]);
    assert!(
        histories[0]
            .iter()
            .all(|m| m["sent_at"].is_string() && m["text"].is_string())
    );

    // Human read output.
    let human = ok(jo, &["read", ROOM]);
    assert!(human.contains("] Priya: A full week"), "{human}");

    let status = ok_json(priya, &["status"]);
    assert_eq!(status["rooms"][0]["room_id"], room_id.as_str());

    // Following prints the history, then each new message, one JSON object per line.
    let (mut follower, lines) = common::spawn_lines(sam, &["read", ROOM, "--follow", "--json"]);
    // (A confirmation of one of Sam's own messages may come in between, and membership
    // changes come among the messages: skipped.)
    let next = || -> Value {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(20))
                .expect("no line from read --follow");
            let value: Value = serde_json::from_str(&line).unwrap();
            if value.get("delivered").is_none() && value.get("event").is_none() {
                return value;
            }
        }
    };
    for id in &ids {
        assert_eq!(next()["message_id"], id.as_str());
    }
    let later = ok_json(priya, &["send", ROOM, "Thank you, that helped."]);
    assert_eq!(later["waiting"], false, "the others are connected");
    assert_eq!(next()["message_id"], later["message_id"]);
    let _ = follower.kill();
    let _ = follower.wait();

    // An unknown room is one clear sentence.
    fails(&run(jo, &["read", "No such room"]));

    for node in nodes {
        let status = node.terminate();
        assert!(
            status.success(),
            "the node exited with {status} after SIGTERM"
        );
    }
    for home in [sam, priya, jo] {
        assert!(
            !home.join("control.sock").exists(),
            "the control socket was left behind"
        );
    }
}

#[test]
fn a_malformed_invite_is_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Priya");
    let node = NodeProcess::start(dir.path());
    for code in ["not-an-invite", "confer1", "confer1!!!!", ""] {
        let out = run(dir.path(), &["join", code, "--as", "Priya"]);
        let line = fails(&out);
        assert!(line.len() > "error: ".len() + 10, "{line}");
        let out = run(dir.path(), &["join", code, "--as", "Priya", "--json"]);
        fails(&out);
    }
    let rooms = ok_json(dir.path(), &["room", "list"]);
    assert_eq!(rooms, serde_json::json!([]));
    assert!(node.terminate().success());
}

#[test]
fn a_message_nobody_else_holds_yet_is_marked() {
    let (dir, _node, _) = sam_alone_in("Solo");
    let home = dir.path();
    let sent = ok_json(home, &["send", "Solo", "Notes before the others join."]);
    assert_eq!(sent["waiting"], true);
    let human = ok(home, &["send", "Solo", "A second note."]);
    assert!(
        human.contains("No other member's node could take it just now"),
        "{human}"
    );
    let read = ok_json(home, &["read", "Solo"]);
    assert_eq!(read[0]["pending"], true);
    let human = ok(home, &["read", "Solo"]);
    assert!(
        human.contains("(not yet received by anyone else)"),
        "{human}"
    );
    // The room list and the status count them.
    assert_eq!(ok_json(home, &["room", "list"])[0]["pending"], 2);
    assert_eq!(ok_json(home, &["status"])["rooms"][0]["pending"], 2);
    let human = ok(home, &["room", "list"]);
    assert!(
        human.contains("2 messages, 2 of yours not yet received by anyone else)"),
        "{human}"
    );
}

#[test]
fn a_history_longer_than_one_socket_line_is_read_whole() {
    // The control socket's lines are limited to 1 MiB; 40 messages of 30,000 characters
    // make a history of about 1.2 MB, which the node sends in parts.
    let (dir, _node, _) = sam_alone_in("Long");
    let home = dir.path();
    let filler = "x".repeat(30_000);
    let texts: Vec<String> = (0..40).map(|i| format!("note {i:02} {filler}")).collect();
    for text in &texts {
        ok_json(home, &["send", "Long", text]);
    }

    let json = ok(home, &["read", "Long", "--json"]);
    assert!(json.len() > 1024 * 1024, "only {} bytes", json.len());
    let history: Vec<Value> = serde_json::from_str(&json).unwrap();
    let got: Vec<&str> = history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(got, texts);

    let human = ok(home, &["read", "Long"]);
    for i in 0..40 {
        assert!(human.contains(&format!("note {i:02} ")), "note {i} missing");
    }

    let mut follower = common::confer(home)
        .args(["read", "Long", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let lines: Vec<String> = {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map(Result::unwrap)
            // Membership changes come among the messages (here, the room's creation).
            .filter(|l| !l.starts_with(r#"{"event":"#))
            .take(40)
            .collect()
    };
    follower.kill().unwrap();
    let _ = follower.wait();
    let followed: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(followed, texts);
}

#[test]
fn read_last_shows_only_the_end_of_the_history() {
    let (dir, _node, _) = sam_alone_in("Notes");
    let home = dir.path();
    for i in 1..=5 {
        ok_json(home, &["send", "Notes", &format!("note {i}")]);
    }
    let texts = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let last_two = ok_json(home, &["read", "Notes", "--last", "2"]);
    assert_eq!(texts(&last_two), ["note 4", "note 5"]);
    let more_than_all = ok_json(home, &["read", "Notes", "-n", "50"]);
    assert_eq!(texts(&more_than_all).len(), 5);
    let human = ok(home, &["read", "Notes", "-n", "1"]);
    assert!(
        human.contains("note 5") && !human.contains("note 4"),
        "{human}"
    );
    assert!(
        human.starts_with("(4 earlier messages not shown; leave out --last to see them.)"),
        "{human}"
    );
    assert!(!ok(home, &["read", "Notes", "-n", "5"]).contains("earlier"));
    // The room list says how many messages the room holds (and that nobody else has
    // them: Sam is alone).
    assert_eq!(ok_json(home, &["room", "list"])[0]["messages"], 5);
    let rooms = ok(home, &["room", "list"]);
    assert!(
        rooms.contains("(1 member, 5 messages, 5 of yours not yet received by anyone else)"),
        "{rooms}"
    );
    // Zero is a usage error, and nothing is printed on standard output.
    let out = run(home, &["read", "Notes", "--last", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_second_room_of_the_same_name_is_refused_and_nothing_changes() {
    let (dir, _node, first) = sam_alone_in("Peer group");
    let home = dir.path();
    for same in ["Peer group", " peer  GROUP"] {
        let refused = fails(&run(home, &["room", "create", same]));
        assert!(refused.contains("already have a room called"), "{refused}");
    }
    let rooms = ok_json(home, &["room", "list"]);
    assert_eq!(rooms.as_array().unwrap().len(), 1);
    assert_eq!(rooms[0]["room_id"], first["room_id"]);
    // The name still names the one room, typed in any case or spacing.
    ok_json(home, &["send", "Peer group", "Still one room."]);
    ok_json(home, &["send", "peer GROUP ", "Typed loosely."]);
    let texts: Vec<String> = read(home, "PEER GROUP")
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["Still one room.", "Typed loosely."]);
    let unknown = fails(&run(home, &["read", "Peer groups"]));
    assert!(unknown.contains("no room called"), "{unknown}");
    // What was typed comes back in the refusal, but not as terminal control.
    let escaped = fails(&run(home, &["read", "Peer\u{1b}[2Jgroup"]));
    assert!(
        escaped.contains("Peer\\u{1b}[2Jgroup") && !escaped.contains('\u{1b}'),
        "{escaped}"
    );
    // Part of a name is not enough (a message sent to the wrong room cannot be taken
    // back), but the refusal says which room was probably meant, and nothing is sent.
    let part = fails(&run(home, &["send", "peer", "Sent by half a name."]));
    assert!(part.contains("did you mean \"Peer group\"?"), "{part}");
    assert_eq!(read(home, "Peer group").len(), 2, "nothing was sent");
}

/// A room joined can have the name of one's own in another case: the exact name still
/// tells them apart, a loose one is refused as ambiguous.
#[test]
fn rooms_whose_names_differ_only_in_case_are_told_apart_by_the_exact_name() {
    let (sam_dir, _sam_node, sams) = sam_alone_in("Peer group");
    let priya_dir = tempfile::tempdir().unwrap();
    let (sam, priya) = (sam_dir.path(), priya_dir.path());
    init(priya, "Priya");
    let _priya_node = NodeProcess::start(priya);
    let hers = ok_json(priya, &["room", "create", "peer GROUP"]);
    let code = ok_json(priya, &["invite", "peer GROUP"])["code"]
        .as_str()
        .unwrap()
        .to_owned();
    ok_json(sam, &["join", &code]);
    for (name, room) in [("Peer group", &sams), ("peer GROUP", &hers)] {
        ok_json(sam, &["send", name, &format!("To {name}.")]);
        let by_id = &room["room_id"].as_str().unwrap()[..8];
        let texts: Vec<Value> = read(sam, by_id).iter().map(|m| m["text"].clone()).collect();
        assert_eq!(texts, [format!("To {name}.")]);
    }
    let ambiguous = fails(&run(sam, &["send", "PEER GROUP", "Which room?"]));
    assert!(ambiguous.contains("more than one room"), "{ambiguous}");
}

#[test]
fn a_node_that_was_offline_says_when_it_has_caught_up() {
    let (sam_dir, _sam_node, _) = sam_alone_in(ROOM);
    let sam = sam_dir.path();
    let priya_dir = tempfile::tempdir().unwrap();
    let priya = priya_dir.path();
    init(priya, "Priya");
    let node = NodeProcess::start(priya);
    let code = invite_code(sam);
    ok_json(priya, &["join", &code, "--as", "Priya"]);
    assert!(node.terminate().success());

    // Sam talks while Priya's node is off.
    for i in 0..30 {
        ok_json(sam, &["send", ROOM, &format!("While Priya is away, {i}")]);
    }

    // Back on, her node says what it is receiving, then that it has caught up.
    let node = NodeProcess::start(priya);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let caught_up = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = node
            .lines
            .recv_timeout(left)
            .expect("node run said it had caught up");
        // Its output may end up in a system log: counts only, no room, no names.
        assert!(!line.contains(ROOM) && !line.contains("Sam"), "{line}");
        let event: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(event.as_object().unwrap().len(), 2, "{line}");
        let received = event["received"].as_u64().unwrap();
        match event["event"].as_str() {
            Some("catching_up") => assert!(received <= 30, "{line}"),
            Some("caught_up") => break received,
            _ => panic!("unexpected line from node run: {line}"),
        }
    };
    assert_eq!(caught_up, 30);
    assert_eq!(read(priya, ROOM).len(), 30);
    assert!(node.terminate().success());
}

/// `read --follow` marks a message that arrives after later ones, and says when one of
/// the reader's own messages, shown as not yet received, has reached another member.
#[test]
fn read_follow_says_when_a_message_arrives_late_and_when_ones_own_is_received() {
    let (dirs, sam_node, priya_node) = common::sam_and_priya_in(ROOM);
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    // (Without --listen, each node comes back on the port it had.)
    let start = |home: &Path| NodeProcess::start_with(home, &[]);

    // Sam writes while Priya's node is off, then goes offline himself.
    assert!(priya_node.terminate().success());
    ok_json(sam, &["send", ROOM, "Written while you were away."]);
    assert!(sam_node.terminate().success());

    // Priya writes and follows the room (her message is its history, so its line shows
    // the follower is attached); then Sam's node comes back with his, written earlier.
    let priya_node = start(priya);
    ok_json(priya, &["send", ROOM, "Back now."]);
    let (follower, lines) = common::spawn_lines(priya, &["read", ROOM, "--follow"]);
    let (json_follower, json_lines) =
        common::spawn_lines(priya, &["read", ROOM, "--follow", "--json"]);
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from read --follow")
    };
    let next_json = || -> Value {
        let line = json_lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from read --follow --json");
        serde_json::from_str(&line).unwrap()
    };
    // The history starts at her arrival in the room, a membership change.
    let joined = next_json();
    assert_eq!(joined["event"]["kind"], "joined", "{joined}");
    assert_eq!(joined["event"]["who"], "Priya", "{joined}");
    assert_eq!(joined["event"]["you"], true, "{joined}");
    assert!(next().ends_with("] — You joined"));
    let mine_json = next_json();
    assert_eq!(mine_json["pending"], true, "{mine_json}");
    let mine = next();
    assert!(
        mine.contains("Priya: Back now.") && mine.ends_with("(not yet received by anyone else)"),
        "{mine}"
    );
    // Sam's message arrives, marked as late, and Priya's reaches Sam, which the reader
    // is told (in either order).
    let sam_node = start(sam);
    let (mut late, mut delivered) = (None, None);
    while late.is_none() || delivered.is_none() {
        let line = next();
        if line.contains("Sam: ") {
            late = Some(line);
        } else {
            delivered = Some(line);
        }
    }
    let late = late.unwrap();
    assert!(
        late.contains("Sam: Written while you were away.")
            && late.ends_with("(sent earlier; it has just arrived)"),
        "{late}"
    );
    let delivered = delivered.unwrap();
    let sent_at = &mine[1..mine.find(']').unwrap()];
    assert_eq!(
        delivered,
        format!("(Your message of [{sent_at}] has now been received by another member.)")
    );
    assert_eq!(ok_json(priya, &["room", "list"])[0]["pending"], 0);
    // The same as JSON Lines: Sam's message, and an object naming Priya's as delivered.
    let mut got = [next_json(), next_json()];
    got.sort_by_key(|v| v.get("delivered").is_some());
    assert_eq!(got[0]["text"], "Written while you were away.", "{got:?}");
    assert_eq!(
        got[1],
        serde_json::json!({ "delivered": mine_json["message_id"] }),
        "{got:?}"
    );
    for mut follower in [follower, json_follower] {
        let _ = follower.kill();
        let _ = follower.wait();
    }
    for node in [sam_node, priya_node] {
        assert!(node.terminate().success());
    }
}

/// A copy of the profile folder `home`, as `cp -a` makes it (in a temporary directory
/// returned with it, removed when dropped).
fn copy_profile(home: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join("copy");
    let copied = std::process::Command::new("cp")
        .args(["-a", "--"])
        .arg(home)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(copied.success());
    (copies, copy)
}

/// The same profile running on two computers at once (here, a copy of its folder run
/// beside the original) splits the discussion between them. The original's node is told
/// of a message in its person's name, sent while it ran, that it did not send (by the
/// other member's reconciliation, as gossip never hands a node back what came from its
/// own peer id), and says so: once in `node run`, and in `confer status`.
#[test]
fn a_profile_running_on_two_computers_at_once_is_reported() {
    let (dirs, sam_node, _priya_node) = common::sam_and_priya_in(ROOM);
    let sam = dirs[0].path();
    sam_node.terminate();
    let (_copies, copy) = copy_profile(sam);
    let original = NodeProcess::start_with(sam, &[]);
    assert_eq!(ok_json(sam, &["status"])["other_copy"], 0);
    let _copy_node = NodeProcess::start(&copy);
    ok_json(&copy, &["send", ROOM, "Sent from the second computer."]);

    // It reaches Priya's node, which hands it to the original at a sync round (every
    // 15 s; two nodes of one peer id confuse the connections between them, so it may
    // take two).
    let line = eventually(
        "the original's node to report a second copy",
        Duration::from_secs(60),
        || {
            original
                .lines
                .try_recv()
                .ok()
                .filter(|l| l.contains("other_copy"))
        },
    );
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap()["event"],
        "other_copy"
    );
    assert!(ok_json(sam, &["status"])["other_copy"].as_u64() >= Some(1));
    let status = ok(sam, &["status"]);
    assert!(
        status.contains("running on another computer as well"),
        "{status}"
    );
    // The copy itself sent it: nothing to report there.
    assert_eq!(ok_json(&copy, &["status"])["other_copy"], 0);
}

/// A profile folder copied while its node is stopped (a new computer, or a backup
/// restored after losing one) carries on as the same person: a stale copy catches up on
/// what was said and on the key since it was made, and a facilitator keeps running the
/// room. Invites issued after the copy was made are not recognised; new ones work.
#[test]
fn a_profile_copied_while_stopped_carries_on_and_catches_up() {
    let (dirs, sam_node, _priya_node) = common::sam_and_priya_in(ROOM);
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    sam_node.terminate();
    let (_copies, copy) = copy_profile(sam);

    // The original goes on for a while after the copy was made (each on the port the
    // profile keeps, as a moved computer keeps its configuration).
    let sam_node = NodeProcess::start_with(sam, &[]);
    send_and_wait(sam, ROOM, "Said after the copy.", &[priya]);
    ok_json(sam, &["rotate", ROOM]);
    let later_code = invite_code(sam);
    eventually("Priya to have the new key", Duration::from_secs(20), || {
        (ok_json(priya, &["members", ROOM])[0]["epoch"] == 1).then_some(())
    });
    sam_node.terminate();
    ok_json(priya, &["send", ROOM, "Said while Sam was away."]);

    // The copy starts (the original is never run again) and catches up.
    let _copy_node = NodeProcess::start_with(&copy, &[]);
    eventually("the copy to catch up", Duration::from_secs(20), || {
        let texts: Vec<Value> = read(&copy, ROOM)
            .iter()
            .map(|m| m["text"].clone())
            .collect();
        (texts == ["Said after the copy.", "Said while Sam was away."]).then_some(())
    });
    assert_eq!(ok_json(&copy, &["members", ROOM])[0]["epoch"], 1);
    // Its own message from after the copy, caught up on, is no sign of a second copy
    // running.
    assert_eq!(ok_json(&copy, &["status"])["other_copy"], 0);
    assert!(!ok(&copy, &["status"]).contains("another computer"));
    send_and_wait(&copy, ROOM, "From the copy.", &[priya]);

    // Still the facilitator: an invite made after the copy is refused, a new one admits.
    let jo_dir = tempfile::tempdir().unwrap();
    let jo = jo_dir.path();
    init(jo, "Jo");
    let _jo_node = NodeProcess::start(jo);
    let refused = fails(&run(jo, &["join", &later_code]));
    assert!(
        refused.contains("does not recognise this invite"),
        "{refused}"
    );
    ok_json(jo, &["join", &invite_code(&copy)]);
    let names: Vec<Value> = ok_json(priya, &["members", ROOM])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert!(names.contains(&Value::from("Jo")), "{names:?}");
}

/// A member whose node runs another version of Confer is reported when it connects: by
/// `node run` (an event), and by `status` and `members` (sentences). The member's node
/// is played in this process, announcing an older protocol version.
#[test]
fn a_member_node_of_another_version_is_reported() {
    use confer_node::api::{Reply, Request};
    use confer_node::net::NetConfig;

    let (dir, sam_node, _) = sam_alone_in(ROOM);
    let sam = dir.path();
    let code = ok_json(sam, &["invite", ROOM])["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jo_home = tempfile::tempdir().unwrap();
    let _jo = runtime.block_on(async {
        let profile =
            confer_store::Profile::create(jo_home.path(), common::PASSPHRASE, "Jo").unwrap();
        let config = confer_node::NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            relays: Vec::new(),
            net: NetConfig {
                protocol_version: "/confer/0.1.0",
                ..NetConfig::for_tests()
            },
            control_socket: false,
            follow_queue: confer_node::FOLLOW_QUEUE,
        };
        let node = confer_node::Node::start(profile, config).await.unwrap();
        let joined = node
            .request(Request::Join {
                code,
                display_name: Some("Jo".into()),
                wait_secs: 10,
            })
            .await;
        assert!(matches!(joined, Reply::Room(_)), "{joined:?}");
        node
    });

    let line = eventually(
        "Sam's node to report Jo's version",
        Duration::from_secs(20),
        || {
            sam_node
                .lines
                .try_recv()
                .ok()
                .filter(|l| l.contains("other_version"))
        },
    );
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (&event["event"], &event["nodes"]),
        (&"other_version".into(), &1.into())
    );
    let status = ok(sam, &["status"]);
    assert!(
        status.contains("A member's node connected to yours runs another version of Confer"),
        "{status}"
    );
    let members = ok(sam, &["members", ROOM]);
    assert!(
        members.contains("Their node runs another version of Confer (0.1.0; yours is 0.3.0)"),
        "{members}"
    );
    let listed = ok_json(sam, &["members", ROOM]);
    assert_eq!(listed[1]["name"], "Jo");
    assert_eq!(listed[1]["other_version"], "/confer/0.1.0");
    assert!(listed[0].get("other_version").is_none());
}
