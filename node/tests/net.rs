//! Tests of `confer_node::net` with real swarms over TCP on 127.0.0.1.
//!
//! Every test awaits swarm events (no sleeps) inside an overall [`tokio::time::timeout`],
//! so a failure ends the test instead of hanging it.

use std::{
    collections::HashSet,
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use confer_node::net::{
    self, Behaviour, BehaviourEvent, FrameCodec, JOIN_PROTOCOL, MAX_JOIN_REQUEST, MAX_REQUEST,
    MAX_RESPONSE, NetConfig,
};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder, gossipsub, identity, noise,
    request_response::{self, Codec, ProtocolSupport},
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

type JoinEvent = request_response::Event<Vec<u8>, Vec<u8>>;

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out")
}

fn new_swarm() -> Swarm<Behaviour> {
    net::build_swarm(
        identity::Keypair::generate_ed25519(),
        &NetConfig::for_tests(),
        net::DialPolicy::open(),
    )
    .expect("swarm builds")
}

/// Starts listening on an ephemeral loopback port and returns the address.
async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr");
    swarm.listen_on(addr).expect("listen");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Dials `listener` (listening on `addr`) from `dialer`, driving both until each has the
/// connection established. Events other than the connection's are discarded.
async fn connect<A: NetworkBehaviour, B: NetworkBehaviour>(
    dialer: &mut Swarm<A>,
    listener: &mut Swarm<B>,
    addr: Multiaddr,
) {
    let dialer_id = *dialer.local_peer_id();
    let listener_id = *listener.local_peer_id();
    dialer.dial(addr).expect("dial");
    let (mut dialer_done, mut listener_done) = (false, false);
    while !(dialer_done && listener_done) {
        tokio::select! {
            event = dialer.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } = event {
                    dialer_done |= peer_id == listener_id;
                }
            }
            event = listener.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } = event {
                    listener_done |= peer_id == dialer_id;
                }
            }
        }
    }
}

/// Two connected swarms: `(listener, dialer)`.
async fn connected_pair() -> (Swarm<Behaviour>, Swarm<Behaviour>) {
    let mut a = new_swarm();
    let mut b = new_swarm();
    let addr = listen(&mut a).await;
    connect(&mut b, &mut a, addr).await;
    (a, b)
}

fn join_event(event: SwarmEvent<BehaviourEvent>) -> Option<JoinEvent> {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Join(event)) => Some(event),
        _ => None,
    }
}

#[tokio::test]
async fn join_request_response_round_trip() {
    within(async {
        let (mut a, mut b) = connected_pair().await;
        let a_id = *a.local_peer_id();
        let b_id = *b.local_peer_id();
        // Opaque bytes, including zeros and every byte value.
        let request: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let response: Vec<u8> = vec![0, 1, 2, 0xff, 0];
        let sent_id = b.behaviour_mut().join.send_request(&a_id, request.clone());

        loop {
            tokio::select! {
                event = a.select_next_some() => match join_event(event) {
                    Some(request_response::Event::Message {
                        peer,
                        message: request_response::Message::Request { request: got, channel, .. },
                        ..
                    }) => {
                        assert_eq!(peer, b_id);
                        assert_eq!(got, request);
                        a.behaviour_mut()
                            .join
                            .send_response(channel, response.clone())
                            .expect("response channel open");
                    }
                    Some(other @ request_response::Event::InboundFailure { .. }) => {
                        panic!("unexpected inbound failure: {other:?}")
                    }
                    _ => {}
                },
                event = b.select_next_some() => match join_event(event) {
                    Some(request_response::Event::Message {
                        peer,
                        message: request_response::Message::Response { request_id, response: got },
                        ..
                    }) => {
                        assert_eq!(peer, a_id);
                        assert_eq!(request_id, sent_id);
                        assert_eq!(got, response);
                        break;
                    }
                    Some(other @ request_response::Event::OutboundFailure { .. }) => {
                        panic!("unexpected outbound failure: {other:?}")
                    }
                    _ => {}
                },
            }
        }
    })
    .await;
}

