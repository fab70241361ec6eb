//! Read-ahead for an export: a thread that walks a bounded window ahead of the writer.
//!
//! An export writes entries in name order, which on a cold page cache costs one disk wait per
//! inode and per file, in an order that has little to do with where they lie on the disk
//! (GNU tar, which reads directories in the order they are stored, waits less). The prefetch
//! thread reads ahead what the writer will need: each directory's entries, their inodes in
//! inode number order (close to disk order on ext4, xfs and btrfs), and the data of regular
//! files through `POSIX_FADV_WILLNEED`, which queues the reads without waiting for them. The
//! writer then finds most of what it asks for in the page cache, and the disk sees many
//! requests at once instead of one.
//!
//! On a warm cache it would cost the writer CPU for nothing: it probes each file with a read
//! that does not wait (`RWF_NOWAIT`), and ends after [`WARM_AFTER`] files in a row were
//! already in the page cache.
//!
//! It is a hint only. It never writes; a failure to read ahead (a file removed meanwhile, an
//! I/O error) is skipped, since the writer meets the same failure itself and reports it. It
//! stays at most [`WINDOW`] bytes (data plus [`ENTRY_COST`] per entry) ahead of what the
//! writer has archived, so a tree larger than memory does not evict its own read-ahead, and
//! it is stopped and joined before the export returns, so it holds no file of the layer
//! once the layer is unmounted.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rustix::fs::{self as rfs, Advice, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::{preadv2, IoSliceMut, ReadWriteFlags};

use crate::dir_cursor::DirCursor;

/// How far (in bytes of data plus [`ENTRY_COST`] per entry) the read-ahead may lead the writer.
pub(super) const WINDOW: u64 = 64 << 20;

/// What an entry counts for in the window besides its data: its inode and header.
pub(super) const ENTRY_COST: u64 = 4096;

/// After this many regular files in a row whose data is already in the page cache, the
/// read-ahead ends: the tree is warm, and reading ahead would only take CPU from the writer.
pub(super) const WARM_AFTER: u32 = 256;

/// At most this much of one file is asked for at once; the kernel's own read-ahead follows
/// the writer through the rest of a larger file.
const MAX_ADVICE: u64 = 16 << 20;

/// What archiving the entry `st` costs in the window, for the writer and the read-ahead alike.
pub(super) fn cost(st: &Stat) -> u64 {
    let data = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => st.st_size.max(0) as u64,
        _ => 0,
    };
    ENTRY_COST + data
}

#[derive(Default)]
struct State {
    /// What the writer has archived, in window units.
    done: u64,
    /// What the read-ahead has read or is reading, in window units.
    issued: u64,
    /// The read-ahead waits for the writer to move.
    waiting: bool,
    /// The read-ahead has ended.
    ended: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    moved: Condvar,
    window: u64,
    warm_after: u32,
}

/// A running read-ahead; stopped and joined when dropped.
pub(super) struct Prefetch {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The directories of an export of changes, in the order the writer reaches them: the names
/// from the root to each, and the names inside it that the export archives.
pub(super) type Plan = Vec<(Vec<CString>, Vec<CString>)>;

impl Prefetch {
    /// Reads ahead through the whole tree at `root`, in the writer's order (depth first,
    /// subdirectories by name).
    pub(super) fn tree(root: BorrowedFd<'_>) -> Prefetch {
        Self::spawn_with(root, None, WINDOW, WARM_AFTER)
    }

    /// Reads ahead the entries `plan` names below `root`, directory by directory.
    pub(super) fn changes(root: BorrowedFd<'_>, plan: Plan) -> Prefetch {
        Self::spawn_with(root, Some(plan), WINDOW, WARM_AFTER)
    }

    fn spawn_with(
        root: BorrowedFd<'_>,
        plan: Option<Plan>,
        window: u64,
        warm_after: u32,
    ) -> Prefetch {
        let shared = Arc::new(Shared {
            window,
            warm_after,
            ..Shared::default()
        });
        // Without a descriptor or a thread there is no read-ahead, and the export is as it
        // would be without one: slower on a cold cache, otherwise the same.
        let thread = root.try_clone_to_owned().ok().and_then(|root| {
            let mut ahead = Ahead {
                shared: Arc::clone(&shared),
                links: HashSet::new(),
                cached: 0,
            };
            std::thread::Builder::new()
                .name("graphdriver-prefetch".into())
                .spawn(move || {
                    match plan {
                        None => ahead.tree(root),
                        Some(plan) => ahead.plan(root, plan),
                    }
                    lock(&ahead.shared).ended = true;
                })
                .ok()
        });
        Prefetch { shared, thread }
    }

