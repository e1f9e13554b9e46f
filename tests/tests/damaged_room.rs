//! A room whose stored record does not read (damaged, or written by a version of Confer
//! that this one cannot read) never stops the node: it is set aside as it is, counted in
//! the node's status, and the profile's other rooms run.

use confer_node::api::{Reply, Request};
use confer_store::{Profile, Store};
use confer_tests::{PASSPHRASE, TestNode, start_node};

async fn create(node: &TestNode, name: &str) -> [u8; 32] {
    match node
        .ok(Request::CreateRoom {
            name: name.into(),
            display_name: None,
        })
        .await
    {
        Reply::Room(info) => {
            let bytes = hex::decode(&info.room_id).expect("a hex room id");
            bytes.try_into().expect("32 bytes")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_does_not_read_is_set_aside_and_the_others_run() {
    let mut sam = TestNode::start("Sam").await;
    create(&sam, "Tuesday group").await;
    let damaged = create(&sam, "Thursday group").await;
    sam.send("Tuesday group", "Before the restart.").await;
    sam.node.clone().shutdown().await;

    // The second room's record is overwritten with bytes that are not a room.
    let profile = Profile::unlock(sam.home(), PASSPHRASE).expect("unlock");
    let store = Store::open(&profile).expect("open the store");
    store.put_room(&damaged, b"not a room").expect("write");
    store.flush().expect("flush");
    drop(store);

    sam.node = start_node(profile).await;
    let status = sam.status().await;
    assert_eq!(status.unreadable_rooms, 1);
    let names: Vec<String> = status.rooms.iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["Tuesday group"]);
    sam.send("Tuesday group", "After the restart.").await;
    assert_eq!(sam.history("Tuesday group").await.len(), 2);
    // Set aside, not deleted: the record is still in the store.
    sam.node.clone().shutdown().await;
    let store = Store::open(&profile_again(&sam)).expect("open the store");
    assert_eq!(store.rooms().expect("rooms").len(), 2);
}

fn profile_again(node: &TestNode) -> Profile {
    Profile::unlock(node.home(), PASSPHRASE).expect("unlock")
}
