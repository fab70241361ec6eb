//! zfs beyond the shared suite: usage per layer, quota limits, the clone/snapshot pairing and
//! its removal order, and the speed of creating and removing container layers against the
//! `zfs` command. Needs the zfs module: scripts/vm-tests-zfs.sh runs these in the VM with
//! `--ignored`, each on a pool of its own on a file. One test runs on a host without ZFS.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use graphdriver_api::{CreateOpts, DriverError, GraphDriver, LayerId};
use graphdriver_harness::fixture::{incompressible_tar, run, ScratchFs};

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
    let p = d.get(&one, None).unwrap();
    write_mib(&p.join("file"), 1).unwrap();
    d.put(&one).unwrap();
    let u1 = d.backend().usage(&one).unwrap();
    assert!(u1.used > MIB, "a layer with a 1 MiB file uses {u1:?}");

    let two = id("two");
    d.create(&two, Some(&one), &rw()).unwrap();
    let p = d.get(&two, None).unwrap();
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
    let p = d.get(&l, None).unwrap();
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
    let p = d.get(&base, None).unwrap();
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
    let p = d.get(&base, None).unwrap();
    std::fs::write(p.join("written-after"), "x").unwrap();
    d.put(&base).unwrap();
    assert_eq!(snapshots(&pool), "", "the stale snapshot survived a write");
    d.create(&id("ctr"), Some(&base), &rw()).unwrap();
    let c = d.get(&id("ctr"), None).unwrap();
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
    let p = d.get(&img, None).unwrap();
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
    let p = d.get(&base, None).unwrap();
    std::fs::write(p.join("keep"), "kept").unwrap();
    d.put(&base).unwrap();

    let ctr = id("ctr");
    d.create(&ctr, Some(&base), &rw()).unwrap();
    let p = d.get(&ctr, None).unwrap();
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
        let p = d.get(&after, None).map_err(full)?;
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
    let p = d.get(&base, None).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
    d.put(&base).unwrap();
    if d.exists(&applied) {
        // the create went through: the apply left it as it was, empty
        let p = d.get(&applied, None).unwrap();
        assert!(!p.join("data").exists(), "a failed apply left files");
        d.put(&applied).unwrap();
        d.remove(&applied).unwrap();
    }
    let report = d.fsck(false).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    d.remove(&after).unwrap();
    d.remove(&base).unwrap();
}
