//! A store that cannot be opened (in use, damaged, another profile's) gives one clear
//! sentence and exit status 1 from `confer node run`, never a node that starts with a
//! silently empty or shortened room (issue 4, "Crash safety").
//!
//! A wrong passphrase is covered in `cli.rs` (`node_run_with_the_wrong_passphrase_…`);
//! an incompatible format version in the store's own tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{fails, init, ok_json, try_start_node};

const ROOM: &str = "Tuesday group";
const MESSAGES: usize = 20;
const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// What a profile held when its node was stopped cleanly.
struct Saved {
    room_id: String,
    /// (message id, text) in history order.
    messages: Vec<(String, String)>,
}

/// A profile in `home` with one room and [`MESSAGES`] messages, its node stopped cleanly.
fn profile_with_history(home: &Path) -> Saved {
    init(home, "Sam");
    let node = try_start_node(home, LOOPBACK).unwrap();
    let room_id = ok_json(home, &["room", "create", ROOM])["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..MESSAGES {
        ok_json(
            home,
            &["send", ROOM, &format!("Notes on case {i}: what I tried.")],
        );
    }
    let messages = history(home);
    assert_eq!(messages.len(), MESSAGES);
    assert!(node.terminate().success());
    Saved { room_id, messages }
}

/// The room's history as (message id, text).
fn history(home: &Path) -> Vec<(String, String)> {
    ok_json(home, &["read", ROOM])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["message_id"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Copies a directory tree (a stopped node's home).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir`, recursively, with its length.
fn files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((fs::metadata(&path).unwrap().len(), path));
        }
    }
    out
}

/// The largest file under `dir`.
fn largest_file(dir: &Path) -> PathBuf {
    let (len, file) = files(dir).into_iter().max().unwrap();
    assert!(len > 4096, "{} is only {len} bytes", file.display());
    file
}

/// Starts a node on a damaged copy of a home. Acceptable: it refuses with one clear
/// sentence (exit 1), or it starts and the room and every message are still there.
/// Anything else (no room, fewer messages, a panic) is described in `Err`.
fn refuses_or_has_everything(home: &Path, saved: &Saved) -> Result<String, String> {
    match try_start_node(home, LOOPBACK) {
        Err(out) => {
            let line = fails(&out);
            assert!(line.len() > "error: ".len() + 10, "{line}");
            Ok(format!("refused: {line}"))
        }
        Ok(node) => {
            let rooms = ok_json(home, &["room", "list"]);
            let found = rooms
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["room_id"] == saved.room_id.as_str() && r["name"] == ROOM);
            let outcome = if !found {
                Err(format!(
                    "the node started without the room (room list: {rooms})"
                ))
            } else {
                let now = history(home);
                if now == saved.messages {
                    Ok("recovered everything".to_owned())
                } else {
                    Err(format!(
                        "the node started with {} of the {} messages",
                        now.iter().filter(|m| saved.messages.contains(m)).count(),
                        saved.messages.len()
                    ))
                }
            };
            assert!(node.terminate().success());
            outcome
        }
    }
}

/// A way to damage the largest file of a stopped node's database.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// 64 bytes overwritten, starting at this many 64ths of the file's length.
    Overwrite { at_64ths: u64 },
    /// The file cut to this many 64ths of its length.
    Truncate { to_64ths: u64 },
}

impl Damage {
    fn apply(self, file: &Path) {
        let len = fs::metadata(file).unwrap().len();
        match self {
            Damage::Overwrite { at_64ths } => {
                let mut bytes = fs::read(file).unwrap();
                let at = usize::try_from(len * at_64ths / 64).unwrap();
                assert!(at + 64 <= bytes.len(), "{} is too short", file.display());
                for (i, b) in bytes[at..at + 64].iter_mut().enumerate() {
                    *b ^= 0xa5 ^ u8::try_from(i).unwrap();
                }
                fs::write(file, bytes).unwrap();
            }
            Damage::Truncate { to_64ths } => fs::OpenOptions::new()
                .write(true)
                .open(file)
                .unwrap()
                .set_len(len * to_64ths / 64)
                .unwrap(),
        }
    }
}