    /// The writer has archived an entry costing `cost` (see [`cost`]).
    pub(super) fn advance(&self, cost: u64) {
        if self.thread.is_none() {
            return;
        }
        let mut s = lock(&self.shared);
        s.done += cost;
        if s.waiting && s.issued <= s.done + self.shared.window / 2 {
            s.waiting = false;
            drop(s);
            self.shared.moved.notify_one();
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.stop = true;
        drop(s);
        self.shared.moved.notify_one();
        if let Some(t) = self.thread.take() {
            // a panic in a hint is not the export's failure
            let _ = t.join();
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    // the state is plain counters and flags: a panic while it was held leaves it usable
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The read-ahead thread's side.
struct Ahead {
    shared: Arc<Shared>,
    /// Files with several links already read ahead, by device and inode.
    links: HashSet<(u64, u64)>,
    /// Regular files in a row found in the page cache.
    cached: u32,
}

impl Ahead {
    /// Counts `cost` as read ahead, first waiting while that would lead the writer by more
    /// than the window (until the writer is within half of it: one wake-up per half window,
    /// not one per entry); false once the export is over.
    fn reserve(&mut self, cost: u64) -> bool {
        let mut s = lock(&self.shared);
        s.issued += cost;
        if !s.stop && s.issued > s.done + self.shared.window {
            s.waiting = true;
            while s.waiting && !s.stop {
                s = self.shared.moved.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
        !s.stop
    }

    fn tree(&mut self, root: OwnedFd) {
        let Ok(mut cursor) = DirCursor::new(root.as_fd()) else {
            return;
        };
        let Some(subdirs) = self.directory(cursor.dir(), None) else {
            return;
        };
        let mut pending = vec![subdirs];
        while let Some(level) = pending.last_mut() {
            let Some(name) = level.pop() else {
                pending.pop();
                if pending.is_empty() || cursor.up().is_err() {
                    return;
                }
                continue;
            };
            if cursor.down(&name).is_err() {
                continue;
            }
            match self.directory(cursor.dir(), None) {
                Some(subdirs) => pending.push(subdirs),
                None => return,
            }
        }
    }

    fn plan(&mut self, root: OwnedFd, plan: Plan) {
        let Ok(mut cursor) = DirCursor::new(root.as_fd()) else {
            return;
        };
        for (dir, names) in plan {
            let path: Vec<&[u8]> = dir.iter().map(|n| n.to_bytes()).collect();
            if cursor.go_to(&path).is_err() {
                continue;
            }
            let only: HashSet<&CStr> = names.iter().map(|n| n.as_c_str()).collect();
            if self.directory(cursor.dir(), Some(&only)).is_none() {
                return;
            }
        }
    }

    /// Reads ahead the entries of `dir` (those in `only`, or all) in inode order; returns
    /// its subdirectories in reverse name order (popped from the end: ascending), or `None`
    /// once the read-ahead is over: the export has ended, or the tree is found warm.
    fn directory(
        &mut self,
        dir: BorrowedFd<'_>,
        only: Option<&HashSet<&CStr>>,
    ) -> Option<Vec<CString>> {
        let mut entries: Vec<(u64, CString)> = Vec::new();
        if let Ok(mut d) = rfs::Dir::read_from(dir) {
            while let Some(Ok(ent)) = d.read() {
                let name = ent.file_name();
                if name == c"." || name == c".." || only.is_some_and(|o| !o.contains(name)) {
                    continue;
                }
                entries.push((ent.ino(), name.to_owned()));
            }
        }
        entries.sort_unstable_by_key(|(ino, _)| *ino);
        let mut subdirs = Vec::new();
        for (_, name) in entries {
            let Ok(st) = rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if !self.reserve(cost(&st)) {
                return None;
            }
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => subdirs.push(name),
                FileType::RegularFile if st.st_size > 0 => {
                    if st.st_nlink > 1 && !self.links.insert((st.st_dev, st.st_ino)) {
                        continue;
                    }
                    let Ok(fd) = rfs::openat(
                        dir,
                        &name,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) else {
                        continue;
                    };
                    // a read that would not wait: the file's data is in the page cache
                    let mut byte = [0u8; 1];
                    let mut probe = [IoSliceMut::new(&mut byte)];
                    if preadv2(&fd, &mut probe, 0, ReadWriteFlags::NOWAIT).is_ok() {
                        self.cached += 1;
                        if self.cached >= self.shared.warm_after {
                            return None;
                        }
                        continue;
                    }
                    self.cached = 0;
                    let len = NonZeroU64::new((st.st_size as u64).min(MAX_ADVICE));
                    let _ = rfs::fadvise(&fd, 0, len, Advice::WillNeed);
                }
                _ => {}
            }
        }
        subdirs.sort_unstable_by(|a, b| b.cmp(a));
        Some(subdirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::open_dir;
    use std::path::Path;
    use std::time::Duration;

    const FILE: u64 = 64 << 10;

    /// Three directories of 20 files of 64 KiB (sparse), one nested in another, a symlink and
    /// a hard link.
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for dir in ["a", "b", "b/c"] {
            std::fs::create_dir(t.path().join(dir)).unwrap();
            for n in 0..20 {
                let f = std::fs::File::create(t.path().join(format!("{dir}/{n:02}"))).unwrap();
                f.set_len(FILE).unwrap();
            }
        }
        std::os::unix::fs::symlink("a/00", t.path().join("link")).unwrap();
        std::fs::hard_link(t.path().join("a/01"), t.path().join("b/hard")).unwrap();
        t
    }

    /// The window cost of every entry below `dir`, as the writer counts it.
    fn total(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let st = rfs::lstat(&p).unwrap();
                cost(&st)
                    + if p.is_dir() && !p.is_symlink() {
                        total(&p)
                    } else {
                        0
                    }
            })
            .sum()
    }

    /// What the read-ahead has issued once it waits for the writer or has ended.
    fn settled(p: &Prefetch) -> u64 {
        loop {
            let s = lock(&p.shared);
            if s.waiting || s.ended {
                return s.issued;
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn stays_a_window_ahead_of_the_writer_and_counts_each_entry_once() {
        let t = tree();
        let root = open_dir(t.path()).unwrap();
        let window = 512 << 10;
        let p = Prefetch::spawn_with(root.as_fd(), None, window, WARM_AFTER);
        // it stops at the first entry that would take it past the window
        let first = settled(&p);
        assert!(
            first > window && first <= window + FILE + ENTRY_COST,
            "{first}"
        );
        // the writer archives 1 MiB: it moves on by as much
        p.advance(1 << 20);
        let second = settled(&p);
        assert!(second > window + (1 << 20), "{second}");
        assert!(second <= window + (1 << 20) + FILE + ENTRY_COST, "{second}");
        // the writer is far ahead: it reaches the end, having counted each entry as the
        // writer does, once
        p.advance(1 << 40);
        assert_eq!(settled(&p), total(t.path()));
    }

    #[test]
    fn dropping_it_stops_a_read_ahead_that_waits_for_the_writer() {
        let t = tree();
        let root = open_dir(t.path()).unwrap();
        let p = Prefetch::spawn_with(root.as_fd(), None, 1, WARM_AFTER);
        settled(&p);
        let shared = Arc::clone(&p.shared);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(p);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("drop returns while the read-ahead waits");
        // the thread has ended: nothing but this test holds its state
        assert_eq!(Arc::strong_count(&shared), 1);
    }

    #[test]
    fn a_plan_reads_ahead_only_the_entries_it_names() {
        let t = tree();
        let root = open_dir(t.path()).unwrap();
        let plan: Plan = vec![
            (vec![], vec![c"link".into(), c"missing".into()]),
            (
                vec![c"b".into(), c"c".into()],
                vec![c"03".into(), c"07".into()],
            ),
        ];
        let p = Prefetch::spawn_with(root.as_fd(), Some(plan), 1 << 40, WARM_AFTER);
        let st = |p: &str| cost(&rfs::lstat(t.path().join(p)).unwrap());
        assert_eq!(settled(&p), st("link") + st("b/c/03") + st("b/c/07"));
    }

    const BIG: usize = 1 << 20;

    /// Files of 1 MiB (more than one read-ahead of the kernel's past a first small read)
    /// written with data, flushed and dropped from the page cache.
    fn cold_files(n: usize) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for i in 0..n {
            let p = t.path().join(format!("{i:03}"));
            std::fs::write(&p, vec![7u8; BIG]).unwrap();
            let f = std::fs::File::open(&p).unwrap();
            f.sync_all().unwrap();
            rfs::fadvise(&f, 0, None, Advice::DontNeed).unwrap();
        }
        t
    }

    /// What this process has had read from a disk, from `/proc/self/io` (counted when the
    /// reads are sent to the disk, not when they finish).
    fn read_bytes() -> u64 {
        let io = std::fs::read_to_string("/proc/self/io").unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("read_bytes: "))
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn it_reads_a_cold_tree_into_the_cache_and_ends_early_on_a_warm_one() {
        let t = cold_files(16);
        let root = open_dir(t.path()).unwrap();
        let before = read_bytes();
        let p = Prefetch::spawn_with(root.as_fd(), None, 1 << 40, 8);
        // cold: it goes through every file and has the disk read all of each
        assert_eq!(settled(&p), total(t.path()));
        drop(p);
        let read = read_bytes() - before;
        assert!(
            read >= 16 * BIG as u64,
            "{read} bytes read ahead of 16 MiB (a disk, not tmpfs, under the temporary directory?)"
        );
        // warm: it stops after 8 files found in the cache
        for i in 0..16 {
            std::fs::read(t.path().join(format!("{i:03}"))).unwrap();
        }
        let p = Prefetch::spawn_with(root.as_fd(), None, 1 << 40, 8);
        assert_eq!(settled(&p), 8 * (BIG as u64 + ENTRY_COST));
        assert!(lock(&p.shared).ended);
    }
}
