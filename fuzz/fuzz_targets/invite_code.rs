//! `Invite::from_code` on arbitrary text: the code a person pastes.
#![no_main]

use confer_room::Invite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(code) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(invite) = Invite::from_code(code) {
        // What verified once verifies again from its own encoding, unchanged.
        assert_eq!(Invite::from_code(&invite.to_code()), Ok(invite.clone()));
        let _ = invite.check_expiry(u64::MAX);
    }
});