/// Our own sender refuses to send an over-long request: the request fails locally, the
/// receiver never sees it, and the connection keeps working for a valid request.
#[tokio::test]
async fn oversized_request_is_refused_by_sender() {
    within(async {
        let (mut a, mut b) = connected_pair().await;
        let a_id = *a.local_peer_id();
        let too_big = b
            .behaviour_mut()
            .join
            .send_request(&a_id, vec![7; MAX_JOIN_REQUEST + 1]);
        let mut valid = None;

        loop {
            tokio::select! {
                event = a.select_next_some() => {
                    if let Some(request_response::Event::Message {
                        message: request_response::Message::Request { request, channel, .. },
                        ..
                    }) = join_event(event)
                    {
                        assert_eq!(request, b"valid".to_vec(), "only the valid request arrives");
                        a.behaviour_mut()
                            .join
                            .send_response(channel, b"ok".to_vec())
                            .expect("response channel open");
                    }
                }
                event = b.select_next_some() => match join_event(event) {
                    Some(request_response::Event::OutboundFailure { request_id, error, .. }) => {
                        assert_eq!(request_id, too_big, "unexpected failure: {error:?}");
                        let request_response::OutboundFailure::Io(e) = error else {
                            panic!("expected an io error, got {error:?}");
                        };
                        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                        assert!(valid.is_none());
                        valid = Some(
                            b.behaviour_mut().join.send_request(&a_id, b"valid".to_vec()),
                        );
                    }
                    Some(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    }) => {
                        assert_eq!(Some(request_id), valid);
                        assert_eq!(response, b"ok".to_vec());
                        break;
                    }
                    _ => {}
                },
            }
        }
    })
    .await;
}

/// A codec that frames like [`FrameCodec`] but enforces no limit, to play a hostile peer.
#[derive(Debug, Clone, Default)]
struct LaxCodec;

impl Codec for LaxCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut data = Vec::new();
        io.read_to_end(&mut data).await?;
        Ok(data)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut data = Vec::new();
        io.read_to_end(&mut data).await?;
        if data.is_empty() {
            // The receiver closed the stream without answering.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(data)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let len = u32::try_from(r.len()).expect("test request fits in u32");
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(&r).await?;
        io.flush().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&r).await?;
        io.flush().await
    }
}

/// A hostile peer sends a join frame of `MAX_JOIN_REQUEST + 1` bytes: the receiver's codec rejects it
/// and closes the stream without an answer, so the sender's request fails, and the
/// application never sees a `Request` event for it. A valid request afterwards is the first
/// and only request the receiver sees.
///
/// (request-response 0.30 reports a failed `read_request` only as a debug log, not as an
/// `InboundFailure` event, so the receiver's error kind is checked by the codec tests.)
#[tokio::test]
async fn oversized_request_is_rejected_by_receiver() {
    within(async {
        let mut a = new_swarm();
        let addr = listen(&mut a).await;
        let mut hostile = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("transport builds")
            .with_behaviour(|_| {
                request_response::Behaviour::<LaxCodec>::new(
                    [(JOIN_PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default(),
                )
            })
            .expect("behaviour builds")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        connect(&mut hostile, &mut a, addr).await;
        let a_id = *a.local_peer_id();
        let hostile_id = *hostile.local_peer_id();
        let too_big = hostile
            .behaviour_mut()
            .send_request(&a_id, vec![7; MAX_JOIN_REQUEST + 1]);
        let mut valid = None;

        loop {
            tokio::select! {
                event = a.select_next_some() => {
                    if let Some(request_response::Event::Message {
                        peer,
                        message: request_response::Message::Request { request, channel, .. },
                        ..
                    }) = join_event(event)
                    {
                        assert_eq!(peer, hostile_id);
                        assert!(
                            valid.is_some() && request == b"after".to_vec(),
                            "a request of {} bytes reached the application",
                            request.len()
                        );
                        a.behaviour_mut()
                            .join
                            .send_response(channel, b"ok".to_vec())
                            .expect("response channel open");
                    }
                }
                event = hostile.select_next_some() => match event {
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id, error, ..
                    }) => {
                        // The receiver dropped the stream without answering.
                        assert_eq!(request_id, too_big, "unexpected failure: {error:?}");
                        assert!(valid.is_none());
                        valid = Some(
                            hostile.behaviour_mut().send_request(&a_id, b"after".to_vec()),
                        );
                    }
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    }) => {
                        assert_eq!(Some(request_id), valid, "the over-long request was answered");
                        // LaxCodec reads the raw frame: length prefix, then the bytes.
                        assert_eq!(response, [&[0, 0, 0, 2][..], b"ok"].concat());
                        break;
                    }
                    _ => {}
                },
            }
        }
    })
    .await;
}

