//! Following a room over the control socket, as `confer read --follow` does: a reader
//! that stops taking messages is not waited for, and is told it fell behind rather than
//! left to think the node stopped; a reader of a running node that stops is told nothing
//! more than that the stream ended; a reader of a room its profile is removed from is told
//! so; a reader is told when its own waiting message reaches another member, and a
//! message the members took at once is confirmed to its author within about a second. A
//! read of the last few messages carries only those.

use std::time::Duration;

use confer_node::api::{Reply, Request};
use confer_node::client::{Client, Follower};
use confer_node::net::NetConfig;
use confer_node::{Node, NodeConfig};
use confer_store::Profile;
use confer_tests::{PASSPHRASE, TestNode, within};

const ROOM: &str = "Supervision";

/// Opens a follower over the control socket; returns it with the history it was sent.
async fn follow(node: &TestNode) -> (Client, Vec<confer_node::api::MessageInfo>) {
    let (client, messages, _) = follow_with_changes(node).await;
    (client, messages)
}

/// [`follow`], also returning the membership changes the history carried.
async fn follow_with_changes(
    node: &TestNode,
) -> (
    Client,
    Vec<confer_node::api::MessageInfo>,
    Vec<confer_node::api::EventInfo>,
) {
    let mut client = Client::connect(node.home()).await.expect("connect");
    client
        .send(&Request::Read {
            room: ROOM.into(),
            follow: true,
            last: None,
        })
        .await
        .expect("send");
    match client.next().await.expect("history") {
        Some(Reply::History {
            messages, events, ..
        }) => (client, messages, events),
        other => panic!("unexpected {other:?}"),
    }
}

/// [`follow`] on a room with no messages yet.
async fn follower(node: &TestNode) -> Client {
    let (client, history) = follow(node).await;
    assert!(history.is_empty());
    client
}

/// Messages a follower may lag behind in the first test (the default is 4,096).
const QUEUE: usize = 32;
/// Messages sent while the reader takes none: well over [`QUEUE`] plus what the socket's
/// buffers hold (a few hundred KiB, some dozens of these messages).
const SENT: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_is_told_so() {
    let sam = start_with_short_queue("Sam").await;
    sam.ok(Request::CreateRoom {
        name: ROOM.into(),
        display_name: None,
    })
    .await;
    let mut reader = follower(&sam).await;

    // The reader takes nothing while the messages are stored.
    let filler = "x".repeat(4000);
    for i in 0..SENT {
        sam.send(ROOM, &format!("message {i} {filler}")).await;
    }

    // Then it reads: what the buffers held, then why the stream ended.
    let (taken, last) = within("the end of the stream", async {
        let mut taken = 0;
        loop {
            match reader.next().await.expect("read") {
                Some(Reply::Message(_)) => taken += 1,
                other => return (taken, other),
            }
        }
    })
    .await;
    assert!(
        taken < SENT,
        "took all {taken}: the reader never fell behind"
    );
    match last {
        Some(Reply::FellBehind { queue }) => assert_eq!(queue, QUEUE),
        other => panic!("expected to be told the reader fell behind, got {other:?}"),
    }
    // The node went on, and holds everything.
    assert!(sam.node.is_running());
    assert_eq!(sam.history(ROOM).await.len(), SENT);
}

/// Starts a node for `name` whose followers may lag [`QUEUE`] messages behind.
async fn start_with_short_queue(name: &str) -> TestNode {
    let home = tempfile::tempdir().expect("temporary directory");
    let profile = Profile::create(home.path(), PASSPHRASE, name).expect("create profile");
    let config = NodeConfig {
        net: NetConfig::for_tests(),
        follow_queue: QUEUE,
        ..NodeConfig::new(vec!["/ip4/127.0.0.1/tcp/0".into()], Vec::new())
    };
    let node = Node::start(profile, config).await.expect("start node");
    TestNode { node, home }
}

