//! Asking again. Sync rounds resend only what the receiver can use. A message no other
//! member has confirmed is retried every round, but only to members who can open it: one
//! sealed under an older key is asked for by the members of that epoch when they come back,
//! and is not pushed, every round, to members who joined later and can never read it. Ids
//! a member lacks but cannot get are asked for again only after a doubling wait. A join
//! whose answer was lost is asked again, and admits the joiner once.

mod bare;

use std::time::Duration;

use bare::BareFacilitator;
use confer_node::api::{Reply, Request};
use confer_node::net::NetConfig;
use confer_tests::{TestNode, within};

const ROOM: &str = "Supervision circle";

/// A sync round every 200 ms, so a test sees many within seconds (the default is 15 s).
const ROUND: Duration = Duration::from_millis(200);

fn quick_rounds() -> NetConfig {
    NetConfig {
        sync_interval: ROUND,
        ..NetConfig::for_tests()
    }
}

/// Polls until `check` holds for `node`'s history.
async fn until_history(
    node: &TestNode,
    what: &str,
    check: impl Fn(&[confer_node::api::MessageInfo]) -> bool,
) {
    within(what, async {
        while !check(&node.history(ROOM).await) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_key_messages_are_not_pushed_every_round_to_later_joiners() {
    let alice = TestNode::start_with("Alice", quick_rounds()).await;
    let mut bob = TestNode::start_with("Bob", quick_rounds()).await;
    let carol = TestNode::start_with("Carol", quick_rounds()).await;
    alice.form_room(ROOM, "Alice", &[(&bob, "Bob")]).await;

    // Bob is away; Alice writes under the first key: nobody holds her messages yet.
    bob.node.clone().shutdown().await;
    let mut early = Vec::new();
    for i in 0..3 {
        early.push(alice.send(ROOM, &format!("Before the new key, {i}")).await);
    }
    // A new key, then Carol joins under it: she can never open the three.
    alice.ok(Request::Rotate { room: ROOM.into() }).await;
    alice.form_more(ROOM, &[(&carol, "Carol")]).await;
    let after = alice.send(ROOM, "Welcome, Carol.").await;
    until_history(&carol, "Alice's welcome at Carol", |h| {
        h.iter().any(|m| m.message_id == after)
    })
    .await;

    // Many rounds pass. Carol learns the three ids exist (they are in Alice's summary) and
    // asks once; what she cannot open she drops. Before, Alice pushed the three to her
    // every round and Carol asked for them every round: 3 more dropped each time.
    let dropped_then = carol.status().await.dropped;
    tokio::time::sleep(ROUND * 15).await;
    let dropped_now = carol.status().await.dropped;
    assert!(
        dropped_now <= 3,
        "Carol dropped {dropped_now} inputs over 15 rounds ({dropped_then} at the start): \
         old-key messages are resent to her, or she asks for them every round"
    );
    let history = carol.history(ROOM).await;
    assert!(history.iter().all(|m| !early.contains(&m.message_id)));
    // Still unconfirmed at Alice: no member who can read them has them.
    let alices = alice.history(ROOM).await;
    for id in &early {
        let m = alices.iter().find(|m| &m.message_id == id).unwrap();
        assert!(m.pending, "nobody holds {id} yet");
    }

    // Bob, a member of the first epoch, comes back and gets them; Alice learns he holds them.
    bob.restart().await;
    until_history(&bob, "the three early messages at Bob", |h| {
        early.iter().all(|id| h.iter().any(|m| &m.message_id == id))
    })
    .await;
    until_history(&alice, "Bob's confirmation at Alice", |h| {
        early
            .iter()
            .all(|id| h.iter().any(|m| &m.message_id == id && !m.pending))
    })
    .await;
}

async fn names(node: &TestNode) -> Vec<String> {
    match node.ok(Request::Members { room: ROOM.into() }).await {
        Reply::Members { members, .. } => members.into_iter().map(|m| m.name).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

/// A join whose answer is lost (the connection to the facilitator closes after it took
/// the request and admitted the joiner) is sent again, unchanged, and the facilitator
/// answers it with the welcome: the joiner is in, admitted once, instead of being told to
/// try again with an invite that is now spent and a name that is now taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_answer_was_lost_is_asked_again_and_admitted_once() {
    let joiner = TestNode::start("Joiner").await;
    let (mut facilitator, code) = BareFacilitator::start(ROOM).await;
    let reply = facilitator.serve(&joiner, &code, "Jo", 1).await;
    assert!(matches!(reply, Reply::Room(_)), "{reply:?}");
    assert_eq!(facilitator.lost.len(), 1, "the first answer was lost");
    assert_eq!(names(&joiner).await, ["Sam", "Jo"]);
    assert_eq!(facilitator.room.members().len(), 2);
}

/// When every attempt loses its answer, the joiner is told to run the same command again;
/// doing so (even after restarting its node, and under another name) gets the welcome of
/// the admission that happened, not "this invite has already been used".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_failed_after_being_admitted_succeeds_when_run_again() {
    let mut joiner = TestNode::start("Joiner").await;
    let (mut facilitator, code) = BareFacilitator::start(ROOM).await;
    let reply = facilitator.serve(&joiner, &code, "Jo", 3).await;
    let Reply::Error { message } = reply else {
        panic!("unexpected {reply:?}")
    };
    assert!(message.contains("run the same command again"), "{message}");
    assert!(
        message.contains("answer never came") && !message.contains("could not reach"),
        "the node was reached: {message}"
    );
    assert_eq!(facilitator.lost.len(), 3, "every attempt lost");

    joiner.restart().await;
    let reply = facilitator.serve(&joiner, &code, "Joanne", 0).await;
    assert!(matches!(reply, Reply::Room(_)), "{reply:?}");
    assert_eq!(names(&joiner).await, ["Sam", "Jo"]);
    assert_eq!(facilitator.room.members().len(), 2);
}

/// Whether `node`'s message `id` is still marked as received by nobody else.
async fn pending(node: &TestNode, id: &str) -> bool {
    let history = node.history(ROOM).await;
    history
        .iter()
        .find(|m| m.message_id == id)
        .expect("the message is in the history")
        .pending
}

/// A member's node can take one of our messages and never say so (its answer lost, its
/// node stopped first), and then the key changes, so the message is no longer pushed:
/// it must not stay "not yet received by anyone else" for ever. The node's next
/// reconciliation with that member asks it to prove it holds the message, and its proof
/// confirms it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_member_holds_but_never_confirmed_is_confirmed_by_its_proof() {
    let (mut sam, jo) = BareFacilitator::with_member_using(ROOM, "Jo", quick_rounds()).await;
    let id = jo.send(ROOM, "Jo: notes from Tuesday's session").await;
    sam.fetch(&jo, &id).await;
    sam.rounds(3, "three of Jo's node's rounds").await;
    assert!(pending(&jo, &id).await, "Sam's node confirms nothing");

    let rotation = sam.rotate();
    sam.push_to(&jo, vec![rotation], |_| true).await;
    sam.proves = true;
    sam.rounds(3, "three more of Jo's node's rounds").await;
    until_history(&jo, "Sam's proof to confirm Jo's message", |h| {
        h.iter().any(|m| m.message_id == id && !m.pending)
    })
    .await;
}

/// `leave` waits for a member to hold the leaver's last message. Someone who gives up
/// waiting (Ctrl-C, which drops the request) has chosen to stay: the leave must not be
/// carried out when the message is held a moment later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_given_up_while_it_waits_is_not_carried_out_later() {
    let (mut sam, jo) = BareFacilitator::with_member(ROOM, "Jo").await;
    let id = jo.send(ROOM, "Jo: one more thing before I go").await;
    sam.fetch(&jo, &id).await;
    let leave = jo.node.request(Request::Leave {
        room: ROOM.into(),
        anyway: false,
    });
    // Sam's node is not answering now (the test is not running it), so the leave waits;
    // Jo gives up.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), leave).await;
    assert!(gave_up.is_err(), "the leave waits: {gave_up:?}");

    // Sam's node now answers the push of the message that waited, proving it holds it.
    sam.proves = true;
    let rotation = sam.rotate();
    sam.push_to(&jo, vec![rotation], |_| true).await;
    until_history(&jo, "Sam's proof to confirm Jo's message", |h| {
        h.iter().any(|m| m.message_id == id && !m.pending)
    })
    .await;
    assert!(
        jo.status().await.rooms[0].member,
        "Jo gave up leaving, and left all the same once the message was held"
    );
}

/// A member whose clock is hours ahead (or who sets it so) must not pin its message to
/// the end of everyone's history: the message takes its place when it arrives, keeping
/// the time its author gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_dated_far_ahead_takes_its_place_when_it_arrives() {
    let (mut sam, jo) = BareFacilitator::with_member(ROOM, "Jo").await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64
    };
    let ahead = sam.seal_at("Sam: read this last, always", now_ms() + 6 * 3600 * 1000);
    let answer = sam.push_to(&jo, vec![ahead], |_| true).await;
    assert_eq!(answer.held.len(), 1, "Jo's node took it");
    // Jo's message is dated at least a millisecond after Sam's arrived.
    let arrived = now_ms();
    while now_ms() <= arrived {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    jo.send(ROOM, "Jo: said after it").await;

    let history = jo.history(ROOM).await;
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["Sam: read this last, always", "Jo: said after it"]);
    // RFC 3339 times of one width sort as text.
    assert!(
        history[0].sent_at > history[1].sent_at,
        "it keeps its author's time: {} and {}",
        history[0].sent_at,
        history[1].sent_at
    );
}

