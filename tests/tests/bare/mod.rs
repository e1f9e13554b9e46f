//! A facilitator played by the test: a bare libp2p stack (the node's own behaviours,
//! nothing of the node's logic) holding the room itself, so that a test decides exactly
//! what it does: lose answers for certain, or go on sending under a key it has not heard
//! change.
//!
//! Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use confer_node::api::{Reply, Request};
use confer_node::net::{self, NetConfig};
use confer_node::sync::{self, Id, SyncPush, SyncReply};
use confer_room::invite::{JoinBody, JoinRequest, JoinResponse};
use confer_room::{Incoming, Invite, MemberKeys, Room};
use confer_tests::{TestNode, within};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::request_response::{self, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identity};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub struct BareFacilitator {
    keypair: identity::Keypair,
    swarm: Swarm<net::Behaviour>,
    pub room: Room,
    rng: StdRng,
    now: u64,
    /// Answers never given (their channels kept, so only the connection's end ends them).
    pub lost: Vec<request_response::ResponseChannel<Vec<u8>>>,
    /// The messages Sam's node holds: id → sent at. Sam confirms one only if `proves`.
    pub held: BTreeMap<Id, u64>,
    /// What only a holder knows of each message Sam's node holds (`sync::holding_key`).
    keys: BTreeMap<Id, Id>,
    /// Answer with proofs of holding, as a node does (off: Sam confirms nothing).
    pub proves: bool,
    /// Pushes with a summary's months taken in (a node reconciling on connecting, on a
    /// subscription, or after its digest differed from Sam's).
    pub summaries: usize,
    /// Pushes with a summary's digest taken in (a node's sync rounds).
    pub digests: usize,
    /// Of the pushes with either, those that carried operations (a node's log).
    pub logs: usize,
    /// Envelopes taken in pushes, counting repeats.
    pub envelopes: usize,
    /// Take pushes but answer none (a link too slow for any answer to come back yet).
    pub withhold: bool,
    /// Messages Sam's node says it holds in every answer, held or not (a lying member).
    pub claims: Vec<Id>,
    /// Answers to Sam's own pushes received.
    pub answers: usize,
    /// Bytes of the pushes taken in.
    pub received: usize,
    /// The answers withheld, with when and the salt of their pushes, to give later
    /// ([`Self::answer_withheld`]).
    withheld: Vec<(
        std::time::Instant,
        request_response::ResponseChannel<Vec<u8>>,
        sync::Salt,
    )>,
}

fn swarm(keypair: &identity::Keypair) -> Swarm<net::Behaviour> {
    net::build_swarm(
        keypair.clone(),
        &NetConfig::for_tests(),
        net::DialPolicy::open(),
    )
    .expect("swarm")
}

