//! Members who lie or make a node work: a member played by the test (a bare libp2p stack
//! holding its own copy of the room) floods a node with wants and subscriptions, tells
//! it false addresses for another member, or claims to hold messages it never received.
//! Each test asserts what the node does about it, and fails without that protection.

mod bare;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bare::{BareFacilitator, BareMember};
use confer_node::api::{Reply, Request};
use confer_node::net::NetConfig;
use confer_node::sync::{Id, SyncPush};
use confer_tests::{PASSPHRASE, TestNode, within};

const ROOM: &str = "Thursday peer group";

/// A sync round every 200 ms, so a test sees several within a second.
fn quick_rounds() -> NetConfig {
    NetConfig {
        sync_interval: Duration::from_millis(200),
        ..NetConfig::for_tests()
    }
}

fn id_of(hex_id: &str) -> Id {
    hex::decode(hex_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .expect("a message id")
}

/// Whether `node`'s message `id` is still marked as received by nobody else.
async fn pending(node: &TestNode, id: &str) -> bool {
    node.history(ROOM)
        .await
        .into_iter()
        .find(|m| m.message_id == id)
        .expect("the message is in the history")
        .pending
}

/// A member that asks for the same messages over and over (100 pushes of 2,000 ids in a
/// moment) and leaves and rejoins the room's topic 100 times gets each message once, and
/// the room's log and recent messages once, not once per ask; and the node keeps
/// answering its own person meanwhile. Before, every id asked for was read from the
/// store, decrypted and sent back at once (one 64 KiB push cost 2,000 reads), and every
/// subscription was answered with the whole log, a summary and the recent messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_wants_and_subscriptions_gets_little_and_the_node_keeps_answering() {
    let (mut sam, jo) = BareFacilitator::with_member_using(ROOM, "Jo", quick_rounds()).await;
    let said: Vec<Vec<u8>> = (0..50)
        .map(|i| sam.seal(&format!("Sam: point {i} of the agenda")))
        .collect();
    sam.push_all(&jo, said).await;
    let ids: Vec<Id> = jo
        .history(ROOM)
        .await
        .iter()
        .map(|m| id_of(&m.message_id))
        .collect();
    assert_eq!(ids.len(), 50);
    let topic = sam.subscribe_to(&jo).await;
    let peer = sam.peer_of(&jo).await;
    sam.envelopes = 0;
    sam.logs = 0;
    sam.received = 0;
    sam.answers = 0;

    // Jo's own person asks for the status all along.
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = {
        let node = jo.node.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let reply = node.request(Request::Status).await;
                assert!(matches!(reply, Reply::Status(_)), "{reply:?}");
                slowest = slowest.max(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            slowest
        })
    };

    let want: Vec<Id> = ids.iter().cycle().take(2000).copied().collect();
    let push = SyncPush {
        room: sam.room.sync_tag(),
        want,
        ..SyncPush::default()
    };
    for _ in 0..100 {
        sam.send(peer, &push);
    }
    sam.toggle(&topic, 100);
    sam.until("the 100 pushes to be answered", |sam| sam.answers >= 100)
        .await;
    // What Jo's node decided meanwhile has gone out by the time a few more of its rounds
    // have.
    sam.rounds(5, "five more of Jo's node's rounds").await;
    stop.store(true, Ordering::Relaxed);
    let slowest = slowest.await.expect("the status task");

    // Each of the 50 at most twice (asked for, and handed over as recent once), and a
    // little more on a machine so slow that the asking outlasts five seconds.
    assert!(
        sam.envelopes <= 150,
        "{} envelopes sent back to 200,000 ids asked for",
        sam.envelopes
    );
    assert!(
        sam.received <= 512 * 1024,
        "{} bytes sent back",
        sam.received
    );
    assert!(sam.logs <= 2, "the whole log {} times", sam.logs);
    assert!(
        slowest < Duration::from_secs(2),
        "a status request took {slowest:?}"
    );
}

/// Where Carol's node is, Alice's node learns from Carol's node only, and keeps up with
/// it: Mal, another member, pushing 16 addresses for Carol's node where nothing listens
/// neither fills Alice's book for Carol (which kept the first 16 it heard for good) nor
/// keeps Alice's node from using Carol's new address when it needs to dial her again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_a_member_gives_for_another_are_not_used_and_a_new_one_is() {
    let mut alice = TestNode::start("Alice").await;
    let mut carol = TestNode::start("Carol").await;
    alice.form_room(ROOM, "Alice", &[(&carol, "Carol")]).await;
    let mut mal = BareMember::join(&alice, ROOM, "Mal").await;
    let alice_peer = mal.peer_of(&alice).await;
    let carol_peer: libp2p::PeerId = carol.status().await.peer_id.parse().expect("peer id");

    // Ports where nothing listens.
    let closed: Vec<String> = (0..16)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            let port = listener.local_addr().expect("an address").port();
            format!("/ip4/127.0.0.1/tcp/{port}")
        })
        .collect();
    let push = SyncPush {
        room: mal.room.sync_tag(),
        addresses: closed
            .chunks(8)
            .map(|part| (carol_peer.to_bytes(), part.to_vec()))
            .collect(),
        ..SyncPush::default()
    };
    mal.request(alice_peer, &push).await;
    mal.go_offline();

    // Carol's node comes back on another port and reaches Alice's.
    carol.node.clone().shutdown().await;
    let profile = confer_store::Profile::unlock(carol.home(), PASSPHRASE).expect("unlock");
    carol.node = confer_tests::start_node(profile).await;
    let hello = carol.send(ROOM, "Carol, on a new port").await;
    within("Alice's node to hold Carol's message and say so", async {
        while pending(&carol, &hello).await {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;

    // Alice's node comes back on another port too: Carol's cannot know where, so only
    // Alice's can dial, and only at Carol's new address.
    alice.node.clone().shutdown().await;
    let profile = confer_store::Profile::unlock(alice.home(), PASSPHRASE).expect("unlock");
    alice.node = confer_tests::start_node(profile).await;
    let back = alice.send(ROOM, "Alice, back on a new port").await;
    within("Carol's node to hold Alice's message", async {
        while !carol
            .history(ROOM)
            .await
            .iter()
            .any(|m| m.message_id == back)
        {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

/// A member cannot make a node believe it holds one of the node's messages that it never
/// received (so that the node stops offering it, and `leave` goes ahead while nobody
/// else has it): Sam's node was away when Jo wrote, came back under a new key (so the
/// message is no longer pushed to it) and learned the message's id from Jo's answer to
/// its reconciliation; it then names the message as held in every answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_confirm_a_message_it_never_received() {
    let (mut sam, jo) = BareFacilitator::with_member_using(ROOM, "Jo", quick_rounds()).await;
    sam.go_offline();
    jo.until_alone().await;
    let id = jo.send(ROOM, "Jo: written while nobody was there").await;
    assert!(pending(&jo, &id).await);

    let rotation = sam.rotate();
    let answer = sam.push_to(&jo, vec![rotation], |_| true).await;
    assert!(
        answer.ids.contains(&id_of(&id)),
        "Sam's node learns the id from Jo's answer"
    );
    sam.claims = vec![id_of(&id)];
    sam.rounds(
        5,
        "five of Jo's node's rounds, each answered with the claim",
    )
    .await;
    assert!(
        pending(&jo, &id).await,
        "a member that never received the message confirmed it"
    );
}
