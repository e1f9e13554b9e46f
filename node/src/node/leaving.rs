//! Leaving a room: waiting until a member holds the leaver's last messages, and
//! carrying a leave nobody heard to the members.

use super::*;

/// A leave waiting until another member holds the leaver's messages (see
/// [`Request::Leave`]).
pub(super) struct WaitingLeave {
    pub(super) room: RoomId,
    pub(super) reply: oneshot::Sender<Reply>,
    pub(super) since: Instant,
}

/// How long a leave waits for another member to hold the leaver's last messages.
const LEAVE_WAIT: Duration = Duration::from_secs(10);

/// Why a leave is refused: `n` of the leaver's messages have reached no other member.
fn undelivered(n: usize) -> String {
    let (count, have, they, them) = if n == 1 {
        ("1 of your messages".to_owned(), "has", "it", "it")
    } else {
        (format!("{n} of your messages"), "have", "they", "them")
    };
    format!(
        "{count} in this room {have} not reached any other member yet, and once you have left \
         {they} never will: members take nothing from someone who has gone. Keep your node \
         running until a member's node has {them} (`confer room list` counts them), or leave \
         anyway with `confer leave --anyway`"
    )
}

impl EventLoop {
    /// Leaves room `id` once no message of this member's there is waiting for another
    /// member to hold it: members take nothing from someone who has gone, so such a
    /// message would never reach anyone. Waits up to [`LEAVE_WAIT`] if a member's node is
    /// connected to take them; otherwise, or after that, refuses with a sentence saying so.
    pub(super) fn leave_when_delivered(&mut self, id: RoomId, reply: oneshot::Sender<Reply>) {
        let waiting = self.unconfirmed.get(&id).map_or(0, BTreeSet::len);
        // Someone who may not leave at all (no longer a member, or the facilitator) is
        // told so at once.
        let may_leave = self
            .rooms
            .get(&id)
            .is_some_and(|r| r.is_member() && !r.is_facilitator());
        if waiting == 0 || !may_leave {
            let _ = reply.send(self.leave_now(id));
            return;
        }
        let peers = self.connected_members(&id);
        if peers.is_empty() {
            let _ = reply.send(error(undelivered(waiting)));
            return;
        }
        let ids = self.unconfirmed_ids(&id);
        self.ask_to_confirm(id, &ids, &peers);
        self.leaves_waiting.push(WaitingLeave {
            room: id,
            reply,
            since: Instant::now(),
        });
    }

    pub(super) fn leave_now(&mut self, id: RoomId) -> Reply {
        self.change(id, |r, now, rng| r.leave(now, rng))
    }

    /// Carries out the waiting leaves whose rooms hold nothing of ours unconfirmed any
    /// more, and refuses those that waited too long. A leave whose asker went away
    /// (Ctrl-C) is given up, not carried out: the person chose to stay.
    pub(super) fn settle_waiting_leaves(&mut self) {
        let now = Instant::now();
        for leave in std::mem::take(&mut self.leaves_waiting) {
            let waiting = self.unconfirmed.get(&leave.room).map_or(0, BTreeSet::len);
            if leave.reply.is_closed() {
                continue;
            }
            if waiting == 0 {
                let reply = self.leave_now(leave.room);
                let _ = leave.reply.send(reply);
            } else if now.duration_since(leave.since) >= LEAVE_WAIT {
                let _ = leave.reply.send(error(undelivered(waiting)));
            } else {
                self.leaves_waiting.push(leave);
            }
        }
    }

    /// On connecting to `peer`: tells it of this profile's leave of each room it is a
    /// member of that heard of no leave yet ([`EventLoop::unheard_leaves`]). A room this
    /// profile was admitted to again meanwhile has nothing to tell.
    pub(super) fn tell_unheard_leaves(&mut self, peer: PeerId) {
        let peer_bytes = peer.to_bytes();
        let me = self.swarm.local_peer_id().to_bytes();
        let unheard: Vec<RoomId> = self.unheard_leaves.iter().copied().collect();
        for id in unheard {
            let Some(room) = self.rooms.get(&id).filter(|r| !r.is_member()) else {
                self.set_leave_unheard(id, false);
                continue;
            };
            if room.members().iter().any(|m| m.peer == peer_bytes)
                && self.tell_departure(id, peer, &me)
            {
                // One member has it now; the others hear it from that one.
                self.leave_heard(id);
            }
        }
    }

    /// A member has been told of this profile's leave of the room (if it was unheard).
    pub(super) fn leave_heard(&mut self, id: RoomId) {
        if self.unheard_leaves.contains(&id) {
            self.leaves_heard += 1;
            self.set_leave_unheard(id, false);
        }
    }

    /// Records (durably) whether a leave of this room is still unheard ([`LEAVE_UNHEARD`]).
    pub(super) fn set_leave_unheard(&mut self, id: RoomId, unheard: bool) {
        let changed = if unheard {
            self.unheard_leaves.insert(id)
        } else {
            self.unheard_leaves.remove(&id)
        };
        if !changed {
            return;
        }
        let stored = self
            .store
            .put_room_state(&id.0, LEAVE_UNHEARD, &[u8::from(unheard)])
            .and_then(|()| self.store.flush());
        if let Err(e) = stored {
            tracing::warn!("could not record whether a leave has been heard: {e}");
        }
    }
}
