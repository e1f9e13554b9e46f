//! Joining a room: the joiner's side (redeeming an invite, retrying, waiting for the
//! facilitator's node) and the facilitator's (admitting, answering join requests).

use super::*;

pub(super) struct PendingJoin {
    pub(super) invite: Invite,
    pub(super) keys: MemberKeys,
    pub(super) reply: oneshot::Sender<Reply>,
    /// The request as sent: asked again, unchanged, when the connection fails before the
    /// answer (see [`JOIN_ATTEMPTS`]).
    pub(super) request: Vec<u8>,
    /// Times sent so far.
    pub(super) attempts: u32,
    /// Whether the facilitator may have admitted these keys already: an earlier attempt
    /// failed after it was sent, or the keys are those of such a join ([`DOUBTFUL_JOIN`]).
    pub(super) perhaps_admitted: bool,
    /// Until when to keep trying while the facilitator's node cannot be reached
    /// (`confer join --wait`); `None`: answer at once.
    pub(super) wait_until: Option<Instant>,
    /// How long until the next try, if this one cannot reach the facilitator either.
    pub(super) retry_in: Duration,
    /// The relays of the invite's addresses this node did not use before: used for this
    /// join only, and kept in the profile's settings once a welcome has been verified
    /// (anyone can make an invite, and a relay kept would learn where and when this node
    /// is online for good).
    pub(super) relays: Vec<Multiaddr>,
}

/// The first pause before trying again to reach a facilitator's node that could not be
/// reached (`confer join --wait`); it doubles after each try, up to [`JOIN_RETRY_MAX`].
const JOIN_RETRY_FIRST: Duration = Duration::from_secs(2);

/// The longest pause between tries to reach a facilitator's node.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(60);

/// How many times a join request is sent before giving up, when the connection to the
/// facilitator fails before its answer arrives. Asking again is safe: the facilitator
/// answers a request it has already admitted with the welcome again (`Room::admit`).
const JOIN_ATTEMPTS: u32 = 3;

/// How long a node refuses, itself, to ask a facilitator's node that said it had too many
/// join requests from it: that node answers so only once in a while, then not at all, and
/// "could not reach the facilitator" would be the wrong thing to tell the person.
const JOIN_PAUSE: Duration = Duration::from_secs(60);

/// Most joiners remembered as answered (see `EventLoop::answered`); past that, a joiner
/// may be reconnected before it has read its answer, and asks again.
const MAX_ANSWERED: usize = 1024;

/// Largest [`DOUBTFUL_JOIN`] record read back (an invite id and two 32-byte secrets).
const MAX_DOUBTFUL_JOIN: usize = 1024;

