//! Network settings and the relay, through the binary as a person uses them:
//! `confer config`, `confer init --relay-only`, `confer relay run`, `confer node run --relay`.

mod common;

use common::{NodeProcess, fails, init, ok_json, run, spawn_ready};
use serde_json::json;

const RELAY_ID: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

fn relay_addr(port: u16) -> String {
    format!("/ip4/203.0.113.5/tcp/{port}/p2p/{RELAY_ID}")
}

#[test]
fn config_shows_and_changes_the_settings_and_refuses_bad_input_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    init(home, "Alice");
    let shown = ok_json(home, &["config", "show"]);
    assert_eq!(shown, json!({"relay_only": false, "relays": []}));

    let on = ok_json(home, &["config", "relay-only", "on"]);
    assert_eq!(on["relay_only"], true);
    let added = ok_json(home, &["config", "add-relay", &relay_addr(4001)]);
    assert_eq!(added["relays"], json!([relay_addr(4001)]));
    // Adding it again changes nothing.
    let again = ok_json(home, &["config", "add-relay", &relay_addr(4001)]);
    assert_eq!(again, added);

    // Bad addresses: one sentence, exit 1, nothing changed.
    for bad in [
        "not an address",
        "/ip4/203.0.113.5/tcp/4001",
        &format!("{}/p2p-circuit", relay_addr(4001)),
    ] {
        let error = fails(&run(home, &["config", "add-relay", bad]));
        assert!(
            error.contains("address") || error.contains("/p2p/"),
            "{error}"
        );
    }
    let error = fails(&run(home, &["config", "remove-relay", &relay_addr(4002)]));
    assert!(
        error.contains("not one of this profile's relays"),
        "{error}"
    );
    assert_eq!(ok_json(home, &["config", "show"]), added);

    let removed = ok_json(home, &["config", "remove-relay", &relay_addr(4001)]);
    assert_eq!(removed, json!({"relay_only": true, "relays": []}));
    let off = ok_json(home, &["config", "relay-only", "off"]);
    assert_eq!(off, json!({"relay_only": false, "relays": []}));

    // The text form says what the settings are; `config` alone shows them too.
    let text = common::ok(home, &["config", "show"]);
    assert!(text.contains("Relay-only mode: off"), "{text}");
    assert_eq!(common::ok(home, &["config"]), text);
    assert_eq!(ok_json(home, &["config"]), off);
}

#[test]
fn a_relay_only_profile_listens_on_nothing_directly() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let created = ok_json(home, &["init", "--name", "Bob", "--relay-only"]);
    assert_eq!(created["relay_only"], true);
    assert_eq!(
        ok_json(home, &["config", "show"]),
        json!({"relay_only": true, "relays": []})
    );
    let error = fails(&run(
        home,
        &["node", "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--json"],
    ));
    assert!(error.contains("relay-only"), "{error}");
    // Without --listen it runs, and listens on nothing.
    let node = NodeProcess::start_with(home, &[]);
    assert!(node.listen.is_empty(), "{:?}", node.listen);
    let status = ok_json(home, &["status"]);
    assert_eq!(status["relay_only"], true);
    assert_eq!(status["connections"], json!([]));
    // Settings cannot change under a running node.
    let error = fails(&run(home, &["config", "relay-only", "off"]));
    assert!(error.contains("your node is running"), "{error}");
    node.terminate();
    assert_eq!(ok_json(home, &["config", "show"])["relay_only"], true);
}

#[test]
fn a_relay_keeps_its_identity_and_members_reserve_on_it() {
    let relay_dir = tempfile::tempdir().unwrap();
    let relay_home = relay_dir.path().join("relay");
    let args = ["relay", "run", "--listen", "/ip4/127.0.0.1/tcp/0"];
    let (mut relay, ready) = spawn_ready(&relay_home, &args);
    let peer_id = ready["peer_id"].as_str().unwrap().to_owned();
    let address = ready["addresses"][0].as_str().unwrap().to_owned();
    assert!(address.ends_with(&format!("/p2p/{peer_id}")), "{ready}");

    // A member started with --relay holds a reservation and a relayed address at once.
    let member_dir = tempfile::tempdir().unwrap();
    let member = member_dir.path();
    init(member, "Alice");
    let node = NodeProcess::start_with(
        member,
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--relay", &address],
    );
    assert!(
        node.listen.iter().any(|a| a.starts_with(&address)
            && a.ends_with(&format!("/p2p-circuit/p2p/{}", node.peer_id))),
        "{:?}",
        node.listen
    );
    let status = ok_json(member, &["status"]);
    assert_eq!(
        status["relays"],
        json!([{"address": address, "reserved": true}])
    );
    let text = common::ok(member, &["status"]);
    assert!(
        text.contains("reserved, others can reach you through it"),
        "{text}"
    );
    node.terminate();

    // Restarted, the relay has the same peer id (its key is kept in its --home).
    let _ = relay.kill();
    let _ = relay.wait();
    let (mut relay, again) = spawn_ready(&relay_home, &args);
    assert_eq!(again["peer_id"], peer_id);
    let _ = relay.kill();
    let _ = relay.wait();

    // A bad listening address is one sentence, and exit 1.
    let error = fails(&run(&relay_home, &["relay", "run", "--listen", "nowhere"]));
    assert!(error.contains("not a valid address"), "{error}");
}

/// Runs `confer node run` (human output) and returns its first `n` lines.
fn first_lines_of_node_run(home: &std::path::Path, n: usize) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let mut child = common::confer(home)
        .args(["node", "run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start confer node run");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(n)
            .collect();
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(std::time::Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    lines.expect("the node printed its readiness lines")
}

#[test]
fn a_relay_only_node_without_a_relay_says_how_to_become_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    ok_json(home, &["init", "--name", "Bob", "--relay-only"]);
    let lines = first_lines_of_node_run(home, 2);
    assert!(lines[0].starts_with("Your node is running."), "{lines:?}");
    assert!(
        lines[1].contains("listens on nothing yet") && lines[1].contains("confer config add-relay"),
        "{lines:?}"
    );
}

#[test]
fn a_relay_only_node_whose_relay_is_down_says_so_not_that_it_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    ok_json(home, &["init", "--name", "Bob", "--relay-only"]);
    // Nothing listens on 127.0.0.1:9 (discard): the dial is refused at once.
    let relay = format!("/ip4/127.0.0.1/tcp/9/p2p/{RELAY_ID}");
    ok_json(home, &["config", "add-relay", &relay]);
    let lines = first_lines_of_node_run(home, 3);
    assert!(lines[0].starts_with("Your node is running."), "{lines:?}");
    assert!(
        lines[1].contains("none of its relays (1) has accepted it")
            && !lines[1].contains("has no relay"),
        "{lines:?}"
    );
    assert!(
        lines[2].contains("Relay not reached yet") && lines[2].contains(&relay),
        "{lines:?}"
    );
    // The readiness line for scripts lists the relay too.
    let (mut child, ready) = spawn_ready(home, &["node", "run"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        ready["relays"],
        json!([{ "address": relay, "reserved": false }])
    );

    // Running, still without a relay: an invite could not be used by anyone, so none
    // is made.
    let _node = NodeProcess::start_with(home, &[]);
    ok_json(home, &["room", "create", "Peer group"]);
    let refused = fails(&run(home, &["invite", "Peer group"]));
    assert!(refused.contains("no invite was made"), "{refused}");
    assert_eq!(ok_json(home, &["invite", "list", "Peer group"]), json!([]));
}
