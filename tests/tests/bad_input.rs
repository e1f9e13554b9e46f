//! Bad input at the node: every refusal is one clear sentence and changes nothing, and
//! bytes from strangers on the network are dropped and counted, never a panic.

use std::time::Duration;

use confer_node::api::{Reply, Request};
use confer_node::net::{self, NetConfig};
use confer_room::InviteError;
use confer_room::invite::JoinResponse;
use confer_tests::{TestNode, within};
use rand::SeedableRng;

mod bare;
use bare::BareFacilitator;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identity};

async fn invite(node: &TestNode, room: &str, expires_in_secs: u64) -> String {
    match node
        .ok(Request::Invite {
            room: room.into(),
            expires_in_secs,
        })
        .await
    {
        Reply::Invite(info) => info.code,
        other => panic!("unexpected {other:?}"),
    }
}

async fn create(node: &TestNode, name: &str) {
    node.ok(Request::CreateRoom {
        name: name.into(),
        display_name: None,
    })
    .await;
}

async fn rooms(node: &TestNode) -> usize {
    match node.ok(Request::ListRooms).await {
        Reply::Rooms { rooms } => rooms.len(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_invites_are_refused_with_one_sentence_and_change_nothing() {
    let fac = TestNode::start("Fac").await;
    let joiner = TestNode::start("Joiner").await;
    create(&fac, "Monthly group").await;
    let code = invite(&fac, "Monthly group", 3600).await;

    let join = |code: String| Request::Join {
        code,
        display_name: Some("Jo".into()),
        wait_secs: 0,
    };
    let cases = [
        ("hello".to_string(), "not a valid invite code"),
        (
            code[..code.len() - 10].to_string(),
            "not a valid invite code",
        ),
        (
            code.replace("confer1", "confer2"),
            "not a valid invite code",
        ),
    ];
    for (bad, expected) in cases {
        let message = joiner.err(join(bad)).await;
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains('\n'), "one sentence: {message}");
    }
    // Flip one byte inside the signed body: detected as an alteration.
    let mut bytes = bs58::decode(&code[7..]).into_vec().unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let altered = format!("confer1{}", bs58::encode(bytes).into_string());
    let message = joiner.err(join(altered)).await;
    assert!(
        message.contains("altered") || message.contains("not a valid"),
        "{message}"
    );
    assert_eq!(rooms(&joiner).await, 0, "nothing changed");

    // Unknown rooms, bad text, invites by non-facilitators.
    let message = joiner
        .err(Request::Send {
            room: "No such room".into(),
            text: "x".into(),
        })
        .await;
    assert!(message.contains("no room called"), "{message}");
    let message = fac
        .err(Request::Send {
            room: "Monthly group".into(),
            text: String::new(),
        })
        .await;
    assert!(message.contains("between 1 and"), "{message}");
    let message = fac
        .err(Request::Invite {
            room: "Monthly group".into(),
            expires_in_secs: 0,
        })
        .await;
    assert!(message.contains("expiry"), "{message}");

    within("join", joiner.node.request(join(code.clone()))).await;
    let message = joiner
        .err(Request::Invite {
            room: "Monthly group".into(),
            expires_in_secs: 60,
        })
        .await;
    assert!(message.contains("only the room's facilitator"), "{message}");
    let message = joiner.err(join(code)).await;
    assert!(message.contains("already a member"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_invite_is_refused() {
    let fac = TestNode::start("Fac").await;
    let joiner = TestNode::start("Joiner").await;
    create(&fac, "Group").await;
    let code = invite(&fac, "Group", 1).await;
    // Expiry is a matter of wall-clock time: waiting for it is the test.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let message = joiner
        .err(Request::Join {
            code,
            display_name: Some("Late".into()),
            wait_secs: 0,
        })
        .await;
    assert!(message.contains("expired"), "{message}");
    assert_eq!(rooms(&joiner).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_never_exceeds_eight_members() {
    let fac = TestNode::start("Fac").await;
    create(&fac, "Eight").await;
    // Issue all invites while there is space, then redeem them all.
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(invite(&fac, "Eight", 3600).await);
    }
    let mut joiners = Vec::new();
    for (i, code) in codes.into_iter().enumerate() {
        let node = TestNode::start(&format!("Member {i}")).await;
        let reply = within(
            "join",
            node.node.request(Request::Join {
                code,
                display_name: Some(format!("M{i}")),
                wait_secs: 0,
            }),
        )
        .await;
        if i < 7 {
            assert!(matches!(reply, Reply::Room(_)), "member {i}: {reply:?}");
        } else {
            let Reply::Error { message } = reply else {
                panic!("ninth member admitted: {reply:?}")
            };
            assert!(message.contains("room is full"), "{message}");
            assert_eq!(rooms(&node).await, 0);
        }
        joiners.push(node);
    }
    match fac
        .ok(Request::Members {
            room: "Eight".into(),
        })
        .await
    {
        Reply::Members { members, .. } => assert_eq!(members.len(), 8),
        other => panic!("unexpected {other:?}"),
    }
    let message = fac
        .err(Request::Invite {
            room: "Eight".into(),
            expires_in_secs: 60,
        })
        .await;
    assert!(message.contains("room is full"), "{message}");
}

async fn dropped(node: &TestNode) -> u64 {
    match node.ok(Request::Status).await {
        Reply::Status(status) => status.dropped,
        other => panic!("unexpected {other:?}"),
    }
}

/// A stranger's key, the same for the same seed.
fn stranger_key(seed: u64) -> identity::Keypair {
    let mut secret = [0x5a; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    identity::Keypair::ed25519_from_bytes(secret).expect("any 32 bytes are a key")
}

/// A stranger's swarm: the node's own behaviours (an ordinary libp2p stack) under a
/// fresh identity, modified to take part in gossip with `member`'s node.
fn stranger_swarm(seed: u64, member: PeerId) -> Swarm<net::Behaviour> {
    let swarm = net::build_swarm(
        stranger_key(seed),
        &NetConfig::for_tests(),
        net::DialPolicy::open(),
    )
    .expect("swarm");
    swarm.behaviour().peers().recognise(member);
    swarm
}

/// What a stranger's swarm got from a member's node in one visit.
#[derive(Debug, Default)]
struct Visit {
    /// Topics the node announced to it.
    subscribed: Vec<gossipsub::TopicHash>,
    /// Gossip messages it received.
    messages: usize,
    /// What the node's identify told it.
    identified: Vec<libp2p::identify::Info>,
    /// Its sync request failed (no sync for strangers).
    sync_refused: bool,
}

/// Dials `member` at `addr`, sends garbage on the join and sync protocols once connected,
/// and records what arrives until the member's node closes the connection.
async fn visit(stranger: &mut Swarm<net::Behaviour>, member: PeerId, addr: Multiaddr) -> Visit {
    use libp2p::request_response::Event as Rr;
    let mut seen = Visit::default();
    stranger.dial(addr).expect("dial");
    loop {
        match stranger.select_next_some().await {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == member => {
                let behaviour = stranger.behaviour_mut();
                behaviour.join.send_request(&member, vec![0xFF; 100]);
                behaviour.sync.send_request(&member, vec![0x00; 50]);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if peer_id == member => return seen,
            SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(event)) => match event {
                gossipsub::Event::Subscribed { topic, .. } => seen.subscribed.push(topic),
                gossipsub::Event::Message { .. } => seen.messages += 1,
                _ => {}
            },
            SwarmEvent::Behaviour(net::BehaviourEvent::Identify(
                libp2p::identify::Event::Received { info, .. },
            )) => seen.identified.push(info),
            SwarmEvent::Behaviour(net::BehaviourEvent::Sync(Rr::OutboundFailure { .. })) => {
                seen.sync_refused = true;
            }
            _ => {}
        }
    }
}

/// Asserts that identify told a stranger nothing of Confer: no listening address, a
/// generic version and agent, and neither gossip nor sync among the protocols offered.
fn assert_identify_tells_nothing(seen: &Visit) {
    assert!(!seen.identified.is_empty(), "identify answered");
    for info in &seen.identified {
        assert!(info.listen_addrs.is_empty(), "{:?}", info.listen_addrs);
        assert!(!info.protocol_version.contains("confer"), "{info:?}");
        assert!(!info.agent_version.contains("confer"), "{info:?}");
        for protocol in &info.protocols {
            let protocol = protocol.as_ref();
            assert!(
                !protocol.contains("meshsub") && *protocol != *net::SYNC_PROTOCOL.as_ref(),
                "offered {protocol}"
            );
        }
    }
}

/// A stranger with an ordinary libp2p stack, modified to take part in gossip, connects and
/// sends garbage every way it can. It is told no topic (gossip does not run with it),
/// nothing of Confer by identify, cannot use the sync protocol, and receives none of the
/// room's messages; its join garbage is dropped and counted, nothing of it reaches the
/// store, and the node closes the connection after a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_nothing_and_its_garbage_is_dropped() {
    let member = TestNode::start("Member").await;
    create(&member, "Private").await;
    member.send("Private", "kept").await;
    let addr: Multiaddr = member.node.listen_addrs()[0].parse().unwrap();
    let member_peer: PeerId = member.node.peer_id().parse().unwrap();

    let mut stranger = stranger_swarm(1, member_peer);
    let visiting = tokio::spawn(async move { visit(&mut stranger, member_peer, addr).await });
    // The join garbage is answered and counted.
    within("the garbage to be counted", async {
        while dropped(&member).await < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The member keeps talking while the stranger is connected.
    for i in 0..5 {
        member.send("Private", &format!("private {i}")).await;
    }
    let seen = within("the node to close the stranger's connection", visiting)
        .await
        .unwrap();
    assert!(seen.subscribed.is_empty(), "told {:?}", seen.subscribed);
    assert_eq!(seen.messages, 0, "the stranger received room traffic");
    assert!(seen.sync_refused, "the stranger used the sync protocol");
    assert_identify_tells_nothing(&seen);
    assert_eq!(
        member.history("Private").await.len(),
        6,
        "nothing of the stranger's stored"
    );
}

/// A stranger connected while a member's node takes up a new key, and connected again
/// after, is told neither the old topic nor the new one: the change of key cannot be seen,
/// nor linked to the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_sees_no_topic_before_or_after_a_rotation() {
    let member = TestNode::start("Member").await;
    create(&member, "Private").await;
    let addr: Multiaddr = member.node.listen_addrs()[0].parse().unwrap();
    let member_peer: PeerId = member.node.peer_id().parse().unwrap();
    let mut stranger = stranger_swarm(2, member_peer);
    let stranger_peer = stranger.local_peer_id().to_string();

    let first = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let seen = visit(&mut stranger, member_peer, addr).await;
            (stranger, seen)
        })
    };
    within("the stranger to connect", async {
        while !member
            .status()
            .await
            .connections
            .iter()
            .any(|c| c.peer_id == stranger_peer)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    member
        .ok(Request::Rotate {
            room: "Private".into(),
        })
        .await;
    member.send("Private", "under the new key").await;
    let (mut stranger, during) = within("the node to close the first visit", first)
        .await
        .unwrap();
    let after = within(
        "the node to close the second visit",
        visit(&mut stranger, member_peer, addr),
    )
    .await;
    for seen in [&during, &after] {
        assert!(seen.subscribed.is_empty(), "told {:?}", seen.subscribed);
        assert_eq!(seen.messages, 0);
    }
}

/// Someone who asks to join too often (here under a name already taken) is told so, each
/// time, and not that the facilitator's node cannot be reached. After a few names refused
/// as taken the invite stops working, so it cannot be used to test names one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_who_asks_too_often_is_told_so_each_time() {
    let member = TestNode::start("Member").await;
    create(&member, "Private").await;
    let jo = TestNode::start("Jo").await;
    let code = member.invite("Private").await;
    let join = || Request::Join {
        code: code.clone(),
        display_name: Some("Member".into()),
        wait_secs: 0,
    };
    let taken = usize::from(confer_room::room::MAX_NAME_REFUSALS);
    for _ in 0..taken {
        let refused = jo.err(join()).await;
        assert!(refused.contains("already goes by that name"), "{refused}");
    }
    for _ in taken..5 {
        let refused = jo.err(join()).await;
        assert!(
            refused.contains("does not recognise this invite"),
            "{refused}"
        );
    }
    for _ in 0..3 {
        let refused = jo.err(join()).await;
        assert!(refused.contains("too many join requests"), "{refused}");
    }
}

/// A stranger who hammers the join protocol gets a few answers, then one saying it asks
/// too often, then none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_flooding_join_requests_is_rate_limited() {
    let member = TestNode::start("Member").await;
    create(&member, "Private").await;
    let addr: Multiaddr = member.node.listen_addrs()[0].parse().unwrap();
    let member_peer: libp2p::PeerId = member.node.peer_id().parse().unwrap();
    let mut stranger = net::build_swarm(
        identity::Keypair::generate_ed25519(),
        &NetConfig::for_tests(),
        net::DialPolicy::open(),
    )
    .unwrap();
    stranger.dial(addr).unwrap();
    // Connected first: a request to a peer it has no address for would fail to dial
    // (and the test would pass without the limit ever being met).
    within("the stranger to connect", async {
        while !matches!(
            stranger.select_next_some().await,
            SwarmEvent::ConnectionEstablished { .. }
        ) {}
    })
    .await;
    for _ in 0..20 {
        stranger
            .behaviour_mut()
            .join
            .send_request(&member_peer, vec![0xFF; 64]);
    }
    let (answers, refused) = within("every request to end", async {
        let (mut answers, mut failed) = (Vec::new(), 0);
        while answers.len() + failed < 20 {
            match stranger.select_next_some().await {
                SwarmEvent::Behaviour(net::BehaviourEvent::Join(
                    libp2p::request_response::Event::Message {
                        message: libp2p::request_response::Message::Response { response, .. },
                        ..
                    },
                )) => answers.push(JoinResponse::from_bytes(&response).expect("an answer")),
                SwarmEvent::Behaviour(net::BehaviourEvent::Join(
                    libp2p::request_response::Event::OutboundFailure { .. },
                )) => failed += 1,
                _ => {}
            }
        }
        (answers, failed)
    })
    .await;
    let too_many = JoinResponse::Refused(InviteError::TooManyRequests);
    let (told, judged): (Vec<_>, Vec<_>) = answers.iter().partition(|a| **a == too_many);
    assert!(judged.len() <= 5, "answered {} of 20", judged.len());
    assert_eq!(
        told.len(),
        1,
        "told once that it asks too often: {answers:?}"
    );
    assert!(refused >= 14, "refused {refused}");
    // The node is still fine for its member.
    member
        .ok(Request::Send {
            room: "Private".into(),
            text: "still here".into(),
        })
        .await;
}

/// Gossip is gated per room, not just per peer: Carol is a member of one of Alice's rooms
/// but not of the other. With a modified client (an ordinary libp2p stack under Carol's own
/// identity) she subscribes to every topic she hears Alice announce. She receives her own
/// room's traffic, and none of the other room's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_room_gets_nothing_of_this_one() {
    let alice = TestNode::start("Alice").await;
    let bob = TestNode::start("Bob").await;
    let carol = TestNode::start("Carol").await;
    alice
        .form_room("Carol's room", "Alice", &[(&carol, "Carol")])
        .await;
    alice
        .form_room("Bob's room", "Alice", &[(&bob, "Bob")])
        .await;
    let addr: Multiaddr = alice.node.listen_addrs()[0].parse().unwrap();

    // Carol's node steps aside; her identity comes back as a bare libp2p swarm.
    carol.node.clone().shutdown().await;
    let profile = confer_store::Profile::unlock(carol.home(), confer_tests::PASSPHRASE).unwrap();
    let mut secret = *profile.device_secret();
    let keypair = identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
    let mut carol_swarm =
        net::build_swarm(keypair, &NetConfig::for_tests(), net::DialPolicy::open()).unwrap();
    let alice_peer: PeerId = alice.node.peer_id().parse().unwrap();
    carol_swarm.behaviour().peers().recognise(alice_peer);
    carol_swarm.dial(addr).unwrap();
    let mut heard = std::collections::HashSet::new();
    within("Alice's two room topics", async {
        while heard.len() < 2 {
            if let SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { topic, .. },
            )) = carol_swarm.select_next_some().await
            {
                heard.insert(topic);
            }
        }
    })
    .await;
    for topic in &heard {
        carol_swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(topic.clone().into_string()))
            .unwrap();
    }
    let (received_tx, mut received) = tokio::sync::mpsc::channel(64);
    let driver = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                gossipsub::Event::Message { message, .. },
            )) = carol_swarm.select_next_some().await
            {
                let _ = received_tx.send(message.topic).await;
            }
        }
    });

    // Alice talks in Carol's room until Carol's swarm hears it: her subscription there
    // is accepted, so the channel works.
    let mut warm_ups = 0;
    let carols_topic = within("Carol's room traffic", async {
        loop {
            alice.send("Carol's room", "warm-up").await;
            warm_ups += 1;
            if let Ok(Some(topic)) =
                tokio::time::timeout(Duration::from_millis(200), received.recv()).await
            {
                return topic;
            }
        }
    })
    .await;
    // Then in Bob's room, then once more in Carol's: everything for Carol's swarm goes over
    // the one connection in order, so once that last message is in, anything from Bob's
    // room would have been too.
    for i in 0..5 {
        alice
            .send("Bob's room", &format!("not for Carol {i}"))
            .await;
    }
    alice.send("Carol's room", "last").await;
    let mut in_carols = 1;
    let mut elsewhere = Vec::new();
    within("the last message", async {
        while in_carols < warm_ups + 1 {
            let topic = received.recv().await.unwrap();
            if topic == carols_topic {
                in_carols += 1;
            } else {
                elsewhere.push(topic);
            }
        }
    })
    .await;
    driver.abort();
    assert!(
        elsewhere.is_empty(),
        "Carol received {} messages of Bob's room",
        elsewhere.len()
    );
}

