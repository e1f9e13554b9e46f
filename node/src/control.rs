//! The control socket server: `control.sock` in the profile directory, owner-only.
//!
//! Each connection sends JSON-lines [`Request`]s and gets [`crate::api::Reply`]s back
//! (see [`crate::api`]). Connections are served concurrently; every request goes to the
//! node's event loop through the same bounded channel as in-process requests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::api::{HISTORY_PART, MAX_LINE, Reply, Request, SOCKET_NAME};
use crate::node::{FollowUpdate, Following, Node, NodeError};

/// Binds the socket (replacing a stale one left by a crash) and serves it until aborted.
pub(crate) async fn serve(home: &Path, node: Node) -> Result<JoinHandle<()>, NodeError> {
    let path = home.join(SOCKET_NAME);
    let fail = |reason: String| NodeError::Control {
        path: path.display().to_string(),
        reason,
    };
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(fail("another node is already serving this profile".into()));
        }
        std::fs::remove_file(&path).map_err(|e| fail(e.to_string()))?;
    }
    let listener = UnixListener::bind(&path).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(e.to_string()))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, node.clone()));
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    return;
                }
            }
        }
    }))
}

/// Writes one reply as one line; a line the client would refuse ([`MAX_LINE`]) is
/// replaced by an error saying so.
async fn write(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    if line.len() > MAX_LINE {
        let too_large = Reply::Error {
            message: format!(
                "the answer is too large to send ({} bytes; the limit is {MAX_LINE})",
                line.len()
            ),
        };
        line = serde_json::to_vec(&too_large).map_err(std::io::Error::other)?;
    }
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

/// Writes a reply; a history goes out in parts of about [`HISTORY_PART`] bytes
/// ([`Reply::HistoryPart`]s, then a [`Reply::History`] with the rest), so that a long
/// discussion fits the line limit.
async fn write_reply(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    reply: Reply,
) -> std::io::Result<()> {
    let Reply::History {
        messages,
        member,
        events,
        earlier,
    } = reply
    else {
        return write(writer, &reply).await;
    };
    let mut part = Vec::new();
    let mut size = 0;
    for message in messages {
        let len = serde_json::to_vec(&message)
            .map_err(std::io::Error::other)?
            .len()
            + 1;
        if !part.is_empty() && size + len > HISTORY_PART {
            let messages = std::mem::take(&mut part);
            write(writer, &Reply::HistoryPart { messages }).await?;
            size = 0;
        }
        size += len;
        part.push(message);
    }
    write(
        writer,
        &Reply::History {
            messages: part,
            member,
            events,
            earlier,
        },
    )
    .await
}

async fn connection(stream: UnixStream, node: Node) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = Vec::new();
        match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE {
            let _ = write(
                &mut writer,
                &Reply::Error {
                    message: "request too large".into(),
                },
            )
            .await;
            return;
        }
        let request: Request = match serde_json::from_slice(&line) {
            Ok(request) => request,
            Err(_) => {
                let reply = Reply::Error { message: "the node did not understand the request (is the confer binary the same version as the node?)".into() };
                if write(&mut writer, &reply).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if let Request::Read {
            room, follow: true, ..
        } = request
        {
            follow(room, node, writer).await;
            return;
        }
        // A client that goes away (Ctrl-C) while the node works on its request drops the
        // request's reply channel, so work that waits (`join --wait`) can stop.
        let reply = tokio::select! {
            reply = node.request(request) => reply,
            () = closed(&mut reader) => return,
        };
        if write_reply(&mut writer, reply).await.is_err() {
            return;
        }
    }
}

/// Completes when the client has closed its end of the connection; never while it is
/// open, even if it has sent more (that is its next request, left unread).
async fn closed(reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>) {
    match reader.fill_buf().await {
        Ok([]) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

async fn follow(room: String, node: Node, mut writer: tokio::net::unix::OwnedWriteHalf) {
    match node.follow(room).await {
        Err(message) => {
            let _ = write(&mut writer, &Reply::Error { message }).await;
        }
        Ok(Following {
            room_id,
            history,
            events,
            mut updates,
        }) => {
            let history = Reply::History {
                messages: history,
                member: true,
                events,
                earlier: 0,
            };
            if write_reply(&mut writer, history).await.is_err() {
                return;
            }
            while let Some(update) = updates.recv().await {
                let reply = match update {
                    FollowUpdate::Message(message) => Reply::Message(message),
                    FollowUpdate::Event(event) => Reply::Event(event),
                    FollowUpdate::Delivered(message_id) => Reply::Delivered { message_id },
                };
                if write(&mut writer, &reply).await.is_err() {
                    return;
                }
            }
            // The stream ended with the node still running: this profile is out of the
            // room, or this reader fell behind.
            if node.is_running() {
                let reply = if node.is_member_of(&room_id).await {
                    Reply::FellBehind {
                        queue: node.follow_queue(),
                    }
                } else if !node.is_running() {
                    return;
                } else {
                    Reply::Error {
                        message: "you are no longer a member of this room: nothing new will \
                                  arrive (what was said before stays readable with `confer read`)"
                            .to_owned(),
                    }
                };
                let _ = write(&mut writer, &reply).await;
            }
        }
    }
}