impl EventLoop {
    pub(super) fn start_join(
        &mut self,
        code: &str,
        display_name: &str,
        wait: Duration,
        reply: oneshot::Sender<Reply>,
    ) -> Result<(), String> {
        let refuse = |reply: oneshot::Sender<Reply>, message: String| {
            let _ = reply.send(error(&message));
            Err(message)
        };
        let invite = match Invite::from_code(code) {
            Ok(invite) => invite,
            Err(e) => return refuse(reply, e.to_string()),
        };
        if let Err(e) = invite.check_expiry(now_ms() / 1000) {
            return refuse(reply, e.to_string());
        }
        if self
            .joins_refused_for_rate
            .get(&invite.body.facilitator_peer)
            .is_some_and(|at| at.elapsed() < JOIN_PAUSE)
        {
            return refuse(reply, InviteError::TooManyRequests.to_string());
        }
        if let Err(e) = confer_room::invite::check_display_name(display_name) {
            return refuse(reply, format!("display name: {e}"));
        }
        // A room this profile left (or was removed from) may be joined again with a new
        // invite, under a new identity; its history stays readable.
        if self
            .rooms
            .get(&invite.body.room_id)
            .is_some_and(Room::is_member)
        {
            return refuse(reply, "you are already a member of this room".into());
        }
        let Ok(peer) = PeerId::from_bytes(&invite.body.facilitator_peer) else {
            return refuse(reply, InviteError::Malformed.to_string());
        };
        if peer == *self.swarm.local_peer_id() {
            return refuse(
                reply,
                "this invite was issued by this node; give it to the person joining".into(),
            );
        }
        let usable = self.usable_addresses(&invite);
        if usable.is_empty() {
            let message = if invite.body.addresses.is_empty() || !self.reach.relay_only() {
                "the invite lists no address at which the facilitator can be reached"
            } else {
                "this profile is in relay-only mode and the invite lists no relayed address for the facilitator: ask them to run their node with a relay (`confer node run --relay …`)"
            };
            return refuse(reply, message.into());
        }
        for addr in &usable {
            self.swarm.add_peer_address(peer, addr.clone());
        }
        // The facilitator we are joining counts as a member here (see `known_peer`).
        if self
            .addresses
            .learn(peer, true, usable.iter().cloned(), Instant::now())
        {
            self.addresses_dirty = true;
        }
        let doubtful = self.doubtful_join(&invite);
        let perhaps_admitted = doubtful.is_some();
        let keys = doubtful.unwrap_or_else(|| MemberKeys::generate(&mut rng()));
        let body = JoinBody {
            room_id: invite.body.room_id,
            invite_id: invite.body.invite_id,
            secret: invite.body.secret.clone(),
            member: keys.public(),
            display_name: display_name.to_owned(),
            peer: self.swarm.local_peer_id().to_bytes(),
        };
        let request = match JoinRequest::new(body, &keys) {
            Ok(request) => request,
            Err(e) => return refuse(reply, e.to_string()),
        };
        // The facilitator's relays are used to reach it, and if it lets us in they become
        // ours: we stay reachable to the room through them, which a relay-only member needs.
        let mut relays = Vec::new();
        for relay in self.reach.new_relays(&usable) {
            if self.reach.add_relay(relay.clone()) {
                relays.push(relay);
            }
        }
        self.send_join(
            peer,
            PendingJoin {
                invite,
                keys,
                reply,
                request: request.to_bytes(),
                attempts: 0,
                perhaps_admitted,
                wait_until: (!wait.is_zero()).then(|| Instant::now() + wait),
                retry_in: JOIN_RETRY_FIRST,
                relays,
            },
        );
        Ok(())
    }

    /// A join that ended: its relays are kept in the settings if it let us in, otherwise
    /// no longer used (unless another join in progress uses them).
    fn join_ended(&mut self, relays: Vec<Multiaddr>, joined: bool) {
        for relay in relays {
            if joined {
                self.keep_relay(&relay);
                continue;
            }
            let wanted = self
                .pending_joins
                .values()
                .chain(self.joins_waiting.iter().map(|(_, _, p)| p))
                .any(|p| p.relays.contains(&relay));
            if !wanted && self.reach.drop_relay(&mut self.swarm, &relay) {
                tracing::debug!("no longer using the relay of an invite that let nobody in");
            }
        }
        self.recognise_peers();
    }

    pub(super) fn send_join(&mut self, facilitator: PeerId, mut pending: PendingJoin) {
        pending.attempts += 1;
        let id = self
            .swarm
            .behaviour_mut()
            .join
            .send_request(&facilitator, pending.request.clone());
        self.pending_joins.insert(id, pending);
        self.recognise_peers();
    }

