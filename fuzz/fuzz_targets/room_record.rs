//! `Room::from_bytes` on arbitrary bytes (a room record from the store).
#![no_main]

use confer_fuzz::rng;
use confer_room::Room;
use confer_room::test_utils::NOW;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut room) = Room::from_bytes(data) else {
        return;
    };
    // Whatever decodes must be usable without panicking, and must survive the store.
    let _ = format!("{room:?}");
    let _ = room.members();
    let _ = room.topic();
    let _ = room.topics();
    let _ = room.is_facilitator();
    let _ = room.outstanding_invites(NOW);
    let _ = room.seal_message("hello", NOW, &mut rng(6));
    let again = Room::from_bytes(&room.to_bytes().expect("a decoded room encodes")).expect("a decoded room round-trips");
    assert_eq!(again.id(), room.id());
    room.prune(NOW);
});
