//! The `confer` binary without any network: profiles, argument checking, and what every
//! command says when no node is running.
#![allow(clippy::unwrap_used)]

mod common;

use common::{PASSPHRASE, confer, fails, init, ok, ok_json, run};

#[test]
fn init_creates_a_profile_and_a_second_init_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("profile-home");
    let created = ok_json(&home, &["init", "--name", "Sam"]);
    assert_eq!(created["name"], "Sam");
    let shown = std::path::PathBuf::from(created["home"].as_str().unwrap());
    assert_eq!(shown, home.canonicalize().unwrap());

    let profile = home.join("profile");
    let before = std::fs::read(&profile).unwrap();
    let files_before: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let out = confer(&home)
        .args(["init", "--name", "Someone else"])
        .env("CONFER_PASSPHRASE", "a different passphrase")
        .output()
        .unwrap();
    let line = fails(&out);
    assert!(line.contains("already exists"), "{line}");

    assert_eq!(
        std::fs::read(&profile).unwrap(),
        before,
        "the profile was modified"
    );
    let files_after: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files_before, files_after);
}

#[test]
fn init_prints_where_the_profile_is() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = ok(dir.path(), &["init", "--name", "Priya"]);
    let canonical = dir.path().canonicalize().unwrap();
    assert!(stdout.contains(&*canonical.to_string_lossy()), "{stdout}");
}

#[test]
fn init_refuses_a_short_passphrase_and_an_empty_name_creating_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let short = confer(dir.path())
        .args(["init", "--name", "Sam"])
        .env("CONFER_PASSPHRASE", "hunter2")
        .output()
        .unwrap();
    let line = fails(&short);
    assert!(line.contains("at least 10 characters"), "{line}");
    assert!(!dir.path().join("profile").exists());
    for name in ["", "  ", "two\nlines"] {
        // Refused before any passphrase is asked for.
        let out = confer(dir.path())
            .args(["init", "--name", name])
            .env_remove("CONFER_PASSPHRASE")
            .output()
            .unwrap();
        let line = fails(&out);
        assert!(
            line.contains("one line of visible text"),
            "{name:?}: {line}"
        );
        assert!(!dir.path().join("profile").exists());
    }
}

#[test]
fn init_without_a_terminal_or_passphrase_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = confer(dir.path())
        .args(["init", "--name", "Sam"])
        .env_remove("CONFER_PASSPHRASE")
        .output()
        .unwrap();
    // Under a test harness there may or may not be a controlling terminal; either way
    // nothing may block, and if it fails it says how to fix it.
    if !out.status.success() {
        let line = fails(&out);
        assert!(line.contains("CONFER_PASSPHRASE"), "{line}");
        assert!(!dir.path().join("profile").exists());
    }
}

#[test]
fn node_run_with_the_wrong_passphrase_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Sam");
    let out = confer(dir.path())
        .args(["node", "run", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .env("CONFER_PASSPHRASE", format!("{PASSPHRASE}!"))
        .output()
        .unwrap();
    let line = fails(&out);
    assert!(line.contains("wrong passphrase"), "{line}");
    assert!(!dir.path().join("control.sock").exists());
}

#[test]
fn node_run_without_a_profile_says_to_run_init() {
    let dir = tempfile::tempdir().unwrap();
    let line = fails(&run(dir.path(), &["node", "run"]));
    assert!(line.contains("confer init"), "{line}");
}

#[test]
fn commands_without_a_profile_say_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["status"][..], &["send", "Peer group", "hello"]] {
        let line = fails(&run(dir.path(), args));
        assert!(
            line.contains("there is no profile") && line.contains("confer init --home"),
            "confer {args:?}: {line}"
        );
    }
}

