//! `JoinRequest::from_bytes` on arbitrary bytes (from `/confer/join/1`), then the
//! facilitator's `admit` on whatever decodes.
#![no_main]

use confer_fuzz::{fixture, rng};
use confer_room::JoinRequest;
use confer_room::test_utils::NOW;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = JoinRequest::from_bytes(data) else {
        return;
    };
    assert_eq!(
        JoinRequest::from_bytes(&request.to_bytes()),
        Ok(request.clone())
    );
    let mut facilitator = fixture().rooms[0].clone();
    let members = facilitator.members().len();
    match facilitator.admit(&request, NOW, &mut rng(4)) {
        // A request admitted before is welcomed again and changes nothing.
        Ok(admission) => assert_eq!(
            facilitator.members().len(),
            members + usize::from(admission.announcement.is_some())
        ),
        Err(_) => assert_eq!(facilitator.members().len(), members),
    }
});
