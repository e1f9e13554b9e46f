//! Every decoder of bytes from the network, an invite code or the store must return an
//! error, never panic, whatever it is given.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use confer_room::room::MessageRecord;
use confer_room::{Invite, JoinRequest, JoinResponse, Room};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn room() -> Room {
    let mut rng = StdRng::seed_from_u64(99);
    Room::create("Fuzz", "F", vec![], 0, &mut rng).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invite_codes(s in ".{0,600}") {
        let _ = Invite::from_code(&s);
        let _ = Invite::from_code(&format!("confer1{s}"));
    }

    #[test]
    fn network_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = JoinRequest::from_bytes(&bytes);
        let _ = JoinResponse::from_bytes(&bytes);
        let _ = room().open(&bytes, 0);
    }

    #[test]
    fn store_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Room::from_bytes(&bytes);
        let _ = MessageRecord::from_bytes(&bytes);
    }

    #[test]
    fn mutated_valid_codes_never_verify_as_something_else(pos in 0usize..400, bit in 0u8..8) {
        let mut rng = StdRng::seed_from_u64(5);
        let mut r = Room::create("Fuzz", "F", vec![], 0, &mut rng).unwrap();
        let code = r.issue_invite(vec!["/ip4/1.2.3.4/tcp/5".into()], vec![1], 10, &mut rng).unwrap().to_code();
        let mut bytes = bs58::decode(&code[7..]).into_vec().unwrap();
        let pos = pos % bytes.len();
        bytes[pos] ^= 1 << bit;
        let altered = format!("confer1{}", bs58::encode(&bytes).into_string());
        prop_assert!(Invite::from_code(&altered).is_err());
    }
}

#[test]
fn a_room_of_eight_agrees_on_members_and_topic() {
    let mut rng = StdRng::seed_from_u64(1);
    let rooms = confer_room::test_utils::room_of(8, &mut rng);
    for room in &rooms {
        assert_eq!(room.members().len(), 8);
        assert_eq!(room.topic(), rooms[0].topic());
    }
}