/// A message dated more than a day after the receiver's clock is refused: a member could
/// otherwise spread its messages over thousands of days to come, and every summary
/// would carry them. It is taken once the receiver's clock comes within a day of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_dated_more_than_a_day_ahead_is_refused() {
    let (mut sam, jo) = BareFacilitator::with_member(ROOM, "Jo").await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64
    };
    let dropped = jo.status().await.dropped;
    let ahead = sam.seal_at(
        "Sam: from the day after tomorrow",
        now_ms() + 2 * 24 * 3600 * 1000,
    );
    let answer = sam.push_to(&jo, vec![ahead], |_| true).await;
    assert!(answer.held.is_empty(), "Jo's node took it: {answer:?}");
    assert!(jo.history(ROOM).await.is_empty());
    assert!(jo.status().await.dropped > dropped, "and counted it");
}

/// A member's node hands a member whose subscription it has just seen the envelopes it
/// accepted in the last moments (gossip did not route them to that member), and no older
/// ones: a member reconnecting later catches up by reconciliation, asking for what it
/// lacks, instead of every member sending it the room's latest envelopes whether it
/// holds them or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_envelopes_from_the_last_moments_are_handed_to_a_member_who_subscribes() {
    let window = Duration::from_secs(3);
    let net = NetConfig {
        recent_window: window,
        ..quick_rounds()
    };
    let (mut sam, jo) = BareFacilitator::with_member_using(ROOM, "Jo", net).await;
    // Sam says something (Jo's node holds it and does not push it back: it is Sam's).
    let said = sam.seal("Sam: the room is set up; see you Thursday.");
    sam.publish_to(&jo, said).await;
    until_history(&jo, "Jo's node to take Sam's message", |h| h.len() == 1).await;
    let id: confer_node::sync::Id = hex::decode(&jo.history(ROOM).await[0].message_id)
        .unwrap()
        .try_into()
        .unwrap();
    let reconnect = |sam: &mut BareFacilitator| {
        sam.go_offline();
        sam.held.clear();
        sam.summaries = 0;
    };

    // Sam's node comes back at once: Jo's node hands the message over unasked.
    reconnect(&mut sam);
    jo.until_alone().await;
    sam.subscribe_to(&jo).await;
    sam.until("Jo's node to hand over the message", |sam| {
        sam.held.contains_key(&id)
    })
    .await;

    // Sam's node comes back once the message is older than the window: Jo's node
    // reconciles with it and hands over nothing unasked (Sam's node never asks).
    reconnect(&mut sam);
    jo.until_alone().await;
    tokio::time::sleep(window).await;
    sam.subscribe_to(&jo).await;
    // On connecting, on the subscription, and a sync round after.
    sam.until("three reconciliations from Jo's node", |sam| {
        sam.summaries >= 3
    })
    .await;
    assert!(
        sam.held.is_empty(),
        "Jo's node pushed an old envelope unasked"
    );
}

