//! The control socket server: `control.sock` in the profile directory, owner-only.
//!
//! Each connection sends JSON-lines [`Request`]s and gets [`crate::api::Reply`]s back
//! (see [`crate::api`]). Connections are served concurrently, at most [`MAX_CLIENTS`] at
//! once; every request goes to the node's event loop through the same bounded channel as
//! in-process requests.
//!
//! Only the profile's owner is served, by two checks: the socket is bound inside a new
//! directory of mode 0700, given mode 0600 there and only then renamed into place, so
//! there is no moment at which another user could connect whatever the umask and the
//! profile directory's mode; and each connection's peer user id (`SO_PEERCRED`, set by
//! the kernel) must be the owner's, or it is closed unanswered.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::api::{HISTORY_PART, MAX_LINE, Reply, Request, SOCKET_NAME};
use crate::node::{FollowUpdate, Following, Node, NodeError};

/// Most control connections served at once. Each may hold a request line of up to
/// [`MAX_LINE`] (1 MiB) while it is read, so this bounds that memory to 32 MiB; a person
/// runs a few commands and `read --follow`s at a time. A connection past it is answered
/// with an error saying so and closed.
const MAX_CLIENTS: usize = 32;

/// Binds the socket (replacing a stale one left by a crash) and serves it until aborted.
pub(crate) async fn serve(home: &Path, node: Node) -> Result<JoinHandle<()>, NodeError> {
    let path = home.join(SOCKET_NAME);
    let fail = |reason: String| NodeError::Control {
        path: path.display().to_string(),
        reason,
    };
    if path.exists() && UnixStream::connect(&path).await.is_ok() {
        return Err(fail("another node is already serving this profile".into()));
    }
    let (listener, owner) = bind_private(home, &path).map_err(|e| fail(e.to_string()))?;
    Ok(tokio::spawn(accept(
        listener,
        owner,
        MAX_CLIENTS,
        move |stream| connection(stream, node.clone()),
    )))
}

/// Binds a listener at `path` (replacing whatever is there) that only its owner can ever
/// connect to: bound in a fresh directory of mode 0700 in `home`, given mode 0600, then
/// renamed to `path`. Returns it with the owner's user id (the directory's owner: this
/// process's).
fn bind_private(home: &Path, path: &Path) -> std::io::Result<(UnixListener, u32)> {
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let dir: PathBuf = home.join(format!(".{SOCKET_NAME}.tmp-{suffix}"));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let bound = (|| {
        let owner = std::fs::metadata(&dir)?.uid();
        let private = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&private)?;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&private, path)?;
        Ok((listener, owner))
    })();
    // Empty after the rename; after a failure it may hold the socket.
    let _ = std::fs::remove_dir_all(&dir);
    bound
}

/// Accepts connections until the listener fails: each from the user `owner` is handed to
/// `serve` while fewer than `max` are being served; past that it is told so and closed.
/// A connection from any other user is closed unanswered.
async fn accept<F, Fut>(listener: UnixListener, owner: u32, max: usize, serve: F)
where
    F: Fn(UnixStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                return;
            }
        };
        match stream.peer_cred() {
            Ok(peer) if peer.uid() == owner => {}
            _ => {
                tracing::warn!("refused a control connection from another user");
                continue;
            }
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse_busy(&stream, max);
            continue;
        };
        let served = serve(stream);
        tokio::spawn(async move {
            served.await;
            drop(slot);
        });
    }
}

/// Tells a client past the cap why it is not served. The line is short, so it fits the
/// socket's buffer and is written without waiting; if it does not, the client gets
/// nothing but the closed connection.
fn refuse_busy(stream: &UnixStream, max: usize) {
    let reply = Reply::Error {
        message: format!(
            "the node is already serving {max} commands at once; close a `confer read --follow` you no longer need, or try again in a moment"
        ),
    };
    if let Ok(mut line) = serde_json::to_vec(&reply) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;
    use tokio::sync::mpsc;

    use super::*;

    /// The user id this test runs as.
    fn my_uid(dir: &Path) -> u32 {
        std::fs::metadata(dir).unwrap().uid()
    }

    /// Everything the connection sends until it closes.
    async fn read_to_end(stream: &mut UnixStream) -> String {
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    }

    /// In a profile directory others can read (mode 0755), the socket appears with mode
    /// 0600, replaces a stale one, accepts at its final path, and nothing of the private
    /// directory it was bound in is left.
    #[tokio::test]
    async fn the_socket_appears_owner_only_and_leaves_nothing_behind() {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = home.path().join(SOCKET_NAME);
        std::fs::write(&path, b"stale").unwrap();
        let (listener, owner) = bind_private(home.path(), &path).unwrap();
        assert_eq!(owner, my_uid(home.path()));
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(home.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(SOCKET_NAME)]);
        let client = UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(
            server.peer_cred().unwrap().uid(),
            client.peer_cred().unwrap().uid()
        );
    }

    /// A connection from a user other than the owner is closed without being served.
    #[tokio::test]
    async fn a_connection_from_another_user_is_closed_unanswered() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(SOCKET_NAME);
        let (listener, me) = bind_private(home.path(), &path).unwrap();
        let (served_tx, mut served_rx) = mpsc::channel::<()>(4);
        // This test's user plays "another user": the owner is someone else.
        let other_owner = me.wrapping_add(1);
        let server = tokio::spawn(accept(listener, other_owner, 4, move |mut stream| {
            let served = served_tx.clone();
            async move {
                let _ = served.send(()).await;
                let _ = stream.write_all(b"served\n").await;
            }
        }));
        let mut client = UnixStream::connect(&path).await.unwrap();
        assert_eq!(read_to_end(&mut client).await, "");
        assert!(served_rx.try_recv().is_err(), "served another user");
        server.abort();
    }

    /// At most `max` clients are served at once: the next is told why, in one error
    /// line, and closed; those being served are not disturbed.
    #[tokio::test]
    async fn clients_past_the_cap_are_told_and_closed() {
        const MAX: usize = 2;
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(SOCKET_NAME);
        let (listener, me) = bind_private(home.path(), &path).unwrap();
        let (started_tx, mut started_rx) = mpsc::channel::<()>(MAX);
        let server = tokio::spawn(accept(listener, me, MAX, move |mut stream| {
            let started = started_tx.clone();
            async move {
                let _ = started.send(()).await;
                // Served until the client hangs up.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            }
        }));
        let mut held = Vec::new();
        for _ in 0..MAX {
            held.push(UnixStream::connect(&path).await.unwrap());
            started_rx.recv().await.unwrap();
        }
        let mut extra = UnixStream::connect(&path).await.unwrap();
        let said = read_to_end(&mut extra).await;
        let reply: Reply = serde_json::from_str(said.trim_end()).unwrap();
        let Reply::Error { message } = reply else {
            panic!("{said}");
        };
        assert!(message.contains("already serving 2 commands"), "{message}");
        // The clients being served are still connected.
        for stream in &held {
            stream.try_write(b"").unwrap();
        }
        assert!(started_rx.try_recv().is_err());
        server.abort();
    }
}
