//! A circuit relay v2 server: `confer relay run`.
//!
//! A relay lets members behind NAT, or in relay-only mode, reach each other: a member
//! reserves a slot on the relay and is then reachable at its relayed address; the relay
//! joins two members' streams end to end. Those streams are noise-encrypted between the
//! members, and room traffic inside them is encrypted again under the room's keys, so the
//! relay learns the members' IP addresses and peer ids and how much they send, never what.
//! It holds no profile, no room and no store; anyone (a facilitator, an organisation) can
//! host one.
//!
//! The relay also answers AutoNAT probes, so that members connected to it learn whether
//! they are reachable directly.
//!
//! Limits: libp2p's defaults are for short hole-punching circuits (2 minutes, 128 KiB);
//! Confer's members in relay-only mode talk through the relay for as long as they are
//! online, so [`RelayLimits::default`] allows long, unmetered circuits and bounds their
//! number instead.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, SwarmBuilder, autonat, connection_limits, identify, identity,
    multiaddr::Protocol, noise, ping, relay, swarm::NetworkBehaviour, swarm::SwarmEvent, tcp,
    yamux,
};
use tokio::sync::oneshot;

use crate::net::{CONFER_VERSION, NetError};

/// How much a relay serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Peers holding a reservation at once.
    pub max_reservations: usize,
    /// Circuits open at once.
    pub max_circuits: usize,
    /// Circuits open at once from one peer.
    pub max_circuits_per_peer: usize,
    /// How long one circuit may last before the members reconnect through it.
    pub circuit_duration: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 256,
            max_circuits: 1024,
            max_circuits_per_peer: 16,
            circuit_duration: Duration::from_secs(60 * 60),
        }
    }
}

/// How a relay is started.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where to listen, as multiaddresses, e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: Vec<String>,
    /// Public addresses to announce in addition to the listening ones (for a relay behind
    /// a port forward).
    pub announce: Vec<String>,
    /// What it serves.
    pub limits: RelayLimits,
}

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The network layer could not be built.
    #[error("could not start networking: {0}")]
    Net(#[from] NetError),
    /// Listening failed.
    #[error("could not listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// An address is not a multiaddress.
    #[error("`{0}` is not a valid address (expected e.g. /ip4/0.0.0.0/tcp/4001)")]
    BadAddress(String),
    /// Nothing to listen on.
    #[error("a relay needs at least one address to listen on")]
    NoListen,
    /// The relay's key file could not be read or written.
    #[error("the relay key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The name of the relay's key file in its directory.
pub const KEY_FILE: &str = "relay.key";

/// Loads the relay's identity from `<dir>/relay.key`, creating the directory (0700) and a
/// new random key (0600, written once with `create_new`) if there is none, so the relay
/// keeps its peer id, and with it the addresses members have saved, across restarts.
///
/// The key is the relay's network identity only: whoever copies it can pose as the relay
/// and so see who connects when, but never what members say (that is end-to-end encrypted).
pub fn load_or_create_key(dir: &Path) -> Result<identity::Keypair, RelayError> {
    let path = dir.join(KEY_FILE);
    let fail = |reason: String| RelayError::Key {
        path: path.display().to_string(),
        reason,
    };
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    match std::fs::OpenOptions::new().read(true).open(&path) {
        Ok(mut file) => {
            let mode = file
                .metadata()
                .map_err(|e| fail(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "is readable by others (mode {:o}); run `chmod 600` on it",
                    mode & 0o777
                )));
            }
            let mut bytes = zeroize::Zeroizing::new(Vec::new());
            Read::by_ref(&mut file)
                .take(33)
                .read_to_end(&mut bytes)
                .map_err(|e| fail(e.to_string()))?;
            if bytes.len() != 32 {
                return Err(fail("is damaged (it must hold exactly 32 bytes)".into()));
            }
            secret.copy_from_slice(&bytes);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(e.to_string()))?;
            getrandom::fill(secret.as_mut()).map_err(|e| fail(e.to_string()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| fail(e.to_string()))?;
            file.write_all(secret.as_ref())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail(e.to_string()))?;
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    identity::Keypair::ed25519_from_bytes(secret.as_mut())
        .map_err(|_| fail("is not a valid key".into()))
}

#[derive(NetworkBehaviour)]
struct RelayBehaviour {
    /// First, so that a connection it denies was never taken in by the others (see
    /// [`crate::net::Behaviour::admission`]).
    limits: connection_limits::Behaviour,
    relay: relay::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    autonat: autonat::Behaviour,
}