/// Sam's node played by the test, and Jo's (real, reconciling every [`ROUND`]) admitted
/// to the room, both on its topic.
async fn sam_and_jo_in_quick_rounds() -> (BareFacilitator, TestNode) {
    let (mut sam, jo) = BareFacilitator::with_member_using(ROOM, "Jo", quick_rounds()).await;
    sam.subscribe_to(&jo).await;
    (sam, jo)
}

/// Every sync round a node reconciles with each connected member; it hands over its
/// whole log (every admission and rotation, with their sealed secrets) only when the log
/// has grown since it last did (and now and then in case that push was lost), not every
/// round: in a room that has run for years that was most of its idle traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_has_not_changed_is_not_handed_over_every_round() {
    let (mut sam, jo) = sam_and_jo_in_quick_rounds().await;
    // Jo's node has handed Sam's the log on connecting and on the subscription; the
    // rounds after that carry none.
    sam.until("a round of Jo's node", |sam| sam.digests >= 1)
        .await;
    sam.logs = 0;
    sam.rounds(6, "six rounds of Jo's node").await;
    assert!(
        sam.logs <= 1,
        "{} of {} rounds carried the unchanged log",
        sam.logs,
        sam.digests
    );

    // The log grows (Sam's node rotates the key): the next round carries it.
    let rotation = sam.rotate();
    sam.push_to(&jo, vec![rotation], |_| true).await;
    sam.logs = 0;
    sam.until("Jo's node to hand over its grown log", |sam| sam.logs >= 1)
        .await;
}

