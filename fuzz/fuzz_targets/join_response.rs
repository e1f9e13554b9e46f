//! `JoinResponse::from_bytes` on arbitrary bytes (the facilitator's answer on
//! `/confer/join/1`), then `Room::from_welcome` on any welcome.
#![no_main]

use confer_fuzz::fixture;
use confer_room::test_utils::NOW;
use confer_room::{JoinResponse, Room};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = JoinResponse::from_bytes(data) else {
        return;
    };
    assert_eq!(
        JoinResponse::from_bytes(&response.to_bytes()),
        Ok(response.clone())
    );
    if let JoinResponse::Welcome(sealed) = response {
        let f = fixture();
        let _ = Room::from_welcome(&f.invite, f.joiner.clone(), &sealed, NOW);
    }
});
