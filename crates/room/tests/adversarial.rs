//! Named adversarial tests: each one is an attack from the threat model, and asserts that
//! it is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use confer_room::invite::{JoinBody, JoinRequest};
use confer_room::log::{LogError, Membership, Op, OpBody, Rotation, Rule, Shares, SignedOp};
use confer_room::room::ForgedKind;
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
        rotation: empty_rotation(),
    });
    let hash = forged.hash();
    let mut log = rooms[0].log().clone();
    assert_eq!(
        log.insert(forged),
        Err(LogError::Invalid(Rule::NotFacilitator)),
        "a removal by a non-facilitator is invalid"
    );
    assert!(!log.contains(&hash), "and not even kept");
    assert_eq!(log.state().members().len(), 4);
    let before = ids(&rooms[0]);
    let env = rooms[1].rotate(NOW, &mut r).unwrap(); // a legitimate op still works
    broadcast(&mut rooms, 1, &env);
    assert_eq!(ids(&rooms[0]), before);
}

/// A rotation sealed to nobody: enough for operations whose rotation is never looked at.
fn empty_rotation() -> Rotation {
    Rotation {
        ephemeral: [0; 32],
        commitment: [0; 32],
        recipients: Vec::new(),
        shares: Shares::Sealed(Vec::new()),
    }
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
    // Everyone else receives both, in both orders. A node that knows of the removal does
    // not even take the removed member's rotation; one that took it first keeps it, without
    // effect.
    rooms[1].open(&removal, NOW).unwrap();
    assert_eq!(rooms[1].open(&race, NOW), Err(OpenError::Invalid));
    rooms[2].open(&race, NOW).unwrap();
    rooms[2].open(&removal, NOW).unwrap();
    assert_eq!(rooms[0].open(&race, NOW), Err(OpenError::Invalid));
    for i in 0..3 {
        assert_eq!(rooms[i].members().len(), 3, "member 3 is out in every view");
        assert_eq!(
            rooms[i].log().state().frontier(),
            rooms[0].log().state().frontier(),
            "the removal alone makes the epoch"
        );
        assert!(!rooms[i].needs_rotation());
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
    // Its racing message is refused by everyone: removal wins. It was sealed under the
    // epoch of its rotation, which has no effect where it is known and is not even taken
    // where the removal came first (the message waits there for an operation that never
    // comes).
    for i in 0..3 {
        let result = rooms[i].open(&late_message, NOW);
        assert!(
            matches!(
                result,
                Err(OpenError::Invalid | OpenError::Pending | OpenError::Departed)
            ),
            "{i}: {result:?}"
        );
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
    assert_eq!(fac.merge_ops(vec![admit], NOW).new, 0);
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
    assert_eq!(
        log.insert(readmit),
        Err(LogError::Invalid(Rule::BadAdmission)),
        "a departed key never comes back"
    );
    assert!(!log.contains(&h));
}

#[test]
fn an_altered_sealed_secret_is_rejected() {
    let mut r = rng(4);
    let mut rooms = room_of(3, &mut r);
    let rotation = rooms[1].rotate(NOW, &mut r).unwrap();
    let op = rooms[1].log().ops().into_iter().last().unwrap();
    // Flip a byte of one member's sealed share inside the signed operation.
    let mut altered = op.clone();
    if let OpBody::Rotate { rotation } = &mut altered.op.body
        && let Shares::Sealed(copies) = &mut rotation.shares
    {
        copies[0].ciphertext[0] ^= 1;
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
    assert_eq!(rooms[1].merge_ops(vec![op], NOW).refused, 1);
    assert!(
        !rooms[1].log().contains(&h),
        "invalid in its own past: not kept"
    );
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
    // Expired or spent, the invite is answered as one never issued (the joiner's node
    // checks the expiry itself and says so).
    let late = request(&mut r);
    assert_eq!(
        invite.check_expiry(NOW / 1000 + 61),
        Err(InviteError::Expired)
    );
    assert_eq!(
        fac.admit(&late, NOW + 61_000, &mut r).unwrap_err(),
        InviteError::Unknown
    );
    fac.admit(&request(&mut r), NOW, &mut r).unwrap();
    assert_eq!(
        fac.admit(&request(&mut r), NOW, &mut r).unwrap_err(),
        InviteError::Unknown
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
    let restored = Room::from_bytes(&rooms[0].to_bytes().unwrap()).unwrap();
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

/// Delivers every operation `from` holds to `to`, as a member's node pushes its log.
fn sync(rooms: &mut [Room], from: usize, to: usize) {
    let ops = rooms[from].log().ops();
    rooms[to].merge_ops(ops, NOW + 20);
}

/// The operation of `room`'s log that `pick` finds, by hash.
fn find(room: &Room, pick: impl Fn(&OpBody) -> bool) -> confer_room::log::OpHash {
    room.log()
        .iter()
        .find(|(_, op)| pick(&op.op.body))
        .map(|(h, _)| *h)
        .expect("the operation is in the log")
}

/// The room's creator hands the role over and is then removed. It signs a removal of the
/// new facilitator on the parents of its own handover (it held the room then), trying
/// clock values until the forgery's hash sorts before the handover's, and pushes it to a
/// member, the way a former member's node can always push. Nothing changes anywhere: the
/// member does not take it, and a node that took it anyway (say a colluding member built
/// on it) still has it without effect.
#[test]
fn a_removed_former_facilitator_cannot_take_the_room_back() {
    let mut r = rng(20);
    let mut rooms = room_of(3, &mut r);
    let (x, y, z) = (0, 1, 2);
    let y_id = rooms[y].me();
    let handover = rooms[x].handover(&y_id.to_hex(), NOW + 1, &mut r).unwrap();
    broadcast(&mut rooms, x, &handover);
    let x_hex = rooms[x].me().to_hex();
    let removal = rooms[y].remove(&x_hex, NOW + 2, &mut r).unwrap();
    broadcast(&mut rooms, y, &removal);
    assert!(!rooms[x].is_member());
    let h1 = find(&rooms[x], |b| matches!(b, OpBody::Handover { .. }));
    let before_h1 = rooms[x].log().op(&h1).unwrap().op.parents.clone();
    let forged = (0..64)
        .map(|t| {
            rooms[x].forge_op_for_tests(
                before_h1.clone(),
                ForgedKind::Remove(y_id),
                NOW + 3 + t,
                &mut r,
            )
        })
        .find(|op| op.hash() < h1)
        .expect("a hash below the handover's within 64 tries");
    let state_before = rooms[z].log().state().clone();
    let taken = rooms[z].merge_ops(vec![forged.clone()], NOW + 4);
    assert_eq!((taken.new, taken.refused), (0, 1), "not taken");
    assert_eq!(rooms[z].log().state(), &state_before, "nothing changed");
    assert_eq!(rooms[z].log().state().facilitator(), Some(y_id));
    assert!(
        rooms[z]
            .log()
            .state()
            .former_member(&rooms[x].me())
            .is_some()
    );
    assert!(!rooms[z].needs_rotation());
    // A node that holds it anyway: the state of the set, forgery included.
    let mut with = rooms[z].log().ops();
    with.push(forged);
    let all = Membership::replay(with).unwrap();
    assert_eq!(all.state().facilitator(), Some(y_id));
    assert!(all.state().member(&rooms[x].me()).is_none());
    assert_eq!(all.state().members().len(), 2);
    assert!(!all.state().needs_rotation());
    // And the former facilitator reads nothing new.
    rooms[z].rotate(NOW + 5, &mut r).unwrap();
    let (message, _) = rooms[z].seal_message("after", NOW + 6, &mut r).unwrap();
    assert!(rooms[x].open(&message, NOW + 6).is_err());
}

/// A former facilitator who is still a member back-dates each of the role's actions to
/// before its handover: an admission of a sock puppet, a removal, and a second handover,
/// its hash ground below the first's. No member takes them, and held anyway they have no
/// effect: the role passed with the handover ("handover wins"), and the new facilitator
/// took it, which settles it against any other handover of the old one.
#[test]
fn a_former_facilitator_still_in_the_room_cannot_act_as_one() {
    let mut r = rng(21);
    let mut rooms = room_of(4, &mut r);
    let (x, y, z) = (0, 1, 2);
    let y_id = rooms[y].me();
    let z_id = rooms[z].me();
    let handover = rooms[x].handover(&y_id.to_hex(), NOW + 1, &mut r).unwrap();
    broadcast(&mut rooms, x, &handover);
    // The new facilitator's node takes the role as soon as it learns of it.
    assert!(rooms[y].role_to_take().is_some());
    let taken = rooms[y].take_role(NOW + 2, &mut r).unwrap();
    broadcast(&mut rooms, y, &taken);
    assert!(rooms[y].role_to_take().is_none());
    let h1 = find(&rooms[x], |b| matches!(b, OpBody::Handover { .. }));
    let before_h1 = rooms[x].log().op(&h1).unwrap().op.parents.clone();
    let second = (0..64)
        .map(|t| {
            rooms[x].forge_op_for_tests(
                before_h1.clone(),
                ForgedKind::Handover(z_id),
                NOW + 3 + t,
                &mut r,
            )
        })
        .find(|op| op.hash() < h1)
        .expect("a hash below the first handover's within 64 tries");
    let mut forgeries: Vec<SignedOp> = [
        ForgedKind::Admit,
        ForgedKind::Remove(z_id),
        ForgedKind::Remove(y_id),
    ]
    .into_iter()
    .map(|kind| rooms[x].forge_op_for_tests(before_h1.clone(), kind, NOW + 3, &mut r))
    .collect();
    forgeries.push(second.clone());
    let state_before = rooms[z].log().state().clone();
    for forged in &forgeries {
        let taken = rooms[z].merge_ops(vec![forged.clone()], NOW + 4);
        // Refused, except the admission, which is kept without effect: whoever it names
        // may have been handed the room's key with a welcome, so the room changes its key.
        let admits = matches!(forged.op.body, OpBody::Admit { .. });
        assert_eq!(taken.refused, usize::from(!admits), "{:?}", forged.op.body);
        assert!(!rooms[z].log().state().is_valid(&forged.hash()));
    }
    assert_eq!(rooms[z].log().state().facilitator(), Some(y_id));
    assert_eq!(rooms[z].members().len(), 4, "nobody removed, nobody added");
    assert!(rooms[z].needs_rotation());
    let mut with = rooms[z].log().ops();
    with.extend(forgeries);
    let all = Membership::replay(with).unwrap();
    assert_eq!(all.state().facilitator(), Some(y_id));
    assert_eq!(
        all.state().members().len(),
        4,
        "nobody removed, nobody added"
    );
    assert_eq!(all.state().frontier(), state_before.frontier());
    // Even holding the second handover, the member it names cannot take the role: the
    // first was taken in its past.
    let mut zr = rooms[z].clone();
    zr.merge_ops(vec![second], NOW + 5);
    assert!(zr.role_to_take().is_none());
    assert!(!zr.is_facilitator());
}

/// A facilitator's leave signed on parents from before its handover is invalid in its own
/// past (a facilitator cannot leave), so it is refused; and what comes after it (junk from
/// a key that was never a member) changes nothing either. The state does not flip with
/// the number of operations.
#[test]
fn a_back_dated_leave_and_junk_change_nothing() {
    let mut r = rng(22);
    let mut rooms = room_of(3, &mut r);
    let y = rooms[1].me().to_hex();
    let handover = rooms[0].handover(&y, NOW + 1, &mut r).unwrap();
    broadcast(&mut rooms, 0, &handover);
    let h = find(&rooms[0], |b| matches!(b, OpBody::Handover { .. }));
    let before = rooms[0].log().op(&h).unwrap().op.parents.clone();
    let leave = rooms[0].forge_op_for_tests(before, ForgedKind::Leave, NOW + 2, &mut r);
    let mut log = rooms[2].log().clone();
    let state = log.state().clone();
    assert_eq!(
        log.insert(leave),
        Err(LogError::Invalid(Rule::FacilitatorLeaves))
    );
    let mut stranger = rooms[2].clone();
    stranger.replace_keys_for_tests(MemberKeys::generate(&mut r));
    for i in 0..20 {
        let heads = log.heads();
        let junk = stranger.forge_op_for_tests(heads, ForgedKind::Rotate, NOW + 3 + i, &mut r);
        assert_eq!(log.insert(junk), Err(LogError::Invalid(Rule::NotMember)));
        assert_eq!(log.state(), &state, "after {i} junk operations");
    }
}

/// What a key that never was a member signs is not kept, nor is anything out of bounds
/// (18 admissions with 60 KB names): the room's record stays small and reads back.
#[test]
fn junk_and_oversized_operations_are_not_kept() {
    let mut r = rng(23);
    let mut rooms = room_of(2, &mut r);
    let mut stranger = rooms[1].clone();
    stranger.replace_keys_for_tests(MemberKeys::generate(&mut r));
    let size = rooms[1].to_bytes().unwrap().len();
    let mut junk = Vec::new();
    for i in 0..18u64 {
        let mut op =
            stranger.forge_op_for_tests(rooms[1].log().heads(), ForgedKind::Admit, NOW + i, &mut r);
        if let OpBody::Admit { display_name, .. } = &mut op.op.body {
            *display_name = "x".repeat(60_000);
        }
        junk.push(stranger.sign_op_for_tests(op.op));
    }
    // The facilitator's own key, too, cannot carry a name that long.
    let mut op =
        rooms[0].forge_op_for_tests(rooms[0].log().heads(), ForgedKind::Admit, NOW, &mut r);
    if let OpBody::Admit { display_name, .. } = &mut op.op.body {
        *display_name = "x".repeat(60_000);
    }
    junk.push(rooms[0].sign_op_for_tests(op.op));
    let taken = rooms[1].merge_ops(junk, NOW + 20);
    assert_eq!((taken.new, taken.refused), (0, 19));
    let record = rooms[1].to_bytes().unwrap();
    assert_eq!(record.len(), size, "nothing was added");
    let back = Room::from_bytes(&record).unwrap();
    assert_eq!(back.members().len(), 2);
}

/// A member cannot pile up rotations: two in a row are refused, and of many concurrent
/// ones only those with a smaller hash than any held are even taken. The facilitator can
/// still remove it.
#[test]
fn a_member_cannot_stuff_the_log_and_stays_removable() {
    let mut r = rng(24);
    let mut rooms = room_of(3, &mut r);
    let m = 2;
    let first = rooms[m].rotate(NOW + 1, &mut r).unwrap();
    broadcast(&mut rooms, m, &first);
    assert_eq!(
        rooms[m].rotate(NOW + 2, &mut r).unwrap_err(),
        RoomError::KeyIsNew
    );
    // By hand: a second rotation on its own first is invalid everywhere.
    let again =
        rooms[m].forge_op_for_tests(rooms[m].log().heads(), ForgedKind::Rotate, NOW + 3, &mut r);
    assert_eq!(
        rooms[0].log().clone().insert(again),
        Err(LogError::Invalid(Rule::RotatesAgain))
    );
    // Concurrent rotations on an earlier point: at most a few of a hundred are kept.
    let parent = rooms[m]
        .log()
        .op(&find(&rooms[m], |b| matches!(b, OpBody::Rotate { .. })))
        .unwrap()
        .op
        .parents
        .clone();
    let siblings: Vec<SignedOp> = (0..100)
        .map(|i| {
            rooms[m].forge_op_for_tests(parent.clone(), ForgedKind::Rotate, NOW + 10 + i, &mut r)
        })
        .collect();
    let before = rooms[0].log().len();
    let mut taken = 0;
    for s in siblings {
        taken += rooms[0].merge_ops(vec![s], NOW + 20).new;
    }
    assert!(taken <= 12, "{taken} of 100 concurrent rotations kept");
    assert_eq!(rooms[0].log().len(), before + taken);
    assert_eq!(
        rooms[0].log().state().frontier().len(),
        1,
        "one of them counts"
    );
    let m_hex = rooms[m].me().to_hex();
    rooms[0].remove(&m_hex, NOW + 30, &mut r).unwrap();
    sync(&mut rooms, 0, 1);
    assert!(rooms[1].log().state().member(&rooms[m].me()).is_none());
    assert_eq!(rooms[1].topic(), rooms[0].topic());
}

/// Every member rotating at once makes a frontier of eight: the room asks for one more
/// rotation that combines them, and messages open throughout. A member's hundreds of
/// concurrent rotations never widen the frontier past one of its own.
#[test]
fn concurrent_rotations_keep_the_room_readable() {
    let mut r = rng(25);
    let mut rooms = room_of(MAX_MEMBERS, &mut r);
    let rotations: Vec<Vec<u8>> = (0..MAX_MEMBERS)
        .map(|i| rooms[i].rotate(NOW + 1, &mut r).unwrap())
        .collect();
    for (i, env) in rotations.iter().enumerate() {
        broadcast(&mut rooms, i, env);
    }
    assert_eq!(rooms[0].log().state().frontier().len(), MAX_MEMBERS);
    assert!(rooms.iter().all(Room::needs_rotation), "too wide: combine");
    let heal = rooms[3].rotate(NOW + 2, &mut r).unwrap();
    broadcast(&mut rooms, 3, &heal);
    assert!(
        rooms
            .iter()
            .all(|room| room.log().state().frontier().len() == 1)
    );
    let (message, record) = rooms[5]
        .seal_message("still readable", NOW + 3, &mut r)
        .unwrap();
    for (i, room) in rooms.iter_mut().enumerate() {
        if i != 5 {
            assert_eq!(
                room.open(&message, NOW + 3),
                Ok(Incoming::Message(record.clone()))
            );
        }
    }
    // One member's many concurrent rotations, held by a node that took them all.
    let parent = rooms[4].log().heads();
    let mut ops = rooms[0].log().ops();
    ops.extend((0..300).map(|i| {
        rooms[4].forge_op_for_tests(parent.clone(), ForgedKind::Rotate, NOW + 4 + i, &mut r)
    }));
    let all = Membership::replay(ops).unwrap();
    assert_eq!(all.state().frontier().len(), 1);
}

/// A member hands one member a copy of its new key that does not open (a flipped byte,
/// signed anyway) or a copy of another key than the one it committed to. That member
/// notices, starts a new key itself, everyone follows, and `bad_keys` names the author.
#[test]
fn a_bad_copy_of_a_key_is_noticed_repaired_and_its_author_named() {
    for case in ["flipped", "another secret"] {
        let mut r = rng(26);
        let mut rooms = room_of(4, &mut r);
        let (liar, victim) = (1, 3);
        let victim_id = rooms[victim].me();
        let mut op = rooms[liar].forge_op_for_tests(
            rooms[liar].log().heads(),
            ForgedKind::Rotate,
            NOW + 1,
            &mut r,
        );
        let OpBody::Rotate { rotation } = &mut op.op.body else {
            panic!()
        };
        let at = rotation
            .recipients
            .iter()
            .position(|m| *m == victim_id)
            .unwrap();
        let Shares::Sealed(copies) = &mut rotation.shares else {
            panic!()
        };
        match case {
            "flipped" => copies[at].ciphertext[5] ^= 1,
            _ => {
                // The same ephemeral key, another secret: copies sealed by the same
                // randomness, so only the secret differs.
                let other = rooms[liar].forge_op_for_tests(
                    rooms[liar].log().heads(),
                    ForgedKind::Rotate,
                    NOW + 1,
                    &mut rng(99),
                );
                let OpBody::Rotate { rotation: o } = other.op.body else {
                    panic!()
                };
                let Shares::Sealed(other_copies) = o.shares else {
                    panic!()
                };
                copies[at] = other_copies[at].clone();
                rotation.ephemeral = o.ephemeral;
            }
        }
        let op = rooms[liar].sign_op_for_tests(op.op);
        for i in 0..4 {
            rooms[i].merge_ops(vec![op.clone()], NOW + 2);
        }
        assert!(
            rooms[victim].topic().is_none(),
            "{case}: the victim lacks the key"
        );
        assert!(rooms[victim].needs_rotation(), "{case}");
        assert_eq!(
            rooms[victim].bad_keys(),
            vec![(op.hash(), rooms[liar].me())],
            "{case}: the author is named"
        );
        let repair = rooms[victim].rotate(NOW + 3, &mut r).unwrap();
        broadcast(&mut rooms, victim, &repair);
        let topic = rooms[0].topic();
        assert!(topic.is_some());
        assert!(rooms.iter().all(|room| room.topic() == topic), "{case}");
        assert!(rooms.iter().all(|room| !room.needs_rotation()), "{case}");
        assert!(
            rooms[victim]
                .changes_while_member()
                .iter()
                .any(|c| matches!(&c.kind, confer_room::ChangeKind::BadKey { by } if by == "M1"))
        );
    }
}

/// Headers are readable by anyone who knows the room id. Envelopes whose headers name
/// the same operation over and over, operations out of order, or operations that are not
/// keying ones, with bodies that open under nothing, leave the receiver holding exactly
/// the keys and topics it held.
#[test]
fn forged_headers_create_no_epochs() {
    let mut r = rng(27);
    let mut rooms = room_of(2, &mut r);
    let rotation = rooms[0].rotate(NOW + 1, &mut r).unwrap();
    broadcast(&mut rooms, 0, &rotation);
    let keying: Vec<_> = rooms[1]
        .log()
        .iter()
        .filter(|(_, op)| op.op.body.rotation().is_some())
        .map(|(h, _)| *h)
        .collect();
    let other: Vec<_> = rooms[1]
        .log()
        .iter()
        .filter(|(_, op)| op.op.body.rotation().is_none())
        .map(|(h, _)| *h)
        .collect();
    let (held, topics, record) = (
        rooms[1].epochs_held(),
        rooms[1].topics(),
        rooms[1].to_bytes().unwrap().len(),
    );
    let mut headers: Vec<Vec<_>> = (1..=64).map(|i| vec![keying[0]; i]).collect();
    headers.push(keying.iter().rev().copied().collect());
    headers.push(keying.clone());
    headers.push(other.clone());
    headers.push(vec![[7; 32]]);
    for frontier in headers {
        let env = rooms[0].envelope_naming_for_tests(&frontier, b"garbage", &mut r);
        assert!(rooms[1].open(&env, NOW + 2).is_err());
    }
    assert_eq!(rooms[1].epochs_held(), held);
    assert_eq!(rooms[1].topics(), topics);
    assert_eq!(rooms[1].to_bytes().unwrap().len(), record);
}

/// Once a retired key is deleted, the copy of it sealed in the log is deleted with it: a
/// restart and new operations do not bring it back, and the old message stays closed.
#[test]
fn a_deleted_key_stays_deleted_after_a_restart() {
    let mut r = rng(28);
    let mut rooms = room_of(2, &mut r);
    let (old, _) = rooms[1].seal_message("before", NOW, &mut r).unwrap();
    let rotation = rooms[1].rotate(NOW + 1, &mut r).unwrap();
    rooms[0].open(&rotation, NOW + 1).unwrap();
    let retention_ms = rooms[0].log().state().retention_secs() * 1000;
    assert!(rooms[0].prune(NOW + retention_ms + 2));
    let mut restored = Room::from_bytes(&rooms[0].to_bytes().unwrap()).unwrap();
    let genesis = find(&restored, |b| matches!(b, OpBody::Create { .. }));
    assert!(
        matches!(
            restored
                .log()
                .op(&genesis)
                .unwrap()
                .op
                .body
                .rotation()
                .unwrap()
                .shares,
            Shares::Dropped(_)
        ),
        "the deleted key's sealed copies are gone from the record"
    );
    // A member who still holds the copies hands its log over, and something new happens.
    let full = rooms[1].log().ops();
    restored.merge_ops(full, NOW + retention_ms + 3);
    let more = rooms[1].rotate(NOW + retention_ms + 4, &mut r);
    assert!(more.is_err(), "it made the last rotation");
    let heal = rooms[0].rotate(NOW + retention_ms + 4, &mut r).unwrap();
    restored.open(&heal, NOW + retention_ms + 4).unwrap();
    assert_eq!(
        restored.open(&old, NOW + retention_ms + 5),
        Err(OpenError::Crypto)
    );
    let again = Room::from_bytes(&restored.to_bytes().unwrap()).unwrap();
    let mut again = again;
    assert_eq!(
        again.open(&old, NOW + retention_ms + 5),
        Err(OpenError::Crypto)
    );
}

/// A key older than a week asks to be replaced: the facilitator's node after seven days,
/// a member's a day later; nobody right after making it.
#[test]
fn keys_age_out() {
    let mut r = rng(29);
    let mut rooms = room_of(2, &mut r);
    let day = 24 * 3600 * 1000;
    assert!(!rooms[0].epoch_too_old(NOW + 6 * day));
    assert!(rooms[0].epoch_too_old(NOW + 7 * day));
    assert!(!rooms[1].epoch_too_old(NOW + 7 * day));
    assert!(rooms[1].epoch_too_old(NOW + 8 * day));
    let rotation = rooms[1].rotate(NOW + 8 * day, &mut r).unwrap();
    rooms[0].open(&rotation, NOW + 8 * day).unwrap();
    assert!(!rooms[0].epoch_too_old(NOW + 9 * day), "a new key");
    assert!(
        !rooms[1].epoch_too_old(NOW + 30 * day),
        "it made the last one"
    );
    assert!(rooms[0].epoch_too_old(NOW + 15 * day));
}

/// The same envelope with a length written in three bytes instead of one decodes to the
/// same value in bincode; it is refused, so nobody can make one message look like many.
#[test]
fn an_envelope_has_one_encoding() {
    let mut r = rng(30);
    let mut rooms = room_of(2, &mut r);
    let (env, record) = rooms[1].seal_message("once", NOW, &mut r).unwrap();
    // The header's ciphertext length follows its 24-byte nonce.
    let len = env[24];
    assert!(len < 251, "a one-byte length");
    let mut wide = env[..24].to_vec();
    wide.extend_from_slice(&[251, len, 0]);
    wide.extend_from_slice(&env[25..]);
    assert_eq!(rooms[0].open(&wide, NOW), Err(OpenError::Malformed));
    assert_eq!(rooms[0].open(&env, NOW), Ok(Incoming::Message(record)));
}

/// Operations whose parents have not arrived wait, but only a known member's, and only so
/// many of each.
#[test]
fn waiting_operations_are_bounded() {
    let mut r = rng(31);
    let rooms = room_of(2, &mut r);
    let mut log = rooms[0].log().clone();
    let mut stranger = rooms[1].clone();
    stranger.replace_keys_for_tests(MemberKeys::generate(&mut r));
    let nowhere = vec![[9u8; 32]];
    let junk = stranger.forge_op_for_tests(nowhere.clone(), ForgedKind::Leave, NOW, &mut r);
    assert_eq!(
        log.insert(junk),
        Err(LogError::Refused(confer_room::log::Refusal::UnknownAuthor))
    );
    for i in 0..2 * confer_room::log::MAX_PENDING_PER_AUTHOR as u64 {
        let op =
            rooms[1].forge_op_for_tests(vec![[i as u8; 32]], ForgedKind::Leave, NOW + i, &mut r);
        assert_eq!(log.insert(op), Err(LogError::MissingParents));
    }
    assert_eq!(log.pending_len(), confer_room::log::MAX_PENDING_PER_AUTHOR);
}

/// A welcome holds the whole room: a room whose log is past the 1 MiB of an ordinary
/// answer still admits, and the joiner's welcome decodes and opens.
#[test]
fn a_room_with_a_long_log_still_admits() {
    let mut r = rng(32);
    let mut rooms = room_of(MAX_MEMBERS - 1, &mut r);
    while rooms[0].to_bytes().unwrap().len() < 1_200_000 {
        for _ in 0..100 {
            rooms[0].rotate(NOW, &mut r).unwrap();
        }
    }
    let invite = rooms[0]
        .issue_invite(vec![], b"fac".to_vec(), NOW / 1000 + 60, &mut r)
        .unwrap();
    let keys = MemberKeys::generate(&mut r);
    let request = JoinRequest::new(
        JoinBody {
            room_id: invite.body.room_id,
            invite_id: invite.body.invite_id,
            secret: invite.body.secret.clone(),
            member: keys.public(),
            display_name: "Late".into(),
            peer: b"late".to_vec(),
        },
        &keys,
    )
    .unwrap();
    let answer = rooms[0]
        .admit(&request, NOW, &mut r)
        .unwrap()
        .response
        .to_bytes();
    assert!(answer.len() > 1024 * 1024, "{} bytes", answer.len());
    let confer_room::JoinResponse::Welcome(sealed) =
        confer_room::JoinResponse::from_bytes(&answer).unwrap()
    else {
        panic!("refused")
    };
    let joined = Room::from_welcome(&invite, keys, &sealed, NOW).unwrap();
    assert_eq!(joined.topic(), rooms[0].topic());
}
