//! zfs beyond the shared suite: usage per layer, quota limits, the clone/snapshot pairing and
//! its removal order, a full pool, I/O errors, and the speed of creating and removing
//! container layers against the `zfs` command. Needs the zfs module (and dm-mod for the
//! failing disk): scripts/vm-tests-zfs.sh runs these in the VM with `--ignored`, each on a
//! pool of its own on a file. One test runs on a host without ZFS.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use graphdriver_api::{CreateOpts, DriverError, GraphDriver, LayerId, MountOpts};
use graphdriver_conformance::fixture::{dm_reload, incompressible_tar, run, LoopFile, ScratchFs};

fn pool() -> ScratchFs {
    ScratchFs::new(Path::new("/var/tmp/graphdriver-test"), "zfs", 2 << 30, "").unwrap()
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn rw() -> CreateOpts {
    CreateOpts {
        read_write: true,
        ..CreateOpts::default()
    }
}

/// Writes `mib` MiB that do not compress (xorshift), flushing each MiB.
fn write_mib(path: &Path, mib: usize) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ path.as_os_str().len() as u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for w in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&chunk)?;
        f.sync_data()?;
    }
    Ok(())
}

fn zfs_get(prop: &str, dataset: &str) -> String {
    run(Command::new("zfs").args(["get", "-H", "-p", "-o", "value", prop, dataset]))
        .unwrap()
        .trim()
        .to_owned()
}

