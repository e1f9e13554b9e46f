//! Membership through the binary, with three real `confer node run` processes on loopback:
//! invites listed and revoked, a member leaving, the facilitator removing another, key
//! rotation, and the refusals that go with them.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{NodeProcess, eventually, fails, init, ok, ok_json, run};
use serde_json::Value;

const ROOM: &str = "Peer group";
const PATIENCE: Duration = Duration::from_secs(20);

/// `confer members ROOM --json` as (epoch, names), checking that every member object
/// carries the same epoch next to the fields of issue 2.
fn members(home: &Path) -> (u64, Vec<String>) {
    let members = ok_json(home, &["members", ROOM]);
    let members = members.as_array().unwrap();
    assert!(!members.is_empty());
    let epoch = members[0]["epoch"].as_u64().unwrap();
    for m in members {
        assert!(m["member_id"].is_string() && m["name"].is_string() && m["role"].is_string());
        assert_eq!(m["epoch"].as_u64(), Some(epoch), "{members:?}");
    }
    let names = members
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    (epoch, names)
}

fn invite(home: &Path) -> String {
    let invite = ok_json(home, &["invite", ROOM, "--expires", "1h"]);
    invite["code"].as_str().unwrap().to_owned()
}

fn invite_ids(home: &Path) -> Vec<String> {
    let list = ok_json(home, &["invite", "list", ROOM]);
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert!(i["expires_at"].is_string(), "{i}");
            i["invite_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A membership change's JSON, `{"room_id", "epoch", "members", "reached"}`, as (epoch,
/// members).
fn change(home: &Path, args: &[&str], room_id: &str) -> (u64, u64) {
    let (epoch, members, _) = change_reaching(home, args, room_id);
    (epoch, members)
}

/// [`change`], and how many other members' nodes were connected to hear it.
fn change_reaching(home: &Path, args: &[&str], room_id: &str) -> (u64, u64, u64) {
    let info = ok_json(home, args);
    assert_eq!(info["room_id"], room_id, "{info}");
    assert_eq!(info.as_object().unwrap().len(), 4, "{info}");
    (
        info["epoch"].as_u64().unwrap(),
        info["members"].as_u64().unwrap(),
        info["reached"].as_u64().unwrap(),
    )
}

#[test]
fn members_leave_are_removed_and_the_key_moves_on() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let [sam, priya, jo] = [dirs[0].path(), dirs[1].path(), dirs[2].path()];
    for (home, name) in [(sam, "Sam"), (priya, "Priya"), (jo, "Jo")] {
        init(home, name);
    }
    let nodes: Vec<NodeProcess> = [sam, priya, jo]
        .iter()
        .map(|h| NodeProcess::start(h))
        .collect();

    let room = ok_json(sam, &["room", "create", ROOM]);
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    assert!(invite_ids(sam).is_empty());
    assert!(ok(sam, &["invite", "list", ROOM]).contains("No invite"));

    let code = invite(sam);
    ok_json(priya, &["join", &code, "--as", "Priya"]);
    assert!(
        invite_ids(sam).is_empty(),
        "a redeemed invite is still listed"
    );
    // The facilitator cannot remove themself, and is told what to do instead.
    let itself = fails(&run(sam, &["remove", ROOM, "Sam"]));
    assert!(itself.contains("`confer handover`"), "{itself}");
    assert_eq!(members(sam).1, ["Sam", "Priya"]);

    // Two invites: one revoked by its code, the other by a prefix of its id.
    let by_code = invite(sam);
    let by_id = invite(sam);
    let ids = invite_ids(sam);
    assert_eq!(ids.len(), 2, "{ids:?}");
    ok(sam, &["invite", "revoke", ROOM, &by_code]);
    let left = invite_ids(sam);
    assert_eq!(left.len(), 1, "{left:?}");
    let human = ok(sam, &["invite", "list", ROOM]);
    assert!(human.contains(&left[0]), "{human}");
    let (_, count) = change(sam, &["invite", "revoke", ROOM, &left[0][..8]], &room_id);
    assert_eq!(count, 2);
    assert!(invite_ids(sam).is_empty());
    fails(&run(sam, &["invite", "revoke", ROOM, &left[0][..8]]));
    for code in [&by_code, &by_id] {
        let line = fails(&run(jo, &["join", code, "--as", "Jo", "--json"]));
        assert!(line.contains("invite"), "{line}");
    }

    // `confer invite ROOM` still issues invites, and Jo gets in with a fresh one, pasted
    // from an email that wrapped it over several lines.
    let human = ok(sam, &["invite", ROOM]);
    let code = human.lines().next().unwrap().to_owned();
    let wrapped: Vec<&str> = code
        .as_bytes()
        .chunks(70)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    ok_json(jo, &["join", &wrapped.join("\n"), "--as", "Jo"]);

    let (start, names) = members(sam);
    assert_eq!(names, ["Sam", "Priya", "Jo"]);
    let human = ok(sam, &["members", ROOM]);
    assert_eq!(
        human.lines().next(),
        Some(format!("Key epoch: {start}").as_str()),
        "{human}"
    );
    // Every node agrees once the admissions have reached it.
    for home in [priya, jo] {
        eventually("all three members everywhere", PATIENCE, || {
            (members(home) == (start, names.clone())).then_some(())
        });
    }

    // Only the facilitator removes.
    let line = fails(&run(priya, &["remove", ROOM, "Jo"]));
    assert!(line.contains("facilitator"), "{line}");
    fails(&run(jo, &["remove", ROOM, "Sam", "--json"]));
    // The facilitator cannot leave (even right after writing, which would make a member
    // wait for the message to be held): told to hand over, and nothing changes.
    ok(sam, &["send", ROOM, "Same time next month."]);
    let line = fails(&run(sam, &["leave", ROOM]));
    assert!(line.contains("hand the role to another member"), "{line}");
    assert_eq!(members(sam), (start, names.clone()));

    // Priya leaves; Sam's node takes her off and rotates the key by itself.
    let (_, count, reached) = change_reaching(priya, &["leave", ROOM], &room_id);
    assert_eq!(count, 2);
    assert!(reached >= 1, "Sam's node at least is connected");
    let after_leave = eventually("Sam's node to rotate after the leave", PATIENCE, || {
        let (epoch, names) = members(sam);
        (names == ["Sam", "Jo"] && epoch > start).then_some(epoch)
    });
    let line = fails(&run(priya, &["send", ROOM, "Am I still here?"]));
    assert!(line.contains("member"), "{line}");
    // Priya can still read the history she had.
    ok_json(priya, &["read", ROOM]);

    // Sam removes Jo, by name; the removal changes the key at once.
    let human = ok(sam, &["remove", ROOM, "Jo"]);
    assert!(human.contains("Removed Jo"), "{human}");
    let (after_remove, names) = members(sam);
    assert_eq!(names, ["Sam"]);
    assert!(
        after_remove > after_leave,
        "{after_remove} <= {after_leave}"
    );
    assert!(human.contains(&format!("epoch {after_remove}")), "{human}");
    eventually("Jo's node to learn of the removal", PATIENCE, || {
        (members(jo).1 == ["Sam"]).then_some(())
    });
    let line = fails(&run(jo, &["send", ROOM, "Hello?"]));
    assert!(line.contains("member"), "{line}");

    // A rotation moves the epoch on by one.
    let (rotated, count) = change(sam, &["rotate", ROOM], &room_id);
    assert_eq!((rotated, count), (after_remove + 1, 1));
    assert_eq!(members(sam).0, rotated);

    // Handing over to someone who is not a member, or leaving as the facilitator, fails.
    let line = fails(&run(sam, &["handover", ROOM, "Priya"]));
    assert!(line.contains("member"), "{line}");
    let line = fails(&run(sam, &["leave", ROOM, "--json"]));
    assert!(line.contains("handover"), "{line}");
    assert_eq!(members(sam), (rotated, vec!["Sam".to_owned()]));

    for node in nodes {
        assert!(node.terminate().success());
    }
}

#[test]
fn handover_makes_another_member_facilitator() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    init(sam, "Sam");
    init(priya, "Priya");
    let nodes = [NodeProcess::start(sam), NodeProcess::start(priya)];
    let room_id = ok_json(sam, &["room", "create", ROOM])["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Without --as, she is shown under her profile's name.
    ok_json(priya, &["join", &invite(sam)]);

    let priya_id = ok_json(sam, &["members", ROOM])[1]["member_id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(sam, &["invite", "create", ROOM]);
    assert!(ok(sam, &["invite", "list", ROOM]).contains("until"));
    let human = ok(sam, &["handover", ROOM, &priya_id[..10]]);
    assert!(human.contains("Priya is now the facilitator"), "{human}");
    let roles = |home: &Path| -> Vec<(String, String)> {
        let members: Value = ok_json(home, &["members", ROOM]);
        members
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_owned(),
                    m["role"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let expected = vec![
        ("Priya".to_owned(), "facilitator".to_owned()),
        ("Sam".to_owned(), "member".to_owned()),
    ];
    assert_eq!(roles(sam), expected);
    eventually("Priya's node to learn of the handover", PATIENCE, || {
        (roles(priya) == expected).then_some(())
    });

    // Sam, no longer facilitator, can neither invite nor remove, but can now leave.
    fails(&run(sam, &["remove", ROOM, "Priya"]));
    fails(&run(sam, &["invite", ROOM]));
    // The invite Sam issued before no longer works, and is not listed as if it did.
    let line = fails(&run(sam, &["invite", "list", ROOM]));
    assert!(line.contains("only the room's facilitator"), "{line}");
    let (_, count) = change(sam, &["leave", ROOM], &room_id);
    assert_eq!(count, 1);

    // The history shows the changes among the messages, in words: from the room's start
    // for its creator, from her own arrival for Priya (nothing from before she came).
    let read = eventually("Priya's node to hear Sam leave", PATIENCE, || {
        let read = ok(priya, &["read", ROOM]);
        read.contains("] — Sam left").then_some(read)
    });
    for line in ["] — You joined", "] — Sam made you the facilitator"] {
        assert!(read.contains(line), "{line:?} not in: {read}");
    }
    assert!(!read.contains("created the room"), "{read}");
    assert!(read.find("You joined") < read.find("Sam left"), "{read}");
    let sams = ok(sam, &["read", ROOM]);
    for line in [
        "] — You created the room",
        "] — Priya joined",
        "] — You made Priya the facilitator",
        "] — You left",
    ] {
        assert!(sams.contains(line), "{line:?} not in: {sams}");
    }
    for node in nodes {
        assert!(node.terminate().success());
    }
}

#[test]
fn a_member_who_left_can_join_again_with_a_new_invite() {
    let (dirs, _sam_node, _priya_node) = common::sam_and_priya_in(ROOM);
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    let before = ok_json(priya, &["send", ROOM, "Before I step back."]);
    eventually("Sam to hold Priya's message", PATIENCE, || {
        let history = ok_json(sam, &["read", ROOM]);
        (history.as_array().unwrap().len() == 1).then_some(())
    });
    ok_json(priya, &["leave", ROOM]);
    assert_eq!(ok_json(priya, &["room", "list"])[0]["member"], false);
    let listed = ok(priya, &["room", "list"]);
    assert!(listed.contains("you are no longer a member"), "{listed}");
    eventually("Sam to see Priya leave", PATIENCE, || {
        (members(sam).1 == ["Sam"]).then_some(())
    });
    // Said while she is gone: she must never read it, even once invited back.
    let (away_epoch, _) = members(sam);
    ok_json(sam, &["send", ROOM, "Said while Priya is away."]);

    // While a member, a second invite is refused; once gone, a new one admits her again.
    ok_json(priya, &["join", &invite(sam), "--as", "Priya"]);
    let again = fails(&run(priya, &["join", &invite(sam), "--as", "Priya"]));
    assert!(again.contains("already a member"), "{again}");
    eventually("Sam to see Priya back", PATIENCE, || {
        (members(sam).1 == ["Sam", "Priya"]).then_some(())
    });
    // Her return moved the key on first, so her welcome holds no key to that message.
    assert!(
        members(sam).0 > away_epoch,
        "the key moved on before she came back"
    );
    let after = ok_json(priya, &["send", ROOM, "Back again."]);
    eventually("Sam to hold her new message", PATIENCE, || {
        let history = ok_json(sam, &["read", ROOM]);
        let ids: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids[0], before["message_id"].as_str().unwrap());
        ids.contains(&after["message_id"].as_str().unwrap())
            .then_some(())
    });
    assert_eq!(ok_json(priya, &["room", "list"])[0]["member"], true);
    // Her own history has what she said before she left and since, and nothing said
    // while she was away (catch-up with Sam ran when she reconnected, before her new
    // message went through).
    let hers = ok_json(priya, &["read", ROOM]);
    let texts: Vec<&str> = hers
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Before I step back.", "Back again."], "{hers}");
    // And when she came and went: her first membership up to her leave, then her return.
    let text = ok(priya, &["read", ROOM]);
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_once("] — ").map(|(_, event)| event))
        .collect();
    assert_eq!(events, ["You joined", "You left", "You joined"], "{text}");
}

#[test]
fn a_name_someone_in_the_room_uses_is_refused_and_the_invite_still_works() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    init(sam, "Sam");
    init(priya, "Priya");
    let nodes = [NodeProcess::start(sam), NodeProcess::start(priya)];
    ok(sam, &["room", "create", ROOM]);
    let code = invite(sam);

    // Members tell each other apart by name: "sam " would read as Sam.
    let refused = fails(&run(priya, &["join", &code, "--as", " sam"]));
    assert!(refused.contains("already goes by that name"), "{refused}");
    let sneaky = fails(&run(priya, &["join", &code, "--as", "Sam\u{200B}"]));
    assert!(sneaky.contains("invisible"), "{sneaky}");
    assert_eq!(members(sam).1, ["Sam"]);
    let rooms = ok_json(priya, &["room", "list"]);
    assert_eq!(rooms.as_array().map(Vec::len), Some(0), "{rooms}");

    // The same invite, under her own name.
    ok_json(priya, &["join", &code, "--as", "Priya"]);
    assert_eq!(members(sam).1, ["Sam", "Priya"]);
    for node in nodes {
        assert!(node.terminate().success());
    }
}

/// A member who leaves while no other member's node is connected is told that only its
/// own node knows, and to keep it running; the others learn of it when they reach it. A
/// message nobody has taken yet stops the leave, unless it is asked for anyway.
#[test]
fn leaving_while_nobody_is_connected_says_to_keep_the_node_running() {
    let (dirs, sam_node, priya_node) = common::sam_and_priya_in(ROOM);
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    let (start_epoch, _) = members(sam);

    assert!(sam_node.terminate().success());
    eventually("Priya's node to see Sam's go", PATIENCE, || {
        let status = ok_json(priya, &["status"]);
        status["connections"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
    // A change made now reaches nobody, and says so (a new key, before she leaves).
    let said = ok(priya, &["rotate", ROOM]);
    assert!(
        said.contains("No other member's node is connected just now"),
        "{said}"
    );
    // What she writes now nobody can take, and would never reach anyone once she has
    // left: leaving is refused (nothing changes), unless she asks for it anyway.
    ok(
        priya,
        &["send", ROOM, "I am off to a new post; thank you all."],
    );
    let refused = fails(&run(priya, &["leave", ROOM]));
    assert!(
        refused.contains("1 of your messages in this room has not reached any other member")
            && refused.contains("confer leave --anyway"),
        "{refused}"
    );
    assert_eq!(ok_json(priya, &["room", "list"])[0]["member"], true);
    let said = ok(priya, &["leave", "--anyway", ROOM]);
    assert!(
        said.contains("only yours knows you left") && said.contains("keep it running"),
        "{said}"
    );
    // The room list says so until a member's node has heard it, and that her last
    // message will never reach anyone.
    assert_eq!(ok_json(priya, &["room", "list"])[0]["leave_unheard"], true);
    let listed = ok(priya, &["room", "list"]);
    assert!(listed.contains("no other member has heard yet"), "{listed}");
    assert!(
        listed.contains("1 of yours not known to have reached anyone else"),
        "{listed}"
    );
    let read = ok(priya, &["read", ROOM]);
    assert!(
        read.contains(
            "I am off to a new post; thank you all.  (not known to have reached anyone else)"
        ),
        "{read}"
    );
    // Restarted, her `node run` says it is trying to tell them (naming no room).
    assert!(priya_node.terminate().success());
    let priya_node = NodeProcess::start_with(priya, &[]);
    let line = priya_node
        .lines
        .recv_timeout(PATIENCE)
        .expect("a line from Priya's node run");
    assert_eq!(line, r#"{"event":"leave_unheard","rooms":1}"#);

    // Sam's node comes back, reaches Priya's, hears of the leave and changes the key.
    let sam_node = NodeProcess::start_with(sam, &[]);
    eventually("Sam's node to hear of the leave", PATIENCE, || {
        let (epoch, names) = members(sam);
        (names == ["Sam"] && epoch > start_epoch).then_some(())
    });
    // Priya's `node run` says so (naming no room).
    let line = priya_node
        .lines
        .recv_timeout(PATIENCE)
        .expect("a line from Priya's node run");
    assert_eq!(line, r#"{"event":"leave_heard"}"#);
    let rooms = ok_json(priya, &["room", "list"]);
    assert_eq!(rooms[0]["leave_unheard"], false, "{rooms}");
    assert_eq!(rooms[0]["member"], false, "{rooms}");
    for node in [sam_node, priya_node] {
        assert!(node.terminate().success());
    }
}

/// `members` says who is connected now: what is sent now reaches them at once.
#[test]
fn members_says_who_is_connected_now() {
    let (dirs, _sam_node, priya_node) = common::sam_and_priya_in(ROOM);
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    let presence = |home: &Path| -> Vec<(bool, bool)> {
        ok_json(home, &["members", ROOM])
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["you"].as_bool().unwrap(),
                    m["connected"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    eventually("the two nodes to be connected", PATIENCE, || {
        (presence(sam) == [(true, true), (false, true)]).then_some(())
    });
    assert_eq!(presence(priya), [(false, true), (true, true)]);
    let text = ok(sam, &["members", ROOM]);
    assert!(text.contains("Sam  (facilitator, you)"), "{text}");
    assert!(text.contains("Priya  (member, connected)"), "{text}");
    priya_node.terminate();
    eventually("Sam to see Priya's node gone", PATIENCE, || {
        (presence(sam) == [(true, true), (false, false)]).then_some(())
    });
    let text = ok(sam, &["members", ROOM]);
    assert!(
        text.contains("Priya  (member, not connected now)"),
        "{text}"
    );
}

/// Starts `confer join CODE --wait 2m` and returns once it says it is waiting: its
/// progress line comes once the first try has had time to fail (a closed port on this
/// machine refuses at once).
fn wait_to_join(home: &Path, code: &str) -> std::process::Child {
    let mut child = common::confer(home)
        .args(["join", code, "--wait", "2m"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut progress = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.take().unwrap()),
        &mut progress,
    )
    .unwrap();
    assert!(progress.contains("trying again until it can"), "{progress}");
    child
}

/// Someone given an invite while the facilitator's computer is off can wait for it:
/// without `--wait` the error says how; with it the join goes through once the
/// facilitator's node is back.
#[test]
fn a_joiner_can_wait_for_the_facilitators_node() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    init(sam, "Sam");
    init(priya, "Priya");
    // Sam's node keeps its port from one run to the next, as the invite needs.
    let sam_node = NodeProcess::start_with(sam, &[]);
    let _priya_node = NodeProcess::start(priya);
    ok(sam, &["room", "create", ROOM]);
    let code = invite(sam);
    sam_node.terminate();

    let refused = fails(&run(priya, &["join", &code]));
    assert!(
        refused.contains("could not reach the facilitator's node") && refused.contains("--wait"),
        "{refused}"
    );
    let waiting = wait_to_join(priya, &code);
    assert_eq!(ok_json(priya, &["status"])["joining"], 1);
    assert!(ok(priya, &["status"]).contains("Joining: 1"));

    // Ctrl-C stops waiting: her node gives the join up.
    let mut impatient = wait_to_join(priya, &code);
    assert_eq!(ok_json(priya, &["status"])["joining"], 2);
    impatient.kill().unwrap();
    impatient.wait().unwrap();
    eventually(
        "Priya's node to give up the abandoned join",
        PATIENCE,
        || (ok_json(priya, &["status"])["joining"] == 1).then_some(()),
    );

    let _sam_node = NodeProcess::start_with(sam, &[]);
    let joined = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&joined.stdout);
    assert!(
        joined.status.success() && stdout.contains("You have joined"),
        "{stdout}{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    assert_eq!(members(sam).1, ["Sam", "Priya"]);
}

/// A room one has left can be deleted from one's computer: refused while a member
/// (nothing changes), then its history and keys are gone, the store still opens, and
/// being invited back starts afresh.
#[test]
fn a_room_one_has_left_can_be_forgotten() {
    let (dirs, sam_node, priya_node) = common::sam_and_priya_in(ROOM);
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    ok_json(priya, &["send", ROOM, "Before I step back."]);
    eventually("Sam to confirm holding Priya's message", PATIENCE, || {
        (ok_json(priya, &["read", ROOM])[0]["pending"] == false).then_some(())
    });
    let refused = fails(&run(priya, &["room", "forget", ROOM]));
    assert!(refused.contains("leave it first"), "{refused}");
    assert_eq!(ok_json(priya, &["read", ROOM]).as_array().unwrap().len(), 1);

    // She leaves while Sam's node is off: her node must keep the room until it has told
    // a member.
    sam_node.terminate();
    ok_json(priya, &["leave", ROOM]);
    let unheard = fails(&run(priya, &["room", "forget", ROOM]));
    assert!(unheard.contains("has heard that you left"), "{unheard}");
    let _sam_node = NodeProcess::start_with(sam, &[]);
    eventually("a member to hear Priya leave", PATIENCE, || {
        (ok_json(priya, &["room", "list"])[0]["leave_unheard"] == false).then_some(())
    });
    let forgot = ok_json(priya, &["room", "forget", ROOM]);
    assert_eq!(forgot["messages"], 1, "{forgot}");
    assert_eq!(ok_json(priya, &["room", "list"]), serde_json::json!([]));
    let gone = fails(&run(priya, &["read", ROOM]));
    assert!(gone.contains("no room called"), "{gone}");

    // Her store opens again without it.
    priya_node.terminate();
    let _priya_node = NodeProcess::start(priya);
    assert_eq!(ok_json(priya, &["room", "list"]), serde_json::json!([]));
    eventually("Sam to see Priya gone", PATIENCE, || {
        (members(sam).1 == ["Sam"]).then_some(())
    });
    // Invited back, she starts afresh: nothing of before comes back.
    ok_json(priya, &["join", &invite(sam)]);
    ok_json(sam, &["send", ROOM, "Welcome back."]);
    eventually("Priya to have Sam's welcome", PATIENCE, || {
        let texts: Vec<Value> = ok_json(priya, &["read", ROOM])
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].clone())
            .collect();
        (texts == ["Welcome back."]).then_some(())
    });
}

/// Waiting ends when the invite expires, with a sentence saying so.
#[test]
fn waiting_for_a_facilitator_ends_when_the_invite_expires() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let [sam, priya] = [dirs[0].path(), dirs[1].path()];
    init(sam, "Sam");
    init(priya, "Priya");
    let sam_node = NodeProcess::start(sam);
    let _priya_node = NodeProcess::start(priya);
    ok(sam, &["room", "create", ROOM]);
    let code = ok_json(sam, &["invite", ROOM, "--expires", "3s"])["code"]
        .as_str()
        .unwrap()
        .to_owned();
    sam_node.terminate();
    let started = std::time::Instant::now();
    let out = run(priya, &["join", &code, "--wait", "10m"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("before the invite expired"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ok_json(priya, &["room", "list"]), serde_json::json!([]));
}
