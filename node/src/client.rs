//! The client side of the control socket, used by the `confer` binary and by tests.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::api::{EventInfo, MAX_LINE, MessageInfo, Reply, Request, SOCKET_NAME};

/// Why the node could not be asked.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No node is listening on the profile's socket.
    #[error("no node is running for {0}; start one with `confer node run --home {0}`")]
    NotRunning(PathBuf),
    /// There is no profile there at all.
    #[error(
        "there is no profile in {0}; create one with `confer init --home {0}`, or give the right --home"
    )]
    NoProfile(PathBuf),
    /// The connection broke or the node answered something unreadable.
    #[error("lost contact with the node: {0}")]
    Io(#[from] std::io::Error),
    /// The node's answer did not parse.
    #[error("the node sent an answer this version does not understand")]
    BadReply,
    /// The node closed the connection before its answer was complete: it stopped (or
    /// was killed) while working on the request.
    #[error(
        "the node stopped before it answered, so whether it did what was asked is not known; \
         `confer status` says whether it is running, and `confer read` shows what was sent"
    )]
    Closed,
}

/// An open connection to a running node.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects to the node running for the profile in `home`.
    pub async fn connect(home: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(home.join(SOCKET_NAME))
            .await
            .map_err(|_| {
                if confer_store::Profile::exists(home) {
                    ClientError::NotRunning(home.to_path_buf())
                } else {
                    ClientError::NoProfile(home.to_path_buf())
                }
            })?;
        let (reader, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(reader),
            writer,
        })
    }

    /// Sends one request.
    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(request).map_err(|_| ClientError::BadReply)?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Reads the next reply; `None` when the node closed the connection. A history
    /// sent in parts ([`Reply::HistoryPart`]) is returned whole, as one
    /// [`Reply::History`].
    pub async fn next(&mut self) -> Result<Option<Reply>, ClientError> {
        let mut parts = Vec::new();
        loop {
            match self.next_line().await? {
                Some(Reply::HistoryPart { messages }) => parts.extend(messages),
                Some(Reply::History {
                    messages,
                    member,
                    events,
                    earlier,
                }) => {
                    parts.extend(messages);
                    return Ok(Some(Reply::History {
                        messages: parts,
                        member,
                        events,
                        earlier,
                    }));
                }
                // A history cut off, or something else in the middle of one.
                None if !parts.is_empty() => return Err(ClientError::Closed),
                Some(_) if !parts.is_empty() => return Err(ClientError::BadReply),
                other => return Ok(other),
            }
        }
    }

    /// Reads one reply line.
    async fn next_line(&mut self) -> Result<Option<Reply>, ClientError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if line.len() > MAX_LINE {
            return Err(ClientError::BadReply);
        }
        if line.last() != Some(&b'\n') {
            return Err(ClientError::Closed);
        }
        serde_json::from_slice(&line)
            .map(Some)
            .map_err(|_| ClientError::BadReply)
    }

    /// Sends one request and waits for its single reply.
    pub async fn call(home: &Path, request: &Request) -> Result<Reply, ClientError> {
        let mut client = Self::connect(home).await?;
        client.send(request).await?;
        client.next().await?.ok_or(ClientError::Closed)
    }
}

/// Following a room over the control socket (`confer read --follow`), through any number
/// of falls behind.
///
/// The node stops streaming to a reader that lags more than its follow queue behind (as
/// after a long absence, when thousands of missed messages arrive at once), rather than
/// hold them or slow down ([`Reply::FellBehind`]). A `Follower` then follows again and
/// takes, from the new history, what the stream did not carry: each message not shown yet
/// (in the history's order), each membership change not shown yet, and a
/// [`Reply::Delivered`] for each message shown as pending that no longer is. So its reader
/// sees every message exactly once, whatever the rate.
#[derive(Debug)]
pub struct Follower {
    home: PathBuf,
    room: String,
    client: Client,
    /// Ids of the messages shown, and of those shown as pending and not since delivered.
    shown: HashSet<String>,
    pending: HashSet<String>,
    /// Membership changes shown.
    events: HashSet<EventInfo>,
    /// Updates taken from a history after a fall behind, to hand out before reading on.
    queue: VecDeque<Reply>,
    resumed: u64,
}

