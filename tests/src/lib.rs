//! Helpers for Confer's multi-node tests: start real nodes on loopback with real,
//! temporary profile directories, and wait for events instead of sleeping.
#![deny(missing_docs)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use confer_node::api::{MessageInfo, Reply, Request, StatusInfo};
use confer_node::net::NetConfig;
use confer_node::relay::{Relay, RelayConfig, RelayLimits};
use confer_node::settings::Settings;
use confer_node::{FollowUpdate, Node, NodeConfig};
use confer_store::Profile;
use tempfile::TempDir;

/// The passphrase every test profile uses.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// How long any single awaited event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A running node with its own temporary profile directory.
#[derive(Debug)]
pub struct TestNode {
    /// The node handle.
    pub node: Node,
    /// The profile directory (deleted on drop).
    pub home: TempDir,
}

impl TestNode {
    /// Creates a profile named `name` and starts a node for it on 127.0.0.1.
    pub async fn start(name: &str) -> TestNode {
        Self::start_with(name, NetConfig::for_tests()).await
    }

    /// [`Self::start`] with other network tuning.
    pub async fn start_with(name: &str, net: NetConfig) -> TestNode {
        init_tracing();
        let home = tempfile::tempdir().expect("temporary directory");
        let profile = Profile::create(home.path(), PASSPHRASE, name).expect("create profile");
        let node = start_node_with(profile, net).await;
        TestNode { node, home }
    }

    /// Creates a profile named `name`, in relay-only mode or not, and starts a node for
    /// it that reserves on `relays` (a relay-only node listens on nothing directly).
    pub async fn start_reaching(name: &str, relay_only: bool, relays: &[String]) -> TestNode {
        init_tracing();
        let home = tempfile::tempdir().expect("temporary directory");
        let profile = Profile::create(home.path(), PASSPHRASE, name).expect("create profile");
        if relay_only {
            Settings {
                relay_only,
                relays: Vec::new(),
            }
            .save(&profile)
            .expect("save the settings");
        }
        let listen = if relay_only {
            Vec::new()
        } else {
            vec!["/ip4/127.0.0.1/tcp/0".into()]
        };
        let config = NodeConfig {
            listen,
            relays: relays.to_vec(),
            net: NetConfig::for_tests(),
            control_socket: true,
            follow_queue: confer_node::FOLLOW_QUEUE,
        };
        let node = Node::start(profile, config).await.expect("start node");
        TestNode { node, home }
    }

    /// The node's status.
    pub async fn status(&self) -> StatusInfo {
        match self.ok(Request::Status).await {
            Reply::Status(info) => info,
            other => panic!("unexpected reply to Status: {other:?}"),
        }
    }