/// A sync round sends a digest of the member's summary, not the summary (32 bytes, not
/// 44 for every day the room has talked, to every member every round); the summary
/// follows only when the other member's digest differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_send_a_digest_and_the_summary_only_when_histories_differ() {
    let (mut sam, _jo) = sam_and_jo_in_quick_rounds().await;
    sam.until("a round of Jo's node", |sam| sam.digests >= 1)
        .await;
    // The same history (none): rounds, and no summary.
    let summaries = sam.summaries;
    sam.rounds(6, "six rounds of Jo's node").await;
    assert_eq!(
        sam.summaries, summaries,
        "a summary though nothing differed"
    );

    // Sam's node holds a message Jo's does not: the next round's digest differs, and
    // the summary follows.
    sam.hold("Only Sam's node has this.");
    sam.until("the summary after a differing digest", |sam| {
        sam.summaries > summaries
    })
    .await;
}

/// A member still taking a node's last pushes is not handed the same unconfirmed
/// messages again every round on top of them: on a slow link a round's retries could
/// outlast the round and pile up (up to 64 MiB queued for each member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_messages_are_not_pushed_again_while_the_last_push_is_unanswered() {
    let (mut sam, jo) = sam_and_jo_in_quick_rounds().await;
    // Sam's node takes everything and answers nothing, so confirms nothing.
    sam.withhold = true;
    jo.send(ROOM, "Sam's node never confirms this.").await;
    sam.until("Jo's node to push it", |sam| sam.envelopes >= 1)
        .await;
    // Pushed at most twice to begin with: at the tick after the send (within a second,
    // whatever the rounds), and by a round that came before it.
    sam.rounds(7, "a second of Jo's node's rounds").await;
    let pushed = sam.envelopes;
    assert!(pushed <= 2, "{pushed}");
    sam.rounds(10, "ten rounds of Jo's node").await;
    assert_eq!(
        sam.envelopes, pushed,
        "pushed again while the last push was unanswered"
    );
}

/// A push answered late (here after 12 s; on a slow link, 32 pushes of up to 64 KiB
/// share the bandwidth, so the last is answered long after it was sent) still counts:
/// libp2p's default of 10 s per request dropped the answer, and a catch-up over such a
/// link was sent again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_answered_late_still_confirms() {
    let (mut sam, jo) = sam_and_jo_in_quick_rounds().await;
    sam.withhold = true;
    let id = jo.send(ROOM, "Confirmed only after a long wait.").await;
    sam.until("Jo's node to push it", |sam| sam.envelopes >= 1)
        .await;
    // Sam's node holds it (the push carried it) and answers 12 s later, confirming it
    // only in the answers to pushes older than 11 s (libp2p's old limit was 10 s).
    // Meanwhile Jo's node goes on pushing until it has 32 pushes unanswered.
    let waiting = tokio::time::timeout(
        Duration::from_secs(12),
        sam.until("nothing: twelve seconds", |_| false),
    );
    assert!(waiting.await.is_err());
    sam.answer_withheld(Duration::from_secs(11));
    sam.rounds(5, "a few more rounds").await;
    let pending = jo
        .history(ROOM)
        .await
        .into_iter()
        .find(|m| m.message_id == id)
        .expect("Jo's message")
        .pending;
    assert!(!pending, "the late answer was not taken");
}