/// Following through [`Follower`], as `confer read --follow` does, a reader that falls
/// behind is still shown every message exactly once: the follower follows again and
/// takes from the history what the stream could not carry, and the new stream goes on.
/// (Which changes and deliveries it then reports is tested against a scripted node in
/// `confer_node::client`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_falls_behind_is_shown_every_message_once() {
    let sam = start_with_short_queue("Sam").await;
    sam.ok(Request::CreateRoom {
        name: ROOM.into(),
        display_name: None,
    })
    .await;
    let first = sam.send(ROOM, "Before the reader starts.").await;
    let (history, follower) = Follower::start(sam.home(), ROOM).await.expect("follow");
    let mut follower = follower.expect("a history, so a follower");
    assert!(matches!(history, Reply::History { ref messages, .. } if messages.len() == 1));

    // The reader takes nothing while many messages are stored.
    let filler = "x".repeat(4000);
    let mut sent = vec![first.clone()];
    // All at once: each send waits for the disk, and the node flushes them together.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..SENT {
        let (node, text) = (sam.node.clone(), format!("message {i} {filler}"));
        sends.spawn(async move { node.request(send(&text)).await });
    }
    while let Some(reply) = sends.join_next().await {
        match reply.expect("a send") {
            Reply::Sent { message_id, .. } => sent.push(message_id),
            other => panic!("unexpected {other:?}"),
        }
    }

    // Then it reads everything, each message once.
    let sent: std::collections::BTreeSet<String> = sent.into_iter().collect();
    let mut shown = std::collections::BTreeSet::from([first]);
    within("every message", async {
        while shown.len() < sent.len() {
            match follower.next().await.expect("read") {
                Some(Reply::Message(m)) => {
                    assert!(sent.contains(&m.message_id), "{m:?} was not sent");
                    assert!(shown.insert(m.message_id), "shown twice");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(follower.resumed() >= 1, "the reader never fell behind");

    // And it follows on.
    let after = sam.send(ROOM, "One more.").await;
    match within("the next message", follower.next()).await {
        Ok(Some(Reply::Message(m))) => assert_eq!(m.message_id, after),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_node_that_stops_sees_the_stream_end() {
    let sam = TestNode::start("Sam").await;
    sam.ok(Request::CreateRoom {
        name: ROOM.into(),
        display_name: None,
    })
    .await;
    let mut reader = follower(&sam).await;
    sam.send(ROOM, "before the node stops").await;
    match reader.next().await.expect("read") {
        Some(Reply::Message(m)) => assert_eq!(m.text, "before the node stops"),
        other => panic!("unexpected {other:?}"),
    }
    sam.node.clone().shutdown().await;
    match within("the end of the stream", reader.next()).await {
        Ok(None) => {}
        other => panic!("expected the stream to end quietly, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_room_it_is_removed_from_is_told_so() {
    let sam = TestNode::start("Sam").await;
    let priya = TestNode::start("Priya").await;
    sam.form_room(ROOM, "Sam", &[(&priya, "Priya")]).await;
    let mut reader = follower(&priya).await;
    sam.send(ROOM, "Welcome, Priya.").await;
    match within("the welcome", reader.next()).await {
        Ok(Some(Reply::Message(m))) => assert_eq!(m.text, "Welcome, Priya."),
        other => panic!("unexpected {other:?}"),
    }

    // Removed, the reader is told (the change, then that she is out), instead of waiting
    // forever for what will not come.
    sam.ok(Request::Remove {
        room: ROOM.into(),
        member: "Priya".into(),
    })
    .await;
    match within("the removal", reader.next()).await {
        Ok(Some(Reply::Event(e))) => {
            assert_eq!((e.kind.as_str(), e.who.as_str()), ("removed", "Priya"));
            assert_eq!(e.by.as_deref(), Some("Sam"));
        }
        other => panic!("expected the removal, got {other:?}"),
    }
    match within("the end of the stream", reader.next()).await {
        Ok(Some(Reply::Error { message })) => {
            assert!(message.contains("no longer a member"), "{message}");
        }
        other => panic!("expected a sentence saying Priya is out, got {other:?}"),
    }
    assert!(priya.node.is_running());

    // Following a room one is out of ends at once, after its history.
    let (mut again, history) = follow(&priya).await;
    assert_eq!(history.len(), 1);
    match within("the end of the second stream", again.next()).await {
        Ok(Some(Reply::Error { message })) => {
            assert!(message.contains("no longer a member"), "{message}");
        }
        other => panic!("expected the same sentence, got {other:?}"),
    }
}

/// A reader is shown membership changes as they happen (those from before it started
/// came with the history, from its own arrival on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_who_joins_as_it_happens() {
    let sam = TestNode::start("Sam").await;
    let priya = TestNode::start("Priya").await;
    let jo = TestNode::start("Jo").await;
    sam.form_room(ROOM, "Sam", &[(&priya, "Priya")]).await;
    let (mut client, _, events) = follow_with_changes(&priya).await;
    let kinds: Vec<_> = events.iter().map(|e| (&*e.kind, &*e.who)).collect();
    assert_eq!(kinds, [("joined", "Priya")], "from her own arrival on");
    sam.form_more(ROOM, &[(&jo, "Jo")]).await;
    match next_update(&mut client, "Jo's arrival").await {
        Reply::Event(e) => assert_eq!((e.kind.as_str(), e.who.as_str()), ("joined", "Jo")),
        other => panic!("expected Jo's arrival, got {other:?}"),
    }
}

/// A read of the last messages (`confer read --last N`) is cut by the node: only those
/// messages cross the socket, with the changes among them and the count of those left
/// out. A follower is still given the whole history, which it needs to tell after a
/// fall behind what it has not shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_the_last_messages_carries_only_those() {
    let sam = TestNode::start("Sam").await;
    let jo = TestNode::start("Jo").await;
    sam.form_room(ROOM, "Sam", &[]).await;
    for text in ["one", "two", "three"] {
        sam.send(ROOM, text).await;
    }
    sam.form_more(ROOM, &[(&jo, "Jo")]).await;
    sam.send(ROOM, "four").await;
    let read = |last, follow| Request::Read {
        room: ROOM.into(),
        follow,
        last,
    };
    let mut socket = Client::connect(sam.home()).await.unwrap();
    socket.send(&read(Some(2), false)).await.unwrap();
    let Ok(Some(Reply::History {
        messages,
        events,
        earlier,
        ..
    })) = socket.next().await
    else {
        panic!("no history");
    };
    let texts: Vec<_> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["three", "four"]);
    assert_eq!(earlier, 2);
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["joined"],
        "the room's creation came before \"three\""
    );
    // More than there are: all of them, nothing left out.
    match sam.ok(read(Some(10), false)).await {
        Reply::History {
            messages, earlier, ..
        } => assert_eq!((messages.len(), earlier), (4, 0)),
        other => panic!("{other:?}"),
    }
    // Following: the whole history.
    let (first, _follower) = Follower::start(sam.home(), ROOM).await.unwrap();
    let mut socket = Client::connect(sam.home()).await.unwrap();
    socket.send(&read(Some(1), true)).await.unwrap();
    for reply in [first, socket.next().await.unwrap().unwrap()] {
        match reply {
            Reply::History {
                messages, earlier, ..
            } => assert_eq!((messages.len(), earlier), (4, 0)),
            other => panic!("{other:?}"),
        }
    }
}

/// A request to send `text` to the room.
fn send(text: &str) -> Request {
    Request::Send {
        room: ROOM.into(),
        text: text.into(),
    }
}

/// The next update after the history: a message, or a delivery confirmation.
async fn next_update(reader: &mut Client, what: &str) -> Reply {
    match within(what, reader.next()).await {
        Ok(Some(reply)) => reply,
        other => panic!("expected {what}, got {other:?}"),
    }
}

/// One's own message that no member's node could take when it was sent reaches a reader
/// marked pending, and the reader is told once another member holds it; one sent while a
/// member is connected is not marked (its confirmation is a round trip away, so every
/// message would be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_told_when_a_waiting_message_reaches_a_member() {
    let sam = TestNode::start("Sam").await;
    let mut priya = TestNode::start("Priya").await;
    sam.form_room(ROOM, "Sam", &[(&priya, "Priya")]).await;
    // Until Sam's node has seen Priya's subscription, gossip cannot route to her and a
    // send waits; wait for one that does not.
    within("a send Priya's node can take", async {
        loop {
            match sam.ok(send("Welcome, Priya.")).await {
                Reply::Sent { waiting: false, .. } => return,
                Reply::Sent { .. } => tokio::time::sleep(Duration::from_millis(20)).await,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    // The history marks those not confirmed yet: the reader may be told when they are.
    let (mut reader, history) = follow(&sam).await;
    let shown_pending: Vec<String> = history
        .into_iter()
        .filter(|m| m.pending)
        .map(|m| m.message_id)
        .collect();
    let mut next = async |what: &str| loop {
        match next_update(&mut reader, what).await {
            Reply::Delivered { message_id } if shown_pending.contains(&message_id) => {}
            other => return other,
        }
    };

    // Sent while Priya's node is connected: shown unmarked.
    let present = sam.send(ROOM, "Priya is here.").await;
    match next("the first message").await {
        Reply::Message(m) => assert!(m.message_id == present && !m.pending, "{m:?}"),
        other => panic!("unexpected {other:?}"),
    }

    // Priya's node stops; once Sam's has seen her go, his message can only wait.
    priya.node.clone().shutdown().await;
    sam.until_alone().await;
    let waiting = match sam.ok(send("Are you there?")).await {
        Reply::Sent {
            message_id,
            waiting: true,
        } => message_id,
        other => panic!("expected a waiting send, got {other:?}"),
    };
    match next("the waiting message").await {
        Reply::Message(m) => assert!(m.message_id == waiting && m.pending, "{m:?}"),
        other => panic!("unexpected {other:?}"),
    }

    // Priya's node comes back, catches up, and Sam's reader hears it.
    // (Reconnecting also confirms the first message, if that had not happened yet; the
    // reader never saw it as pending, so it is not told.)
    priya.restart().await;
    match next("the waiting message's confirmation").await {
        Reply::Delivered { message_id } => assert_eq!(message_id, waiting),
        other => panic!("unexpected {other:?}"),
    }
    let held = priya.history(ROOM).await;
    assert!(held.iter().any(|m| m.message_id == waiting), "{held:?}");
}

/// Gossip carries no receipts: a message the other members took at once is confirmed to
/// its author by a push soon after it was sent (within about a second), not at the next
/// sync round, 15 s away, until which `confer read` marked it as received by nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_members_took_is_confirmed_within_seconds() {
    let alice = TestNode::start("Alice").await;
    let bob = TestNode::start("Bob").await;
    alice.form_room(ROOM, "Alice", &[(&bob, "Bob")]).await;
    // The first two may be confirmed by what follows a join (the first waits in the
    // outbox until the member's subscription is seen, and is then pushed with whatever
    // else is unconfirmed by then); the third comes after that, and long before the first
    // sync round.
    for text in ["First.", "Second.", "Third."] {
        let id = alice.send(ROOM, text).await;
        let confirmed = async {
            while alice
                .history(ROOM)
                .await
                .iter()
                .any(|m| m.message_id == id && m.pending)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), confirmed)
            .await
            .expect("confirmed within 5 s, well before a sync round");
    }
}