fn gossip_event(event: SwarmEvent<BehaviourEvent>) -> Option<gossipsub::Event> {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => Some(event),
        _ => None,
    }
}

/// Handles one event of a receiving swarm: on the expected message, checks it is anonymous,
/// reports it as accepted and returns true.
fn receive(
    swarm: &mut Swarm<Behaviour>,
    event: SwarmEvent<BehaviourEvent>,
    payload: &[u8],
) -> bool {
    let Some(gossipsub::Event::Message {
        propagation_source,
        message_id,
        message,
    }) = gossip_event(event)
    else {
        return false;
    };
    assert_eq!(message.data, payload);
    assert_eq!(message.source, None, "the author must not be on the wire");
    assert_eq!(
        message.sequence_number, None,
        "no sequence number on the wire"
    );
    assert_eq!(message_id, net::message_id(payload));
    assert!(
        swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(
                &message_id,
                &propagation_source,
                gossipsub::MessageAcceptance::Accept,
            ),
        "the message awaits validation"
    );
    true
}

#[tokio::test]
async fn gossip_is_anonymous_and_content_addressed() {
    within(async {
        // Three nodes, all connected to each other like a small room.
        let (mut a, mut b, mut c) = (new_swarm(), new_swarm(), new_swarm());
        // Gossip runs between members only: each takes the others for members.
        let ids = [*a.local_peer_id(), *b.local_peer_id(), *c.local_peer_id()];
        for swarm in [&a, &b, &c] {
            for id in ids {
                swarm.behaviour().peers().recognise(id);
            }
        }
        let addr_a = listen(&mut a).await;
        let addr_b = listen(&mut b).await;
        connect(&mut b, &mut a, addr_a.clone()).await;
        connect(&mut c, &mut a, addr_a).await;
        connect(&mut c, &mut b, addr_b).await;

        let topic = gossipsub::IdentTopic::new("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
        for swarm in [&mut a, &mut b, &mut c] {
            assert!(
                swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&topic)
                    .expect("subscribe")
            );
        }
        let payload = b"\x00opaque sealed bytes\xff".to_vec();
        // Nobody has told `a` about a subscription yet.
        assert!(matches!(
            a.behaviour_mut()
                .gossipsub
                .publish(topic.clone(), payload.clone()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
        ));

        let peers = HashSet::from([*b.local_peer_id(), *c.local_peer_id()]);
        let mut subscribed = HashSet::new();
        let (mut b_got, mut c_got) = (false, false);
        while !(b_got && c_got) {
            tokio::select! {
                event = a.select_next_some() => match gossip_event(event) {
                    Some(gossipsub::Event::Subscribed { peer_id, topic: hash, .. }) => {
                        assert_eq!(hash, topic.hash());
                        assert!(peers.contains(&peer_id));
                        subscribed.insert(peer_id);
                        if subscribed == peers {
                            let id = a
                                .behaviour_mut()
                                .gossipsub
                                .publish(topic.clone(), payload.clone())
                                .expect("publish");
                            assert_eq!(id, net::message_id(&payload));
                        }
                    }
                    Some(gossipsub::Event::Message { .. }) => {
                        panic!("the publisher got its own message back")
                    }
                    _ => {}
                },
                event = b.select_next_some() => b_got |= receive(&mut b, event, &payload),
                event = c.select_next_some() => c_got |= receive(&mut c, event, &payload),
            }
        }
    })
    .await;
}

/// Serves `header` and then fails any further read, so a decoder that tries to read (or
/// allocate for) the body is caught.
struct HeaderOnly {
    header: [u8; 4],
    sent: usize,
}

impl AsyncRead for HeaderOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let rest = &self.header[self.sent..];
        if rest.is_empty() {
            return Poll::Ready(Err(io::Error::other("the decoder read past the header")));
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.sent += n;
        Poll::Ready(Ok(n))
    }
}

#[tokio::test]
async fn codec_rejects_overlong_length_prefix_before_reading_body() {
    for (mut codec, claimed, limit_name) in [
        (FrameCodec::sync(), u32::MAX, "4 GiB request"),
        (
            FrameCodec::sync(),
            MAX_REQUEST as u32 + 1,
            "request one byte over",
        ),
        (
            FrameCodec::join(),
            MAX_JOIN_REQUEST as u32 + 1,
            "join request one byte over",
        ),
    ] {
        let mut io = HeaderOnly {
            header: claimed.to_be_bytes(),
            sent: 0,
        };
        let err = codec
            .read_request(&JOIN_PROTOCOL, &mut io)
            .await
            .expect_err(limit_name);
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidData,
            "{limit_name}: {err}"
        );
        assert_eq!(io.sent, 4);
    }
    for claimed in [u32::MAX, MAX_RESPONSE as u32 + 1] {
        let mut io = HeaderOnly {
            header: claimed.to_be_bytes(),
            sent: 0,
        };
        let err = FrameCodec::sync()
            .read_response(&JOIN_PROTOCOL, &mut io)
            .await
            .expect_err("over-long response");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}

