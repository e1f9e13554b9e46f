//! Reaching members through a relay, and relay-only mode: real nodes and a real relay
//! (circuit relay v2) on loopback, with real profiles and stores.
//!
//! The property under test is the privacy setting of issue 4: a member in relay-only mode
//! never connects directly to another member, so no member learns its IP address, while
//! the room works as usual. Across real network boundaries (namespaces, NAT) the same is
//! exercised by `cli/tests/netns.rs`.

use std::time::Duration;

use confer_node::api::{Reply, Request, StatusInfo};
use confer_node::settings::Settings;
use confer_store::Profile;
use confer_tests::{PASSPHRASE, TestNode, start_relay, within};

const ROOM: &str = "Supervision";

/// Polls until `check` holds for the node's status.
async fn until_status(node: &TestNode, what: &str, check: impl Fn(&StatusInfo) -> bool) {
    within(what, async {
        loop {
            if check(&node.status().await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

/// Polls until the node holds a message with this text.
async fn until_said(node: &TestNode, text: &str) {
    within(text, async {
        loop {
            if node.said(ROOM).await.iter().any(|m| m.text == text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

/// The node's connections to `peer`: (how many, how many through a relay).
fn connections_to(status: &StatusInfo, peer: &str) -> (usize, usize) {
    let to_peer: Vec<_> = status
        .connections
        .iter()
        .filter(|c| c.peer_id == peer)
        .collect();
    (to_peer.len(), to_peer.iter().filter(|c| c.relayed).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_member_talks_through_the_relay_and_no_member_learns_its_address() {
    let relay = start_relay().await;
    let relay_addr = relay.addresses()[0].to_string();
    let relay_id = relay.peer_id().to_string();

    // Alice reserves on the relay; her invites then lead with her relayed address.
    let alice = TestNode::start_reaching("Alice", false, std::slice::from_ref(&relay_addr)).await;
    let status = alice.status().await;
    assert!(
        status.relays.iter().all(|r| r.reserved) && status.relays.len() == 1,
        "{status:?}"
    );
    assert!(
        status.listen.iter().any(|a| a.contains("/p2p-circuit")),
        "{status:?}"
    );

    // Bob is relay-only and knows no relay yet: he learns Alice's from her invite.
    let bob = TestNode::start_reaching("Bob", true, &[]).await;
    assert!(bob.status().await.listen.is_empty());
    // Carol is an ordinary member without a relay.
    let carol = TestNode::start_reaching("Carol", false, &[]).await;

    alice
        .ok(Request::CreateRoom {
            name: ROOM.into(),
            display_name: Some("Alice".into()),
        })
        .await;
    let code = alice.invite(ROOM).await;
    let addresses = confer_room_addresses(&code);
    assert!(
        addresses[0].contains("/p2p-circuit") && addresses[0].starts_with(&relay_addr),
        "the invite should lead with the relayed address: {addresses:?}"
    );
    let joined = within(
        "Bob's join",
        bob.node.request(Request::Join {
            code,
            display_name: Some("Bob".into()),
            wait_secs: 0,
        }),
    )
    .await;
    assert!(matches!(joined, Reply::Room(_)), "{joined:?}");
    alice.form_more(ROOM, &[(&carol, "Carol")]).await;

    // Bob now holds a reservation on the relay he learned, and listens only through it.
    until_status(&bob, "Bob's reservation", |s| {
        s.relays.len() == 1 && s.relays[0].reserved && s.relays[0].address == relay_addr
    })
    .await;

    // The room works in every direction.
    bob.send(ROOM, "From Bob, through the relay").await;
    alice.send(ROOM, "From Alice").await;
    carol.send(ROOM, "From Carol").await;
    for node in [&alice, &bob, &carol] {
        for text in ["From Bob, through the relay", "From Alice", "From Carol"] {
            until_said(node, text).await;
        }
    }

    // Nobody is connected to Bob except through the relay; Bob is connected directly
    // to nobody but the relay; everything Bob listens on is relayed.
    let bob_id = bob.node.peer_id();
    until_status(&carol, "Carol's connection to Bob", |s| {
        connections_to(s, &bob_id).0 > 0
    })
    .await;
    for (name, node) in [("Alice", &alice), ("Carol", &carol)] {
        let status = node.status().await;
        let (all, relayed) = connections_to(&status, &bob_id);
        assert!(all > 0, "{name} should be connected to Bob: {status:?}");
        assert_eq!(all, relayed, "{name} connected to Bob directly: {status:?}");
    }
    let status = bob.status().await;
    for c in &status.connections {
        assert!(
            c.relayed || c.peer_id == relay_id,
            "Bob connected directly to {}: {status:?}",
            c.peer_id
        );
    }
    assert!(
        status.listen.iter().all(|a| a.contains("/p2p-circuit")),
        "{status:?}"
    );
    assert_eq!(status.nat, "unknown", "a relay-only node does not probe");

    // AutoNAT: the relay dialled Alice back at the address it saw her at, and reached
    // her (the cross-network test checks the opposite, members behind NAT).
    until_status(&alice, "AutoNAT to find Alice reachable", |s| {
        s.nat == "public"
    })
    .await;

    // Bob keeps the relay for the next start.
    let home = bob.home.path().to_path_buf();
    bob.node.clone().shutdown().await;
    let profile = Profile::unlock(&home, PASSPHRASE).expect("unlock");
    let settings = Settings::load(&profile).expect("settings");
    assert!(settings.relay_only);
    assert_eq!(settings.relays, vec![relay_addr]);
    drop(bob);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_member_refuses_an_invite_it_could_only_use_directly() {
    let alice = TestNode::start_reaching("Alice", false, &[]).await;
    let bob = TestNode::start_reaching("Bob", true, &[]).await;
    alice
        .ok(Request::CreateRoom {
            name: ROOM.into(),
            display_name: None,
        })
        .await;
    let code = alice.invite(ROOM).await;
    let message = bob
        .err(Request::Join {
            code,
            display_name: Some("Bob".into()),
            wait_secs: 0,
        })
        .await;
    assert!(message.contains("relay-only"), "{message}");
    // Bob never even tried: Alice has seen no connection from him.
    let status = alice.status().await;
    assert_eq!(connections_to(&status, &bob.node.peer_id()), (0, 0));
    assert!(bob.status().await.connections.is_empty());
}

/// The addresses an invite code carries.
fn confer_room_addresses(code: &str) -> Vec<String> {
    confer_room::Invite::from_code(code)
        .expect("invite decodes")
        .body
        .addresses
}

/// A relay given for one run (`--relay`) stays out of the profile's settings, while a
/// relay learned from an invite is kept for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_relays_learned_from_invites_are_kept_in_the_settings() {
    let (relay_a, relay_b) = (start_relay().await, start_relay().await);
    let addr_a = relay_a.addresses()[0].to_string();
    let addr_b = relay_b.addresses()[0].to_string();
    let alice = TestNode::start_reaching("Alice", false, std::slice::from_ref(&addr_a)).await;
    let dave = TestNode::start_reaching("Dave", false, std::slice::from_ref(&addr_b)).await;
    alice
        .ok(Request::CreateRoom {
            name: ROOM.into(),
            display_name: None,
        })
        .await;
    alice.form_more(ROOM, &[(&dave, "Dave")]).await;
    until_status(&dave, "Dave's two reservations", |s| {
        s.relays.len() == 2 && s.relays.iter().all(|r| r.reserved)
    })
    .await;

    let home = dave.home.path().to_path_buf();
    dave.node.clone().shutdown().await;
    let profile = Profile::unlock(&home, PASSPHRASE).expect("unlock");
    let settings = Settings::load(&profile).expect("settings");
    assert_eq!(settings.relays, vec![addr_a]);
    drop(dave);
    relay_a.shutdown().await;
    relay_b.shutdown().await;
}

/// A relay-only member given a forged invite (anyone can make one) that names a relay and
/// a facilitator who never answers uses that relay for the attempt only: afterwards its
/// node holds no reservation there and its settings (`confer config show`) name no relay.
/// A relay kept would learn for good when, and from where, the member's node is online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_invite_leaves_no_relay_behind() {
    use rand::SeedableRng;
    let relay = start_relay().await;
    let relay_addr = relay.addresses()[0].to_string();
    let bob = TestNode::start_reaching("Bob", true, &[]).await;

    // A room nobody runs, and an invite to it from a facilitator whose node never
    // reserved a slot on the relay.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let facilitator = libp2p::identity::Keypair::ed25519_from_bytes([0x46; 32])
        .expect("a key")
        .public()
        .to_peer_id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let mut room =
        confer_room::Room::create("Forged", "Mallory", facilitator.to_bytes(), now, &mut rng)
            .expect("room");
    let code = room
        .issue_invite(
            vec![format!("{relay_addr}/p2p-circuit/p2p/{facilitator}")],
            facilitator.to_bytes(),
            now / 1000 + 600,
            &mut rng,
        )
        .expect("invite")
        .to_code();

    let message = bob
        .err(Request::Join {
            code,
            display_name: Some("Bob".into()),
            wait_secs: 0,
        })
        .await;
    assert!(message.contains("could not reach"), "{message}");
    assert!(
        bob.status().await.relays.is_empty(),
        "the invite's relay is still in use"
    );

    let home = bob.home.path().to_path_buf();
    bob.node.clone().shutdown().await;
    let profile = Profile::unlock(&home, PASSPHRASE).expect("unlock");
    let settings = Settings::load(&profile).expect("settings");
    assert!(settings.relays.is_empty(), "{:?}", settings.relays);
    drop(bob);
    relay.shutdown().await;
}
