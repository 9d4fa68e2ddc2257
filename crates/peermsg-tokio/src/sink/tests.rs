//! The sink's tests: hostile names, abandoned and kept files, partial files that
//! survive the sink.

use super::*;
use crate::partial::{self};
use peermsg::client::ReceiveId;
use peermsg::wire::{Digest, ResumeKey, UserId};
use std::path::Path;
use std::time::Duration;

/// The file of a [`Kept::Saved`], in tests.
fn saved_file(kept: Kept) -> SavedFile {
    match kept {
        Kept::Saved(saved) => saved,
        other => panic!("not kept now: {other:?}"),
    }
}

mod names {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path()).unwrap();
        let names = [
            "../../x",
            "/etc/passwd",
            "a\\b",
            "ctl\u{1}\u{7f}\n",
            "",
            "..",
            ".",
            "x/../../..",
            "C:\\Windows\\evil",
        ];
        for (i, name) in names.iter().enumerate() {
            let id = ReceiveId(i as u64);
            sink.begin(id, name, 4).unwrap();
            sink.write(id, b"data").unwrap();
            let saved = sink
                .arrived(id, name)
                .unwrap()
                .keep()
                .map(saved_file)
                .unwrap();
            assert_eq!(saved.tmp_file.parent(), Some(dir.path()), "{name:?}");
            assert!(!saved.org_file_name.contains(['/', '\\']) && saved.org_file_name != "..");
            assert!(!saved.org_file_name.chars().any(char::is_control));
            assert_eq!(std::fs::read(&saved.tmp_file).unwrap(), b"data");
        }
    }

    #[test]
    fn abandoned_files_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin(ReceiveId(1), "big.iso", 1 << 20).unwrap();
        sink.write(ReceiveId(1), b"partial").unwrap();
        sink.abandon(ReceiveId(1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

mod keep_tests {
    use super::*;

    #[test]
    fn a_file_kept_synced_is_whole_and_one_not_arrived_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.set_sync(true);
        sink.begin(ReceiveId(1), "a.txt", 5).unwrap();
        sink.write(ReceiveId(1), &[9u8; 300 * 1024]).unwrap();
        let saved = sink
            .arrived(ReceiveId(1), "a.txt")
            .unwrap()
            .keep()
            .map(saved_file)
            .unwrap();
        assert_eq!(
            std::fs::read(saved.tmp_file).unwrap(),
            vec![9u8; 300 * 1024]
        );
        assert!(sink.arrived(ReceiveId(2), "b.txt").is_none());
    }
}

mod resume_tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").unwrap()
    }

    #[test]
    fn a_partial_survives_the_sink_and_resumes_at_its_recorded_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([5; 16]);
        let bytes: Vec<u8> = (0..(RECORD_EVERY as usize + 300_000))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut sink = FileSink::new(dir.path()).unwrap();
        let id = ReceiveId(1);
        let size = bytes.len() as u64 * 2;
        assert_eq!(
            sink.begin_resumable(id, &alice(), key, "f.bin", size)
                .unwrap(),
            (0, Digest::Crc32c(0))
        );
        let (first, rest) = bytes.split_at(RECORD_EVERY as usize);
        sink.write(id, first).unwrap();
        sink.write(id, rest).unwrap();
        // Killed here: only what was recorded (the first RECORD_EVERY bytes) counts; the
        // rest reached the file (the buffer is flushed on drop) and is cut back.
        drop(sink);
        let mut sink = FileSink::new(dir.path()).unwrap();
        let (offset, digest) = sink
            .begin_resumable(ReceiveId(7), &alice(), key, "f.bin", size)
            .unwrap();
        assert_eq!(offset, RECORD_EVERY);
        let head = &bytes[..offset as usize];
        assert_eq!(digest, Digest::Crc32c(crc32c::crc32c(head)));
        // A lost connection records everything given so far.
        sink.write(ReceiveId(7), &bytes[offset as usize..]).unwrap();
        sink.suspend(ReceiveId(7));
        let mut sink = FileSink::new(dir.path()).unwrap();
        let (offset, _) = sink
            .begin_resumable(ReceiveId(8), &alice(), key, "f.bin", size)
            .unwrap();
        assert_eq!(offset, bytes.len() as u64);
        sink.write(ReceiveId(8), &bytes).unwrap();
        let saved = sink
            .arrived(ReceiveId(8), "f.bin")
            .unwrap()
            .keep()
            .map(saved_file)
            .unwrap();
        assert_eq!(
            std::fs::read(&saved.tmp_file).unwrap(),
            [&bytes[..], &bytes[..]].concat()
        );
        // Offered again (its sender never heard) while the kept file is where the sink
        // put it: all of it is held, and it is not kept again.
        let mut sink = FileSink::new(dir.path()).unwrap();
        let whole = [&bytes[..], &bytes[..]].concat();
        assert_eq!(
            sink.begin_resumable(ReceiveId(9), &alice(), key, "f.bin", size)
                .unwrap(),
            (size, Digest::Crc32c(crc32c::crc32c(&whole)))
        );
        let kept = sink.arrived(ReceiveId(9), "f.bin").unwrap().keep().unwrap();
        assert_eq!(kept, Kept::Already(saved.tmp_file.clone()));
        // Moved without a word: a new delivery, all of it again.
        std::fs::rename(&saved.tmp_file, dir.path().join("elsewhere")).unwrap();
        assert_eq!(
            sink.begin_resumable(ReceiveId(10), &alice(), key, "f.bin", size)
                .unwrap(),
            (0, Digest::Crc32c(0))
        );
    }

    #[test]
    fn a_repeat_is_recognised_only_while_the_saved_file_is_there_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([5; 16]);
        let mut sink = FileSink::new(dir.path()).unwrap();
        let deliver = |sink: &mut FileSink, id| {
            let got = sink
                .begin_resumable(ReceiveId(id), &alice(), key, "f", 100)
                .unwrap();
            assert_eq!(got, (0, Digest::Crc32c(0)), "a new delivery");
            sink.write(ReceiveId(id), &[3; 100]).unwrap();
            let saved = sink
                .arrived(ReceiveId(id), "f")
                .unwrap()
                .keep()
                .map(saved_file)
                .unwrap();
            let place = dir.path().join(format!("f-{id}"));
            std::fs::rename(&saved.tmp_file, &place).unwrap();
            sink.saved_at(saved.done_record().unwrap(), &place).unwrap();
            place
        };
        let place = deliver(&mut sink, 1);
        // Sent again: held whole where it was saved, so answered all of it, not kept twice.
        let whole = Digest::Crc32c(crc32c::crc32c(&[3; 100]));
        let got = sink
            .begin_resumable(ReceiveId(2), &alice(), key, "f", 100)
            .unwrap();
        assert_eq!(got, (100, whole));
        let kept = sink.arrived(ReceiveId(2), "f").unwrap().keep().unwrap();
        assert_eq!(kept, Kept::Already(place.clone()));
        // Changed there, then gone: each time a new delivery.
        std::fs::write(&place, [4; 100]).unwrap();
        let place = deliver(&mut sink, 3);
        std::fs::remove_file(&place).unwrap();
        deliver(&mut sink, 4);
    }

    #[test]
    fn an_attempt_still_open_gives_way_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([8; 16]);
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), key, "f", 100)
            .unwrap();
        sink.write(ReceiveId(1), &[1; 30]).unwrap();
        // The sender is back before the first attempt's end was heard.
        let (offset, _) = sink
            .begin_resumable(ReceiveId(2), &alice(), key, "f", 100)
            .unwrap();
        assert_eq!(offset, 30);
        sink.write(ReceiveId(2), &[2; 70]).unwrap();
        // The first attempt's end, heard late, changes nothing.
        sink.write(ReceiveId(1), &[9; 5]).unwrap();
        sink.suspend(ReceiveId(1));
        let saved = sink
            .arrived(ReceiveId(2), "f")
            .unwrap()
            .keep()
            .map(saved_file)
            .unwrap();
        assert_eq!(
            std::fs::read(saved.tmp_file).unwrap(),
            [[1; 30].as_slice(), &[2; 70]].concat()
        );
    }

    #[test]
    fn a_link_planted_under_a_partials_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let key = ResumeKey([4; 16]);
        let base = partial::base(dir.path(), &alice(), &key);
        // Planted while the listener runs (at its start, the sink removes such files).
        let mut sink = FileSink::new(dir.path()).unwrap();
        std::os::unix::fs::symlink(&target, partial::data_path(&base)).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), key, "f", 10)
            .unwrap();
        sink.write(ReceiveId(1), b"0123456789").unwrap();
        sink.suspend(ReceiveId(1));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn another_sender_or_size_under_the_same_key_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([6; 16]);
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), key, "f", 100)
            .unwrap();
        sink.write(ReceiveId(1), &[1; 60]).unwrap();
        sink.suspend(ReceiveId(1));
        let mallory = UserId::new("mallory").unwrap();
        let got = sink
            .begin_resumable(ReceiveId(2), &mallory, key, "f", 100)
            .unwrap();
        assert_eq!(got.0, 0, "keyed by sender too");
        let got = sink
            .begin_resumable(ReceiveId(3), &alice(), key, "f", 101)
            .unwrap();
        assert_eq!(got.0, 0, "another size");
        // An abandoned (cancelled) partial leaves nothing.
        sink.abandon(ReceiveId(2));
        sink.abandon(ReceiveId(3));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_kept_file_given_up_leaves_nothing_and_is_received_again_whole() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey([9; 16]);
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), key, "f", 100)
            .unwrap();
        sink.write(ReceiveId(1), &[3; 100]).unwrap();
        let saved = sink
            .arrived(ReceiveId(1), "f")
            .unwrap()
            .keep()
            .map(saved_file);
        // Cancelled as it was kept: the file and its done record go.
        saved.unwrap().discard();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // Sent again, it is not taken for a repeat of a delivered file: all of it comes.
        let got = sink
            .begin_resumable(ReceiveId(2), &alice(), key, "f", 100)
            .unwrap();
        assert_eq!(got, (0, Digest::Crc32c(0)));
        sink.write(ReceiveId(2), &[3; 100]).unwrap();
        let saved = sink
            .arrived(ReceiveId(2), "f")
            .unwrap()
            .keep()
            .map(saved_file);
        assert_eq!(std::fs::read(saved.unwrap().tmp_file).unwrap(), [3; 100]);
    }

    #[test]
    fn a_partial_that_cannot_be_kept_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path()).unwrap();
        sink.begin_resumable(ReceiveId(1), &alice(), ResumeKey([4; 16]), "f", 100)
            .unwrap();
        sink.write(ReceiveId(1), &[3; 100]).unwrap();
        let arrived = sink.arrived(ReceiveId(1), "f").unwrap();
        // Its bytes gone from under the sink before it keeps them.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "part") {
                std::fs::remove_file(path).unwrap();
            }
        }
        assert!(arrived.keep().is_err());
        // No empty file under a name of its own, no record.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// `from` leaves `n` partial files of `size` bytes, `bytes` of each written, each under
    /// a new key (an attempt cut by a lost connection, again and again).
    fn leave_partials(sink: &mut FileSink, from: &UserId, n: u8, size: u64, bytes: usize) {
        for k in 0..n {
            let id = ReceiveId(u64::from(k) + 1000);
            let key = ResumeKey([k; 16]);
            sink.begin_resumable(id, from, key, "f.bin", size).unwrap();
            sink.write(id, &vec![k; bytes]).unwrap();
            sink.suspend(id);
        }
    }

    fn partial_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".part")
            })
            .count()
    }

    #[test]
    fn kept_partials_stay_within_each_senders_bounds_and_in_all() {
        let dir = tempfile::tempdir().unwrap();
        let limits = KeptLimits {
            per_sender: 4,
            per_sender_bytes: 10_000,
            total: 6,
            ..KeptLimits::default()
        };
        let mut sink = FileSink::with_limits(dir.path(), limits).unwrap();
        let carol = UserId::new("carol").unwrap();
        let mallory = UserId::new("mallory").unwrap();
        leave_partials(&mut sink, &carol, 2, 1000, 100);
        // Mallory leaves 20: only his last 4 stay, and carol's are untouched.
        leave_partials(&mut sink, &mallory, 20, 1000, 100);
        assert_eq!(sink.kept(), (6, 600, 0));
        assert_eq!(partial_files(dir.path()), 6);
        let base = partial::base(dir.path(), &carol, &ResumeKey([1; 16]));
        assert_eq!(partial::Record::load(&base).unwrap().offset, 100);
        // By bytes too: 3 partials of 4,000 bytes pass his 10,000.
        leave_partials(&mut sink, &mallory, 3, 8000, 4000);
        let (count, bytes, _) = sink.kept();
        assert!(
            count <= 6 && bytes <= 200 + 10_000,
            "{count} files, {bytes} bytes"
        );
        // A new sink over the same directory (a new connection) keeps the same bounds.
        let mut again = FileSink::with_limits(dir.path(), limits).unwrap();
        assert_eq!(again.kept(), sink.kept());
    }

    #[test]
    fn kept_partials_expire_while_the_sink_runs() {
        let dir = tempfile::tempdir().unwrap();
        let limits = KeptLimits {
            window: Duration::from_millis(200),
            ..KeptLimits::default()
        };
        let mut sink = FileSink::with_limits(dir.path(), limits).unwrap();
        leave_partials(&mut sink, &alice(), 3, 1000, 100);
        assert_eq!(sink.kept().0, 3);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sink.kept(), (0, 0, 0));
        assert_eq!(partial_files(dir.path()), 0);
    }
}
