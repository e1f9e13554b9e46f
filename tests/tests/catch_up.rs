//! Catch-up without a server: a member who was offline while others talked gets every
//! message when it comes back, from whichever member is online, even if the author is not;
//! and a message sent while nobody else is online stays pending until a member holds it.
//! Messages of the largest size, padded, fit both paths.

mod bare;

use std::time::Duration;

use bare::BareMember;
use confer_tests::{TestNode, within};

const ROOM: &str = "Balint group";

/// Polls `node`'s history until `check` holds.
async fn until(
    node: &TestNode,
    what: &str,
    check: impl Fn(&[confer_node::api::MessageInfo]) -> bool,
) {
    within(what, async {
        loop {
            if check(&node.history(ROOM).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_member_catches_up_from_whoever_is_online() {
    let alice = TestNode::start("Alice").await;
    let mut bob = TestNode::start("Bob").await;
    let mut carol = TestNode::start("Carol").await;
    alice
        .form_room(ROOM, "Alice", &[(&bob, "Bob"), (&carol, "Carol")])
        .await;
    let first = alice
        .send(ROOM, "Everyone here before Carol steps out.")
        .await;
    until(&carol, "the first message", |h| {
        h.iter().any(|m| m.message_id == first)
    })
    .await;

    // Carol goes offline; Alice and Bob talk; then Bob goes offline too.
    carol.node.clone().shutdown().await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let author = if i % 2 == 0 { &bob } else { &alice };
        sent.push(
            author
                .send(ROOM, &format!("Case discussion, point {i}"))
                .await,
        );
    }
    let bobs_last = sent[18].clone();
    until(&alice, "Bob's messages at Alice", |h| {
        h.iter().any(|m| m.message_id == bobs_last)
    })
    .await;
    bob.node.clone().shutdown().await;

    // Carol comes back: she gets all of it from Alice, including Bob's messages.
    carol.restart().await;
    let expected = sent.clone();
    until(&carol, "catch-up of all 20 messages", |h| {
        expected
            .iter()
            .all(|id| h.iter().any(|m| &m.message_id == id))
    })
    .await;
    assert_eq!(carol.said(ROOM).await, alice.said(ROOM).await);
    // Her status counts them: the first message and the 20 of her absence.
    assert_eq!(carol.status().await.rooms[0].messages, 21);

    // Alone now, Carol sends: stored at once, pending until someone else holds it.
    let alice_id = alice.node.peer_id();
    alice.node.clone().shutdown().await;
    let lonely = carol.send(ROOM, "Anyone there?").await;
    let mine = carol
        .history(ROOM)
        .await
        .into_iter()
        .find(|m| m.message_id == lonely)
        .unwrap();
    assert!(mine.pending, "not yet received by anyone else");
    // Bob returns; Carol's node retries until Bob's node confirms holding it.
    bob.restart().await;
    let _ = alice_id;
    until(&bob, "Carol's pending message at Bob", |h| {
        h.iter().any(|m| m.message_id == lonely)
    })
    .await;
    until(&carol, "the confirmation", |h| {
        h.iter().any(|m| m.message_id == lonely && !m.pending)
    })
    .await;
}

/// Starts a node for the profile in `home` the way `confer node run` does without
/// `--listen`: on every interface, on a port it chooses.
async fn start_choosing_port(home: &std::path::Path) -> confer_node::Node {
    let profile = confer_store::Profile::unlock(home, confer_tests::PASSPHRASE).expect("unlock");
    let config = confer_node::NodeConfig {
        net: confer_node::net::NetConfig::for_tests(),
        ..confer_node::NodeConfig::new(Vec::new(), Vec::new())
    };
    confer_node::Node::start(profile, config)
        .await
        .expect("start node")
}

fn port_of(node: &confer_node::Node) -> u16 {
    let addr: libp2p::Multiaddr = node.listen_addrs()[0].parse().expect("a multiaddress");
    confer_node::net::tcp_port(&addr).expect("a TCP address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_who_both_restart_find_each_other_again() {
    let mut alice = TestNode::start("Alice").await;
    let mut bob = TestNode::start("Bob").await;
    for node in [&mut alice, &mut bob] {
        node.node.clone().shutdown().await;
        node.node = start_choosing_port(node.home()).await;
    }
    alice.form_room(ROOM, "Alice", &[(&bob, "Bob")]).await;
    let ports = (port_of(&alice.node), port_of(&bob.node));

    // Both switch off; both come back. Each knows only where it reached the other before,
    // so each must come back at the same address.
    for node in [&mut alice, &mut bob] {
        node.node.clone().shutdown().await;
    }
    for node in [&mut alice, &mut bob] {
        node.node = start_choosing_port(node.home()).await;
    }
    assert_eq!((port_of(&alice.node), port_of(&bob.node)), ports);
    let hello = alice.send(ROOM, "Good morning, Bob.").await;
    until(&bob, "Alice's message after both restarted", |h| {
        h.iter().any(|m| m.message_id == hello)
    })
    .await;

    // If something else took the port meanwhile, the node starts on another and keeps that.
    alice.node.clone().shutdown().await;
    let squatter = std::net::TcpListener::bind(("0.0.0.0", ports.0)).expect("take the port");
    alice.node = start_choosing_port(alice.home()).await;
    let moved = port_of(&alice.node);
    assert_ne!(moved, ports.0);
    drop(squatter);
    alice.node.clone().shutdown().await;
    alice.node = start_choosing_port(alice.home()).await;
    assert_eq!(port_of(&alice.node), moved);
}

/// Starts a node on loopback for the profile in `home`, reconciling every 200 ms.
async fn start_reconciling_often(home: &std::path::Path) -> confer_node::Node {
    let profile = confer_store::Profile::unlock(home, confer_tests::PASSPHRASE).expect("unlock");
    let config = confer_node::NodeConfig {
        net: confer_node::net::NetConfig {
            sync_interval: Duration::from_millis(200),
            ..confer_node::net::NetConfig::for_tests()
        },
        ..confer_node::NodeConfig::new(vec!["/ip4/127.0.0.1/tcp/0".into()], Vec::new())
    };
    confer_node::Node::start(profile, config)
        .await
        .expect("start node")
}

/// Sends `text` to the room from `node`; returns the message id.
async fn say(node: &confer_node::Node, text: &str) -> String {
    let request = confer_node::api::Request::Send {
        room: ROOM.into(),
        text: text.into(),
    };
    match node.request(request).await {
        confer_node::api::Reply::Sent { message_id, .. } => message_id,
        other => panic!("unexpected {other:?}"),
    }
}

/// A profile copied to another computer and run there while the original runs too
/// splits the discussion between the two, since the others' nodes take them for one.
/// The original's node notices a message in its person's name, sent while it was
/// running, that it did not send, and says so; catching up on its person's messages
/// from before it started (as a profile moved to a new computer, or started from a
/// backup, does) is no such sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_running_on_two_computers_at_once_is_noticed() {
    let alice = TestNode::start("Alice").await;
    let mut bob = TestNode::start("Bob").await;
    alice.form_room(ROOM, "Alice", &[(&bob, "Bob")]).await;
    bob.node.clone().shutdown().await;
    let copy = tempfile::tempdir().expect("temporary directory");
    let copied = std::process::Command::new("cp")
        .args(["-a", "--"])
        .arg(format!("{}/.", bob.home().display()))
        .arg(copy.path())
        .status()
        .expect("cp");
    assert!(copied.success());
    let holds = |id: &str| {
        let id = id.to_owned();
        move |h: &[confer_node::api::MessageInfo]| h.iter().any(|m| m.message_id == id)
    };

    // The copy runs while the original is off, and says something.
    let elsewhere = start_reconciling_often(copy.path()).await;
    let before = say(&elsewhere, "Bob, on the new computer").await;
    until(&alice, "Alice to hold the first", holds(&before)).await;
    elsewhere.shutdown().await;
    // The original starts again and catches up on it: nothing to say.
    bob.node = start_reconciling_often(bob.home()).await;
    until(&bob, "Bob's node to catch up", holds(&before)).await;
    assert_eq!(bob.status().await.other_copy, 0);

    // The copy runs again while the original runs.
    let elsewhere = start_reconciling_often(copy.path()).await;
    let during = say(&elsewhere, "Bob, on the new computer again").await;
    until(&alice, "Alice to hold the second", holds(&during)).await;
    elsewhere.shutdown().await;
    until(&bob, "Bob's node to take it", holds(&during)).await;
    assert_eq!(bob.status().await.other_copy, 1);
}

/// Network tuning under which only the reconciliation a node starts when it takes up a
/// room's topic can hand a joiner what was said before: no sync round in the test's time,
/// and nothing handed over as recent.
fn without_rounds() -> confer_node::net::NetConfig {
    confer_node::net::NetConfig {
        sync_interval: Duration::from_secs(3600),
        recent_window: Duration::ZERO,
        ..confer_node::net::NetConfig::for_tests()
    }
}

/// A newcomer has what was said in the room (in the current epoch) as soon as it has
/// joined, not at the next sync round. Its node connected to the facilitator's to ask to
/// join, so it heard the facilitator's subscription to the room's topic before the topic
/// was its own, and is never told of it again: it must start the reconciliation itself
/// when it takes the topic up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_has_what_was_said_before_it_joined_at_once() {
    let alice = TestNode::start_with("Alice", without_rounds()).await;
    let bob = TestNode::start_with("Bob", without_rounds()).await;
    let priya = TestNode::start_with("Priya", without_rounds()).await;
    alice.form_room(ROOM, "Alice", &[(&bob, "Bob")]).await;
    let rules = alice
        .send(ROOM, "Ground rules: what is said here stays here.")
        .await;
    // Held by Bob, so it is no longer Alice's to push; then Bob goes, so only Alice has it.
    until(&alice, "Bob holding the ground rules", |h| {
        h.iter().any(|m| m.message_id == rules && !m.pending)
    })
    .await;
    bob.node.clone().shutdown().await;

    alice.form_more(ROOM, &[(&priya, "Priya")]).await;
    until(&priya, "the ground rules at Priya's", |h| {
        h.iter().any(|m| m.message_id == rules)
    })
    .await;
}

/// Messages of the largest size a person may send (32 KiB, padded in the envelope to
/// about 35 KB) reach a member live, and through catch-up, where each fills most of a
/// sync request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_messages_arrive_live_and_through_catch_up() {
    let sam = TestNode::start("Sam").await;
    let mut jo = TestNode::start("Jo").await;
    sam.form_room(ROOM, "Sam", &[(&jo, "Jo")]).await;
    let largest = |i: usize| format!("{i}{}", "x".repeat(confer_room::room::MAX_TEXT - 1));
    let live = sam.send(ROOM, &largest(0)).await;
    until(&jo, "the largest message, live", |h| {
        h.iter().any(|m| m.message_id == live)
    })
    .await;

    jo.node.clone().shutdown().await;
    let mut away = Vec::new();
    for i in 1..=3 {
        away.push(sam.send(ROOM, &largest(i)).await);
    }
    jo.restart().await;
    until(&jo, "the three largest messages, caught up", |h| {
        away.iter().all(|id| h.iter().any(|m| &m.message_id == id))
    })
    .await;
    let texts: Vec<String> = jo.history(ROOM).await.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, (0..=3).map(largest).collect::<Vec<_>>());
}

/// A message waiting for another member, in an outbox kept the way nodes before the
/// store's outbox tree kept it (one record of every waiting id), still waits after an
/// upgrade: the node moves it into the tree, drops the old record, and clears it once a
/// member holds the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_kept_the_old_way_is_carried_over() {
    use confer_store::{Profile, Store};

    let mut sam = TestNode::start("Sam").await;
    sam.form_room(ROOM, "Sam", &[]).await;
    let waiting = sam.send(ROOM, "Is anyone there yet?").await;
    let room: [u8; 32] = hex::decode(&sam.status().await.rooms[0].room_id)
        .unwrap()
        .try_into()
        .unwrap();
    let message: [u8; 32] = hex::decode(&waiting).unwrap().try_into().unwrap();
    sam.node.clone().shutdown().await;
    let open = |home: &std::path::Path| {
        Store::open(&Profile::unlock(home, confer_tests::PASSPHRASE).unwrap()).unwrap()
    };
    {
        let store = open(sam.home());
        assert_eq!(store.outbox(&room).unwrap(), [message]);
        store.remove_from_outbox(&room, &[message]).unwrap();
        let old = confer_room::wire::encode(&vec![message]).unwrap();
        store.put_room_state(&room, "outbox", &old).unwrap();
        store.flush().unwrap();
    }

    sam.restart().await;
    let pending = |h: &[confer_node::api::MessageInfo]| {
        h.iter().any(|m| m.message_id == waiting && m.pending)
    };
    assert!(
        pending(&sam.history(ROOM).await),
        "still waiting after the upgrade"
    );
    let jo = TestNode::start("Jo").await;
    sam.form_more(ROOM, &[(&jo, "Jo")]).await;
    until(&sam, "Jo's node to hold the waiting message", |h| {
        h.iter().any(|m| m.message_id == waiting && !m.pending)
    })
    .await;
    sam.node.clone().shutdown().await;
    let store = open(sam.home());
    assert!(store.outbox(&room).unwrap().is_empty());
    assert_eq!(store.room_state(&room, "outbox").unwrap(), None);
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Catch-up does not depend on how many days a room's history spans. A member (played
/// by the test) dates its messages on 2,000 distinct days, as an author may (a message
/// carries its author's time): a summary of one bucket a day no longer fits one sync
/// request, and before the summary went by months first, no reconciliation could be
/// sent at all. Bob, missing one of them, gets it from Alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_works_across_two_thousand_days() {
    let net = confer_node::net::NetConfig {
        sync_interval: Duration::from_secs(1),
        ..confer_node::net::NetConfig::for_tests()
    };
    let alice = TestNode::start_with("Alice", net.clone()).await;
    let bob = TestNode::start_with("Bob", net).await;
    alice.form_room(ROOM, "Alice", &[(&bob, "Bob")]).await;
    let mut mal = BareMember::join(&alice, ROOM, "Mal").await;
    within("Bob's node to learn of Mal", async {
        loop {
            let members = match bob
                .ok(confer_node::api::Request::Members { room: ROOM.into() })
                .await
            {
                confer_node::api::Reply::Members { members, .. } => members,
                other => panic!("unexpected {other:?}"),
            };
            if members.iter().any(|m| m.name == "Mal") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;

    const DAY: u64 = 24 * 3600 * 1000;
    let now = now_ms();
    let envelopes: Vec<Vec<u8>> = (1..=2000u64)
        .map(|d| mal.seal_at(&format!("Mal, on day {d} before today"), now - d * DAY))
        .collect();
    // Both hold the other 1,999 before Alice is given the first: Bob never had a history
    // short enough to summarise the old way while Alice held it.
    mal.push_all(&bob, envelopes[1..].to_vec()).await;
    mal.push_all(&alice, envelopes[1..].to_vec()).await;
    mal.push_all(&alice, envelopes[..1].to_vec()).await;
    mal.go_offline();
    assert_eq!(alice.status().await.rooms[0].messages, 2000);

    within("Bob to catch up on the one he lacks", async {
        while bob.status().await.rooms[0].messages < 2000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(bob.said(ROOM).await, alice.said(ROOM).await);
}
