//! A room's history for `read`, and following it: messages and membership changes as
//! they happen.

use super::*;

/// The latest [`MAX_EVENTS`] of `changes`, as the control protocol shows them.
fn latest_events(changes: Vec<MembershipChange>) -> Vec<EventInfo> {
    let skip = changes.len().saturating_sub(MAX_EVENTS);
    changes.into_iter().skip(skip).map(event_info).collect()
}

/// A membership change as the control protocol shows it.
fn event_info(change: MembershipChange) -> EventInfo {
    let (kind, who, by) = match change.kind {
        ChangeKind::Created { by } => ("created", by, None),
        ChangeKind::Joined { who } => ("joined", who, None),
        ChangeKind::Left { who } => ("left", who, None),
        ChangeKind::Removed { who, by } => ("removed", who, Some(by)),
        ChangeKind::Handover { from, to } => ("handover", to, Some(from)),
        ChangeKind::BadKey { by } => ("bad-key", by, None),
    };
    EventInfo {
        at: rfc3339_ms(change.at),
        kind: kind.to_owned(),
        who,
        by,
        you: change.about_me,
        by_you: change.by_me,
    }
}

impl EventLoop {
    pub(super) fn message_info(room: &Room, record: &MessageRecord) -> MessageInfo {
        MessageInfo {
            message_id: hex::encode(record.id),
            author: room.display_name_of(&record.author),
            text: record.text.clone(),
            sent_at: rfc3339_ms(record.sent_at),
            pending: false,
            gone: false,
        }
    }

    /// The room's history for a reader: its last `last` messages (all with `None`), and
    /// how many came before them.
    pub(super) fn history(
        &self,
        id: &RoomId,
        last: Option<usize>,
    ) -> Result<(Vec<MessageInfo>, usize), String> {
        let room = self.rooms.get(id).ok_or("unknown room")?;
        let unconfirmed = self.unconfirmed.get(id);
        let me = room.is_member().then(|| room.me());
        // Each stored message becomes what is shown as it is read, so a long history's
        // stored values (their envelopes too) are never all in memory at once.
        self.store
            .latest_messages_mapped(&id.0, last.unwrap_or(usize::MAX), |bytes| {
                let Some(stored) = StoredMessage::from_bytes(bytes) else {
                    tracing::warn!("skipping a damaged stored message");
                    return None;
                };
                let mut info = Self::message_info(room, &stored.record);
                info.pending = unconfirmed.is_some_and(|u| u.contains(&stored.record.id));
                info.gone = info.pending && me != Some(stored.record.author);
                Some(info)
            })
            .map_err(|e| e.to_string())
    }

    /// The room's membership changes while this profile was in the room, for its history.
    pub(super) fn events(&self, id: &RoomId) -> Vec<EventInfo> {
        self.rooms
            .get(id)
            .map(|room| latest_events(room.changes_while_member()))
            .unwrap_or_default()
    }

    /// Tells the room's followers of membership changes they have not been shown (each
    /// follower was shown those before it started, with the history).
    pub(super) fn tell_new_events(&mut self, id: RoomId) {
        if !self.followers.contains_key(&id) {
            return;
        }
        let Some(room) = self.rooms.get(&id) else {
            return;
        };
        let told = self.events_told.entry(id).or_default();
        let new: Vec<EventInfo> = room
            .changes_while_member()
            .into_iter()
            .filter(|change| told.insert(change.id))
            .map(event_info)
            .collect();
        for event in new {
            self.tell_followers(&id, &FollowUpdate::Event(event));
        }
    }

    pub(super) fn follow(&mut self, query: &str) -> Result<Following, String> {
        let id = self.resolve(query)?;
        let (history, _) = self.history(&id, None)?;
        let changes = self
            .rooms
            .get(&id)
            .map(Room::changes_while_member)
            .unwrap_or_default();
        let told = self.events_told.entry(id).or_default();
        told.extend(changes.iter().map(|c| c.id));
        let events = latest_events(changes);
        let (tx, updates) = mpsc::channel(self.follow_queue);
        // Nothing new will come to a room this profile is no longer in: the stream ends.
        if self.rooms.get(&id).is_some_and(Room::is_member) {
            self.followers.entry(id).or_default().push(tx);
            // The history marks every unconfirmed message (all of them are stored).
            if let Some(unconfirmed) = self.unconfirmed.get(&id) {
                let shown = self.shown_pending.entry(id).or_default();
                shown.extend(unconfirmed.iter().copied());
            }
        }
        Ok(Following {
            room_id: id.to_hex(),
            history,
            events,
            updates,
        })
    }

    /// Ends the streams of the room's followers if this profile is no longer a member.
    pub(super) fn end_following_if_out(&mut self, id: RoomId) {
        if !self.rooms.get(&id).is_some_and(Room::is_member) {
            self.followers.remove(&id);
        }
    }

    /// Tells the room's followers of a message just stored; `pending` as in
    /// [`FollowUpdate::Message`].
    pub(super) fn notify(&mut self, id: &RoomId, record: &MessageRecord, pending: bool) {
        // Nothing to build for nobody (most nodes, most of the time).
        if self.followers.get(id).is_none_or(Vec::is_empty) {
            return;
        }
        let Some(room) = self.rooms.get(id) else {
            return;
        };
        let mut info = Self::message_info(room, record);
        info.pending = pending;
        if pending {
            self.shown_pending.entry(*id).or_default().insert(record.id);
        }
        self.tell_followers(id, &FollowUpdate::Message(info));
    }

    /// Sends an update to the room's followers, dropping those that fell too far behind.
    pub(super) fn tell_followers(&mut self, id: &RoomId, update: &FollowUpdate) {
        if let Some(followers) = self.followers.get_mut(id) {
            followers.retain(|f| f.try_send(update.clone()).is_ok());
        }
    }

    /// Ends every follower's stream, after closing the command channel: a stream that
    /// ends while [`Node::is_running`] is still true was dropped for falling behind.
    pub(super) fn stop_following(&mut self, commands: &mut mpsc::Receiver<Command>) {
        commands.close();
        self.followers.clear();
    }
}