impl Follower {
    /// Starts following `room` (a name or the start of an id) on the node of the profile
    /// in `home`. Returns the node's first answer ([`Reply::History`], or
    /// [`Reply::Error`] if it refused) and, if it gave a history, the follower.
    pub async fn start(home: &Path, room: &str) -> Result<(Reply, Option<Self>), ClientError> {
        let mut client = Client::connect(home).await?;
        client
            .send(&Request::Read {
                room: room.to_owned(),
                follow: true,
                last: None,
            })
            .await?;
        let first = client.next().await?.ok_or(ClientError::Closed)?;
        let Reply::History {
            messages, events, ..
        } = &first
        else {
            return Ok((first, None));
        };
        let mut follower = Follower {
            home: home.to_path_buf(),
            room: room.to_owned(),
            client,
            shown: HashSet::new(),
            pending: HashSet::new(),
            events: events.iter().cloned().collect(),
            queue: VecDeque::new(),
            resumed: 0,
        };
        for message in messages {
            follower.showing(message);
        }
        Ok((first, Some(follower)))
    }

    /// How many times it has fallen behind and followed again.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// The next update: [`Reply::Message`], [`Reply::Event`], [`Reply::Delivered`], or a
    /// last [`Reply::Error`] (this profile is no longer in the room); `None` once the node
    /// has stopped.
    pub async fn next(&mut self) -> Result<Option<Reply>, ClientError> {
        loop {
            if let Some(update) = self.queue.pop_front() {
                return Ok(Some(update));
            }
            let update = self.client.next().await?;
            match &update {
                // Shown already: only if the stream and a history overlapped.
                Some(Reply::Message(message)) if self.shown.contains(&message.message_id) => {
                    continue;
                }
                Some(Reply::Message(message)) => self.showing(message),
                Some(Reply::Event(event)) if !self.events.insert(event.clone()) => continue,
                // Said delivered already, after a history.
                Some(Reply::Delivered { message_id }) if !self.pending.remove(message_id) => {
                    continue;
                }
                Some(Reply::FellBehind { .. }) => {
                    if !self.resume().await? {
                        return Ok(None);
                    }
                    continue;
                }
                _ => {}
            }
            return Ok(update);
        }
    }

    fn showing(&mut self, message: &MessageInfo) {
        self.shown.insert(message.message_id.clone());
        if message.pending {
            self.pending.insert(message.message_id.clone());
        }
    }