    /// A join request that got no answer: sent again if the connection failed while the
    /// request was out (the facilitator may have admitted us and its answer been lost),
    /// a few times; otherwise the joiner is told.
    pub(super) fn join_failed(
        &mut self,
        facilitator: PeerId,
        mut pending: PendingJoin,
        failure: OutboundFailure,
    ) {
        let cut_off = matches!(
            failure,
            OutboundFailure::ConnectionClosed | OutboundFailure::Io(_)
        );
        pending.perhaps_admitted |= cut_off || matches!(failure, OutboundFailure::Timeout);
        if cut_off && pending.attempts < JOIN_ATTEMPTS {
            tracing::debug!("asking the facilitator again after {failure}");
            return self.send_join(facilitator, pending);
        }
        let unreachable = matches!(failure, OutboundFailure::DialFailure);
        let next = Instant::now() + pending.retry_in;
        if unreachable && pending.wait_until.is_some_and(|until| next < until) {
            tracing::debug!("the facilitator's node cannot be reached; trying again later");
            pending.retry_in = (pending.retry_in * 2).min(JOIN_RETRY_MAX);
            pending.attempts = 0;
            self.joins_waiting.push((next, facilitator, pending));
            return;
        }
        let waited = pending.wait_until.is_some();
        let PendingJoin {
            invite,
            keys,
            reply,
            perhaps_admitted,
            relays,
            ..
        } = pending;
        if perhaps_admitted {
            self.keep_doubtful_join(&invite, &keys);
        }
        self.join_ended(relays, false);
        let message = if matches!(failure, OutboundFailure::UnsupportedProtocols) {
            "the facilitator's node does not speak this version's join protocol; make sure you both run the same version of Confer".to_owned()
        } else if unreachable {
            let advice = if waited {
                "check that it is running and reachable, then run the same command again"
            } else {
                "check that it is running and reachable, then run the same command again, or add --wait (e.g. --wait 12h) to keep trying until it is"
            };
            format!("could not reach the facilitator's node ({failure}); {advice}")
        } else {
            // Reached, but no answer: the connection was cut, the node stopped meanwhile,
            // or it declines to answer this computer for a while after many requests.
            format!(
                "the facilitator's node was reached but its answer never came ({failure}); run the same command again in a minute (if it admitted you, you are let in then)"
            )
        };
        let _ = reply.send(error(message));
    }

