//! Three real nodes on loopback (real TCP, real sled directories) go through the whole
//! path: create, invite, join, discuss; all see the same history and none stores
//! plaintext.

use confer_node::api::{MemberInfo, Reply, Request};
use confer_tests::{TestNode, assert_no_plaintext, next_message, within};

const ROOM: &str = "Tuesday peer supervision";

fn room_id(reply: Reply) -> String {
    match reply {
        Reply::Room(info) => info.room_id,
        other => panic!("unexpected {other:?}"),
    }
}

async fn invite(node: &TestNode) -> String {
    match node
        .ok(Request::Invite {
            room: ROOM.into(),
            expires_in_secs: 3600,
        })
        .await
    {
        Reply::Invite(info) => info.code,
        other => panic!("unexpected {other:?}"),
    }
}

async fn members(node: &TestNode, room: &str) -> Vec<MemberInfo> {
    match node.ok(Request::Members { room: room.into() }).await {
        Reply::Members { members, .. } => members,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_discuss_and_store_nothing_in_clear() {
    let alice = TestNode::start("Alice Facilitator").await;
    let bob = TestNode::start("Bob Profile").await;
    let carol = TestNode::start("Carol Profile").await;

    let id = room_id(
        alice
            .ok(Request::CreateRoom {
                name: ROOM.into(),
                display_name: Some("Alice".into()),
            })
            .await,
    );
    let code = invite(&alice).await;
    let joined = within(
        "bob's join",
        bob.node.request(Request::Join {
            code: code.clone(),
            display_name: Some("Bob".into()),
            wait_secs: 0,
        }),
    )
    .await;
    assert_eq!(room_id(joined), id);
    // The same invite cannot be used twice: it is answered as one never issued, so that
    // whoever holds a spent invite learns nothing of the room.
    let again = carol
        .err(Request::Join {
            code,
            display_name: Some("Carol".into()),
            wait_secs: 0,
        })
        .await;
    assert!(again.contains("does not recognise this invite"), "{again}");
    let code = invite(&alice).await;
    let joined = within(
        "carol's join",
        carol.node.request(Request::Join {
            code,
            display_name: Some("Carol".into()),
            wait_secs: 0,
        }),
    )
    .await;
    assert_eq!(room_id(joined), id);

    // Bob learns of Carol through the admission Alice publishes on the room topic.
    let prefix = &id[..8];
    let expected = vec!["Alice", "Bob", "Carol"];
    for node in [&alice, &carol] {
        let names: Vec<String> = members(node, prefix)
            .await
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, expected);
    }

    let mut follows = Vec::new();
    for node in [&alice, &bob, &carol] {
        let following = node.node.follow(prefix.into()).await.expect("follow");
        assert!(following.history.is_empty());
        follows.push(following.updates);
    }

    let lines = [
        (0, "Check-in: a heavy week, glad to be here."),
        (
            1,
            "I'd like to present a case about a grievance that escalated.",
        ),
        (2, "What did you hope would happen at the first meeting?"),
        (0, "What helped most was naming the pressure from above."),
    ];
    let nodes = [&alice, &bob, &carol];
    for (author, text) in lines {
        let reply = nodes[author]
            .ok(Request::Send {
                room: ROOM.into(),
                text: text.into(),
            })
            .await;
        let Reply::Sent { message_id, .. } = reply else {
            panic!("unexpected {reply:?}")
        };
        for rx in follows.iter_mut() {
            let got = within(&format!("delivery of {text:?}"), next_message(rx))
                .await
                .expect("follower open");
            assert_eq!(got.message_id, message_id);
            assert_eq!(got.text, text);
        }
    }

    let reference = alice.said(ROOM).await;
    assert_eq!(reference.len(), 4);
    let authors: Vec<&str> = reference.iter().map(|m| m.author.as_str()).collect();
    assert_eq!(authors, ["Alice", "Bob", "Carol", "Alice"]);
    assert_eq!(bob.said(prefix).await, reference);
    assert_eq!(carol.said(prefix).await, reference);
    let names: Vec<String> = members(&bob, prefix)
        .await
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, expected);

    let needles: Vec<&str> = [
        ROOM,
        "Alice",
        "Bob",
        "Carol",
        "grievance",
        "Check-in",
        "naming the pressure",
    ]
    .into_iter()
    .collect();
    for node in [alice, bob, carol] {
        let home = node.home.path().to_path_buf();
        node.node.clone().shutdown().await;
        assert_no_plaintext(&home, &needles);
    }
}
