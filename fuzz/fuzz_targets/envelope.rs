//! `Room::open` on arbitrary bytes (a gossip message), by a member of a fixed room.
#![no_main]

use confer_fuzz::fixture;
use confer_room::Incoming;
use confer_room::test_utils::NOW;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut room = fixture().rooms[1].clone();
    let first = room.open(data, NOW);
    if let Ok(Incoming::Op { new: true }) = first {
        // A replayed operation is recognised and changes nothing.
        assert_eq!(room.open(data, NOW), Ok(Incoming::Op { new: false }));
    }
    let _ = room.topics();
    let _ = room.members();
});