/// A running relay. Dropping it does not stop it; call [`Relay::shutdown`].
#[derive(Debug)]
pub struct Relay {
    peer_id: PeerId,
    addresses: Vec<Multiaddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn parse_all(list: &[String]) -> Result<Vec<Multiaddr>, RelayError> {
    list.iter()
        .map(|a| a.parse().map_err(|_| RelayError::BadAddress(a.clone())))
        .collect()
}

impl Relay {
    /// Starts a relay whose key is kept in `dir` (see [`load_or_create_key`]).
    pub async fn start_in(dir: &Path, config: RelayConfig) -> Result<Relay, RelayError> {
        // Check the addresses before creating anything on disk.
        parse_all(&config.listen)?;
        parse_all(&config.announce)?;
        Self::start(load_or_create_key(dir)?, config).await
    }

    /// Starts a relay with the given identity; returns once it listens.
    pub async fn start(
        keypair: identity::Keypair,
        config: RelayConfig,
    ) -> Result<Relay, RelayError> {
        let listen = parse_all(&config.listen)?;
        let announce = parse_all(&config.announce)?;
        if listen.is_empty() {
            return Err(RelayError::NoListen);
        }
        let peer_id = keypair.public().to_peer_id();
        let limits = &config.limits;
        let relay_config = relay::Config {
            max_reservations: limits.max_reservations,
            max_circuits: limits.max_circuits,
            max_circuits_per_peer: limits.max_circuits_per_peer,
            max_circuit_duration: limits.circuit_duration,
            // Unmetered: a circuit carries a member's whole session (0 means no limit).
            max_circuit_bytes: 0,
            ..relay::Config::default()
        };
        let behaviour = RelayBehaviour {
            relay: relay::Behaviour::new(peer_id, relay_config),
            identify: identify::Behaviour::new(identify::Config::new(
                CONFER_VERSION.to_owned(),
                keypair.public(),
            )),
            ping: crate::net::ping_behaviour(),
            autonat: autonat::Behaviour::new(
                peer_id,
                autonat::Config {
                    only_global_ips: false,
                    ..autonat::Config::default()
                },
            ),
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established_per_peer(Some(4))
                    .with_max_pending_incoming(Some(128))
                    .with_max_established(Some(
                        u32::try_from(limits.max_reservations * 2).unwrap_or(u32::MAX),
                    )),
            ),
        };
        let mut swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| RelayError::Net(NetError::Noise(e)))?
            .with_behaviour(|_| behaviour)
            .unwrap_or_else(|never| match never {})
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        // Serve whatever the announced addresses are, even before AutoNAT confirms them.
        swarm
            .behaviour_mut()
            .relay
            .set_status(Some(relay::Status::Enable));

        let mut addresses = crate::net::listen_all(&mut swarm, &listen)
            .await
            .map_err(|f| RelayError::Listen {
                addr: f.addr,
                reason: f.reason,
            })?;
        // Loopback addresses are useless to members elsewhere (and end up in their relayed
        // addresses, through the reservation): announce them only if there is nothing else.
        if addresses.iter().any(|a| !is_loopback(a)) {
            addresses.retain(|a| !is_loopback(a));
        }
        for addr in announce.iter().chain(&addresses) {
            swarm.add_external_address(addr.clone());
        }
        let mut announced: Vec<Multiaddr> = announce;
        announced.extend(addresses.iter().cloned());
        let addresses = announced
            .into_iter()
            .map(|a| a.with(Protocol::P2p(peer_id)))
            .collect();

        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::NewListenAddr { address, .. } if !is_loopback(&address) => {
                            swarm.add_external_address(address);
                        }
                        SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(event)) => {
                            tracing::debug!(?event, "relay");
                        }
                        // A member whose network dropped silently: free its slot now.
                        SwarmEvent::Behaviour(RelayBehaviourEvent::Ping(ping::Event {
                            connection,
                            result: Err(failure),
                            ..
                        })) if !matches!(failure, ping::Failure::Unsupported) => {
                            swarm.close_connection(connection);
                        }
                        _ => {}
                    }
                }
            }
        });
        Ok(Relay {
            peer_id,
            addresses,
            stop: Some(stop),
            task,
        })
    }

    /// The relay's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses members should use for this relay, each ending in `/p2p/<peer id>`.
    pub fn addresses(&self) -> &[Multiaddr] {
        &self.addresses
    }

    /// Stops the relay and waits until its connections are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_key_is_created_private_and_kept() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let home = dir.path().join("relay");
        let first = load_or_create_key(&home).expect("created");
        let mode = std::fs::metadata(home.join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_key(&home).expect("loaded");
        assert_eq!(first.public(), again.public());
    }

    #[test]
    fn a_readable_or_damaged_relay_key_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        load_or_create_key(dir.path()).expect("created");
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = load_or_create_key(dir.path()).expect_err("group-readable key");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, [1u8; 31]).expect("truncate");
        let error = load_or_create_key(dir.path()).expect_err("damaged key");
        assert!(error.to_string().contains("damaged"), "{error}");
    }
}