/// A member of one of Alice's rooms, with a modified client, publishes on the topic of
/// another of Alice's rooms a genuine message of that room (one its facilitator, Sam,
/// sealed), then a message of her own room. Alice's node takes her own room's message and
/// ignores the other without opening it: gossip on a room's topic is heard only from that
/// room's members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_room_cannot_post_into_this_one() {
    let (mut sam, alice) = BareFacilitator::with_member("Sam's room", "Alice").await;
    let carol = TestNode::start("Carol").await;
    alice
        .form_room("Carol's room", "Alice", &[(&carol, "Carol")])
        .await;
    let addr: Multiaddr = alice.node.listen_addrs()[0].parse().unwrap();
    let alice_peer: PeerId = alice.node.peer_id().parse().unwrap();

    // Carol's node steps aside; her identity and her room come back in a bare swarm.
    carol.node.clone().shutdown().await;
    let profile = confer_store::Profile::unlock(carol.home(), confer_tests::PASSPHRASE).unwrap();
    let carols_room = {
        let store = confer_store::Store::open(&profile).unwrap();
        let (_, bytes) = store.rooms().unwrap().into_iter().next().unwrap();
        confer_room::Room::from_bytes(&bytes).unwrap()
    };
    let mut secret = *profile.device_secret();
    let keypair = identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
    let mut carol_swarm =
        net::build_swarm(keypair, &NetConfig::for_tests(), net::DialPolicy::open()).unwrap();
    carol_swarm.behaviour().peers().recognise(alice_peer);
    carol_swarm.dial(addr).unwrap();
    let sams_topic = IdentTopic::new(sam.room.sending_topic().unwrap());
    let carols_topic = IdentTopic::new(carols_room.sending_topic().unwrap());
    within("Alice's two room topics", async {
        let mut heard = std::collections::HashSet::new();
        while !(heard.contains(&sams_topic.hash()) && heard.contains(&carols_topic.hash())) {
            if let SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { topic, .. },
            )) = carol_swarm.select_next_some().await
            {
                heard.insert(topic);
            }
        }
    })
    .await;

    let dropped_before = dropped(&alice).await;
    let sams = sam.seal("Sam's words, carried by Carol");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (carols, _) = carols_room
        .seal_message(
            "Carol's own words",
            now,
            &mut rand::rngs::StdRng::seed_from_u64(3),
        )
        .unwrap();
    let gossip = &mut carol_swarm.behaviour_mut().gossipsub;
    gossip.publish(sams_topic, sams).unwrap();
    gossip.publish(carols_topic, carols).unwrap();
    let driver = tokio::spawn(async move {
        loop {
            carol_swarm.select_next_some().await;
        }
    });
    // Both went over one connection in order: once Carol's is in, Sam's was handled.
    within("Carol's message", async {
        while !alice
            .said("Carol's room")
            .await
            .iter()
            .any(|m| m.text == "Carol's own words")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    driver.abort();
    assert!(
        !alice
            .said("Sam's room")
            .await
            .iter()
            .any(|m| m.text == "Sam's words, carried by Carol"),
        "a member of another room posted into Sam's"
    );
    assert!(dropped(&alice).await > dropped_before, "counted as dropped");
}

/// A throwaway swarm that dials `addr` under its own key and holds whatever connection
/// it gets; reports whether it got one.
fn throwaway(
    seed: u64,
    addr: Multiaddr,
    got: tokio::sync::mpsc::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(stranger_key(seed))
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("transport")
        .with_behaviour(|_| libp2p::swarm::dummy::Behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    tokio::spawn(async move {
        swarm.dial(addr).expect("dial");
        let mut told = false;
        loop {
            let outcome = match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => true,
                SwarmEvent::OutgoingConnectionError { .. } => false,
                _ => continue,
            };
            if !std::mem::replace(&mut told, true) {
                let _ = got.send(outcome).await;
            }
        }
    })
}

/// Hundreds of throwaway identities connect to Alice's node from one host (one swarm
/// each, dialling in batches) while Bob's node is off. When Bob's node starts again, it
/// and Alice's connect and Bob's message reaches Alice: strangers can hold only a few of a
/// node's connections, and never those kept for its members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_strangers_cannot_keep_a_member_out() {
    const STRANGERS: u64 = 300;
    const BATCH: u64 = 25;
    let alice = TestNode::start("Alice").await;
    let mut bob = TestNode::start("Bob").await;
    alice.form_room("Room", "Alice", &[(&bob, "Bob")]).await;
    bob.node.clone().shutdown().await;
    alice.until_alone().await;

    let addr: Multiaddr = alice.node.listen_addrs()[0].parse().unwrap();
    let (got_tx, mut got) = tokio::sync::mpsc::channel(BATCH as usize);
    let mut crowd = Vec::new();
    let mut connected = 0;
    for batch in 0..STRANGERS / BATCH {
        for i in 0..BATCH {
            crowd.push(throwaway(
                100 + batch * BATCH + i,
                addr.clone(),
                got_tx.clone(),
            ));
        }
        for _ in 0..BATCH {
            connected += usize::from(within("a stranger's dial", got.recv()).await.unwrap());
        }
    }
    eprintln!("{connected} of {STRANGERS} strangers got a connection");

    bob.restart().await;
    bob.send("Room", "through the crowd").await;
    within("Bob's message to reach Alice", async {
        while !alice
            .said("Room")
            .await
            .iter()
            .any(|m| m.text == "through the crowd")
        {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    for stranger in crowd {
        stranger.abort();
    }
}

/// Carol, removed from Alice's room while her node (a modified client here, under her
/// own identity) is connected, is not told the room's new topic: Alice's node stops
/// taking part in gossip with her and takes up the new key's topic only once her
/// connection has closed. (Before, she had been told the old topic, as a member.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_not_told_the_new_topic() {
    let alice = TestNode::start("Alice").await;
    let bob = TestNode::start("Bob").await;
    let carol = TestNode::start("Carol").await;
    alice
        .form_room("Room", "Alice", &[(&bob, "Bob"), (&carol, "Carol")])
        .await;
    let addr: Multiaddr = alice.node.listen_addrs()[0].parse().unwrap();
    let alice_peer: PeerId = alice.node.peer_id().parse().unwrap();

    carol.node.clone().shutdown().await;
    let profile = confer_store::Profile::unlock(carol.home(), confer_tests::PASSPHRASE).unwrap();
    let mut secret = *profile.device_secret();
    let keypair = identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
    let mut carol_swarm =
        net::build_swarm(keypair, &NetConfig::for_tests(), net::DialPolicy::open()).unwrap();
    carol_swarm.behaviour().peers().recognise(alice_peer);
    carol_swarm.dial(addr).unwrap();
    let old = within("the room's topic, told to Carol as a member", async {
        loop {
            if let SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { topic, .. },
            )) = carol_swarm.select_next_some().await
            {
                return topic;
            }
        }
    })
    .await;

    let removing = tokio::spawn(async move {
        let mut told = Vec::new();
        loop {
            match carol_swarm.select_next_some().await {
                SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                    gossipsub::Event::Subscribed { topic, .. },
                )) => told.push(topic),
                SwarmEvent::ConnectionClosed {
                    peer_id,
                    num_established: 0,
                    ..
                } if peer_id == alice_peer => return told,
                _ => {}
            }
        }
    });
    alice
        .ok(Request::Remove {
            room: "Room".into(),
            member: "Carol".into(),
        })
        .await;
    let told = within("Alice's node to close Carol's connection", removing)
        .await
        .unwrap();
    assert!(
        told.iter().all(|t| *t == old),
        "Carol was told a new topic: {told:?}"
    );
    // The room did move on, and Bob is on the new topic.
    bob.send("Room", "after Carol").await;
    within("Bob's message", async {
        while !alice
            .said("Room")
            .await
            .iter()
            .any(|m| m.text == "after Carol")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
