//! Helpers for tests, fuzz targets and benchmarks: rooms of any size built through the
//! real invite and join path, with seeded randomness.

use rand_core::CryptoRng;

use crate::invite::{JoinBody, JoinRequest, JoinResponse};
use crate::{Invite, MemberKeys, Room};

/// A fixed "now" for deterministic tests: 2027-01-15T08:00:00Z, in Unix milliseconds.
pub const NOW: u64 = 1_800_000_000_000;

/// Admits a new member called `name` to `facilitator`'s room through an invite, exactly as
/// two nodes would. Returns the joiner's room and the admission envelope the facilitator
/// publishes to the others.
pub fn join<R: CryptoRng + ?Sized>(
    facilitator: &mut Room,
    name: &str,
    now_ms: u64,
    rng: &mut R,
) -> (Room, Vec<u8>) {
    let invite = facilitator
        .issue_invite(
            vec!["/ip4/127.0.0.1/tcp/1".into()],
            b"fac".to_vec(),
            now_ms / 1000 + 3600,
            rng,
        )
        .expect("facilitator can invite");
    let invite = Invite::from_code(&invite.to_code()).expect("valid code");
    let keys = MemberKeys::generate(rng);
    let body = JoinBody {
        room_id: invite.body.room_id,
        invite_id: invite.body.invite_id,
        secret: invite.body.secret.clone(),
        member: keys.public(),
        display_name: name.into(),
        peer: name.as_bytes().to_vec(),
    };
    let request = JoinRequest::new(body, &keys).expect("request");
    let admission = facilitator.admit(&request, now_ms, rng).expect("admitted");
    let JoinResponse::Welcome(sealed) = admission.response else {
        panic!("refused")
    };
    let room = Room::from_welcome(&invite, keys, &sealed, now_ms).expect("welcome opens");
    let announcement = admission
        .announcement
        .expect("a first admission is announced");
    (room, announcement)
}

/// A room of `n` members (1 to 8), index 0 the facilitator, everyone up to date.
pub fn room_of<R: CryptoRng + ?Sized>(n: usize, rng: &mut R) -> Vec<Room> {
    let mut rooms =
        vec![Room::create("Test room", "M0", b"M0".to_vec(), NOW, rng).expect("create")];
    for i in 1..n {
        let (room, announcement) = join(&mut rooms[0], &format!("M{i}"), NOW, rng);
        for other in rooms.iter_mut().skip(1) {
            other.open(&announcement, NOW).expect("admission opens");
        }
        rooms.push(room);
    }
    rooms
}