/// On a host without ZFS (no libraries, or no module: this host has the libraries only after
/// `vm/setup-zfs.sh`, and never the module), opening answers `Unsupported`, naming what is
/// missing, and makes nothing under the root. In the VM, where the module is loaded, the
/// other tests below run instead.
#[test]
fn opening_without_zfs_is_unsupported_and_names_what_is_missing() {
    if Path::new("/dev/zfs").exists() {
        eprintln!("skipped: this machine has ZFS");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let err = graphdriver_zfs::open(&root, &Default::default()).unwrap_err();
    let DriverError::Unsupported { driver, reason } = &err else {
        panic!("expected Unsupported, got {err:?}");
    };
    assert_eq!(*driver, "zfs");
    assert!(
        reason.contains("libzfs") || reason.contains("libnvpair") || reason.contains("/dev/zfs"),
        "{reason}"
    );
    assert!(
        err.to_string().starts_with("zfs is not supported here: "),
        "{err}"
    );
    assert!(
        !root.exists(),
        "open made {} on a host without ZFS",
        root.display()
    );
}

#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored)"]
fn usage_counts_what_a_layer_holds_and_not_its_parent() {
    let fs = pool();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    const MIB: u64 = 1 << 20;

    let empty = id("empty");
    d.create(&empty, None, &CreateOpts::default()).unwrap();
    let u = d.backend().usage(&empty).unwrap();
    assert!(u.used > 0, "an empty layer uses {u:?}");

    let one = id("one");
    d.create(&one, None, &CreateOpts::default()).unwrap();
    let p = d.get(&one, &MountOpts::default()).unwrap();
    write_mib(&p.join("file"), 1).unwrap();
    d.put(&one).unwrap();
    let u1 = d.backend().usage(&one).unwrap();
    assert!(u1.used > MIB, "a layer with a 1 MiB file uses {u1:?}");

    let two = id("two");
    d.create(&two, Some(&one), &rw()).unwrap();
    let p = d.get(&two, &MountOpts::default()).unwrap();
    write_mib(&p.join("bigger"), 2).unwrap();
    d.put(&two).unwrap();
    let u2 = d.backend().usage(&two).unwrap();
    assert!(
        u2.used > 2 * MIB && u2.used < u1.used + 2 * MIB,
        "its child with a 2 MiB file uses {u2:?} (the parent {u1:?})"
    );
    assert!(
        u2.referenced > 3 * MIB,
        "the child refers to both files: {u2:?}"
    );
}

#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored)"]
fn a_50_mib_limit_holds_25_mib_and_refuses_50_more_with_edquot() {
    let fs = pool();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    let base = id("base");
    d.create(&base, None, &CreateOpts::default()).unwrap();
    let l = id("limited");
    let opts = CreateOpts {
        read_write: true,
        size_limit: Some(50 << 20),
        ..CreateOpts::default()
    };
    d.create(&l, Some(&base), &opts).unwrap();
    let p = d.get(&l, &MountOpts::default()).unwrap();
    write_mib(&p.join("a"), 25).expect("25 MiB fit in a 50 MiB limit");
    let e = write_mib(&p.join("b"), 50).expect_err("50 MiB more must not fit");
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    d.put(&l).unwrap();
    let u = d.backend().usage(&l).unwrap();
    assert_eq!(u.quota, Some(50 << 20), "{u:?}");
    assert!((25 << 20..=51 << 20).contains(&u.used), "{u:?}");
    d.remove(&l).unwrap();
    d.remove(&base).unwrap();
}

#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored)"]
fn a_child_is_a_clone_of_a_snapshot_of_its_parent_and_both_go_with_it() {
    let fs = pool();
    let pool = fs.pool().unwrap().to_owned();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    let status = d.status();
    for (k, v) in [("Zpool", pool.as_str()), ("Parent Dataset", pool.as_str())] {
        assert!(
            status.iter().any(|(sk, sv)| sk == k && sv == v),
            "{status:?}"
        );
    }
    for k in ["Compression", "Zpool Free", "Layers"] {
        assert!(status.iter().any(|(sk, _)| sk == k), "{status:?}");
    }
    let base = id("base");
    d.create(&base, None, &CreateOpts::default()).unwrap();
    let b = format!("{pool}/base");
    assert_eq!(zfs_get("mountpoint", &b), "legacy");
    assert_eq!(zfs_get("readonly", &b), "off");
    let (ctr, ctr2) = (id("ctr"), id("ctr2"));
    d.create(&ctr, Some(&base), &rw()).unwrap();
    d.create(&ctr2, Some(&base), &rw()).unwrap();
    let snap = format!("{b}@gd:children");
    for c in ["ctr", "ctr2"] {
        assert_eq!(zfs_get("origin", &format!("{pool}/{c}")), snap);
    }
    assert_eq!(zfs_get("readonly", &b), "on", "a parent is read-only");
    assert!(matches!(
        d.remove(&base),
        Err(DriverError::HasChildren { .. })
    ));
    // the snapshot goes with the last of the children that share it
    d.remove(&ctr).unwrap();
    assert_eq!(snapshots(&pool), snap);
    d.remove(&ctr2).unwrap();
    assert_eq!(snapshots(&pool), "", "snapshots left");
    // writable again once it has no children
    let p = d.get(&base, &MountOpts::default()).unwrap();
    std::fs::write(p.join("f"), "x").unwrap();
    d.put(&base).unwrap();
    assert_eq!(zfs_get("readonly", &b), "off");
    d.remove(&base).unwrap();
    let left = run(Command::new("zfs").args(["list", "-H", "-o", "name", "-r", &pool])).unwrap();
    assert_eq!(left.trim(), pool, "datasets left");
}

#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored)"]
fn a_stray_origin_snapshot_left_by_a_crash_is_destroyed_at_the_next_open() {
    let fs = pool();
    let pool = fs.pool().unwrap().to_owned();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    d.create(&id("base"), None, &CreateOpts::default()).unwrap();
    d.create(&id("ctr"), Some(&id("base")), &rw()).unwrap();
    drop(d);
    // what a crash between destroying the clone and its origin leaves, with the store's
    // journal record of the remove
    run(Command::new("zfs").args(["destroy", &format!("{pool}/ctr")])).unwrap();
    let journal = fs.path().join("zfs/.store/journal/ctr.json");
    std::fs::write(&journal, r#"{"id":"ctr","op":"remove"}"#).unwrap();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    assert!(!d.exists(&id("ctr")));
    assert_eq!(snapshots(&pool), "", "snapshots left");
    d.remove(&id("base")).unwrap();
}

/// Every snapshot in `pool`, one name per line.
fn snapshots(pool: &str) -> String {
    run(Command::new("zfs").args(["list", "-H", "-t", "snapshot", "-o", "name", "-r", pool]))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored)"]
fn a_snapshot_left_between_snapshot_and_clone_is_swept_and_never_reused_stale() {
    let fs = pool();
    let pool = fs.pool().unwrap().to_owned();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    let base = id("base");
    d.create(&base, None, &CreateOpts::default()).unwrap();
    drop(d);
    // what a crash in the first child's create leaves: the parent frozen and snapshotted,
    // no clone, the store's journal record of the create
    let b = format!("{pool}/base");
    run(Command::new("zfs").args(["set", "readonly=on", &b])).unwrap();
    run(Command::new("zfs").args(["snapshot", &format!("{b}@gd:children")])).unwrap();
    let journal = fs.path().join("zfs/.store/journal/ctr.json");
    std::fs::write(&journal, r#"{"id":"ctr","op":"create"}"#).unwrap();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    assert!(!d.exists(&id("ctr")));
    assert_eq!(snapshots(&pool), "", "snapshots left");

    // the same left behind without a journal record: the parent, written to again, must
    // not hand its children what it held before
    run(Command::new("zfs").args(["snapshot", &format!("{b}@gd:children")])).unwrap();
    let p = d.get(&base, &MountOpts::default()).unwrap();
    std::fs::write(p.join("written-after"), "x").unwrap();
    d.put(&base).unwrap();
    assert_eq!(snapshots(&pool), "", "the stale snapshot survived a write");
    d.create(&id("ctr"), Some(&base), &rw()).unwrap();
    let c = d.get(&id("ctr"), &MountOpts::default()).unwrap();
    assert!(
        c.join("written-after").exists(),
        "the child misses its parent's write"
    );
    d.put(&id("ctr")).unwrap();
    d.remove(&id("ctr")).unwrap();
    d.remove(&base).unwrap();
}

fn per_op(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1000.0 / n as f64
}

/// Prints the figures for the issue's benchmark: N container layers (default 200, or
/// `GRAPHDRIVER_ZFS_BENCH_N`) created on one image and then removed, through the driver and
/// through the `zfs` command (`zfs snapshot` + `zfs clone`, then `zfs destroy` of the clone
/// and of the snapshot, as CLI-driven drivers do), in the same run; and, to tell the
/// driver's scheme from the cost of a process per call, through the `zfs` command doing what
/// the driver does (one shared snapshot, one clone and one destroy per layer).
#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored --nocapture)"]
fn container_layers_are_made_and_removed_faster_than_with_the_zfs_command() {
    let n: usize = std::env::var("GRAPHDRIVER_ZFS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let fs = pool();
    let pool = fs.pool().unwrap().to_owned();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    let img = id("image");
    d.create(&img, None, &CreateOpts::default()).unwrap();
    let p = d.get(&img, &MountOpts::default()).unwrap();
    for i in 0..100 {
        std::fs::write(p.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
    d.put(&img).unwrap();
    let ids: Vec<LayerId> = (0..n).map(|i| id(&format!("ctr{i}"))).collect();
    let t = Instant::now();
    for c in &ids {
        d.create(c, Some(&img), &rw()).unwrap();
    }
    let create = t.elapsed();
    let t = Instant::now();
    for c in &ids {
        d.remove(c).unwrap();
    }
    let remove = t.elapsed();

    // the same with the command line, on an image dataset of the same content
    let cli = format!("{pool}/cli");
    run(Command::new("zfs").args(["create", "-o", "mountpoint=legacy", &cli])).unwrap();
    run(Command::new("zfs").args(["snapshot", &format!("{pool}/image@src")])).unwrap();
    let cimg = format!("{cli}/image");
    run(Command::new("zfs").args([
        "clone",
        "-o",
        "mountpoint=legacy",
        &format!("{pool}/image@src"),
        &cimg,
    ]))
    .unwrap();
    let zfs = |args: &[&str]| run(Command::new("zfs").args(args)).unwrap();
    let t = Instant::now();
    for i in 0..n {
        let snap = format!("{cimg}@ctr{i}");
        zfs(&["snapshot", &snap]);
        zfs(&[
            "clone",
            "-o",
            "mountpoint=legacy",
            &snap,
            &format!("{cli}/ctr{i}"),
        ]);
    }
    let cli_create = t.elapsed();
    let t = Instant::now();
    for i in 0..n {
        zfs(&["destroy", &format!("{cli}/ctr{i}")]);
        zfs(&["destroy", "-d", &format!("{cimg}@ctr{i}")]);
    }
    let cli_remove = t.elapsed();

    // what is left of the difference when the command does the driver's work: one shared
    // snapshot, a clone per layer, one destroy per layer (the last one takes the snapshot)
    let shared = format!("{cimg}@shared");
    let t = Instant::now();
    zfs(&["snapshot", &shared]);
    for i in 0..n {
        zfs(&[
            "clone",
            "-o",
            "mountpoint=legacy",
            &shared,
            &format!("{cli}/s{i}"),
        ]);
    }
    let same_create = t.elapsed();
    let t = Instant::now();
    for i in 0..n {
        zfs(&["destroy", &format!("{cli}/s{i}")]);
    }
    zfs(&["destroy", &shared]);
    let same_remove = t.elapsed();

    let (dc, dr, cc, cr) = (
        per_op(create, n),
        per_op(remove, n),
        per_op(cli_create, n),
        per_op(cli_remove, n),
    );
    println!("zfs bench: {n} container layers on one image (ms per layer)");
    println!(
        "  create: driver {dc:.2} ms, zfs command {cc:.2} ms, {:.1}x faster",
        cc / dc
    );
    println!(
        "  remove: driver {dr:.2} ms, zfs command {cr:.2} ms, {:.1}x faster",
        cr / dr
    );
    println!(
        "  both:   driver {:.2} ms, zfs command {:.2} ms, {:.1}x faster",
        dc + dr,
        cc + cr,
        (cc + cr) / (dc + dr)
    );
    let (sc, sr) = (per_op(same_create, n), per_op(same_remove, n));
    println!(
        "  the zfs command doing the same work (one shared snapshot): create {sc:.2} ms ({:.1}x), remove {sr:.2} ms ({:.1}x), both {:.1}x",
        sc / dc,
        sr / dr,
        (sc + sr) / (dc + dr)
    );
    assert!(
        dc + dr < cc + cr,
        "the driver is slower than the zfs command"
    );
}

/// A full pool (256 MiB, of which ZFS keeps half back): a container's write fails with
/// ENOSPC, an apply fails with a typed error that says the storage is full and leaves no
/// layer behind, the other layer keeps its content, and removing the layer that filled the
/// pool gives the space back (a new layer takes writes; fsck is clean).
#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored)"]
fn a_full_pool_fails_writes_and_applies_with_enospc_and_recovers() {
    let fs = ScratchFs::new(Path::new("/var/tmp/graphdriver-test"), "zfs", 256 << 20, "").unwrap();
    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    let base = id("base");
    d.create(&base, None, &rw()).unwrap();
    let p = d.get(&base, &MountOpts::default()).unwrap();
    std::fs::write(p.join("keep"), "kept").unwrap();
    d.put(&base).unwrap();

    let ctr = id("ctr");
    d.create(&ctr, Some(&base), &rw()).unwrap();
    let p = d.get(&ctr, &MountOpts::default()).unwrap();
    let e = write_mib(&p.join("fill"), 400).expect_err("400 MiB do not fit");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    d.put(&ctr).unwrap();

    let applied = id("applied");
    let r = d
        .create(&applied, Some(&base), &CreateOpts::default())
        .and_then(|()| {
            d.apply_diff(
                &applied,
                None,
                &mut incompressible_tar(16, 4 << 20).unwrap(),
            )
        });
    match r {
        Ok(n) => panic!("an apply of 64 MiB into a full pool succeeded ({n} bytes)"),
        Err(e) => assert!(e.is_storage_full(), "the apply failed with {e} ({e:?})"),
    }
    // the failed create or apply left the space reserve to the remove below
    assert!(fs.path().join("zfs/.store/space-reserve").exists());
    // Nothing is mounted while the pool is full: a mount makes its mount point on the pool
    // (the driver root is on it), which ZFS refuses then. Removing the layer that filled it
    // gives the space back, in the background: wait until a new layer takes 16 MiB.
    d.remove(&ctr).unwrap();
    let after = id("after");
    let attempt = || -> Result<(), (bool, String)> {
        let full = |e: DriverError| (e.is_storage_full(), format!("{e}"));
        if !d.exists(&after) {
            d.create(&after, Some(&base), &rw()).map_err(full)?;
        }
        let p = d.get(&after, &MountOpts::default()).map_err(full)?;
        let w = write_mib(&p.join("mib"), 16);
        d.put(&after).map_err(|e| (false, format!("{e}")))?;
        w.map_err(|e| (e.raw_os_error() == Some(libc::ENOSPC), format!("{e}")))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match attempt() {
            Ok(()) => break,
            Err((true, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500))
            }
            Err((_, e)) => panic!("writing after the space was freed: {e}"),
        }
    }
    // the other layer kept its content, and a failed apply left its layer empty
    let p = d.get(&base, &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
    d.put(&base).unwrap();
    if d.exists(&applied) {
        // the create went through: the apply left it as it was, empty
        let p = d.get(&applied, &MountOpts::default()).unwrap();
        assert!(!p.join("data").exists(), "a failed apply left files");
        d.put(&applied).unwrap();
        d.remove(&applied).unwrap();
    }
    let report = d.fsck(false).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    d.remove(&after).unwrap();
    d.remove(&base).unwrap();
}

/// The bytes of `incompressible_tar(files, each)`'s files, in order.
fn incompressible_bytes(files: usize, each: u64) -> Vec<u8> {
    let mut all = Vec::new();
    let mut a = tar::Archive::new(incompressible_tar(files, each).unwrap());
    for e in a.entries().unwrap() {
        std::io::Read::read_to_end(&mut e.unwrap(), &mut all).unwrap();
    }
    all
}

/// A ZFS block that no longer matches its checksum (bit rot, a bad sector, a write the disk
/// lost) reads as EIO: with one copy of the data, ZFS cannot repair it. Exporting that layer
/// fails with the I/O error (never a tar with wrong bytes in it), and the store loses nothing
/// else: the rest of the layer and the layers beside it read, the damaged layer can be
/// removed, and fsck is clean. The corruption is planted on the pool's image while the pool
/// is exported, so nothing is cached.
#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored)"]
fn a_corrupt_block_fails_an_export_with_eio_and_loses_nothing() {
    let fs = ScratchFs::new(Path::new("/var/tmp/graphdriver-test"), "zfs", 256 << 20, "").unwrap();
    let pool = fs.pool().unwrap().to_owned();
    let (base, ctr) = (id("base"), id("ctr"));
    {
        let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
        d.create(&base, None, &CreateOpts::default()).unwrap();
        d.apply_diff(&base, None, &mut incompressible_tar(2, 1 << 20).unwrap())
            .unwrap();
        d.create(&ctr, Some(&base), &rw()).unwrap();
        let p = d.get(&ctr, &MountOpts::default()).unwrap();
        std::fs::write(p.join("own"), "mine").unwrap();
        d.put(&ctr).unwrap();
    }
    run(Command::new("zpool").args(["export", &pool])).unwrap();
    // Every copy of 64 bytes inside data/file-0's second record (a stale intent-log block
    // may hold one too) is zeroed.
    let needle = &incompressible_bytes(1, 1 << 20)[200_000..200_064];
    let mut image = std::fs::read(fs.image()).unwrap();
    let mut hits = 0;
    let mut at = 0;
    while let Some(i) = image[at..].windows(64).position(|w| w == needle) {
        image[at + i..at + i + 64].fill(0);
        at += i + 64;
        hits += 1;
    }
    assert!(hits > 0, "data/file-0's bytes are not on the pool's image");
    std::fs::write(fs.image(), &image).unwrap();
    drop(image);
    let dir = fs.image().parent().unwrap().to_str().unwrap().to_owned();
    run(Command::new("zpool").args(["import", "-d", &dir, &pool])).unwrap();

    let d = graphdriver_zfs::open(fs.path(), &Default::default()).unwrap();
    let mut sink = Vec::new();
    let e = d
        .diff(&base, None)
        .unwrap()
        .read_to_end(&mut sink)
        .expect_err("a layer with a corrupt block exported");
    println!("exporting the corrupt layer: {e} ({e:?})");
    // the reader's error carries the driver's, which names the file and keeps the errno
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<DriverError>());
    let Some(inner @ DriverError::Io { op, path, .. }) = inner else {
        panic!("the export failed with {e:?}, not a DriverError::Io");
    };
    assert_eq!(inner.raw_os_error(), Some(libc::EIO), "{inner:?}");
    assert_eq!(
        (*op, path.ends_with("data/file-0")),
        ("read", true),
        "{inner:?}"
    );
    // and the reader's error has the kind of the errno (EIO has no named kind: not Other)
    assert_ne!(e.kind(), std::io::ErrorKind::Other, "{e:?}");
    // the rest of the damaged layer, and the layer above it, read as they were
    let p = d.get(&base, &MountOpts::default()).unwrap();
    let good = &incompressible_bytes(2, 1 << 20)[1 << 20..];
    assert!(std::fs::read(p.join("data/file-1")).unwrap() == good);
    d.put(&base).unwrap();
    let mut tar = Vec::new();
    d.diff(&ctr, None).unwrap().read_to_end(&mut tar).unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["own"]);
    let report = d.fsck(false).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    d.remove(&ctr).unwrap();
    d.remove(&base).unwrap();
    assert!(d.list().unwrap().is_empty());
}

/// A pool on a device-mapper table over a loop device, which can be made to fail every I/O
/// (the `error` target) and then work again; all taken down when dropped.
struct FailingPool {
    disk: LoopFile,
    name: String,
    mnt: PathBuf,
}

impl FailingPool {
    const SIZE: u64 = 1 << 30;

    fn new() -> FailingPool {
        let pid = std::process::id();
        let base = PathBuf::from(format!("/var/tmp/graphdriver-test/zfs-eio-{pid}"));
        std::fs::create_dir_all(&base).unwrap();
        let disk = LoopFile::new(&base.with_extension("img"), Self::SIZE).unwrap();
        let pool = FailingPool {
            disk,
            name: format!("gd_eio_{pid}"),
            mnt: base,
        };
        run(Command::new("dmsetup").args(["create", &pool.name, "--table", &pool.table(true)]))
            .unwrap();
        run(Command::new("zpool")
            .args(["create", "-f", "-o", "cachefile=none", "-m"])
            .arg(&pool.mnt)
            .arg(&pool.name)
            .arg(format!("/dev/mapper/{}", pool.name)))
        .unwrap();
        pool
    }

    fn table(&self, works: bool) -> String {
        match works {
            true => format!("0 {} linear {} 0", Self::SIZE / 512, self.disk.dev()),
            false => format!("0 {} error", Self::SIZE / 512),
        }
    }

    /// Every read and write of the disk fails from now on (`works: false`), or none does.
    fn set(&self, works: bool) -> anyhow::Result<()> {
        dm_reload(&self.name, &self.table(works))
    }

    fn status(&self) -> String {
        run(Command::new("zpool").args(["status", &self.name])).unwrap_or_default()
    }
}

impl Drop for FailingPool {
    fn drop(&mut self) {
        let _ = self.set(true);
        let _ = run(Command::new("zpool").args(["clear", &self.name]));
        let _ = run(Command::new("zpool").args(["destroy", "-f", &self.name]));
        let _ = run(Command::new("dmsetup").args(["remove", &self.name]));
        let _ = std::fs::remove_dir(&self.mnt);
        // then the loop device and its image go with the field `disk`
    }
}

/// A disk that fails under a pool part-way through an apply. A pool without redundancy does
/// not pass write errors up: ZFS suspends it (`failmode=wait`, the default) and every write
/// waits, so the apply must not return (never success with the data only in memory), and
/// once the disk works again and the operator runs `zpool clear`, the apply finishes with
/// every byte of the archive, the other layer is as it was, and fsck is clean.
/// (A read of a block the disk damaged is the other I/O error ZFS returns: above.)
#[test]
#[ignore = "needs the zfs and dm-mod modules (run in the VM with --ignored)"]
fn a_disk_that_fails_mid_apply_holds_it_until_zpool_clear_and_loses_nothing() {
    let pool = FailingPool::new();
    let d = graphdriver_zfs::open(&pool.mnt, &Default::default()).unwrap();
    let (base, applied) = (id("base"), id("applied"));
    d.create(&base, None, &rw()).unwrap();
    let p = d.get(&base, &MountOpts::default()).unwrap();
    std::fs::write(p.join("keep"), "kept").unwrap();
    d.put(&base).unwrap();
    d.create(&applied, Some(&base), &CreateOpts::default())
        .unwrap();

    pool.set(false).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let failure = std::thread::scope(|s| {
        s.spawn(|| {
            let r = d.apply_diff(
                &applied,
                None,
                &mut incompressible_tar(16, 4 << 20).unwrap(),
            );
            let _ = tx.send(r);
        });
        // Whatever happens, the disk works again before the scope joins the apply.
        let seen = (|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !pool.status().contains("IO failures") {
                if let Ok(r) = rx.try_recv() {
                    return Err(format!("the apply returned {r:?} on a failing disk"));
                }
                if Instant::now() > deadline {
                    return Err(format!("the pool never suspended: {}", pool.status()));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            println!("the pool, suspended:\n{}", pool.status());
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(r) => Err(format!("the apply returned {r:?} on a suspended pool")),
                Err(_) => Ok(()),
            }
        })();
        // (a failure here leaves the apply waiting: the VM's time limit ends the test)
        let healed = pool
            .set(true)
            .and_then(|()| run(Command::new("zpool").args(["clear", &pool.name])));
        seen.and_then(|()| {
            healed
                .map(drop)
                .map_err(|e| format!("healing the pool: {e:#}"))
        })
        .and_then(|()| match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(format!("the apply failed after zpool clear: {e:?}")),
            Err(_) => Err("the apply did not finish within 120 s of zpool clear".to_owned()),
        })
    });
    let n = failure.unwrap();
    assert_eq!(n, 64 << 20);

    let p = d.get(&applied, &MountOpts::default()).unwrap();
    let mut got = Vec::new();
    for i in 0..16 {
        got.extend(std::fs::read(p.join(format!("data/file-{i}"))).unwrap());
    }
    assert!(
        got == incompressible_bytes(16, 4 << 20),
        "the applied files differ from the archive"
    );
    assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
    d.put(&applied).unwrap();
    let p = d.get(&base, &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
    d.put(&base).unwrap();
    let report = d.fsck(false).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    d.remove(&applied).unwrap();
    d.remove(&base).unwrap();
    drop(d);
}

/// Two driver roots on one dataset (two runtimes, or an image store and its test) share the
/// names below it, and content-addressed layer ids collide there. Each layer dataset carries
/// its home (`org.graphdriver:root`): the second root's create of an id the first holds fails
/// with an error naming both, and its rollback leaves the first root's dataset alone (it once
/// destroyed it: the rollback removed whatever had the layer's name); neither root lists,
/// removes or sweeps the other's layers.
#[test]
#[ignore = "needs the zfs module (run in the VM with --ignored)"]
fn two_roots_on_one_dataset_never_touch_each_others_layers() {
    let fs = pool();
    let a = graphdriver_zfs::open(&fs.path().join("a"), &Default::default()).unwrap();
    let b = graphdriver_zfs::open(&fs.path().join("b"), &Default::default()).unwrap();
    let (x, y) = (id("x"), id("y"));
    a.create(&x, None, &rw()).unwrap();
    let p = a.get(&x, &MountOpts::default()).unwrap();
    std::fs::write(p.join("mine"), "a's").unwrap();
    a.put(&x).unwrap();

    let e = b
        .create(&x, None, &rw())
        .expect_err("a second root made a layer the first holds");
    println!("the second root's create: {e}");
    assert!(!b.exists(&x));
    // the first root's layer is whole, and still takes children
    assert!(a.exists(&x));
    let p = a
        .get(&x, &MountOpts::default())
        .expect("the second root's failed create broke the first root's layer");
    assert_eq!(std::fs::read_to_string(p.join("mine")).unwrap(), "a's");
    a.put(&x).unwrap();
    let text = format!("{e:#} {e:?}");
    assert!(
        text.contains(&fs.path().join("a/zfs").display().to_string()),
        "the error does not name the root holding the dataset: {text}"
    );
    a.create(&y, Some(&x), &rw()).unwrap();
    // the same again when the layer has a child (a clone of its snapshot)
    b.create(&x, None, &rw()).unwrap_err();
    assert!(a.exists(&x) && a.exists(&y));

    // each lists its own; fsck of one does not call the other's layers orphans; reopening
    // (which sweeps) leaves the other's alone
    assert_eq!(a.list().unwrap().len(), 2);
    assert!(b.list().unwrap().is_empty());
    let report = b.fsck(true).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    drop(b);
    let b = graphdriver_zfs::open(&fs.path().join("b"), &Default::default()).unwrap();
    b.create(&id("z"), None, &rw()).unwrap();
    assert!(a.exists(&x) && a.exists(&y));
    let report = a.fsck(false).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    a.remove(&y).unwrap();
    a.remove(&x).unwrap();
    b.remove(&id("z")).unwrap();
}