    /// Waits until the node has no open connection (its peers' nodes have stopped and it
    /// has seen them go).
    pub async fn until_alone(&self) {
        within("the node to see every peer go", async {
            while !self.status().await.connections.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Stops the node (cleanly) and starts it again on the same profile directory and
    /// the same address, as a person would after closing their laptop.
    pub async fn restart(&mut self) {
        // The direct listening addresses only: relayed ones come back with the reservation.
        let listen: Vec<String> = self
            .node
            .listen_addrs()
            .into_iter()
            .filter(|a| !a.contains("/p2p-circuit"))
            .collect();
        self.node.clone().shutdown().await;
        let profile = Profile::unlock(self.home.path(), PASSPHRASE).expect("unlock profile");
        let config = NodeConfig {
            listen,
            relays: Vec::new(),
            net: NetConfig::for_tests(),
            control_socket: true,
            follow_queue: confer_node::FOLLOW_QUEUE,
        };
        self.node = Node::start(profile, config).await.expect("restart node");
    }

    /// Sends a message that must be accepted; returns its id.
    pub async fn send(&self, room: &str, text: &str) -> String {
        match self
            .ok(Request::Send {
                room: room.into(),
                text: text.into(),
            })
            .await
        {
            Reply::Sent { message_id, .. } => message_id,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Creates `room` with this node as facilitator (shown as `display_name`), and admits
    /// each of `joiners` under its name through an invite, as people would.
    pub async fn form_room(&self, room: &str, display_name: &str, joiners: &[(&TestNode, &str)]) {
        self.ok(Request::CreateRoom {
            name: room.into(),
            display_name: Some(display_name.into()),
        })
        .await;
        self.form_more(room, joiners).await;
    }

    /// Issues an invite to `room`, valid for 10 minutes; returns its code.
    pub async fn invite(&self, room: &str) -> String {
        match self
            .ok(Request::Invite {
                room: room.into(),
                expires_in_secs: 600,
            })
            .await
        {
            Reply::Invite(invite) => invite.code,
            other => panic!("no invite: {other:?}"),
        }
    }

    /// Invites each joiner into an existing room and waits until each has joined.
    pub async fn form_more(&self, room: &str, joiners: &[(&TestNode, &str)]) {
        for (node, name) in joiners {
            let code = self.invite(room).await;
            let joined = within(
                "join",
                node.node.request(Request::Join {
                    code,
                    display_name: Some((*name).into()),
                    wait_secs: 0,
                }),
            )
            .await;
            assert!(
                matches!(joined, Reply::Room(_)),
                "{name} could not join: {joined:?}"
            );
        }
    }

    /// Sends a request that must succeed.
    pub async fn ok(&self, request: Request) -> Reply {
        match self.node.request(request.clone()).await {
            Reply::Error { message } => panic!("{request:?} failed: {message}"),
            reply => reply,
        }
    }

    /// Sends a request that must fail, and returns the error sentence.
    pub async fn err(&self, request: Request) -> String {
        match self.node.request(request.clone()).await {
            Reply::Error { message } => message,
            reply => panic!("{request:?} should have failed, got {reply:?}"),
        }
    }

    /// The room's history as this node shows it.
    pub async fn history(&self, room: &str) -> Vec<MessageInfo> {
        match self
            .ok(Request::Read {
                room: room.into(),
                follow: false,
                last: None,
            })
            .await
        {
            Reply::History { messages, .. } => messages,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The room's history without this node's own delivery marks (`pending`), for
    /// comparing what different members hold.
    pub async fn said(&self, room: &str) -> Vec<MessageInfo> {
        let mut messages = self.history(room).await;
        for m in &mut messages {
            m.pending = false;
        }
        messages
    }

    /// The profile directory.
    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

/// Starts a node for an unlocked profile on 127.0.0.1 with a short gossip heartbeat.
pub async fn start_node(profile: Profile) -> Node {
    start_node_with(profile, NetConfig::for_tests()).await
}

/// [`start_node`] with other network tuning.
pub async fn start_node_with(profile: Profile, net: NetConfig) -> Node {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        relays: Vec::new(),
        net,
        control_socket: true,
        follow_queue: confer_node::FOLLOW_QUEUE,
    };
    Node::start(profile, config).await.expect("start node")
}

/// Starts a relay on 127.0.0.1 with a fresh identity; its address is
/// `relay.addresses()[0]`.
pub async fn start_relay() -> Relay {
    init_tracing();
    let config = RelayConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        announce: Vec::new(),
        limits: RelayLimits::default(),
    };
    Relay::start(libp2p::identity::Keypair::generate_ed25519(), config)
        .await
        .expect("start relay")
}

/// Awaits `future`, failing the test with `what` if it takes longer than [`EVENT_TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(EVENT_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The next new message a follower ([`confer_node::Following::updates`]) receives,
/// skipping delivery confirmations and membership changes; `None` once the stream has
/// ended.
pub async fn next_message(
    updates: &mut tokio::sync::mpsc::Receiver<FollowUpdate>,
) -> Option<MessageInfo> {
    loop {
        match updates.recv().await? {
            FollowUpdate::Message(message) => return Some(message),
            FollowUpdate::Delivered(_) | FollowUpdate::Event(_) => {}
        }
    }
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Panics if any file below `dir` contains any of `needles` (as UTF-8 bytes).
pub fn assert_no_plaintext(dir: &Path, needles: &[&str]) {
    let files = files_below(dir);
    assert!(!files.is_empty(), "nothing stored under {}", dir.display());
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} contains the plaintext {needle:?}",
                file.display()
            );
        }
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
