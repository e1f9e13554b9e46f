//! Catch-up without a server: a member who was offline while others talked gets every
//! message when it comes back, from whichever member is online, even if the author is not;
//! and a message sent while nobody else is online stays pending until a member holds it.

use std::time::Duration;

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
