//! The libp2p network layer: it moves opaque bytes between peers and knows nothing about
//! rooms, members or cryptography.
//!
//! # What is on the wire
//!
//! * **Transport**: TCP, secured with noise (XX, ed25519 identities) and multiplexed with
//!   yamux. These are libp2p's standard protocols, so independent implementations (for
//!   example js-libp2p) can talk to a Confer node.
//! * **gossipsub** carries room traffic. Topic names are announced to every connected peer,
//!   so the caller must use opaque topic names (never a room name).
//! * **request-response** on [`JOIN_PROTOCOL`] carries the join handshake: one opaque request,
//!   one opaque response ([`JoinCodec`]); on [`SYNC_PROTOCOL`] a member pushes recent room
//!   envelopes to a member whose subscription it has just seen, closing the window in which
//!   gossip would not yet route to a newly subscribed peer.
//! * **identify** (protocol version [`IDENTIFY_PROTOCOL_VERSION`]) and **ping** (defaults).
//! * **connection limits** bound the number of connections (see [`build_swarm`]).
//!
//! # gossipsub choices
//!
//! * **Anonymous messages.** [`gossipsub::MessageAuthenticity::Anonymous`] puts neither an
//!   author, a sequence number nor a signature on the wire, so the network cannot learn who
//!   wrote a message; authenticity is the room layer's job, inside the encrypted payload.
//!   [`gossipsub::ValidationMode::Anonymous`] makes every node *reject* an incoming message
//!   that carries any of those fields, so no peer can add authorship by mistake.
//! * **Content-addressed ids.** Without author and sequence number the default message id
//!   would be the same for every message, so [`message_id`] (SHA-256 of the payload) is the
//!   `message_id_fn`. Consequence: publishing the *same bytes* twice within the duplicate
//!   cache time (60 s) fails with [`gossipsub::PublishError::Duplicate`], and the network
//!   delivers them once. Encrypted payloads with fresh nonces never collide.
//! * **Application validation.** `validate_messages()` is on: gossipsub neither forwards nor
//!   forgets a received message until the owning event loop calls
//!   [`gossipsub::Behaviour::report_message_validation_result`] with the `message_id` and
//!   `propagation_source` of the [`gossipsub::Event::Message`]. **The caller MUST report
//!   every message** (`Accept` to forward it, `Reject` to penalise the sender, `Ignore` to
//!   drop it quietly); an unreported message is never forwarded to the rest of the room.
//! * **Size.** [`MAX_GOSSIP`] is gossipsub's `max_transmit_size`. It bounds the *whole*
//!   protobuf frame on receive (payload plus topic and framing, a few dozen bytes), while
//!   `publish` only checks the payload; keep payloads at least 1 KiB below [`MAX_GOSSIP`] or
//!   the receivers drop them.
//! * **Mesh sized for rooms.** A room has at most 8 members, so a node has at most 7 room
//!   peers on a topic, and every one of them should be in the mesh: the brief records that a
//!   shrunken mesh (`mesh_n_low` 1, `mesh_outbound_min` 0) silently lost a third of the
//!   deliveries for good. So `mesh_n` = [`MESH_N`] = 7 (graft every room peer), `mesh_n_low`
//!   = [`MESH_N_LOW`] = 7 too (a mesh missing any room peer is refilled at the next heartbeat,
//!   and a newly subscribed peer is grafted at once; with a lower value two peers can stay
//!   out of each other's mesh indefinitely), `mesh_n_high` = [`MESH_N_HIGH`] = 12 (never
//!   prune within a room, with head room for transient duplicates), and `mesh_outbound_min`
//!   = [`MESH_OUTBOUND_MIN`] = 2 (the gossipsub default; it must be at most `mesh_n / 2`).
//!   gossipsub 0.50's `ConfigBuilder::build` only validates mesh parameters of topics given a
//!   per-topic transmit size, so these constants are checked at compile time here instead.
//!   Flood publishing is on: a node's own messages go directly to every subscribed peer, not
//!   just to its mesh. Gossip alone is still not delivery; the room layer must sync.
//! * **Heartbeat** from [`NetConfig::heartbeat`], also used as the initial heartbeat delay
//!   (the default 5 s delay would leave the mesh empty for 5 s after start).
//!
//! # Connections
//!
//! Room members keep their connections open: the idle timeout is
//! [`NetConfig::idle_timeout`] (one hour by default instead of libp2p's 10 s). gossipsub
//! only keeps a connection alive while the peer is in a mesh, so without this a peer that
//! is connected but not (yet) meshed, or only used for the join handshake, would be
//! dropped after 10 s of silence.

