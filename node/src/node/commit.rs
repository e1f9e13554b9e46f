//! Group commit: messages are stored at once and flushed in groups; what claims a
//! message is held (a `send` reply, a delivery confirmation) waits for its flush.

use super::*;

/// What must wait until the messages stored before it are on disk.
#[derive(Default)]
pub(super) struct Commit {
    /// Messages stored since the previous flush began.
    pub(super) stored: Vec<Id>,
    /// `send` replies.
    pub(super) sends: Vec<(oneshot::Sender<Reply>, Reply)>,
    /// Sync replies naming messages as held.
    pub(super) responses: Vec<(ResponseChannel<Vec<u8>>, SyncReply)>,
}

impl Commit {
    fn is_empty(&self) -> bool {
        self.stored.is_empty() && self.sends.is_empty() && self.responses.is_empty()
    }
}

/// Group commit of stored messages.
///
/// Sending or receiving a message stores it at once (so it is deduplicated, readable and
/// can be handed on, and a sent one is published at once), but the flush is grouped: one
/// flush for everything stored since the previous flush began. Until that flush has
/// completed nothing claims the message is *held*: `send` does not return, and a sync
/// reply naming it (a delivery confirmation for its sender, which keeps the message in
/// its outbox until one arrives) is not sent. A received message is readable (`Read`,
/// followers) as soon as it is stored: a node killed before the flush may lose it from
/// its own history, but has told no other member it had it, so its author still holds it
/// as pending and catch-up brings it back after the restart. Durability claims wait for
/// the disk; showing a message to its reader does not. So a batch that nothing waits for
/// (received messages only) is flushed up to [`RECEIVED_FLUSH_DELAY`] later, with
/// whatever else arrives meanwhile.
///
/// Gossip validation (`Accept`, which lets gossipsub forward the message) is reported
/// before the flush: forwarding is not a claim to hold the message.
#[derive(Default)]
pub(super) struct GroupCommit {
    /// Waiting for the next flush.
    pub(super) next: Commit,
    /// Waiting for the flush in progress.
    pub(super) flushing: Commit,
    /// The flush in progress.
    pub(super) task: Option<tokio::task::JoinHandle<Result<(), confer_store::StoreError>>>,
    /// Ids of messages stored but not yet known to be on disk.
    pub(super) not_durable: HashSet<Id>,
    /// When a batch that nothing waits for (received messages only) is flushed anyway.
    pub(super) due: Option<tokio::time::Instant>,
}

/// The longest a received message (that nobody waits for) stays unflushed.
const RECEIVED_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Waits for the flush in progress; never completes if there is none.
/// Resolves at `due` (never, if there is none: the branch is disabled then).
pub(super) async fn flush_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn flush_done(
    task: &mut Option<tokio::task::JoinHandle<Result<(), confer_store::StoreError>>>,
) -> Result<(), String> {
    match task {
        Some(task) => match task.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        None => std::future::pending().await,
    }
}

impl EventLoop {
    /// Waits for the flush in progress, if any, so that its handle on the store is gone
    /// when the node stops (a node restarted on the same profile must find it unlocked).
    /// What waited for it is reported by [`Self::close`], after a final flush.
    pub(super) async fn finish_flush(&mut self) {
        if let Some(task) = self.commit.task.take() {
            let _ = task.await;
        }
    }

    /// Starts flushing everything stored since the last flush began, unless a flush is
    /// in progress (then this waits for the next turn after it completes).
    ///
    /// The flush runs on a blocking task, so the event loop (and, in one process, other
    /// nodes' event loops on the same runtime) goes on while the disk works. Only `send`
    /// replies and delivery confirmations wait for it; a received message is readable
    /// before (see [`GroupCommit`]). Flushing on the event loop instead made the room
    /// benchmark's live p50 about 15% worse once readability no longer waited for it.
    ///
    /// A batch that nothing waits for (messages received, no `send` reply and no delivery
    /// confirmation) is flushed after at most [`RECEIVED_FLUSH_DELAY`], together with
    /// whatever arrives meanwhile: during live traffic every member would otherwise flush
    /// for every message, and on a shared disk those flushes queue behind each other.
    pub(super) fn start_flush(&mut self) {
        if self.commit.task.is_some() || self.commit.next.is_empty() {
            return;
        }
        let waited_for =
            !self.commit.next.sends.is_empty() || !self.commit.next.responses.is_empty();
        if !waited_for {
            let now = tokio::time::Instant::now();
            let due = *self
                .commit
                .due
                .get_or_insert_with(|| now + RECEIVED_FLUSH_DELAY);
            if now < due {
                return;
            }
        }
        self.commit.due = None;
        self.commit.flushing = std::mem::take(&mut self.commit.next);
        let flusher = self.store.flusher();
        self.commit.task = Some(tokio::task::spawn_blocking(move || flusher.flush()));
    }

    /// Reports what waited for a flush: on success the messages are held; on failure
    /// `send` fails, nothing is confirmed and followers are not told.
    pub(super) fn complete(&mut self, batch: Commit, flushed: Result<(), String>) {
        for m in &batch.stored {
            self.commit.not_durable.remove(m);
        }
        if let Err(e) = &flushed {
            tracing::error!("could not flush stored messages: {e}");
        }
        for (reply, answer) in batch.sends {
            let answer = match &flushed {
                Ok(()) => answer,
                Err(e) => error(format!("could not store the message: {e}")),
            };
            let _ = reply.send(answer);
        }
        for (channel, answer) in batch.responses {
            let answer = if flushed.is_ok() {
                answer
            } else {
                SyncReply::default()
            };
            self.respond(channel, &answer);
        }
    }

    /// Records a message just stored (not yet flushed): see [`GroupCommit`].
    /// The caller then shows it to followers ([`EventLoop::notify`]).
    pub(super) fn stored_unflushed(&mut self, id: RoomId, record: &MessageRecord, envelope: &[u8]) {
        self.manifest_dirty = true;
        if record.sent_at < self.started_ms {
            self.caught_up += 1;
        }
        self.index
            .entry(id)
            .or_default()
            .insert(record.id, record.sent_at);
        self.transfers
            .held
            .entry(id)
            .or_default()
            .insert(envelope_digest(envelope), record.id);
        self.transfers.wanted.got(&record.id);
        self.transfers.stored(id, record);
        self.commit.not_durable.insert(record.id);
        self.commit.next.stored.push(record.id);
    }
}
