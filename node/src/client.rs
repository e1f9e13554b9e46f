//! The client side of the control socket, used by the `confer` binary and by tests.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::api::{MAX_LINE, Reply, Request, SOCKET_NAME};

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
                }) => {
                    parts.extend(messages);
                    return Ok(Some(Reply::History {
                        messages: parts,
                        member,
                        events,
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

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;

    /// A node that takes the request and then stops, after writing `answer` (perhaps
    /// nothing, perhaps part of a line).
    async fn stops_after(answer: &'static [u8]) -> ClientError {
        let home = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(home.path().join(SOCKET_NAME)).unwrap();
        let node = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (reader, mut writer) = stream.into_split();
            let mut request = String::new();
            BufReader::new(reader)
                .read_line(&mut request)
                .await
                .unwrap();
            writer.write_all(answer).await.unwrap();
        });
        let error = Client::call(home.path(), &Request::Status)
            .await
            .expect_err("no whole answer");
        node.await.unwrap();
        error
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