use std::{io, time::Duration};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, connection_limits, gossipsub, identify, identity, noise,
    ping, request_response, swarm::NetworkBehaviour, tcp, yamux,
};
use sha2::{Digest, Sha256};

/// The join handshake's request-response protocol.
pub const JOIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/confer/join/1");

/// The protocol on which a member pushes recent room envelopes to another member whose
/// subscription it has just seen (framed like [`JOIN_PROTOCOL`], response empty).
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/confer/sync/1");

/// Protocol version announced by identify.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/confer/0.1.0";

/// Largest join request, in bytes (excluding the 4-byte length prefix).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Largest join response, in bytes (excluding the 4-byte length prefix).
pub const MAX_RESPONSE: usize = 1024 * 1024;

/// gossipsub's `max_transmit_size`: the largest gossipsub frame accepted, in bytes. The
/// payload must be somewhat smaller (see the module documentation).
pub const MAX_GOSSIP: usize = 256 * 1024;

/// gossipsub `mesh_n`: the target mesh size, every room peer (at most 7).
pub const MESH_N: usize = 7;
/// gossipsub `mesh_n_low`: below this the mesh is refilled up to [`MESH_N`].
pub const MESH_N_LOW: usize = 7;
/// gossipsub `mesh_n_high`: above this the mesh is pruned down to [`MESH_N`].
pub const MESH_N_HIGH: usize = 12;
/// gossipsub `mesh_outbound_min`: outbound peers kept in the mesh.
pub const MESH_OUTBOUND_MIN: usize = 2;

// The constraints gossipsub documents but does not check for the default mesh parameters.
const _: () = assert!(
    MESH_OUTBOUND_MIN <= MESH_N_LOW
        && MESH_N_LOW <= MESH_N
        && MESH_N <= MESH_N_HIGH
        && MESH_OUTBOUND_MIN * 2 <= MESH_N
);

/// Most connections to one peer (two allows a simultaneous dial in both directions).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Most incoming connections still in their handshake.
pub const MAX_PENDING_INCOMING: u32 = 32;
/// Most established connections in total (a node may be in many rooms).
pub const MAX_ESTABLISHED: u32 = 256;

/// Tunable network parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// gossipsub heartbeat interval (mesh maintenance and gossip).
    pub heartbeat: Duration,
    /// How long a connection with no active stream is kept open.
    pub idle_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60 * 60),
        }
    }
}

impl NetConfig {
    /// A configuration for tests: a 100 ms heartbeat so meshes form quickly.
    pub fn for_tests() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            ..Self::default()
        }
    }
}

/// Why a swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The noise handshake configuration could not be created from the keypair.
    #[error("noise configuration: {0}")]
    Noise(#[from] noise::Error),
    /// The gossipsub configuration was rejected.
    #[error("gossipsub configuration: {0}")]
    GossipsubConfig(#[from] gossipsub::ConfigBuilderError),
    /// The gossipsub behaviour could not be created.
    #[error("gossipsub: {0}")]
    Gossipsub(&'static str),
    /// Peer scoring could not be enabled.
    #[error("gossipsub peer scoring: {0}")]
    PeerScore(String),
}

/// The node's libp2p behaviour. Its events are [`BehaviourEvent`]s, one variant per field
/// (`Gossipsub`, `Join`, `Sync`, `Identify`, `Ping`, `Limits`).
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Room traffic (see the module documentation; every received message MUST be reported).
    pub gossipsub: gossipsub::Behaviour,
    /// The join handshake on [`JOIN_PROTOCOL`].
    pub join: request_response::Behaviour<JoinCodec>,
    /// Pushes of recent envelopes on [`SYNC_PROTOCOL`].
    pub sync: request_response::Behaviour<JoinCodec>,
    /// Exchange of protocol versions and listen addresses.
    pub identify: identify::Behaviour,
    /// Liveness checks.
    pub ping: ping::Behaviour,
    /// Connection limits (it emits no events).
    pub limits: connection_limits::Behaviour,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").finish_non_exhaustive()
    }
}