/// Applies each damage to a fresh copy of `original` and checks the outcome; panics
/// listing every damage that led to a silently emptied or shortened room.
fn check_damages(original: &Path, saved: &Saved, damages: &[Damage]) {
    let mut silent = Vec::new();
    for damage in damages {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original, copy.path());
        let file = largest_file(&copy.path().join("db"));
        damage.apply(&file);
        match refuses_or_has_everything(copy.path(), saved) {
            Ok(outcome) => eprintln!("{damage:?} of {}: {outcome}", file.display()),
            Err(outcome) => silent.push(format!("{damage:?}: {outcome}")),
        }
    }
    assert!(
        silent.is_empty(),
        "a damaged store opened without an error and without all its data:\n{}",
        silent.join("\n")
    );
}

#[test]
fn a_second_node_on_the_same_profile_is_refused_and_the_first_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    init(home, "Sam");
    let first = try_start_node(home, LOOPBACK).unwrap();
    ok_json(home, &["room", "create", ROOM]);
    ok_json(home, &["send", ROOM, "Before the second node."]);

    for listen in [LOOPBACK, first.listen[0].as_str()] {
        let out = match try_start_node(home, listen) {
            Err(out) => out,
            Ok(second) => {
                let _ = second.terminate();
                panic!("a second node started on a profile already in use");
            }
        };
        let line = fails(&out);
        assert!(line.contains("in use"), "{line}");
    }

    // The first node is untouched: still running, its socket still there, still working.
    assert!(home.join("control.sock").exists());
    let status = ok_json(home, &["status"]);
    assert_eq!(status["peer_id"], first.peer_id.as_str());
    ok_json(home, &["send", ROOM, "After the second node."]);
    let texts: Vec<String> = history(home).into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts, ["Before the second node.", "After the second node."]);
    assert!(first.terminate().success());

    // And once it has stopped, the profile opens again with everything in it.
    let again = try_start_node(home, LOOPBACK).unwrap();
    assert_eq!(history(home).len(), 2);
    assert!(again.terminate().success());
}

#[test]
fn a_database_written_under_another_profile_is_refused() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (sam, other) = (dirs[0].path(), dirs[1].path());
    profile_with_history(sam);
    // Someone else's profile, with Sam's database put in its place.
    init(other, "Jo");
    copy_dir(&sam.join("db"), &other.join("db"));
    let out = try_start_node(other, LOOPBACK).map(|_| ()).unwrap_err();
    let line = fails(&out);
    assert!(line.contains("this profile's keys"), "{line}");
    assert!(!other.join("control.sock").exists());
    // Sam's own profile is unaffected.
    let node = try_start_node(sam, LOOPBACK).unwrap();
    assert_eq!(history(sam).len(), MESSAGES);
    assert!(node.terminate().success());
}

#[test]
fn a_database_that_cannot_be_created_is_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Sam");
    fs::write(dir.path().join("db"), b"not a directory").unwrap();
    let out = try_start_node(dir.path(), LOOPBACK)
        .map(|_| ())
        .unwrap_err();
    let line = fails(&out);
    assert!(line.contains("db"), "{line}");
    assert!(!dir.path().join("control.sock").exists());
}

#[test]
fn overwritten_bytes_in_the_database_are_refused_or_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let saved = profile_with_history(dir.path());
    // In the middle of the file, and near its start.
    check_damages(
        dir.path(),
        &saved,
        &[
            Damage::Overwrite { at_64ths: 32 },
            Damage::Overwrite { at_64ths: 2 },
        ],
    );
}

#[test]
fn a_truncated_database_is_refused_or_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let saved = profile_with_history(dir.path());
    // Cut to half its length, and to nothing.
    check_damages(
        dir.path(),
        &saved,
        &[
            Damage::Truncate { to_64ths: 32 },
            Damage::Truncate { to_64ths: 0 },
        ],
    );
}

/// The room list and history a node shows are what it stored, in the same order, after a
/// clean stop and a restart (the baseline the damage tests compare with).
#[test]
fn a_clean_restart_keeps_the_room_and_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let saved = profile_with_history(dir.path());
    match refuses_or_has_everything(dir.path(), &saved) {
        Ok(outcome) => assert_eq!(outcome, "recovered everything"),
        Err(outcome) => panic!("{outcome}"),
    }
}
