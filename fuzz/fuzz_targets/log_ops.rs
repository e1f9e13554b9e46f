//! Operations as a member's node pushes them (a log over the sync protocol): arbitrary
//! bytes decoded as a list of signed operations and merged into a member's copy of the
//! fixed room. A malicious member, a former member or anyone replaying old traffic
//! controls exactly these.
#![no_main]

use confer_fuzz::{fixture, rng};
use confer_room::log::SignedOp;
use confer_room::test_utils::NOW;
use confer_room::{MAX_MEMBERS, Room, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ops) = wire::decode::<Vec<SignedOp>>(data, 64 * 1024) else {
        return;
    };
    let f = fixture();
    let mut room = f.rooms[1].clone();
    let before = room.log().len();
    let taken = room.merge_ops(ops, NOW);
    assert_eq!(room.log().len(), before + taken.new);
    // Whatever was taken, the room keeps its rules and survives the store.
    assert!(room.members().len() <= MAX_MEMBERS);
    assert!(room.log().state().facilitator().is_some() || room.members().is_empty());
    let _ = room.topic();
    let _ = room.seal_message("hello", NOW, &mut rng(7));
    let again = Room::from_bytes(&room.to_bytes().expect("encodes")).expect("round-trips");
    assert_eq!(again.log().state(), room.log().state());
});
