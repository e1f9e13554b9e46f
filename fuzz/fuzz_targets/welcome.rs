//! The welcome inside a `JoinResponse`: arbitrary plaintext, sealed to the joiner's key as
//! a facilitator would, through `Room::from_welcome` (welcome decoder, log replay, epoch
//! keys). A hostile facilitator controls exactly these bytes.
#![no_main]

use confer_fuzz::{fixture, rng, seal_welcome};
use confer_room::Room;
use confer_room::test_utils::NOW;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some(sealed) = seal_welcome(f, data) else {
        return;
    };
    let Ok(mut room) = Room::from_welcome(&f.invite, f.joiner.clone(), &sealed, NOW) else {
        return;
    };
    // A room that was accepted must be usable and must survive the store.
    assert!(room.is_member());
    assert!(room.topic().is_some());
    let _ = room.members();
    let _ = room.seal_message("hello", NOW, &mut rng(5));
    let again = Room::from_bytes(&room.to_bytes().expect("a decoded room encodes")).expect("an accepted room round-trips");
    assert_eq!(again.id(), room.id());
    assert_eq!(again.epoch_number(), room.epoch_number());
    room.prune(NOW);
});