impl BareFacilitator {
    /// Creates room `room` with Sam as its facilitator, listening on loopback, and an
    /// invite to it.
    pub async fn start(room: &str) -> (BareFacilitator, String) {
        let keypair = identity::Keypair::generate_ed25519();
        let peer = keypair.public().to_peer_id();
        let mut swarm = swarm(&keypair);
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("address"))
            .expect("listen");
        let address: Multiaddr = within("the facilitator to listen", async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    return address;
                }
            }
        })
        .await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        let mut rng = StdRng::seed_from_u64(4);
        let mut room = Room::create(room, "Sam", peer.to_bytes(), now, &mut rng).expect("room");
        let invite = room
            .issue_invite(
                vec![address.to_string()],
                peer.to_bytes(),
                now / 1000 + 600,
                &mut rng,
            )
            .expect("invite");
        let facilitator = BareFacilitator {
            keypair,
            swarm,
            room,
            rng,
            now,
            lost: Vec::new(),
            held: BTreeMap::new(),
            keys: BTreeMap::new(),
            proves: false,
            summaries: 0,
            digests: 0,
            logs: 0,
            envelopes: 0,
            withhold: false,
            withheld: Vec::new(),
            claims: Vec::new(),
            answers: 0,
            received: 0,
        };
        (facilitator, invite.to_code())
    }

    /// Creates room `room` and admits a real node, started for the purpose, as `name`.
    pub async fn with_member(room: &str, name: &str) -> (BareFacilitator, TestNode) {
        Self::with_member_using(room, name, NetConfig::for_tests()).await
    }

    /// [`Self::with_member`], the member's node tuned by `net`.
    pub async fn with_member_using(
        room: &str,
        name: &str,
        net: NetConfig,
    ) -> (BareFacilitator, TestNode) {
        let member = TestNode::start_with(name, net).await;
        let (mut facilitator, code) = Self::start(room).await;
        let joined = facilitator.serve(&member, &code, name, 0).await;
        assert!(matches!(joined, Reply::Room(_)), "{joined:?}");
        (facilitator, member)
    }

    /// Runs until `joiner`'s `Join` with `code` ends, and returns its reply. Join requests
    /// are admitted; the answers to the first `lose` requests are lost with their
    /// connection, the others sent.
    pub async fn serve(&mut self, joiner: &TestNode, code: &str, name: &str, lose: usize) -> Reply {
        let node = joiner.node.clone();
        let request = Request::Join {
            code: code.into(),
            display_name: Some(name.into()),
            wait_secs: 0,
        };
        let mut join = tokio::spawn(async move { node.request(request).await });
        let mut answered = 0;
        let mut joiner = None;
        let reply = within("the join to end", async {
            loop {
                let event = tokio::select! {
                    reply = &mut join => return reply.expect("join task"),
                    event = self.swarm.select_next_some() => event,
                };
                let SwarmEvent::Behaviour(net::BehaviourEvent::Join(
                    request_response::Event::Message {
                        peer: from,
                        message:
                            Message::Request {
                                request, channel, ..
                            },
                        ..
                    },
                )) = event
                else {
                    continue;
                };
                joiner = Some(from);
                let request = JoinRequest::from_bytes(&request).expect("a valid request");
                let admission = self
                    .room
                    .admit(&request, self.now, &mut self.rng)
                    .expect("admitted");
                let first = self.lost.is_empty() && answered == 0;
                assert_eq!(
                    admission.announcement.is_some(),
                    first,
                    "admitted only once"
                );
                if self.lost.len() < lose {
                    self.lost.push(channel);
                    self.swarm.disconnect_peer_id(from).expect("connected");
                } else {
                    answered += 1;
                    self.swarm
                        .behaviour_mut()
                        .join
                        .send_response(channel, admission.response.to_bytes())
                        .expect("answer sent");
                }
            }
        })
        .await;
        if let (Reply::Room(_), Some(joiner)) = (&reply, joiner) {
            self.recognise(joiner).await;
        }
        reply
    }

    /// Recognises `peer` as a member, as a node does once it has admitted it, and runs
    /// until the joiner's node has replaced the connection it joined on (on which Sam's
    /// node, having taken it for a stranger's, runs neither gossip nor sync) with a new
    /// one, and closed the first.
    async fn recognise(&mut self, peer: PeerId) {
        self.swarm.behaviour().peers().recognise(peer);
        let mut open = 1;
        within("the joiner's node to connect again", async {
            loop {
                let gossips = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .any(|(p, _)| *p == peer);
                if gossips && open == 1 {
                    return;
                }
                match self.swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished {
                        peer_id,
                        num_established,
                        ..
                    } if peer_id == peer => open = num_established.get(),
                    SwarmEvent::ConnectionClosed {
                        peer_id,
                        num_established,
                        ..
                    } if peer_id == peer => open = num_established,
                    event => {
                        self.take(event);
                    }
                }
            }
        })
        .await;
    }

    /// Takes Sam's node off the network: every connection closes and nothing listens any
    /// more. The room, the keys and the network identity are kept.
    pub fn go_offline(&mut self) {
        self.swarm = swarm(&self.keypair);
    }

    /// A message from Sam, sealed under the key Sam's room holds now.
    pub fn seal(&mut self, text: &str) -> Vec<u8> {
        self.now += 1;
        let (envelope, _) = self
            .room
            .seal_message(text, self.now, &mut self.rng)
            .expect("sealed");
        envelope
    }

    /// A message from Sam that Sam's node holds and has sent nobody; returns its id.
    pub fn hold(&mut self, text: &str) -> Id {
        self.now += 1;
        let (_, record) = self
            .room
            .seal_message(text, self.now, &mut self.rng)
            .expect("sealed");
        self.held.insert(record.id, record.sent_at);
        self.keys.insert(record.id, sync::holding_key(&record));
        record.id
    }

    /// A message from Sam dated `at` (Unix milliseconds) by Sam's clock.
    pub fn seal_at(&mut self, text: &str, at: u64) -> Vec<u8> {
        let (envelope, _) = self
            .room
            .seal_message(text, at, &mut self.rng)
            .expect("sealed");
        envelope
    }

    /// Tells the swarm where `node` listens; returns its peer id.
    async fn know(&mut self, node: &TestNode) -> PeerId {
        let status = node.status().await;
        let peer: PeerId = status.peer_id.parse().expect("peer id");
        let address: Multiaddr = status.listen[0].parse().expect("address");
        self.swarm.add_peer_address(peer, address);
        self.swarm.behaviour().peers().recognise(peer);
        peer
    }

    /// Publishes `envelope` on the topic of the key Sam's room holds now, as a member's
    /// node does, once `node` is connected and has told Sam's node it listens there.
    pub async fn publish_to(&mut self, node: &TestNode, envelope: Vec<u8>) {
        let topic = self.subscribe_to(node).await;
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, envelope)
            .expect("published");
    }

    /// Connects to `node` and listens on the topic of the key Sam's room holds now, until
    /// `node` has told Sam's node it listens there too; returns the topic.
    pub async fn subscribe_to(&mut self, node: &TestNode) -> IdentTopic {
        let peer = self.know(node).await;
        let topic = IdentTopic::new(self.room.sending_topic().expect("a key"));
        let gossip = &mut self.swarm.behaviour_mut().gossipsub;
        gossip.gate().set_topic(topic.hash(), HashSet::from([peer]));
        gossip.subscribe(&topic).expect("subscribed");
        let heard = gossip
            .all_peers()
            .any(|(p, topics)| *p == peer && topics.contains(&&topic.hash()));
        if heard {
            return topic;
        }
        if !self.swarm.is_connected(&peer) {
            self.swarm.dial(peer).expect("dial");
        }
        within("the node to listen on the room's topic", async {
            loop {
                let event = self.swarm.select_next_some().await;
                if let SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(
                    gossipsub::Event::Subscribed { peer_id, topic: t },
                )) = &event
                    && *peer_id == peer
                    && *t == topic.hash()
                {
                    return;
                }
                self.take(event);
            }
        })
        .await;
        topic
    }

    /// Runs Sam's node, taking in what is pushed to it, until `done` holds.
    pub async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        within(what, async {
            while !done(self) {
                let event = self.swarm.select_next_some().await;
                self.take(event);
            }
        })
        .await;
    }

    /// Counts Jo's node's sync rounds afresh and runs until `n` more have come.
    pub async fn rounds(&mut self, n: usize, what: &str) {
        self.digests = 0;
        self.until(what, |sam| sam.digests >= n).await;
    }

    /// Gives every answer withheld so far: those withheld for at least `late` prove
    /// holding every message Sam's node holds (so confirming them), the others nothing.
    /// Answers on time from now on.
    pub fn answer_withheld(&mut self, late: std::time::Duration) {
        self.withhold = false;
        let nothing = confer_room::wire::encode(&SyncReply::default()).expect("encoded");
        for (at, channel, salt) in std::mem::take(&mut self.withheld) {
            let answer = if at.elapsed() >= late {
                let confirming = SyncReply {
                    held: self.proofs(self.held.keys().copied(), &salt),
                    ..SyncReply::default()
                };
                confer_room::wire::encode(&confirming).expect("encoded")
            } else {
                nothing.clone()
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, answer);
        }
    }

    /// A new key, as the facilitator's node makes when someone leaves: the operation to
    /// send the others.
    pub fn rotate(&mut self) -> Vec<u8> {
        self.now += 1;
        self.room.rotate(self.now, &mut self.rng).expect("rotated")
    }

    /// Asks `node` for message `id` (hex), as a member who lacks it does, and runs until
    /// it has it.
    pub async fn fetch(&mut self, node: &TestNode, id: &str) {
        let peer = self.know(node).await;
        let id: Id = hex::decode(id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .expect("a message id");
        let push = SyncPush {
            room: self.room.sync_tag(),
            want: vec![id],
            ..SyncPush::default()
        };
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, confer_room::wire::encode(&push).expect("encoded"));
        within("the message asked for", async {
            while !self.held.contains_key(&id) {
                let event = self.swarm.select_next_some().await;
                self.take(event);
            }
        })
        .await;
    }

    /// Connects to `node` and reconciles with it as a member does: pushes `envelopes`
    /// with the months of what Sam's node holds, and then the days of the months `node`
    /// says differ. Runs until `node` has answered those pushes and until `done(&room)`
    /// holds for Sam's room, taking what `node` pushes in the meantime. Returns the first
    /// answer, with the ids of the second.
    pub async fn push_to(
        &mut self,
        node: &TestNode,
        envelopes: Vec<Vec<u8>>,
        done: impl Fn(&Room) -> bool,
    ) -> SyncReply {
        let peer = self.know(node).await;
        let salt = [7; 16];
        let days = sync::days(&self.held, &salt);
        let push = SyncPush {
            room: self.room.sync_tag(),
            envelopes,
            summary: sync::parts(sync::Level::Months, &sync::months(&days)),
            salt,
            ..SyncPush::default()
        };
        let first = self.request_until(peer, &push, &done).await;
        if first.months.is_empty() {
            return first;
        }
        let push = SyncPush {
            room: self.room.sync_tag(),
            summary: sync::day_parts(&days, &first.months),
            salt,
            ..SyncPush::default()
        };
        let second = self.request_until(peer, &push, &done).await;
        SyncReply {
            ids: second.ids,
            ..first
        }
    }

    /// Sends `push` to `peer` and runs until it is answered and `done(&room)` holds for
    /// Sam's room, taking what the node pushes in the meantime; returns the answer.
    async fn request_until(
        &mut self,
        peer: PeerId,
        push: &SyncPush,
        done: &impl Fn(&Room) -> bool,
    ) -> SyncReply {
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, confer_room::wire::encode(push).expect("encoded"));
        let mut answer = None;
        within("the push to be answered", async {
            loop {
                if answer.is_some() && done(&self.room) {
                    return answer.take().expect("answered");
                }
                let event = self.swarm.select_next_some().await;
                if let Some(reply) = self.take(event) {
                    answer = Some(reply);
                }
            }
        })
        .await
    }

    /// Proofs of holding those of `ids` Sam's node holds, under `salt`.
    fn proofs(&self, ids: impl IntoIterator<Item = Id>, salt: &sync::Salt) -> Vec<(Id, Id)> {
        ids.into_iter()
            .filter_map(|id| Some((id, sync::proof(salt, self.keys.get(&id)?))))
            .collect()
    }

    /// Takes in what a node pushes (operations, which Sam's room merges, and messages,
    /// which Sam's node holds) and answers it, listing no ids and confirming nothing
    /// (unless it `proves`, or `claims` to hold what it may not), but saying whether a
    /// digest differs from Sam's; returns the answer to one of Sam's own pushes.
    fn take(&mut self, event: SwarmEvent<net::BehaviourEvent>) -> Option<SyncReply> {
        let SwarmEvent::Behaviour(net::BehaviourEvent::Sync(request_response::Event::Message {
            message,
            ..
        })) = event
        else {
            return None;
        };
        match message {
            Message::Response { response, .. } => {
                self.answers += 1;
                Some(
                    confer_room::wire::decode(&response, net::MAX_RESPONSE).expect("a valid reply"),
                )
            }
            Message::Request {
                request, channel, ..
            } => {
                self.received += request.len();
                let push: SyncPush =
                    confer_room::wire::decode(&request, net::MAX_REQUEST).expect("a valid push");
                self.now += 1;
                self.summaries +=
                    usize::from(push.summary.iter().any(|p| p.level == sync::Level::Months));
                self.digests += usize::from(push.digest.is_some());
                self.logs += usize::from(push.reconciles() && !push.ops.is_empty());
                self.room.merge_ops(push.ops, self.now);
                self.envelopes += push.envelopes.len();
                let mut opened = Vec::new();
                for envelope in push.envelopes {
                    if let Ok(Incoming::Message(m)) = self.room.open(&envelope, self.now) {
                        self.held.insert(m.id, m.sent_at);
                        self.keys.insert(m.id, sync::holding_key(&m));
                        opened.push(m.id);
                    }
                }
                let mine = sync::summary_digest(&sync::months(&sync::days(&self.held, &push.salt)));
                let mut held: Vec<(Id, Id)> = self.claims.iter().map(|id| (*id, [0; 32])).collect();
                if self.proves {
                    held.extend(self.proofs(opened.into_iter().chain(push.prove), &push.salt));
                }
                let answer = SyncReply {
                    differs: push.digest.filter(|d| *d != mine).map(|_| push.room),
                    held,
                    ..SyncReply::default()
                };
                if self.withhold {
                    self.withheld
                        .push((std::time::Instant::now(), channel, push.salt));
                    return None;
                }
                let reply = confer_room::wire::encode(&answer).expect("encoded");
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, reply);
                None
            }
        }
    }
}