#[tokio::test]
async fn codec_frames_round_trip_and_reject_bad_input() {
    // Round trip at the limit.
    let mut wire = futures::io::Cursor::new(Vec::new());
    let max = vec![0xab; MAX_REQUEST];
    FrameCodec::sync()
        .write_request(&JOIN_PROTOCOL, &mut wire, max.clone())
        .await
        .expect("write");
    assert_eq!(wire.get_ref()[..4], (MAX_REQUEST as u32).to_be_bytes());
    wire.set_position(0);
    let got = FrameCodec::sync()
        .read_request(&JOIN_PROTOCOL, &mut wire)
        .await
        .expect("read");
    assert_eq!(got, max);

    // Empty messages are fine.
    let mut wire = futures::io::Cursor::new(Vec::new());
    FrameCodec::sync()
        .write_response(&JOIN_PROTOCOL, &mut wire, Vec::new())
        .await
        .expect("write");
    wire.set_position(0);
    let got = FrameCodec::sync()
        .read_response(&JOIN_PROTOCOL, &mut wire)
        .await
        .expect("read");
    assert!(got.is_empty());

    // Writing over the limit is refused and writes nothing.
    let mut wire = futures::io::Cursor::new(Vec::new());
    let err = FrameCodec::sync()
        .write_response(&JOIN_PROTOCOL, &mut wire, vec![0; MAX_RESPONSE + 1])
        .await
        .expect_err("over-long response");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(wire.get_ref().is_empty());

    // Truncated header or body.
    for bad in [&[0u8, 0][..], &[0, 0, 0, 5, 1, 2][..], &[][..]] {
        let err = FrameCodec::sync()
            .read_request(&JOIN_PROTOCOL, &mut futures::io::Cursor::new(bad))
            .await
            .expect_err("truncated frame");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{bad:?}");
    }
}

/// Relay-only mode is enforced by the TCP transport itself: a direct dial to anything but
/// an allowed relay fails before any packet leaves (the target sees no connection), while
/// the allowed relay can be dialled.
#[tokio::test]
async fn a_relay_only_swarm_dials_nothing_directly_but_its_relays() {
    within(async {
        let mut member = new_swarm();
        let member_addr = listen(&mut member).await;
        let mut relay = new_swarm();
        let relay_addr = listen(&mut relay).await;
        let relay_full = relay_addr
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(*relay.local_peer_id()));

        let policy = net::DialPolicy::relay_only([relay_full.clone()]);
        assert!(policy.allows(&relay_addr) && !policy.allows(&member_addr));
        let mut private = net::build_swarm(
            identity::Keypair::generate_ed25519(),
            &NetConfig::for_tests(),
            policy,
        )
        .expect("swarm builds");

        private.dial(member_addr).expect("the dial starts");
        loop {
            tokio::select! {
                event = private.select_next_some() => match event {
                    SwarmEvent::OutgoingConnectionError { .. } => break,
                    SwarmEvent::ConnectionEstablished { .. } => {
                        panic!("a relay-only swarm connected directly to a member")
                    }
                    _ => {}
                },
                event = member.select_next_some() => {
                    assert!(
                        !matches!(
                            event,
                            SwarmEvent::IncomingConnection { .. }
                                | SwarmEvent::ConnectionEstablished { .. }
                        ),
                        "the member saw a connection attempt: {event:?}"
                    );
                }
            }
        }
        connect(&mut private, &mut relay, relay_full).await;
    })
    .await;
}

