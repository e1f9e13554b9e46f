//! `MessageRecord::from_bytes` on arbitrary bytes (a message from the store).
#![no_main]

use confer_room::MessageRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = MessageRecord::from_bytes(data) {
        assert_eq!(
            MessageRecord::from_bytes(&record.to_bytes()),
            Ok(record.clone())
        );
    }
});
