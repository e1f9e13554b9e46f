//! The profile's passphrase: out of the running node's environment, refused when easy to
//! guess, and changeable with the node stopped.
#![allow(clippy::unwrap_used)]

mod common;

use common::{NodeProcess, PASSPHRASE, confer, fails, init};

/// A passphrase the strength estimator accepts, other than the tests' usual one.
const NEW: &str = "lantern orchard velvet 47";

/// The profile file's bytes, to check that a refusal changed nothing.
fn profile_file(home: &std::path::Path) -> Vec<u8> {
    std::fs::read(home.join("profile")).unwrap()
}

/// `confer config show` with `passphrase`: it unlocks the profile and opens its store.
fn config_show(home: &std::path::Path, passphrase: &str) -> std::process::Output {
    confer(home)
        .args(["config", "show"])
        .env("CONFER_PASSPHRASE", passphrase)
        .output()
        .unwrap()
}

/// A node started with the passphrase in `CONFER_PASSPHRASE` (it unlocks the profile
/// with it) no longer has it in its environment, which the kernel shows in
/// `/proc/<pid>/environ` for the life of the process; the rest of its environment is
/// kept.
#[test]
fn the_passphrase_is_not_in_the_running_node_s_environment() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Sam");
    let node = NodeProcess::start(dir.path());
    let pid = node.child.id();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let holds = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(holds(&cmdline, b"node\0run\0"), "not the node: {cmdline:?}");
    assert!(!holds(&environ, PASSPHRASE.as_bytes()), "the passphrase");
    assert!(!holds(&environ, b"CONFER_PASSPHRASE="), "the variable");
    assert!(!holds(&cmdline, PASSPHRASE.as_bytes()));
    assert!(
        holds(&environ, b"PATH="),
        "the rest of the environment is kept"
    );
    node.terminate();
}

/// A passphrase long enough but easy to guess is refused with the estimator's reason, in
/// one calm sentence, and nothing is created.
#[test]
fn init_refuses_a_passphrase_that_is_easy_to_guess() {
    let dir = tempfile::tempdir().unwrap();
    for (weak, reason) in [
        ("password12", "very common password"),
        ("aaaaaaaaaaaa", "repeats like"),
        ("Sam Sam Sam Sam", "only slightly harder to guess"),
    ] {
        let out = confer(dir.path())
            .args(["init", "--name", "Sam"])
            .env("CONFER_PASSPHRASE", weak)
            .output()
            .unwrap();
        let line = fails(&out);
        assert!(
            line.contains("that passphrase would be easy to guess"),
            "{line}"
        );
        assert!(line.contains(reason), "{weak:?}: {line}");
        assert!(line.contains("add another word or two"), "{line}");
        assert!(!dir.path().join("profile").exists());
    }
}

/// `confer passphrase change` seals the profile under the new passphrase with the
/// current Argon2id parameters: the old passphrase no longer opens it, the new one opens
/// it and its store (the same keys), and a node starts with it.
#[test]
fn changing_the_passphrase_reseals_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Sam");
    let before = profile_file(dir.path());
    let out = confer(dir.path())
        .args(["passphrase", "change", "--json"])
        .env("CONFER_NEW_PASSPHRASE", NEW)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["changed"], true);

    let after = profile_file(dir.path());
    assert_ne!(after, before);
    // Argon2id m (KiB) and t in the header: 64 MiB, 3 passes.
    assert_eq!(after[10..14], 65536u32.to_be_bytes());
    assert_eq!(after[14..18], 3u32.to_be_bytes());

    let line = fails(&config_show(dir.path(), PASSPHRASE));
    assert!(line.contains("wrong passphrase"), "{line}");
    let out = config_show(dir.path(), NEW);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut node = confer(dir.path())
        .args(["node", "run", "--listen", "/ip4/127.0.0.1/tcp/0", "--json"])
        .env("CONFER_PASSPHRASE", NEW)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(node.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    let _ = node.kill();
    let _ = node.wait();
    assert!(ready.contains("peer_id"), "{ready:?}");
}

/// While the node runs, with a wrong current passphrase, a new one that is easy to guess
/// or the same as the current one: refused with a clear sentence, and the profile file
/// is exactly as it was.
#[test]
fn a_refused_passphrase_change_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "Sam");
    let before = profile_file(dir.path());
    let change = |current: &str, new: &str| {
        confer(dir.path())
            .args(["passphrase", "change"])
            .env("CONFER_PASSPHRASE", current)
            .env("CONFER_NEW_PASSPHRASE", new)
            .output()
            .unwrap()
    };

    let node = NodeProcess::start(dir.path());
    let line = fails(&change(PASSPHRASE, NEW));
    assert!(line.contains("your node is running: stop it"), "{line}");
    assert_eq!(profile_file(dir.path()), before);
    node.terminate();

    for (current, new, said) in [
        ("not the passphrase at all", NEW, "wrong passphrase"),
        (PASSPHRASE, "password12", "easy to guess"),
        (PASSPHRASE, PASSPHRASE, "the same as the current one"),
    ] {
        let line = fails(&change(current, new));
        assert!(line.contains(said), "{new:?}: {line}");
        assert_eq!(profile_file(dir.path()), before);
    }

    // No new passphrase given and none can be typed: it says how to give one.
    let out = confer(dir.path())
        .args(["passphrase", "change"])
        .env_remove("CONFER_NEW_PASSPHRASE")
        .output()
        .unwrap();
    if !out.status.success() {
        let line = fails(&out);
        assert!(line.contains("CONFER_NEW_PASSPHRASE"), "{line}");
    }
    assert_eq!(profile_file(dir.path()), before);
}