/// A connection over the per-peer limit is denied before any other behaviour records it
/// (libp2p calls the behaviours in field order; one denied after request-response had
/// taken the connection left it a phantom: requests routed to a connection that never
/// runs, and in debug builds a panic when the real connections closed).
#[tokio::test]
async fn a_connection_over_the_limit_leaves_no_trace() {
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    within(async {
        let mut a = new_swarm();
        let mut b = new_swarm();
        let a_id = *a.local_peer_id();
        let addr = listen(&mut a).await;
        let extra = confer_node::strangers::MAX_CONNECTIONS_PER_PEER + 1;
        for _ in 0..extra {
            b.dial(
                DialOpts::peer_id(a_id)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::Always)
                    .build(),
            )
            .expect("dial");
        }
        // Until b has its connections and the one too many has been refused.
        let (mut established, mut refused) = (0, 0);
        while established + refused < extra {
            tokio::select! {
                event = b.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => established += 1,
                    SwarmEvent::OutgoingConnectionError { .. } => refused += 1,
                    _ => {}
                },
                _ = a.select_next_some() => {}
            }
        }
        assert_eq!(
            established,
            confer_node::strangers::MAX_CONNECTIONS_PER_PEER
        );
        // Closing the real connections must find every behaviour's books straight.
        assert!(b.disconnect_peer_id(a_id).is_ok());
        let mut closed = 0;
        while closed < established || a.is_connected(b.local_peer_id()) {
            tokio::select! {
                event = b.select_next_some() => {
                    if let SwarmEvent::ConnectionClosed { .. } = event {
                        closed += 1;
                    }
                }
                _ = a.select_next_some() => {}
            }
        }
        // And a new connection carries requests as before.
        connect(&mut b, &mut a, addr).await;
        let sent = b.behaviour_mut().join.send_request(&a_id, vec![1, 2, 3]);
        loop {
            tokio::select! {
                event = a.select_next_some() => {
                    if let Some(request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    }) = join_event(event)
                    {
                        let _ = a.behaviour_mut().join.send_response(channel, vec![4]);
                    }
                }
                event = b.select_next_some() => match join_event(event) {
                    Some(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    }) => {
                        assert_eq!((request_id, response), (sent, vec![4]));
                        break;
                    }
                    Some(other @ request_response::Event::OutboundFailure { .. }) => {
                        panic!("the request failed: {other:?}")
                    }
                    _ => {}
                },
            }
        }
    })
    .await;
}

/// A codec that sends a join request's header claiming the largest body, then the body a
/// byte at a time, slowly: a stranger holding streams open as long as it can. Writing to a
/// stream the receiver has dropped fails, which ends the request.
#[derive(Debug, Clone, Default)]
struct TrickleCodec;

impl Codec for TrickleCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut data = Vec::new();
        io.read_to_end(&mut data).await?;
        Ok(data)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let len = u32::try_from(MAX_JOIN_REQUEST).expect("fits in u32");
        io.write_all(&len.to_be_bytes()).await?;
        io.flush().await?;
        for _ in 0..MAX_JOIN_REQUEST {
            tokio::time::sleep(Duration::from_millis(50)).await;
            io.write_all(&[0]).await?;
            io.flush().await?;
        }
        Ok(())
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A stranger opening many join streams and feeding each slowly holds only
/// `MAX_JOIN_STREAMS` of them on a connection (each reading at most `MAX_JOIN_REQUEST`
/// bytes); the node drops the others at once (well before a stream's 10 s timeout ends
/// it), and none reaches the application.
#[tokio::test]
async fn a_stranger_holds_at_most_a_few_join_streams() {
    const OPENED: usize = 20;
    within(async {
        let mut a = new_swarm();
        let addr = listen(&mut a).await;
        let mut hostile = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("transport builds")
            .with_behaviour(|_| {
                request_response::Behaviour::<TrickleCodec>::new(
                    [(JOIN_PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(300)),
                )
            })
            .expect("behaviour builds")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        connect(&mut hostile, &mut a, addr).await;
        let a_id = *a.local_peer_id();
        for _ in 0..OPENED {
            hostile.behaviour_mut().send_request(&a_id, Vec::new());
        }
        let mut dropped = 0;
        let dropping = async {
            while dropped < OPENED - net::MAX_JOIN_STREAMS {
                tokio::select! {
                    event = a.select_next_some() => {
                        assert!(
                            join_event(event).is_none_or(|e| !matches!(
                                e,
                                request_response::Event::Message { .. }
                            )),
                            "a request reached the application"
                        );
                    }
                    event = hostile.select_next_some() => {
                        if let SwarmEvent::Behaviour(
                            request_response::Event::OutboundFailure { .. },
                        ) = event
                        {
                            dropped += 1;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), dropping)
            .await
            .expect("the streams over the limit are dropped at once");
    })
    .await;
}
