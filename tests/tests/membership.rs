//! Real nodes on loopback: one member leaves, then the facilitator removes another. The
//! remaining members keep talking; the two who left, whose nodes keep running and stay
//! subscribed to every topic they can derive, never see a later message.

mod bare;

use std::time::Duration;

use bare::BareFacilitator;
use confer_node::FollowUpdate;
use confer_node::api::{ChangeInfo, Reply, Request};
use confer_node::net::NetConfig;
use confer_store::Profile;
use confer_tests::{PASSPHRASE, TestNode, next_message, start_node, within};
use tokio::sync::mpsc::Receiver;

const ROOM: &str = "Action learning set";

async fn members(node: &TestNode) -> (u64, Vec<String>) {
    match node.ok(Request::Members { room: ROOM.into() }).await {
        Reply::Members { epoch, members } => (epoch, members.into_iter().map(|m| m.name).collect()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Polls until `node` sees `expected` members in an epoch later than `after`.
async fn wait_for_members(node: &TestNode, expected: &[&str], after: u64) -> u64 {
    within(&format!("{expected:?} in a new epoch"), async {
        loop {
            let (epoch, names) = members(node).await;
            if names == expected && epoch > after {
                return epoch;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Leaves the room (waiting, as `confer leave` does, for one's last messages to be held).
async fn leave(node: &TestNode) -> ChangeInfo {
    match node
        .ok(Request::Leave {
            room: ROOM.into(),
            anyway: false,
        })
        .await
    {
        Reply::Changed(info) => info,
        other => panic!("unexpected {other:?}"),
    }
}

/// The facilitator `node` removes `name` from the room.
async fn remove(node: &TestNode, name: &str) {
    node.ok(Request::Remove {
        room: ROOM.into(),
        member: name.into(),
    })
    .await;
}

/// Waits until `node` knows it is no longer a member of its room.
async fn until_out(node: &TestNode) {
    within("the node to learn of the removal", async {
        while node.status().await.rooms.iter().any(|r| r.member) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

async fn receive(rx: &mut Receiver<FollowUpdate>, id: &str) {
    within(&format!("delivery of {id}"), async {
        loop {
            let got = next_message(rx).await.expect("follower open");
            if got.message_id == id {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_members_never_see_later_messages() {
    let alice = TestNode::start("Alice").await;
    let bob = TestNode::start("Bob").await;
    let carol = TestNode::start("Carol").await;
    let dan = TestNode::start("Dan").await;
    alice
        .form_room(
            ROOM,
            "Alice",
            &[(&bob, "Bob"), (&carol, "Carol"), (&dan, "Dan")],
        )
        .await;
    let (epoch0, names) = members(&alice).await;
    assert_eq!(names, ["Alice", "Bob", "Carol", "Dan"]);
    let mut alice_rx = alice.node.follow(ROOM.into()).await.unwrap().updates;
    let mut dan_rx = dan.node.follow(ROOM.into()).await.unwrap().updates;
    let before = alice.send(ROOM, "Before anyone leaves.").await;
    receive(&mut dan_rx, &before).await;
    // Everyone holds it before anyone leaves (a departed node stops listening).
    for node in [&bob, &carol] {
        within("the first message everywhere", async {
            while !node
                .history(ROOM)
                .await
                .iter()
                .any(|m| m.message_id == before)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    // Bob leaves; the facilitator's node rotates the key when it hears of it.
    let left = leave(&bob).await;
    assert_eq!(left.members, 3);
    let epoch1 = wait_for_members(&alice, &["Alice", "Carol", "Dan"], epoch0).await;
    wait_for_members(&dan, &["Alice", "Carol", "Dan"], epoch0).await;
    let message = bob
        .err(Request::Send {
            room: ROOM.into(),
            text: "one more thing".into(),
        })
        .await;
    assert!(message.contains("no longer a member"), "{message}");

    // The facilitator removes Carol.
    match alice
        .ok(Request::Remove {
            room: ROOM.into(),
            member: "Carol".into(),
        })
        .await
    {
        Reply::Changed(change) => {
            assert_eq!(change.members, 2);
            assert!(change.epoch > epoch1);
        }
        other => panic!("unexpected {other:?}"),
    }
    let epoch2 = wait_for_members(&dan, &["Alice", "Dan"], epoch1).await;
    assert_eq!(members(&alice).await.0, epoch2);

    // The remaining members keep talking.
    let mut later = Vec::new();
    for (from_alice, text) in [
        (
            true,
            "Now that it is the two of us: what helped this month?",
        ),
        (false, "Naming the pressure from above, honestly."),
        (true, "Actions for next time, then."),
    ] {
        if from_alice {
            let id = alice.send(ROOM, text).await;
            receive(&mut dan_rx, &id).await;
        } else {
            let id = dan.send(ROOM, text).await;
            receive(&mut alice_rx, &id).await;
        }
        later.push(text);
    }
    // Give gossip and the periodic log sync time to reach anyone they would reach.
    tokio::time::sleep(Duration::from_secs(2)).await;

    for departed in [&bob, &carol] {
        let history = departed.history(ROOM).await;
        assert!(
            history.iter().any(|m| m.text == "Before anyone leaves."),
            "history before leaving stays"
        );
        for text in &later {
            assert!(
                !history.iter().any(|m| &m.text == text),
                "a departed member saw {text:?}"
            );
        }
        let message = departed
            .err(Request::Send {
                room: ROOM.into(),
                text: "hello?".into(),
            })
            .await;
        assert!(
            message.contains("no longer a member") || message.contains("new key"),
            "{message}"
        );
    }
    // Carol's node never even learns the key: it cannot tell what the others say.
    let remaining = dan.history(ROOM).await;
    assert!(later.iter().all(|t| remaining.iter().any(|m| &m.text == t)));
    assert_eq!(alice.history(ROOM).await.len(), remaining.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_away_learns_only_that_on_return_and_can_be_invited_back() {
    let alice = TestNode::start("Alice").await;
    let bob = TestNode::start("Bob").await;
    let mut carol = TestNode::start("Carol").await;
    let dan = TestNode::start("Dan").await;
    alice
        .form_room(ROOM, "Alice", &[(&bob, "Bob"), (&carol, "Carol")])
        .await;
    let (epoch0, _) = members(&alice).await;

    // Carol's node is off when the facilitator removes her; Dan joins after that.
    carol.node.clone().shutdown().await;
    remove(&alice, "Carol").await;
    alice.form_more(ROOM, &[(&dan, "Dan")]).await;

    // Back online, Carol's node reconciles with the others as a member would; they answer
    // with her removal (and what led to it), so she is told instead of writing into a
    // room nobody hears her in.
    carol.restart().await;
    until_out(&carol).await;
    let refused = carol
        .err(Request::Send {
            room: ROOM.into(),
            text: "Am I still here?".into(),
        })
        .await;
    assert!(refused.contains("no longer a member"), "{refused}");
    // What she learned ends at her removal: not who joined after it.
    let (epoch, names) = members(&carol).await;
    assert!(epoch > epoch0);
    assert_eq!(names, ["Alice", "Bob"]);

    // Removed by mistake, she is invited back. (Her node announced the room's old topic
    // on returning, which the facilitator's node refused; admitting her must not cut the
    // connection her welcome goes back on, and a lost welcome is asked for again.)
    alice.form_more(ROOM, &[(&carol, "Carol")]).await;
    let (_, names) = members(&carol).await;
    assert_eq!(names, ["Alice", "Bob", "Dan", "Carol"]);
    let mut follower = carol.node.follow(ROOM.into()).await.unwrap().updates;
    let id = bob.send(ROOM, "Welcome back, Carol.").await;
    receive(&mut follower, &id).await;
}

/// Removes Carol while her node is off, restarts it, and waits until it knows.
async fn remove_while_away(alice: &TestNode, carol: &mut TestNode) {
    carol.node.clone().shutdown().await;
    remove(alice, "Carol").await;
    carol.restart().await;
    until_out(carol).await;
}

/// A node tells a former member of its departure at most once a sync round, so that a
/// former member cannot make it send its log over and over; a second departure (removed,
/// invited back, removed again) is another matter, and is told at once. (Alice's sync
/// rounds are ten minutes apart here, so only the answer to Carol's own reconciliation
/// can tell her in time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_twice_while_away_learns_it_both_times() {
    let slow_rounds = NetConfig {
        sync_interval: Duration::from_secs(600),
        ..NetConfig::for_tests()
    };
    let alice = TestNode::start_with("Alice", slow_rounds).await;
    let mut carol = TestNode::start("Carol").await;
    alice.form_room(ROOM, "Alice", &[(&carol, "Carol")]).await;
    remove_while_away(&alice, &mut carol).await;
    alice.form_more(ROOM, &[(&carol, "Carol")]).await;
    assert!(carol.status().await.rooms[0].member);
    remove_while_away(&alice, &mut carol).await;
}

/// A message nobody took before its author was removed can never be confirmed: members
/// take nothing from someone who has gone. Invited back (under a new identity), she sees
/// it told apart ("gone") from her new messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nobody_took_before_a_removal_is_told_apart_after_rejoining() {
    let mut alice = TestNode::start("Alice").await;
    let mut carol = TestNode::start("Carol").await;
    alice.form_room(ROOM, "Alice", &[(&carol, "Carol")]).await;
    alice.node.clone().shutdown().await;
    carol.until_alone().await;
    let before = carol.send(ROOM, "Written while nobody was online.").await;
    carol.node.clone().shutdown().await;
    alice.restart().await;
    remove(&alice, "Carol").await;
    carol.restart().await;
    until_out(&carol).await;
    alice.form_more(ROOM, &[(&carol, "Carol")]).await;
    let after = carol.send(ROOM, "Back again.").await;

    let history = carol.history(ROOM).await;
    let find = |id: &str| history.iter().find(|m| m.message_id == id).unwrap();
    assert!(find(&before).pending && find(&before).gone, "{history:?}");
    assert!(!find(&after).gone, "{history:?}");
    let room = &carol.status().await.rooms[0];
    assert!(room.member);
    assert_eq!(room.gone, 1, "{room:?}");
    assert!(
        alice
            .history(ROOM)
            .await
            .iter()
            .all(|m| m.message_id != before),
        "nobody took it"
    );
}

/// Forms a room of Alice (facilitator) and Bob, stops Alice's node, and has Bob leave
/// once his node has seen hers go (so nobody hears the leave). Returns them and the epoch
/// before the leave.
async fn bob_leaves_unheard() -> (TestNode, TestNode, u64) {
    let alice = TestNode::start("Alice").await;
    let bob = TestNode::start("Bob").await;
    alice.form_room(ROOM, "Alice", &[(&bob, "Bob")]).await;
    let (epoch0, _) = members(&alice).await;
    alice.node.clone().shutdown().await;
    bob.until_alone().await;
    let left = leave(&bob).await;
    assert_eq!(left.reached, 0, "{left:?}");
    (alice, bob, epoch0)
}

/// A member who leaves while no other member's node is online (so nobody hears the
/// leave) is known to have left as soon as a member's node meets its node again, and the
/// room's key changes: it is not counted as a member, and sent the room's messages, for
/// ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_while_alone_is_known_to_have_left_when_met_again() {
    let (mut alice, _bob, epoch0) = bob_leaves_unheard().await;
    // Alice's node comes back and reconciles with Bob's as with a member's; his node
    // answers with his leave, and the facilitator's node changes the key.
    alice.restart().await;
    wait_for_members(&alice, &["Alice"], epoch0).await;
}

/// The same, when the other members can no longer reach the leaver's node (it came back
/// on another address): its node dials them, as it did while a member, until it has told
/// one of them, across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_nobody_heard_is_carried_to_members_who_cannot_reach_the_leaver() {
    let (mut alice, mut bob, epoch0) = bob_leaves_unheard().await;
    // Bob's node restarts on a new port: the address Alice's node has for it is dead.
    bob.node.clone().shutdown().await;
    let profile = Profile::unlock(bob.home(), PASSPHRASE).expect("unlock");
    bob.node = start_node(profile).await;
    alice.restart().await;
    wait_for_members(&alice, &["Alice"], epoch0).await;
}

/// A member who leaves while no other member's node is online still holds the room's
/// key until the others hear of it, and a member who has not heard goes on sending under
/// it. The leaver's node takes none of it: it listens on none of the room's topics, and
/// it answers a member's push with its leave and holds nothing new. (Sam, the
/// facilitator, is played by the test, so that the push of messages under the old key
/// certainly reaches Jo's node before Sam hears.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_left_unheard_takes_nothing_a_member_still_sends() {
    let (mut sam, jo) = BareFacilitator::with_member(ROOM, "Jo").await;
    sam.go_offline();
    jo.until_alone().await;
    assert_eq!(leave(&jo).await.reached, 0, "nobody heard Jo leave");

    // Sam writes twice, not knowing, and pushes both to Jo's node.
    let gossiped = "Sam: the hearing moved to Friday; the family does not know yet.";
    let pushed = "Sam: and the social worker has changed.";
    let (first, second) = (sam.seal(gossiped), sam.seal(pushed));
    let answer = sam
        .push_to(&jo, vec![first, second], |room| room.members().len() == 1)
        .await;
    assert!(answer.held.is_empty(), "Jo's node held {answer:?}");
    let history = jo.history(ROOM).await;
    for text in [gossiped, pushed] {
        assert!(
            history.iter().all(|m| m.text != text),
            "a node out of the room stored {text:?}, sent to it after it left"
        );
    }
}

/// Members take nothing from someone who has gone, so a member who leaves right after
/// writing must not leave before another member holds the message: the leave waits for
/// that (here a moment, the time it takes a member to confirm it), and the message is not
/// left unconfirmed for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_waits_until_the_leavers_last_message_is_held() {
    let alice = TestNode::start("Alice").await;
    let bob = TestNode::start("Bob").await;
    alice.form_room(ROOM, "Alice", &[(&bob, "Bob")]).await;
    let last = bob
        .send(ROOM, "Thank you all; this is my last session.")
        .await;
    let left = leave(&bob).await;
    assert_eq!(left.members, 1);
    let room = &bob.status().await.rooms[0];
    assert!(!room.member);
    assert_eq!(room.pending, 0, "left only once a member held it");
    assert!(
        alice
            .history(ROOM)
            .await
            .iter()
            .any(|m| m.message_id == last)
    );
}

/// A member whose node announces another Confer version (what a newer node sends, an
/// older one may not read) is shown as such to the others, and they to it, while
/// connected; members of the same version are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_node_runs_another_version_is_shown_as_such() {
    let sam = TestNode::start("Sam").await;
    let priya = TestNode::start("Priya").await;
    let older = NetConfig {
        protocol_version: "/confer/0.1.0",
        ..NetConfig::for_tests()
    };
    let jo = TestNode::start_with("Jo", older).await;
    sam.form_room(ROOM, "Sam", &[(&priya, "Priya"), (&jo, "Jo")])
        .await;
    let versions = |node: &TestNode| {
        let node = node.node.clone();
        async move {
            match node.request(Request::Members { room: ROOM.into() }).await {
                Reply::Members { members, .. } => members
                    .into_iter()
                    .map(|m| (m.name, m.connected, m.other_version))
                    .collect::<Vec<_>>(),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let ours = confer_node::net::CONFER_VERSION.to_owned();
    let older = || Some("/confer/0.1.0".to_owned());
    let cases = [
        (&sam, [None, None, older()]),
        (&priya, [None, None, older()]),
        (&jo, [Some(ours.clone()), Some(ours), None]),
    ];
    for (node, expected) in cases {
        within(
            "every member's node connected and its version known",
            async {
                loop {
                    let seen = versions(node).await;
                    if seen.iter().all(|(_, connected, _)| *connected)
                        && seen.iter().map(|(_, _, v)| v.clone()).eq(expected.clone())
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
    }
    // `confer status` (and `node run`) count them.
    for (node, expected) in [(&sam, 1), (&priya, 1), (&jo, 2)] {
        assert_eq!(node.status().await.other_versions, expected);
    }
    // Gone, it is not shown as running anything.
    jo.node.clone().shutdown().await;
    within("Jo's node gone", async {
        while versions(&sam).await[2].2.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(sam.status().await.other_versions, 0);
}