    /// Tries again the joins waiting for the facilitator's node whose pause is over;
    /// forgets those whose asker has gone (Ctrl-C) and those whose invite has expired.
    pub(super) fn retry_waiting_joins(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.joins_waiting)
            .into_iter()
            .partition(|(at, _, pending)| *at <= now || pending.reply.is_closed());
        self.joins_waiting = later;
        for (_, facilitator, pending) in due {
            let expired = pending.invite.check_expiry(now_ms() / 1000);
            if pending.reply.is_closed() || expired.is_err() {
                if pending.perhaps_admitted {
                    self.keep_doubtful_join(&pending.invite, &pending.keys);
                }
                if expired.is_err() {
                    let _ = pending.reply.send(error(
                        "the facilitator's node could not be reached before the invite expired; ask the facilitator for a new one",
                    ));
                }
                self.join_ended(pending.relays, false);
                continue;
            }
            // A failed dial makes libp2p forget the addresses it tried: give them again.
            for addr in self.usable_addresses(&pending.invite) {
                self.swarm.add_peer_address(facilitator, addr);
            }
            self.send_join(facilitator, pending);
        }
    }

    /// The invite's addresses for the facilitator's node that this node may dial (in
    /// relay-only mode, relayed ones only).
    pub(super) fn usable_addresses(&self, invite: &Invite) -> Vec<Multiaddr> {
        invite
            .body
            .addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .filter(|a| self.reach.usable(a))
            .collect()
    }

    /// The keys kept for a join with `invite` that may have been admitted
    /// ([`DOUBTFUL_JOIN`]).
    pub(super) fn doubtful_join(&self, invite: &Invite) -> Option<MemberKeys> {
        let bytes = zeroize::Zeroizing::new(
            self.store
                .room_state(&invite.body.room_id.0, DOUBTFUL_JOIN)
                .ok()??,
        );
        let (id, keys): (InviteId, MemberKeys) =
            confer_room::wire::decode(&bytes, MAX_DOUBTFUL_JOIN).ok()?;
        (id == invite.body.invite_id).then_some(keys)
    }

    pub(super) fn keep_doubtful_join(&self, invite: &Invite, keys: &MemberKeys) {
        let kept = confer_room::wire::encode(&(invite.body.invite_id, keys))
            .map(zeroize::Zeroizing::new)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                self.store
                    .put_room_state(&invite.body.room_id.0, DOUBTFUL_JOIN, &bytes)
                    .and_then(|()| self.store.flush())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = kept {
            tracing::warn!("could not keep the keys of a join that may have succeeded: {e}");
        }
    }

    pub(super) fn finish_join(&mut self, pending: PendingJoin, response: &[u8]) {
        let PendingJoin {
            invite,
            keys,
            reply,
            relays,
            ..
        } = pending;
        let answer = match JoinResponse::from_bytes(response) {
            Ok(JoinResponse::Welcome(sealed)) => {
                match Room::from_welcome(&invite, keys, &sealed, now_ms()) {
                    Ok(room) => {
                        let id = room.id();
                        let info = RoomInfo {
                            room_id: id.to_hex(),
                            name: room.name().to_owned(),
                        };
                        self.rooms.insert(id, room);
                        match self.save_room(&id) {
                            Ok(()) => {
                                // Where the facilitator is, at once: a node killed right
                                // after joining must still find the room again.
                                self.save_addresses(&id);
                                // Keys kept from an earlier attempt are in the room now.
                                let _ = self.store.put_room_state(&id.0, DOUBTFUL_JOIN, &[]);
                                if let Err(e) = self.store.flush() {
                                    tracing::error!(
                                        "could not store the facilitator's address: {e}"
                                    );
                                }
                                self.recognise_peers();
                                self.sync_topics(id);
                                self.reconnect_to_facilitator(&invite);
                                Reply::Room(info)
                            }
                            Err(e) => {
                                self.rooms.remove(&id);
                                error(e)
                            }
                        }
                    }
                    Err(e) => error(e),
                }
            }
            Ok(JoinResponse::Refused(reason)) => {
                if reason == InviteError::TooManyRequests {
                    self.joins_refused_for_rate
                        .retain(|_, at| at.elapsed() < JOIN_PAUSE);
                    self.joins_refused_for_rate
                        .insert(invite.body.facilitator_peer.clone(), Instant::now());
                }
                error(reason)
            }
            Err(_) => {
                self.dropped += 1;
                error("the facilitator's node sent an answer that could not be read")
            }
        };
        self.join_ended(relays, matches!(answer, Reply::Room(_)));
        let _ = reply.send(answer);
    }

    /// Replaces the connection a join went over, once the welcome is in: the
    /// facilitator's node took it for a stranger's when it was made, so neither gossip
    /// nor sync runs on it there (`net::Gated`).
    fn reconnect_to_facilitator(&mut self, invite: &Invite) {
        let Ok(facilitator) = PeerId::from_bytes(&invite.body.facilitator_peer) else {
            return;
        };
        if self.swarm.is_connected(&facilitator) && !self.replacing.contains_key(&facilitator) {
            self.replace_connections(facilitator);
        }
    }

    /// A former member's node asking to join again with a valid invite: the room's key
    /// is rotated first, so the welcome carries only a key it never had and it cannot
    /// read what was said after it left (the brief's threat model). Other joiners are
    /// left alone. Refuses the join if that rotation fails.
    pub(super) fn rotate_for_returning(
        &mut self,
        id: RoomId,
        request: &JoinRequest,
        from: PeerId,
    ) -> Result<(), InviteError> {
        let peer = from.to_bytes();
        let Some(room) = self.rooms.get(&id) else {
            return Ok(());
        };
        let returning =
            room.log().state().has_peer(&peer) && !room.members().iter().any(|m| m.peer == peer);
        // Only for an invite that would be accepted: a stale one must not make the room
        // rotate.
        if !returning || room.clone().admit(request, now_ms(), &mut rng()).is_err() {
            return Ok(());
        }
        match self.change(id, |room, now, rng| room.rotate(now, rng)) {
            Reply::Error { message } => {
                tracing::warn!(
                    "could not change the key before readmitting a former member: {message}"
                );
                Err(InviteError::BadRequest)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn admit(&mut self, from: PeerId, bytes: &[u8], channel: ResponseChannel<Vec<u8>>) {
        let response = match JoinRequest::from_bytes(bytes) {
            Err(e) => {
                self.dropped += 1;
                JoinResponse::Refused(e)
            }
            Ok(request) if request.body.peer != from.to_bytes() => {
                self.dropped += 1;
                JoinResponse::Refused(InviteError::BadRequest)
            }
            Ok(request) => match self.rotate_for_returning(request.body.room_id, &request, from) {
                Err(refused) => JoinResponse::Refused(refused),
                Ok(()) => self.admission(from, &request),
            },
        };
        if self
            .swarm
            .behaviour_mut()
            .join
            .send_response(channel, response.to_bytes())
            .is_err()
        {
            tracing::debug!("the joiner went away before the answer was sent");
        }
    }

    /// Admits the joiner of `request` (from the node `from`) to its room, if the room
    /// accepts it; persists the admission before the answer goes back (so a crash cannot
    /// make the invite usable twice) and announces it to the other members.
    pub(super) fn admission(&mut self, from: PeerId, request: &JoinRequest) -> JoinResponse {
        let id = request.body.room_id;
        let Some(room) = self.rooms.get_mut(&id) else {
            return JoinResponse::Refused(InviteError::Unknown);
        };
        let admission = match room.admit(request, now_ms(), &mut rng()) {
            Ok(admission) => admission,
            Err(reason) => return JoinResponse::Refused(reason),
        };
        let (Some(announcement), Some(before)) = (admission.announcement, admission.previous)
        else {
            // Admitted before (nothing changed): its node asks again because our answer
            // was lost.
            return admission.response;
        };
        if let Err(e) = self.save_room(&id) {
            tracing::error!("could not record an admission: {e}");
            self.rooms.insert(id, *before);
            return JoinResponse::Refused(InviteError::BadRequest);
        }
        self.recognise_peers();
        // Where the new member can be reached: identify tells no peer its listening
        // addresses, and the member's own entry comes in its first sync push, which may
        // never arrive if this node stops first. A joiner's node dials from its listening
        // port when it can (TCP port reuse), so where its join came from is a good guess.
        let seen = self.reach.remote_addresses(&from);
        self.learn_addresses(from, seen);
        // Gate the joiner in before it subscribes. Whatever subscription of its node was
        // refused before (an old epoch's topic, if it was once a member) is not reheard
        // by reconnecting it: that would cut the connection the welcome goes back on, and
        // it announces the room's current topic afresh once it has the welcome.
        self.swarm
            .behaviour()
            .gossipsub
            .gate()
            .forget_refused(&from);
        self.sync_topics(id);
        self.tell_new_events(id);
        let topic = self.rooms[&id].topic().unwrap_or_default();
        self.remember(id, &announcement);
        self.publish(id, topic, announcement);
        admission.response
    }

    pub(super) fn handle_join(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    self.answering.insert(request_id, peer);
                    let now = std::time::Instant::now();
                    if self.limits.allow(peer, limits::Kind::Join, now) {
                        self.admit(peer, &request, channel);
                    } else if self.limits.allow(peer, limits::Kind::JoinRefusal, now) {
                        self.dropped += 1;
                        let refusal = JoinResponse::Refused(InviteError::TooManyRequests);
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .join
                            .send_response(channel, refusal.to_bytes());
                    } else {
                        // Far over the limit: no answer (the channel drops), counted.
                        self.dropped += 1;
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(pending) = self.pending_joins.remove(&request_id) {
                        self.finish_join(pending, &response);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error: e,
                ..
            } => {
                if let Some(pending) = self.pending_joins.remove(&request_id) {
                    self.join_failed(peer, pending, e);
                }
            }
            request_response::Event::InboundFailure {
                request_id,
                error: e,
                ..
            } => {
                self.answering.remove(&request_id);
                self.dropped += 1;
                tracing::debug!("inbound join request failed: {e}");
            }
            request_response::Event::ResponseSent {
                request_id, peer, ..
            } => {
                // A joiner let in reconnects itself once it has read its welcome.
                self.answering.remove(&request_id);
                if self.answered.len() < MAX_ANSWERED {
                    self.answered.insert(peer, Instant::now());
                }
            }
        }
    }
}