#[test]
fn commands_without_a_running_node_say_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Sam");
    let commands: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["room", "create", "Peer group"],
        &["room", "list", "--json"],
        &["invite", "Peer group"],
        &["join", "some-code", "--as", "Sam"],
        &["join", "some-code", "--as", "Sam", "--json"],
        &["send", "Peer group", "hello"],
        &["read", "Peer group"],
        &["read", "Peer group", "--follow"],
        &["members", "Peer group"],
        &["members", "Peer group", "--json"],
        &["leave", "Peer group"],
        &["remove", "Peer group", "Jo"],
        &["rotate", "Peer group", "--json"],
        &["handover", "Peer group", "Jo"],
        &["invite", "list", "Peer group"],
        &["invite", "revoke", "Peer group", "abc123"],
    ];
    for args in commands {
        let line = fails(&run(dir.path(), args));
        assert!(
            line.contains("no node is running"),
            "confer {args:?}: {line}"
        );
        assert!(
            line.contains("confer node run --home"),
            "confer {args:?}: {line}"
        );
    }
}

#[test]
fn bad_invite_lifetimes_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Sam");
    for bad in [
        "0s", "0d", "366d", "9000h", "7", "7w", "-1d", "1.5h", "soon", "",
    ] {
        let out = run(
            dir.path(),
            &["invite", "Peer group", &format!("--expires={bad}")],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--expires {bad:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "--expires {bad:?}: {stderr}");
        assert!(stderr.contains("--expires"), "--expires {bad:?}: {stderr}");
        assert!(
            !stderr.contains("no node is running"),
            "--expires {bad:?}: {stderr}"
        );
    }
    // Good values get as far as looking for the node.
    for good in ["90s", "30m", "24h", "7d", "365d"] {
        let line = fails(&run(
            dir.path(),
            &["invite", "Peer group", "--expires", good],
        ));
        assert!(
            line.contains("no node is running"),
            "--expires {good}: {line}"
        );
    }
}

#[test]
fn an_overlong_message_on_stdin_is_refused_before_sending() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = confer(dir.path())
        .args(["send", "Peer group", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The binary stops reading after the limit, so a broken pipe here is fine. Three-byte
    // characters, so the limit falls inside one: still "too long", not "not UTF-8".
    let _ = stdin.write_all("€".repeat(14_000).as_bytes());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let line = fails(&out);
    assert!(line.contains("longer than the limit of 32 KiB"), "{line}");
}

#[test]
fn usage_errors_exit_with_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["join"][..],
        &["join", "code", "--as"],
        &["init"],
        &["frobnicate"],
        &["room"],
        &["invite"],
        &["invite", "list"],
        &["invite", "--expires", "1h", "list", "Peer group"],
        &["remove", "Peer group"],
    ] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "confer {args:?}");
    }
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["node"],
        &["node", "run"],
        &["status"],
        &["room"],
        &["room", "create"],
        &["room", "list"],
        &["invite"],
        &["join"],
        &["send"],
        &["read"],
        &["members"],
        &["leave"],
        &["remove"],
        &["rotate"],
        &["handover"],
        &["invite", "list"],
        &["invite", "revoke"],
        &["config"],
        &["config", "show"],
        &["passphrase"],
        &["passphrase", "change"],
        &["demo"],
    ];
    for args in commands {
        let mut full = args.to_vec();
        full.push("--help");
        let help = ok(dir.path(), &full);
        assert!(
            help.contains("Usage: confer"),
            "confer {args:?} --help: {help}"
        );
    }
    let read_help = ok(dir.path(), &["read", "--help"]);
    assert!(read_help.contains("JSON Lines"), "{read_help}");
    let invite_help = ok(dir.path(), &["invite", "--help"]);
    for text in [
        "confer invite [OPTIONS] <ROOM>",
        "confer invite <COMMAND>",
        "list",
        "revoke",
        "literally named \"list\", \"revoke\" or \"create\"",
    ] {
        assert!(invite_help.contains(text), "{text:?} not in: {invite_help}");
    }
    let remove_help = ok(dir.path(), &["remove", "--help"]);
    assert!(
        remove_help.contains("cannot read anything sent afterwards"),
        "{remove_help}"
    );
}

#[test]
fn demo_walks_through_a_session_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let stdout = ok(dir.path(), &["demo"]);
    for step in [
        "creates the room",
        "invite",
        "admitted",
        "writes",
        "sees 4 messages",
        "same four messages",
        "removes Jo",
        "new room key (key epoch 1)",
        "delivered to Priya's node",
        "Jo's node never had it",
    ] {
        assert!(
            stdout.contains(step),
            "the demo did not print {step:?}:\n{stdout}"
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the demo took {:?}",
        started.elapsed()
    );
}
