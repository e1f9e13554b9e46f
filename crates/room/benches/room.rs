//! Benchmarks for a room of 8: seal and open a 1 KiB message, create a rotation, apply a
//! rotation; and for a room whose log holds 4,000 operations: take in one more, and load
//! the room from its stored record.
//!
//! Run with `cargo bench -p confer-room --bench room`; results and targets are in
//! `docs/BENCHMARKS.md`. Every room is built through the real invite and join path
//! (`test_utils::room_of`) from a seeded RNG, so runs are comparable.

use std::hint::black_box;
use std::time::Duration;

use confer_room::test_utils::{NOW, room_of};
use confer_room::{Incoming, Room};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Members in the benchmarked room: the cap.
const MEMBERS: usize = 8;

/// A 1 KiB message text (ASCII, so 1024 bytes of UTF-8).
fn text_1k() -> String {
    (0..1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

fn room(seed: u64) -> Vec<Room> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rooms = room_of(MEMBERS, &mut rng);
    assert!(rooms.iter().all(|r| r.members().len() == MEMBERS));
    rooms
}

fn seal_1k(c: &mut Criterion) {
    let rooms = room(1);
    let text = text_1k();
    assert_eq!(text.len(), 1024);
    let mut rng = StdRng::seed_from_u64(2);
    c.bench_function("seal_1k", |b| {
        b.iter(|| {
            rooms[1]
                .seal_message(black_box(&text), NOW, &mut rng)
                .expect("member can seal")
        })
    });
}

fn open_1k(c: &mut Criterion) {
    let mut rooms = room(3);
    let mut rng = StdRng::seed_from_u64(4);
    let (envelope, record) = rooms[1]
        .seal_message(&text_1k(), NOW, &mut rng)
        .expect("member can seal");
    // Opening a message does not change the receiving room (only operations do), so the
    // same room opens the same envelope on every iteration: no clone is measured.
    let receiver = &mut rooms[2];
    assert_eq!(
        receiver.open(&envelope, NOW),
        Ok(Incoming::Message(record.clone()))
    );
    c.bench_function("open_1k", |b| {
        b.iter(|| receiver.open(black_box(&envelope), NOW).expect("opens"))
    });
    assert_eq!(receiver.open(&envelope, NOW), Ok(Incoming::Message(record)));
}

fn rotate_create_8(c: &mut Criterion) {
    let rooms = room(5);
    let mut rng = StdRng::seed_from_u64(6);
    // `rotate` appends to the member's log, so each iteration starts from a fresh clone
    // (made, and dropped, outside the timed part).
    c.bench_function("rotate_create_8", |b| {
        b.iter_batched_ref(
            || rooms[0].clone(),
            |r| r.rotate(NOW, &mut rng).expect("member can rotate"),
            BatchSize::SmallInput,
        )
    });
}

fn rotate_apply_8(c: &mut Criterion) {
    let mut rooms = room(7);
    let mut rng = StdRng::seed_from_u64(8);
    let before = rooms[1].epoch_number();
    let rotation = rooms[0].rotate(NOW, &mut rng).expect("member can rotate");
    {
        let mut check = rooms[1].clone();
        assert_eq!(check.open(&rotation, NOW), Ok(Incoming::Op { new: true }));
        assert_eq!(check.epoch_number(), before + 1);
        assert_eq!(
            check.topic(),
            rooms[0].topic(),
            "the receiver holds the new key"
        );
    }
    let receiver = &rooms[1];
    c.bench_function("rotate_apply_8", |b| {
        b.iter_batched_ref(
            || receiver.clone(),
            |r| r.open(black_box(&rotation), NOW).expect("rotation applies"),
            BatchSize::SmallInput,
        )
    });
}

/// Operations in the long log: a room that rotated this often in its life.
const LONG_LOG: usize = 4000;

/// A room of three whose facilitator has rotated until the log holds [`LONG_LOG`]
/// operations; the member at index 1 has taken every one in.
fn long_room(seed: u64) -> Vec<Room> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rooms = room_of(3, &mut rng);
    while rooms[1].log().len() < LONG_LOG {
        let rotation = rooms[0]
            .rotate(NOW, &mut rng)
            .expect("facilitator can rotate");
        rooms[1].open(&rotation, NOW).expect("rotation applies");
    }
    rooms
}

fn merge_into_4000(c: &mut Criterion) {
    let mut rooms = long_room(9);
    let mut rng = StdRng::seed_from_u64(10);
    let rotation = rooms[0]
        .rotate(NOW, &mut rng)
        .expect("facilitator can rotate");
    let receiver = &rooms[1];
    assert_eq!(receiver.log().len(), LONG_LOG);
    {
        let mut check = receiver.clone();
        assert_eq!(check.open(&rotation, NOW), Ok(Incoming::Op { new: true }));
        assert_eq!(check.topic(), rooms[0].topic());
    }
    c.bench_function("merge_into_4000", |b| {
        b.iter_batched_ref(
            || receiver.clone(),
            |r| r.open(black_box(&rotation), NOW).expect("rotation applies"),
            BatchSize::LargeInput,
        )
    });
}

fn load_4000(c: &mut Criterion) {
    let rooms = long_room(11);
    let record = rooms[1].to_bytes().expect("the record encodes");
    let loaded = Room::from_bytes(&record).expect("the record loads");
    assert_eq!(loaded.log().len(), LONG_LOG);
    assert_eq!(loaded.topic(), rooms[1].topic());
    c.bench_function("load_4000", |b| {
        b.iter(|| Room::from_bytes(black_box(&record)).expect("the record loads"))
    });
}

criterion_group! {
    name = long;
    config = Criterion::default().measurement_time(Duration::from_secs(10)).sample_size(20);
    targets = merge_into_4000, load_4000
}

criterion_group! {
    name = benches;
    // 10 s per benchmark, so even `rotate_create_8` (about 1 ms an iteration) collects its
    // 100 samples; the machine has two cores, so keep other work off it while measuring.
    config = Criterion::default().measurement_time(Duration::from_secs(10));
    targets = seal_1k, open_1k, rotate_create_8, rotate_apply_8
}
criterion_main!(benches, long);