    /// Follows again after falling behind and queues what the stream missed. False if
    /// the node has stopped meanwhile.
    async fn resume(&mut self) -> Result<bool, ClientError> {
        let (first, follower) = match Self::start(&self.home, &self.room).await {
            Ok(started) => started,
            Err(ClientError::NotRunning(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.resumed += 1;
        let Some(follower) = follower else {
            // Refused: this profile is no longer in the room, say.
            self.queue.push_back(first);
            return Ok(true);
        };
        self.client = follower.client;
        let Reply::History {
            messages, events, ..
        } = first
        else {
            return Ok(true);
        };
        for event in events {
            if self.events.insert(event.clone()) {
                self.queue.push_back(Reply::Event(event));
            }
        }
        for message in messages {
            if !self.shown.contains(&message.message_id) {
                self.showing(&message);
                self.queue.push_back(Reply::Message(message));
            } else if !message.pending && self.pending.remove(&message.message_id) {
                self.queue.push_back(Reply::Delivered {
                    message_id: message.message_id,
                });
            }
        }
        Ok(true)
    }
}

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;

    /// Accepts the next connection and reads its request line; returns the line and the
    /// half to answer on.
    async fn next_request(listener: &UnixListener) -> (String, tokio::net::unix::OwnedWriteHalf) {
        let (stream, _) = listener.accept().await.unwrap();
        let (reader, writer) = stream.into_split();
        let mut request = String::new();
        BufReader::new(reader)
            .read_line(&mut request)
            .await
            .unwrap();
        (request, writer)
    }

    /// A node that takes the request and then stops, after writing `answer` (perhaps
    /// nothing, perhaps part of a line).
    async fn stops_after(answer: &'static [u8]) -> ClientError {
        let home = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(home.path().join(SOCKET_NAME)).unwrap();
        let node = tokio::spawn(async move {
            let (_, mut writer) = next_request(&listener).await;
            writer.write_all(answer).await.unwrap();
        });
        let error = Client::call(home.path(), &Request::Status)
            .await
            .expect_err("no whole answer");
        node.await.unwrap();
        error
    }

    fn message(id: &str, pending: bool) -> MessageInfo {
        MessageInfo {
            message_id: id.into(),
            author: "Sam".into(),
            text: format!("text of {id}"),
            sent_at: "2026-11-23T08:00:00.000Z".into(),
            pending,
            gone: false,
        }
    }

    fn joined(who: &str) -> Reply {
        Reply::Event(EventInfo {
            at: "2026-11-23T08:00:00.000Z".into(),
            kind: "joined".into(),
            who: who.into(),
            by: None,
            you: false,
            by_you: false,
        })
    }

    fn history(messages: Vec<MessageInfo>, events: Vec<Reply>) -> Reply {
        let events = events
            .into_iter()
            .filter_map(|e| match e {
                Reply::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        Reply::History {
            messages,
            member: true,
            events,
            earlier: 0,
        }
    }

    /// A node played by the test: answers each `Read` with the next of `scripts`, one
    /// reply per line, then closes that connection.
    fn scripted_node(home: &Path, scripts: Vec<Vec<Reply>>) -> tokio::task::JoinHandle<()> {
        let listener = UnixListener::bind(home.join(SOCKET_NAME)).unwrap();
        tokio::spawn(async move {
            for script in scripts {
                let (request, mut writer) = next_request(&listener).await;
                let request: Request = serde_json::from_str(&request).unwrap();
                assert!(matches!(request, Request::Read { follow: true, .. }));
                for reply in script {
                    let mut line = serde_json::to_vec(&reply).unwrap();
                    line.push(b'\n');
                    writer.write_all(&line).await.unwrap();
                }
            }
        })
    }

    /// After falling behind, a follower shows what the stream could not carry, taken
    /// from the new history: changes and messages not shown yet, and the delivery of a
    /// message it showed as pending that no longer is; and it passes on nothing twice
    /// where the new stream and the history overlap.
    #[tokio::test]
    async fn a_follower_shows_what_it_missed_once() {
        let home = tempfile::tempdir().unwrap();
        let node = scripted_node(
            home.path(),
            vec![
                vec![
                    history(vec![message("m1", true)], vec![joined("Sam")]),
                    Reply::Message(message("m2", true)),
                    joined("Priya"),
                    Reply::FellBehind { queue: 1 },
                ],
                vec![
                    history(
                        vec![
                            message("m1", false),
                            message("m2", true),
                            message("m3", false),
                            message("m4", false),
                        ],
                        vec![joined("Sam"), joined("Priya"), joined("Jo")],
                    ),
                    Reply::Delivered {
                        message_id: "m2".into(),
                    },
                    Reply::Delivered {
                        message_id: "m1".into(),
                    },
                    Reply::Message(message("m4", false)),
                    Reply::Message(message("m5", false)),
                ],
            ],
        );
        let (first, follower) = Follower::start(home.path(), "Room").await.unwrap();
        assert!(matches!(first, Reply::History { .. }));
        let mut follower = follower.unwrap();
        let mut seen = Vec::new();
        while let Some(update) = follower.next().await.unwrap() {
            seen.push(match update {
                Reply::Message(m) => format!("message {}", m.message_id),
                Reply::Event(e) => format!("{} {}", e.kind, e.who),
                Reply::Delivered { message_id } => format!("delivered {message_id}"),
                other => panic!("unexpected {other:?}"),
            });
        }
        assert_eq!(
            seen,
            [
                "message m2",
                "joined Priya",
                // Taken from the second history:
                "joined Jo",
                "delivered m1",
                "message m3",
                "message m4",
                // The second stream, less what the history already gave:
                "delivered m2",
                "message m5",
            ]
        );
        assert_eq!(follower.resumed(), 1);
        node.await.unwrap();
    }

    /// A node that stops while it works on a request is not taken for a node of another
    /// version: the user is told it stopped, and that what it did is not known.
    #[tokio::test]
    async fn a_node_that_stops_before_answering_is_said_to_have_stopped() {
        for answer in [&b""[..], b"{\"Sent\":{\"message_i"] {
            let error = stops_after(answer).await;
            assert!(matches!(error, ClientError::Closed), "{error:?}");
            assert!(error.to_string().contains("stopped before it answered"));
        }
        // An answer that is whole but not understood is still called that.
        let error = stops_after(b"{\"NoSuchReply\":1}\n").await;
        assert!(matches!(error, ClientError::BadReply), "{error:?}");
    }
}
