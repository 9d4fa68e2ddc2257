//! Partial files kept for resume cannot fill a receiver's disk: on a real small disk, a
//! sender that leaves partial files again and again does not keep an honest file out,
//! and an offer larger than the free space is refused before any byte comes.

mod common;

use common::small_disk::SmallDisk;
use peermsg::client::ReceiveId;
use peermsg::wire::{ResumeKey, UserId};
use peermsg_tokio::FileSink;

#[test]
fn partials_left_by_one_sender_give_way_to_an_honest_file() {
    let Some(disk) = SmallDisk::new("8m") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let mut sink = FileSink::new(disk.0.path()).unwrap();
    let mallory = UserId::new("mallory").unwrap();
    // Mallory offers 15 files of 512 KiB, sends each whole but its end, and cuts the
    // connection: 7.5 of the 8 MiB are his hidden partial files.
    for k in 0..15u8 {
        let id = ReceiveId(u64::from(k));
        let key = ResumeKey([k; 16]);
        sink.begin_resumable(id, &mallory, key, "x", 512 << 10)
            .unwrap();
        sink.write(id, &vec![k; (512 << 10) - 1]).unwrap();
        sink.suspend(id);
    }
    let (count, bytes, _) = sink.kept();
    assert!(bytes > 6 << 20, "{count} partials of {bytes} bytes kept");
    // Carol's 4 MiB file is taken: Mallory's oldest partials go to make room (they held
    // it, and the file failed as the disk filled).
    let id = ReceiveId(100);
    sink.begin(id, "honest.bin", 4 << 20).unwrap();
    sink.write(id, &vec![7u8; 4 << 20]).unwrap();
    let kept = sink.arrived(id, "honest.bin").unwrap().keep().unwrap();
    let peermsg_tokio::Kept::Saved(saved) = kept else {
        panic!("{kept:?}");
    };
    assert_eq!(std::fs::metadata(&saved.tmp_file).unwrap().len(), 4 << 20);
    // An offer larger than the whole disk is refused at once, before any byte.
    let err = sink
        .begin(ReceiveId(101), "huge.bin", 64 << 20)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
    let err = sink
        .begin_resumable(
            ReceiveId(102),
            &mallory,
            ResumeKey([99; 16]),
            "huge",
            64 << 20,
        )
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
}

#[test]
fn a_disk_that_fills_as_the_bytes_come_says_so() {
    let Some(disk) = SmallDisk::new("1m") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let mut sink = FileSink::new(disk.0.path()).unwrap();
    // Room for the 64 KiB offered; then something else takes the disk.
    sink.begin(ReceiveId(1), "a.bin", 64 << 10).unwrap();
    let filler = disk.0.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1 << 20]);
    let written = (0..16).try_for_each(|_| sink.write(ReceiveId(1), &[1u8; 64 << 10]));
    let err = written
        .and_then(|()| {
            sink.arrived(ReceiveId(1), "a.bin")
                .unwrap()
                .keep()
                .map(drop)
        })
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
}
