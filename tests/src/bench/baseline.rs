//! The baseline: plain gossipsub between bare libp2p swarms, with gossipsub's default
//! configuration (1 s heartbeat, mesh 6/5/12, flood publishing) and signed messages, over
//! TCP + noise + yamux, every swarm connected to every other. No store, no encryption
//! beyond noise, no application validation: a message counts as received when gossipsub
//! hands it to the application.

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, identity, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::record::Record;

/// The one topic every bare swarm subscribes to.
pub const TOPIC: &str = "bench";

enum Command {
    Dial(Multiaddr),
    Publish(Vec<u8>, oneshot::Sender<Result<(), String>>),
    Stats(oneshot::Sender<Stats>),
}

/// What a bare swarm sees of its peers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Connected peers.
    pub connected: usize,
    /// Peers known to be subscribed to [`TOPIC`].
    pub subscribed: usize,
    /// Peers in this swarm's mesh for [`TOPIC`].
    pub mesh: usize,
}

/// A bare libp2p swarm running in its own task.
#[derive(Debug)]
pub struct Bare {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    /// The address it listens on.
    pub addr: Multiaddr,
}

fn build(keypair: identity::Keypair) -> Result<Swarm<gossipsub::Behaviour>, String> {
    let behaviour = gossipsub::Behaviour::new(
        MessageAuthenticity::Signed(keypair.clone()),
        gossipsub::Config::default(),
    )
    .map_err(|e| format!("gossipsub: {e}"))?;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| format!("transport: {e}"))?
        .with_behaviour(|_| behaviour)
        .unwrap_or_else(|never| match never {})
        // Keep connections of peers outside the mesh, as Confer does.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

impl Bare {
    /// Starts a swarm listening on 127.0.0.1, subscribed to [`TOPIC`]; every message it
    /// receives is noted in `record` as received by node `index`.
    pub async fn start(index: usize, record: Record) -> Result<Bare, String> {
        let keypair = identity::Keypair::generate_ed25519();
        let mut swarm = build(keypair)?;
        let topic = IdentTopic::new(TOPIC);
        swarm
            .behaviour_mut()
            .subscribe(&topic)
            .map_err(|e| format!("subscribe: {e}"))?;
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0"
            .parse()
            .map_err(|e| format!("address: {e}"))?;
        swarm
            .listen_on(listen)
            .map_err(|e| format!("listen: {e}"))?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let (commands, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run(swarm, rx, index, record));
        Ok(Bare {
            commands,
            task,
            addr,
        })
    }

    /// Dials another swarm.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.commands.send(Command::Dial(addr)).await;
    }

    /// Its view of its peers.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stats(tx)).await.is_err() {
            return Stats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// A cheap handle for publishing from another task.
    pub fn publisher(&self) -> Publisher {
        Publisher(self.commands.clone())
    }

    /// Stops the swarm (its connections close).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Publishes through a [`Bare`] swarm from any task.
#[derive(Debug, Clone)]
pub struct Publisher(mpsc::Sender<Command>);

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Dial(_) => "Dial",
            Command::Publish(..) => "Publish",
            Command::Stats(_) => "Stats",
        })
    }
}

impl Publisher {
    /// Publishes `data` on [`TOPIC`].
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(Command::Publish(data, tx))
            .await
            .map_err(|_| "swarm stopped".to_owned())?;
        rx.await.map_err(|_| "swarm stopped".to_owned())?
    }
}

async fn run(
    mut swarm: Swarm<gossipsub::Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    index: usize,
    record: Record,
) {
    let topic = IdentTopic::new(TOPIC);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Dial(addr)) => {
                    if let Err(e) = swarm.dial(addr) {
                        eprintln!("baseline: dial failed: {e}");
                    }
                }
                Some(Command::Publish(data, done)) => {
                    let result = swarm
                        .behaviour_mut()
                        .publish(topic.clone(), data)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = done.send(result);
                }
                Some(Command::Stats(reply)) => {
                    let hash = topic.hash();
                    let stats = Stats {
                        connected: swarm.connected_peers().count(),
                        subscribed: swarm
                            .behaviour()
                            .all_peers()
                            .filter(|(_, topics)| topics.contains(&&hash))
                            .count(),
                        mesh: swarm.behaviour().mesh_peers(&hash).count(),
                    };
                    let _ = reply.send(stats);
                }
                None => return,
            },
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) = event {
                    record.got(&message.data, index, Instant::now());
                }
            }
        }
    }
}
