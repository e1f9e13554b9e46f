//! Named adversarial tests: each one is an attack from the threat model, and asserts that
//! it is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use confer_room::invite::{JoinBody, JoinRequest};
use confer_room::log::{Membership, Op, OpBody, Rotation, SignedOp};
use confer_room::test_utils::{NOW, join, room_of};
use confer_room::{
    Incoming, Invite, InviteError, MAX_MEMBERS, MemberKeys, OpenError, Room, RoomError,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Delivers `envelope` to every room in `rooms` except `skip`.
fn broadcast(rooms: &mut [Room], skip: usize, envelope: &[u8]) {
    for (i, room) in rooms.iter_mut().enumerate() {
        if i != skip {
            let _ = room.open(envelope, NOW + 10);
        }
    }
}

fn ids(room: &Room) -> Vec<String> {
    room.members()
        .iter()
        .map(|m| m.display_name.clone())
        .collect()
}

#[test]
fn forged_removal_by_a_member_has_no_effect() {
    let mut r = rng(1);
    let mut rooms = room_of(4, &mut r);
    // Member 1 is not the facilitator; the room refuses to author it...
    let target = rooms[2].me().to_hex();
    assert_eq!(
        rooms[1].remove(&target, NOW, &mut r).unwrap_err(),
        RoomError::NotFacilitator
    );
    // ...so member 1 forges the operation by hand, sealed properly for the room.
    let forged = forge(&rooms[1], &mut r, |room| OpBody::Remove {
        member: room.members()[2].public.id,
        rotation: Rotation::default(),
    });
    let hash = forged.hash();
    let mut log = rooms[0].log().clone();
    log.insert(forged).unwrap();
    assert!(
        !log.state().is_valid(&hash),
        "a removal by a non-facilitator is invalid"
    );
    assert_eq!(log.state().members().len(), 4);
    let before = ids(&rooms[0]);
    let env = rooms[1].rotate(NOW, &mut r).unwrap(); // a legitimate op still works
    broadcast(&mut rooms, 1, &env);
    assert_eq!(ids(&rooms[0]), before);
}

/// Signs an operation as `room`'s member, on its current heads: what a malicious member
/// can always do with its own key.
fn forge(room: &Room, _r: &mut StdRng, body: impl FnOnce(&Room) -> OpBody) -> SignedOp {
    let op = Op {
        room_id: room.id(),
        parents: room.log().heads(),
        author: room.me(),
        created_at: NOW,
        body: body(room),
    };
    room.sign_op_for_tests(op)
}

#[test]
fn a_removed_member_racing_its_own_removal_loses() {
    let mut r = rng(2);
    let mut rooms = room_of(4, &mut r);
    let victim = 3;
    // Concurrently: the facilitator removes member 3, and member 3 (not yet aware)
    // rotates, sealing a secret to everyone including itself, and posts a message.
    let victim_id = rooms[victim].me().to_hex();
    let removal = rooms[0].remove(&victim_id, NOW, &mut r).unwrap();
    let race = rooms[victim].rotate(NOW, &mut r).unwrap();
    let (late_message, _) = {
        // Member 3 sends under its own new epoch (it does not know it was removed).
        rooms[victim]
            .seal_message("still here", NOW, &mut r)
            .unwrap()
    };
    // Everyone else receives both, in both orders.
    rooms[1].open(&removal, NOW).unwrap();
    rooms[1].open(&race, NOW).unwrap();
    rooms[2].open(&race, NOW).unwrap();
    rooms[2].open(&removal, NOW).unwrap();
    rooms[0].open(&race, NOW).unwrap();
    for i in 0..3 {
        assert_eq!(rooms[i].members().len(), 3, "member 3 is out in every view");
        assert!(rooms[i].needs_rotation() || rooms[i].log().state().frontier().len() == 1);
    }
    // The facilitator settles the epoch; everyone converges; member 3 cannot follow.
    if rooms[0].needs_rotation() {
        let heal = rooms[0].rotate(NOW, &mut r).unwrap();
        broadcast(&mut rooms, 0, &heal);
    }
    assert_eq!(rooms[1].topic(), rooms[0].topic());
    assert_eq!(rooms[2].topic(), rooms[0].topic());
    let (after, _) = rooms[1]
        .seal_message("after the removal", NOW, &mut r)
        .unwrap();
    // Even holding every operation of the log (which nobody sends it), member 3 lacks the
    // removal's secret, so it cannot derive the new key.
    let full_log = rooms[1].log().ops();
    rooms[victim].merge_ops(full_log, NOW);
    assert!(!rooms[victim].is_member());
    assert_eq!(rooms[victim].open(&after, NOW), Err(OpenError::Crypto));
    // Its racing message is refused by everyone: removal wins.
    for i in 0..3 {
        assert!(matches!(
            rooms[i].open(&late_message, NOW),
            Err(OpenError::Departed | OpenError::Crypto)
        ));
    }
}

#[test]
fn a_removed_member_replaying_its_old_admission_stays_out() {
    let mut r = rng(3);
    let mut rooms = room_of(2, &mut r);
    let mut fac = rooms.remove(0);
    let (mut carol, admission) = join(&mut fac, "Carol", NOW, &mut r);
    let _ = rooms[0].open(&admission, NOW);
    let removal = fac.remove("Carol", NOW, &mut r).unwrap();
    rooms[0].open(&removal, NOW).unwrap();
    carol.open(&removal, NOW).unwrap();
    assert!(!carol.is_member());
    // Carol replays the envelope of her own admission to everyone.
    assert!(matches!(
        fac.open(&admission, NOW),
        Ok(Incoming::Op { new: false }) | Err(OpenError::Crypto)
    ));
    assert_eq!(
        rooms[0].open(&admission, NOW),
        Ok(Incoming::Op { new: false })
    );
    assert_eq!(fac.members().len(), 2);
    // Or the raw operation, as a log sync would carry it: already known, nothing changes.
    let admit = carol.log().ops().into_iter().find(|op| matches!(op.op.body, OpBody::Admit { ref display_name, .. } if display_name == "Carol")).unwrap();
    assert!(!fac.merge_ops(vec![admit], NOW));
    assert!(
        !fac.log()
            .state()
            .members()
            .iter()
            .any(|m| m.display_name == "Carol")
    );
    // The facilitator cannot even be tricked into admitting the same key again.
    let mut log = fac.log().clone();
    let readmit = fac.sign_op_for_tests(Op {
        room_id: fac.id(),
        parents: log.heads(),
        author: fac.me(),
        created_at: NOW,
        body: OpBody::Admit {
            member: carol
                .log()
                .state()
                .former_member(&carol.me())
                .unwrap()
                .public,
            display_name: "Carol".into(),
            peer: vec![],
            invite_id: [9; 16],
        },
    });
    let h = readmit.hash();
    log.insert(readmit).unwrap();
    assert!(!log.state().is_valid(&h), "a departed key never comes back");
}

#[test]
fn an_altered_sealed_secret_is_rejected() {
    let mut r = rng(4);
    let mut rooms = room_of(3, &mut r);
    let rotation = rooms[1].rotate(NOW, &mut r).unwrap();
    let op = rooms[1].log().ops().into_iter().last().unwrap();
    // Flip a byte of one member's sealed share inside the signed operation.
    let mut altered = op.clone();
    if let OpBody::Rotate { rotation } = &mut altered.op.body {
        rotation.shares[0].sealed.ciphertext[0] ^= 1;
    }
    let mut log = rooms[0].log().clone();
    assert_eq!(
        log.insert(altered),
        Err(confer_room::log::LogError::BadSignature)
    );
    // The genuine rotation still works.
    rooms[0].open(&rotation, NOW).unwrap();
    assert_eq!(rooms[0].topic(), rooms[1].topic());
    // An altered envelope does not open at all.
    let mut bad = rotation.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(rooms[2].open(&bad, NOW).is_err());
}

#[test]
fn a_ninth_admission_is_rejected_even_when_forged_into_the_log() {
    let mut r = rng(5);
    let mut rooms = room_of(MAX_MEMBERS, &mut r);
    assert_eq!(
        rooms[0]
            .issue_invite(vec![], vec![], NOW / 1000 + 60, &mut r)
            .unwrap_err(),
        RoomError::RoomFull
    );
    let ninth = MemberKeys::generate(&mut r);
    let op = rooms[0].sign_op_for_tests(Op {
        room_id: rooms[0].id(),
        parents: rooms[0].log().heads(),
        author: rooms[0].me(),
        created_at: NOW,
        body: OpBody::Admit {
            member: ninth.public(),
            display_name: "Ninth".into(),
            peer: vec![],
            invite_id: [1; 16],
        },
    });
    let h = op.hash();
    assert!(rooms[1].merge_ops(vec![op], NOW));
    assert!(!rooms[1].log().state().is_valid(&h));
    assert_eq!(rooms[1].members().len(), MAX_MEMBERS);
    let _ = &mut rooms;
}

#[test]
fn reused_and_expired_invites_are_rejected() {
    let mut r = rng(6);
    let mut fac = Room::create("Group", "Fac", vec![], NOW, &mut r).unwrap();
    let invite = fac
        .issue_invite(vec![], vec![], NOW / 1000 + 60, &mut r)
        .unwrap();
    let invite = Invite::from_code(&invite.to_code()).unwrap();
    let request = |r: &mut StdRng| {
        let keys = MemberKeys::generate(r);
        JoinRequest::new(
            JoinBody {
                room_id: invite.body.room_id,
                invite_id: invite.body.invite_id,
                secret: invite.body.secret.clone(),
                member: keys.public(),
                display_name: "Jo".into(),
                peer: vec![],
            },
            &keys,
        )
        .unwrap()
    };
    let late = request(&mut r);
    assert_eq!(
        fac.admit(&late, NOW + 61_000, &mut r).unwrap_err(),
        InviteError::Expired
    );
    fac.admit(&request(&mut r), NOW, &mut r).unwrap();
    assert_eq!(
        fac.admit(&request(&mut r), NOW, &mut r).unwrap_err(),
        InviteError::AlreadyUsed
    );
    // A revoked invite is refused too.
    let second = fac
        .issue_invite(vec![], vec![], NOW / 1000 + 60, &mut r)
        .unwrap();
    assert_eq!(fac.outstanding_invites(NOW).len(), 1);
    fac.revoke_invite(&second.to_code(), NOW, &mut r).unwrap();
    assert!(fac.outstanding_invites(NOW).is_empty());
    let keys = MemberKeys::generate(&mut r);
    let req = JoinRequest::new(
        JoinBody {
            room_id: second.body.room_id,
            invite_id: second.body.invite_id,
            secret: second.body.secret.clone(),
            member: keys.public(),
            display_name: "Kim".into(),
            peer: vec![],
        },
        &keys,
    )
    .unwrap();
    assert_eq!(
        fac.admit(&req, NOW, &mut r).unwrap_err(),
        InviteError::Unknown
    );
}

#[test]
fn a_message_from_a_non_member_is_rejected() {
    let mut r = rng(7);
    let mut rooms = room_of(3, &mut r);
    // A member who left can still seal with the old key it holds...
    let leave = rooms[2].leave(NOW, &mut r).unwrap();
    let mut leaver_copy = rooms[2].clone();
    broadcast(&mut rooms, 2, &leave);
    // ...but the others refuse it as departed.
    let stale = leaver_copy.forge_message_for_tests("I'm back", NOW, &mut r);
    assert_eq!(rooms[1].open(&stale, NOW), Err(OpenError::Departed));
    // Someone never admitted, even holding a key, is refused.
    let mut outsider = rooms[1].clone();
    outsider.replace_keys_for_tests(MemberKeys::generate(&mut r));
    let env = outsider.forge_message_for_tests("hello", NOW, &mut r);
    assert_eq!(rooms[0].open(&env, NOW), Err(OpenError::Pending));
    let _ = &mut leaver_copy;
}

#[test]
fn a_message_sealed_with_an_old_epoch_key_after_a_removal_is_rejected() {
    let mut r = rng(8);
    let mut rooms = room_of(3, &mut r);
    let old_member_view = rooms[1].clone();
    let removal = rooms[0].remove("M2", NOW, &mut r).unwrap();
    broadcast(&mut rooms, 0, &removal);
    // Member 1 knows of the removal but seals with the epoch before it.
    let stale =
        rooms[1].forge_message_in_epoch_for_tests(&old_member_view, "after removal", NOW, &mut r);
    assert_eq!(rooms[0].open(&stale, NOW), Err(OpenError::StaleEpoch));
    // The removed member cannot open what is sent now.
    let (fresh, _) = rooms[1].seal_message("after removal", NOW, &mut r).unwrap();
    assert_eq!(rooms[2].open(&fresh, NOW), Err(OpenError::Crypto));
    assert!(matches!(
        rooms[0].open(&fresh, NOW),
        Ok(Incoming::Message(_))
    ));
}

#[test]
fn replayed_messages_and_operations_change_nothing() {
    let mut r = rng(9);
    let mut rooms = room_of(3, &mut r);
    let (env, record) = rooms[1].seal_message("once", NOW, &mut r).unwrap();
    assert_eq!(
        rooms[0].open(&env, NOW),
        Ok(Incoming::Message(record.clone()))
    );
    // The same envelope again yields the same message id, which the store deduplicates.
    assert_eq!(rooms[0].open(&env, NOW), Ok(Incoming::Message(record)));
    let rotation = rooms[1].rotate(NOW, &mut r).unwrap();
    assert_eq!(
        rooms[0].open(&rotation, NOW),
        Ok(Incoming::Op { new: true })
    );
    let epoch = rooms[0].epoch_number();
    assert_eq!(
        rooms[0].open(&rotation, NOW),
        Ok(Incoming::Op { new: false })
    );
    assert_eq!(rooms[0].epoch_number(), epoch);
}

#[test]
fn old_epoch_keys_are_deleted_after_the_retention_period() {
    let mut r = rng(10);
    let mut rooms = room_of(2, &mut r);
    let (old, _) = rooms[1].seal_message("before", NOW, &mut r).unwrap();
    let rotation = rooms[1].rotate(NOW, &mut r).unwrap();
    rooms[0].open(&rotation, NOW).unwrap();
    assert!(
        matches!(rooms[0].open(&old, NOW), Ok(Incoming::Message(_))),
        "kept during retention"
    );
    let retention_ms = rooms[0].log().state().retention_secs() * 1000;
    assert!(!rooms[0].prune(NOW + retention_ms - 1));
    assert!(rooms[0].prune(NOW + retention_ms + 1));
    assert_eq!(rooms[0].epochs_held(), 1);
    assert_eq!(
        rooms[0].open(&old, NOW),
        Err(OpenError::Crypto),
        "the point of forward secrecy"
    );
    // And the deleted key is gone from what would be stored.
    let restored = Room::from_bytes(&rooms[0].to_bytes()).unwrap();
    assert_eq!(restored.epochs_held(), 1);
    let _ = Membership::replay(rooms[0].log().ops()).unwrap();
}

#[test]
fn debug_output_never_shows_secrets() {
    let mut r = rng(11);
    let rooms = room_of(2, &mut r);
    // The room, its member keys and a room record's worth of state: none may print key
    // material (a key would show as a long run of hex or as a byte array).
    for printed in [
        format!("{:?}", rooms[0]),
        format!("{:#?}", rooms[1]),
        format!("{:?}", MemberKeys::generate(&mut r)),
    ] {
        assert!(!printed.contains("Secret32(") || printed.contains("(..)"));
        assert!(printed.len() < 200, "{printed}");
        let longest_hex = printed
            .split(|c: char| !c.is_ascii_hexdigit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(
            longest_hex < 32,
            "a key-length hex string was printed: {printed}"
        );
        assert!(
            !printed.contains("[0x") && !printed.contains(", 0x"),
            "{printed}"
        );
    }
}