/// The gossipsub message id: the SHA-256 hash of the payload.
pub fn message_id(data: &[u8]) -> gossipsub::MessageId {
    gossipsub::MessageId::new(Sha256::digest(data).as_slice())
}

fn gossipsub_config(config: &NetConfig) -> Result<gossipsub::Config, NetError> {
    let built = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|message: &gossipsub::Message| message_id(&message.data))
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP)
        .heartbeat_interval(config.heartbeat)
        .heartbeat_initial_delay(config.heartbeat)
        .mesh_n(MESH_N)
        .mesh_n_low(MESH_N_LOW)
        .mesh_n_high(MESH_N_HIGH)
        .mesh_outbound_min(MESH_OUTBOUND_MIN)
        .flood_publish(true)
        .build()?;
    Ok(built)
}

/// Concurrent sync streams allowed per connection.
pub const MAX_SYNC_STREAMS: usize = 200;

/// The score an application gives a peer that is not a member of any of its rooms: far
/// below gossipsub's graylist threshold (-80), so the node ignores everything the peer
/// sends on gossip and neither publishes nor forwards anything to it.
pub const STRANGER_SCORE: f64 = -1000.0;

/// Peer scoring is used only as a gate: the application score (weight 1) says whether a
/// peer is a member of some room here (0) or a stranger ([`STRANGER_SCORE`]). IP
/// colocation is not penalised: members may share an organisation's NAT, and tests share
/// 127.0.0.1.
fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Builds a swarm listening nowhere yet (call [`Swarm::listen_on`]) with the node's
/// [`Behaviour`] over TCP + noise + yamux.
pub fn build_swarm(
    keypair: identity::Keypair,
    config: &NetConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Anonymous,
        gossipsub_config(config)?,
    )
    .map_err(NetError::Gossipsub)?;
    gossipsub
        .with_peer_score(
            peer_score_params(),
            gossipsub::PeerScoreThresholds::default(),
        )
        .map_err(NetError::PeerScore)?;
    let join = request_response::Behaviour::new(
        [(JOIN_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default(),
    );
    // Catching up on a long absence takes many pushes at once (each at most MAX_REQUEST);
    // the default of 100 concurrent streams per connection dropped the excess. Kept below
    // yamux's own stream limit (256); pacing the pushes is the real fix (issue 4).
    let sync = request_response::Behaviour::new(
        [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default().with_max_concurrent_streams(MAX_SYNC_STREAMS),
    );
    let identify = identify::Behaviour::new(identify::Config::new(
        IDENTIFY_PROTOCOL_VERSION.to_owned(),
        keypair.public(),
    ));
    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
            .with_max_established(Some(MAX_ESTABLISHED)),
    );
    let behaviour = Behaviour {
        gossipsub,
        join,
        sync,
        identify,
        ping: ping::Behaviour::default(),
        limits,
    };
    let idle_timeout = config.idle_timeout;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| behaviour)
        .unwrap_or_else(|never| match never {})
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build();
    Ok(swarm)
}

/// The join protocol's codec: each request and each response is opaque bytes, framed as a
/// `u32` big-endian length followed by that many bytes.
///
/// Reading rejects a length above [`MAX_REQUEST`] / [`MAX_RESPONSE`] with
/// [`io::ErrorKind::InvalidData`] before allocating anything for the body, and the body
/// buffer grows only as bytes actually arrive; a stream that ends early yields
/// [`io::ErrorKind::UnexpectedEof`]. Writing refuses (with [`io::ErrorKind::InvalidInput`])
/// a message the peer would reject. Bytes after the frame are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinCodec;

async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header);
    let len = usize::try_from(len)
        .ok()
        .filter(|len| *len <= max)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds the limit of {max}"),
            )
        })?;
    let mut body = Vec::new();
    // `len <= max <= u32::MAX`, so the conversion is lossless.
    io.take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame truncated: {} of {len} bytes", body.len()),
        ));
    }
    Ok(body)
}

async fn write_frame<T>(io: &mut T, data: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(data.len())
        .ok()
        .filter(|_| data.len() <= max)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {} bytes exceeds the limit of {max}", data.len()),
            )
        })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

impl request_response::Codec for JoinCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_REQUEST).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_RESPONSE).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, MAX_REQUEST).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, MAX_RESPONSE).await
    }
}