/// A member played by the test: the same bare stack, in a room a real node created.
pub type BareMember = BareFacilitator;

impl BareFacilitator {
    /// Joins room `room` of `facilitator`'s node through an invite it issues, as `name`:
    /// a member played by the test, which does only what the test makes it do.
    pub async fn join(facilitator: &TestNode, room: &str, name: &str) -> BareMember {
        let code = facilitator.invite(room).await;
        let invite = Invite::from_code(&code).expect("an invite");
        let keypair = identity::Keypair::generate_ed25519();
        let peer = keypair.public().to_peer_id();
        let mut swarm = swarm(&keypair);
        let mut rng = StdRng::seed_from_u64(5);
        let keys = MemberKeys::generate(&mut rng);
        let body = JoinBody {
            room_id: invite.body.room_id,
            invite_id: invite.body.invite_id,
            secret: invite.body.secret.clone(),
            member: keys.public(),
            display_name: name.into(),
            peer: peer.to_bytes(),
        };
        let request = JoinRequest::new(body, &keys).expect("a join request");
        let host = PeerId::from_bytes(&invite.body.facilitator_peer).expect("a peer id");
        for address in &invite.body.addresses {
            swarm.add_peer_address(host, address.parse().expect("an address"));
        }
        swarm
            .behaviour_mut()
            .join
            .send_request(&host, request.to_bytes());
        let response = within("the welcome", async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(net::BehaviourEvent::Join(
                        request_response::Event::Message {
                            message: Message::Response { response, .. },
                            ..
                        },
                    )) => return response,
                    SwarmEvent::Behaviour(net::BehaviourEvent::Join(
                        request_response::Event::OutboundFailure { error, .. },
                    )) => panic!("the join failed: {error}"),
                    _ => {}
                }
            }
        })
        .await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        let JoinResponse::Welcome(sealed) = JoinResponse::from_bytes(&response).expect("decodes")
        else {
            panic!("refused")
        };
        let room = Room::from_welcome(&invite, keys, &sealed, now).expect("the welcome opens");
        // The facilitator's node took the connection the join came on for a stranger's,
        // on which it runs neither gossip nor sync: close it, as a joiner's node does, so
        // that the next connection is a member's.
        swarm.behaviour().peers().recognise(host);
        if swarm.disconnect_peer_id(host).is_ok() {
            within("the join's connection to close", async {
                loop {
                    if let SwarmEvent::ConnectionClosed {
                        peer_id,
                        num_established: 0,
                        ..
                    } = swarm.select_next_some().await
                        && peer_id == host
                    {
                        return;
                    }
                }
            })
            .await;
        }
        BareFacilitator {
            keypair,
            swarm,
            room,
            rng,
            now,
            lost: Vec::new(),
            held: BTreeMap::new(),
            keys: BTreeMap::new(),
            proves: false,
            summaries: 0,
            digests: 0,
            logs: 0,
            envelopes: 0,
            withhold: false,
            withheld: Vec::new(),
            claims: Vec::new(),
            answers: 0,
            received: 0,
        }
    }

    /// Pushes `envelopes` to `node` in pushes that fit the sync protocol's limit, one
    /// after the other, each answered before the next is sent.
    pub async fn push_all(&mut self, node: &TestNode, envelopes: Vec<Vec<u8>>) {
        let peer = self.know(node).await;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        let mut batches = Vec::new();
        for envelope in envelopes {
            if size + envelope.len() + 16 > net::MAX_REQUEST - 4096 {
                batches.push(std::mem::take(&mut batch));
                size = 0;
            }
            size += envelope.len() + 16;
            batch.push(envelope);
        }
        batches.push(batch);
        for envelopes in batches {
            let push = SyncPush {
                room: self.room.sync_tag(),
                envelopes,
                ..SyncPush::default()
            };
            self.request(peer, &push).await;
        }
    }

    /// Sends `push` to `peer` and runs until it is answered, taking in what is pushed
    /// meanwhile; returns the answer.
    pub async fn request(&mut self, peer: PeerId, push: &SyncPush) -> SyncReply {
        if !self.swarm.is_connected(&peer) {
            self.swarm.dial(peer).expect("dial");
        }
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, confer_room::wire::encode(push).expect("encoded"));
        within("the push to be answered", async {
            loop {
                let event = self.swarm.select_next_some().await;
                if let Some(reply) = self.take(event) {
                    return reply;
                }
            }
        })
        .await
    }

    /// Where `node` listens, known to the swarm; its peer id.
    pub async fn peer_of(&mut self, node: &TestNode) -> PeerId {
        self.know(node).await
    }

    /// Sends `push` to `peer` without waiting for the answer.
    pub fn send(&mut self, peer: PeerId, push: &SyncPush) {
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, confer_room::wire::encode(push).expect("encoded"));
    }

    /// Leaves `topic` and listens on it again, `times` times: each time, every connected
    /// node hears of a new subscription.
    pub fn toggle(&mut self, topic: &IdentTopic, times: usize) {
        let gossip = &mut self.swarm.behaviour_mut().gossipsub;
        for _ in 0..times {
            gossip.unsubscribe(topic);
            gossip.subscribe(topic).expect("subscribed");
        }
    }
}
