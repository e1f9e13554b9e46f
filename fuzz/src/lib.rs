//! What the fuzz targets share: one fixed room, built from a fixed seed through the real
//! invite and join path, and the valid inputs (seeds) that start each target's corpus.
//!
//! Everything here is deterministic, so `examples/seeds.rs` (run in a normal build) and
//! the fuzz targets (run under libFuzzer) build byte-for-byte the same room, and the seed
//! envelopes open in the targets' copy.

use std::sync::OnceLock;

use confer_room::crypto::{self, SealedBox};
use confer_room::invite::JoinBody;
use confer_room::test_utils::{NOW, room_of};
use confer_room::{
    Invite, InviteError, JoinRequest, JoinResponse, MemberId, MemberKeys, Room, RoomId,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Members of the fixed room; one more can still be admitted through [`Fixture::invite`].
pub const MEMBERS: usize = 7;

/// A fixed room of [`MEMBERS`] members, index 0 the facilitator, with one outstanding
/// invite and the keys of the joiner who will redeem it.
#[derive(Debug)]
pub struct Fixture {
    /// Every member's copy of the room.
    pub rooms: Vec<Room>,
    /// An invite issued by `rooms[0]`, valid at [`NOW`].
    pub invite: Invite,
    /// The keys the joiner uses for the invite.
    pub joiner: MemberKeys,
    /// The joiner's signed request for the invite.
    pub request: JoinRequest,
}

/// A deterministic RNG for one purpose.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The fixed room (built once per process).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = rng(0xC0_FFEE);
        let mut rooms = room_of(MEMBERS, &mut rng);
        let invite = rooms[0]
            .issue_invite(
                vec!["/ip4/127.0.0.1/tcp/4001".into()],
                b"facilitator-peer".to_vec(),
                NOW / 1000 + 3600,
                &mut rng,
            )
            .expect("facilitator can invite");
        let joiner = MemberKeys::generate(&mut rng);
        let request = JoinRequest::new(
            JoinBody {
                room_id: invite.body.room_id,
                invite_id: invite.body.invite_id,
                secret: invite.body.secret.clone(),
                member: joiner.public(),
                display_name: "Joiner".into(),
                peer: b"joiner-peer".to_vec(),
            },
            &joiner,
        )
        .expect("request");
        let fixture = Fixture {
            rooms,
            invite,
            joiner,
            request,
        };
        // The `welcome` target seals its input the way `Room::admit` seals a welcome; check
        // that the associated data below still matches, or that target would test nothing.
        let welcome = real_welcome(&fixture);
        assert!(
            crypto::open_from(
                &fixture.joiner.agreement_secret(),
                &welcome_aad(&fixture.invite.body.room_id, &fixture.joiner.id()),
                &welcome,
            )
            .is_ok(),
            "fuzz/src/lib.rs welcome_aad is out of date with crates/room/src/room.rs"
        );
        fixture
    })
}

/// The associated data `Room::admit` binds to a welcome (mirrors `room::welcome_aad`).
pub fn welcome_aad(room_id: &RoomId, joiner: &MemberId) -> Vec<u8> {
    let mut aad = b"confer/v1/welcome".to_vec();
    aad.extend_from_slice(&room_id.0);
    aad.extend_from_slice(&joiner.0);
    aad
}

/// The welcome the facilitator really sends for [`Fixture::request`].
pub fn real_welcome(f: &Fixture) -> SealedBox {
    let mut facilitator = f.rooms[0].clone();
    let admission = facilitator
        .admit(&f.request, NOW, &mut rng(1))
        .expect("the fixture's request is admitted");
    match admission.response {
        JoinResponse::Welcome(sealed) => sealed,
        JoinResponse::Refused(e) => panic!("fixture request refused: {e}"),
    }
}

/// Seals `plaintext` as a welcome to the fixture's joiner: lets the `welcome` target reach
/// the welcome's decoder, which lies behind the sealed box.
pub fn seal_welcome(f: &Fixture, plaintext: &[u8]) -> Option<SealedBox> {
    crypto::seal_to(
        &f.joiner.public().agreement,
        &welcome_aad(&f.invite.body.room_id, &f.joiner.id()),
        plaintext,
        &mut rng(2),
    )
    .ok()
}

/// Valid inputs for each target, by target name.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let f = fixture();
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut rng = rng(3);

    out.push(("invite_code", f.invite.to_code().into_bytes()));
    out.push(("join_request", f.request.to_bytes()));

    let mut facilitator = f.rooms[0].clone();
    let admission = facilitator
        .admit(&f.request, NOW, &mut rng)
        .expect("admitted");
    out.push(("join_response", admission.response.to_bytes()));
    out.push((
        "join_response",
        JoinResponse::Refused(InviteError::Expired).to_bytes(),
    ));

    let welcome = real_welcome(f);
    let plaintext = crypto::open_from(
        &f.joiner.agreement_secret(),
        &welcome_aad(&f.invite.body.room_id, &f.joiner.id()),
        &welcome,
    )
    .expect("welcome opens");
    out.push(("welcome", plaintext));

    let (message, record) = f.rooms[2]
        .seal_message("hello, room", NOW, &mut rng)
        .expect("seal");
    out.push(("envelope", message));
    out.push((
        "envelope",
        admission.announcement.expect("a first admission is announced"),
    ));
    out.push((
        "envelope",
        f.rooms[0].clone().rotate(NOW, &mut rng).expect("rotate"),
    ));
    out.push((
        "envelope",
        f.rooms[0]
            .clone()
            .remove("M3", NOW, &mut rng)
            .expect("remove"),
    ));
    out.push((
        "envelope",
        f.rooms[0]
            .clone()
            .handover("M2", NOW, &mut rng)
            .expect("handover"),
    ));
    out.push((
        "envelope",
        f.rooms[4].clone().leave(NOW, &mut rng).expect("leave"),
    ));

    // Every seed envelope opens in the `envelope` target's room, so fuzzing starts from the
    // paths past decryption, not only from rejections.
    for (_, envelope) in out.iter().filter(|(t, _)| *t == "envelope") {
        let opened = f.rooms[1].clone().open(envelope, NOW);
        assert!(opened.is_ok(), "seed envelope does not open: {opened:?}");
    }

    out.push(("room_record", f.rooms[0].to_bytes().expect("encodes").to_vec()));
    out.push(("room_record", f.rooms[1].to_bytes().expect("encodes").to_vec()));
    out.push(("message_record", record.to_bytes()));

    // A member's log as a sync push carries it, and one with a rotation more.
    let ops = f.rooms[1].log().ops();
    out.push(("log_ops", confer_room::wire::encode(&ops).expect("encodes")));
    let mut more = f.rooms[3].clone();
    more.rotate(NOW, &mut rng).expect("rotate");
    out.push((
        "log_ops",
        confer_room::wire::encode(&more.log().ops()).expect("encodes"),
    ));
    out
}
