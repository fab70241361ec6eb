//! devmapper beyond the shared suite: crash safety of the pool's metadata, usage, deferred
//! removal, size limits past the base, xfs. They need device-mapper (this host's kernel has
//! none), so they are ignored here and run in the VM by scripts/vm-tests.sh:
//! `graphctl vm -- <this test binary> --ignored --test-threads=1`.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};
use graphdriver_conformance::fixture::{dm_reload, incompressible_tar, LoopFile};
use graphdriver_devmapper::DevmapperDriver;

/// A driver root, its pool taken down and its files removed when dropped.
struct Root {
    path: PathBuf,
    opts: BTreeMap<String, String>,
}

impl Root {
    fn new(name: &str, opts: &[(&str, &str)]) -> Root {
        let path = PathBuf::from(format!(
            "/var/tmp/graphdriver-test/devmapper-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Root {
            path,
            opts: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn open(&self) -> DevmapperDriver {
        graphdriver_devmapper::open(&self.path, &self.opts).unwrap()
    }

    fn graphctl(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_graphctl"));
        c.arg("--driver")
            .arg("devmapper")
            .arg("--root")
            .arg(&self.path);
        for (k, v) in &self.opts {
            c.arg("--opt").arg(format!("{k}={v}"));
        }
        c.stdin(Stdio::null());
        c
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Ok(d) = graphdriver_devmapper::open(&self.path, &self.opts) {
            let _ = d.cleanup();
        }
        graphdriver_conformance::unmount_below(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
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

fn write_file(path: &Path, bytes: usize) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.sync_all()
}

/// Every layer has a device, every device a layer, nothing else lives in the pool, and no
/// device of the driver is left active.
fn assert_consistent(d: &DevmapperDriver) {
    let layers = d.list().unwrap();
    let devices = d.backend().devices().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l.as_str()).collect();
    let owners: Vec<&str> = devices.keys().map(String::as_str).collect();
    assert_eq!(names, owners, "layers and devices differ");
    assert_eq!(
        d.backend().unknown_devices().unwrap(),
        Vec::<u32>::new(),
        "devices in the pool the metadata does not know"
    );
    for l in &layers {
        let p = d.get(l, &MountOpts::default()).unwrap();
        assert!(p.is_dir());
        d.put(l).unwrap();
    }
    assert_eq!(d.backend().live_devices().unwrap(), Vec::<u32>::new());
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_crash_between_snapshot_and_metadata_commit_leaves_no_device() {
    let root = Root::new("crash", &[]);
    let d = root.open();
    d.create(&id("base"), None, &CreateOpts::default()).unwrap();
    let p = d.get(&id("base"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("f"), "base").unwrap();
    d.put(&id("base")).unwrap();
    drop(d);
    // the thin snapshot exists in the pool, the metadata only has it as pending; then after
    // the commit, before the store's record
    for point in ["devmapper.after-snapshot", "create.after-make"] {
        let out = root
            .graphctl()
            .args(["create", "child", "--parent", "base"])
            .env("GRAPHDRIVER_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(
            out.status.code().is_none(),
            "graphctl did not crash at {point}: {out:?}"
        );
        let d = root.open();
        assert!(
            !d.exists(&id("child")),
            "a half-made layer survived {point}"
        );
        assert_consistent(&d);
        // and the id is usable again
        d.create(&id("child"), Some(&id("base")), &rw()).unwrap();
        let p = d.get(&id("child"), &MountOpts::default()).unwrap();
        assert_eq!(std::fs::read_to_string(p.join("f")).unwrap(), "base");
        d.put(&id("child")).unwrap();
        d.remove(&id("child")).unwrap();
        assert_consistent(&d);
    }
    // a crash in the middle of a removal is finished at the next open
    let d = root.open();
    d.create(&id("gone"), Some(&id("base")), &rw()).unwrap();
    drop(d);
    let out = root
        .graphctl()
        .args(["remove", "gone"])
        .env("GRAPHDRIVER_FAILPOINT", "remove.after-record")
        .output()
        .unwrap();
    assert!(
        out.status.code().is_none(),
        "graphctl did not crash: {out:?}"
    );
    let d = root.open();
    assert!(!d.exists(&id("gone")));
    assert_consistent(&d);
}

/// The names of the live device-mapper devices.
fn dm_names() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(n) = std::fs::read_to_string(e.path().join("dm/name")) {
            out.push(n.trim().to_owned());
        }
    }
    out
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_crash_while_a_device_becomes_a_spare_leaves_nothing_at_the_next_open() {
    let root = Root::new("retiring", &[]);
    let d = root.open();
    d.create(&id("l"), None, &rw()).unwrap();
    let p = d.get(&id("l"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("f"), "x").unwrap();
    d.put(&id("l")).unwrap();
    drop(d);
    assert_eq!(
        root.graphctl()
            .args(["mount", "l"])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    // the unmount retires the layer's device: killed after its thin table was swapped out,
    // before it was named a spare
    let out = root
        .graphctl()
        .args(["unmount", "l"])
        .env("GRAPHDRIVER_FAILPOINT", "devmapper.spare.retiring")
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "did not crash: {out:?}");
    assert!(
        dm_names().iter().any(|n| n.contains("-retiring-")),
        "no device was left half-retired (the failpoint came too late): {:?}",
        dm_names()
    );
    let d = root.open();
    assert!(
        !dm_names().iter().any(|n| n.contains("-retiring-")),
        "opening the store left a half-retired device: {:?}",
        dm_names()
    );
    let p = d.get(&id("l"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("f")).unwrap(), "x");
    d.put(&id("l")).unwrap();
    assert_consistent(&d);
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn an_empty_layer_uses_space_and_a_child_with_a_mib_file_uses_a_mib_more() {
    let root = Root::new("usage", &[]);
    let d = root.open();
    d.create(&id("empty"), None, &rw()).unwrap();
    let empty = d.backend().usage(&id("empty")).unwrap();
    assert!(
        empty > 0,
        "an empty layer maps no blocks (its filesystem has metadata)"
    );
    d.create(&id("child"), Some(&id("empty")), &rw()).unwrap();
    let p = d.get(&id("child"), &MountOpts::default()).unwrap();
    write_file(&p.join("mib"), 1 << 20).unwrap();
    d.put(&id("child")).unwrap();
    let child = d.backend().usage(&id("child")).unwrap();
    assert!(
        child >= empty + (1 << 20),
        "child maps {child} bytes, its empty parent {empty}: want at least 1 MiB more"
    );
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_device_held_by_a_leaked_mount_is_removed_later() {
    let root = Root::new("deferred", &[]);
    let d = root.open();
    d.create(&id("ctr"), None, &rw()).unwrap();
    let p = d.get(&id("ctr"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("f"), "x").unwrap();
    // a process in a new mount namespace made while the layer is mounted holds a copy, and
    // works in it (removing the mount point detaches an idle copy; a busy one stays)
    let mut holder = Command::new("unshare")
        .args(["-m", "--propagation", "unchanged", "sh", "-c"])
        .arg(format!(
            "cd {} && echo ready && exec sleep 600",
            p.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    d.put(&id("ctr")).unwrap();
    d.remove(&id("ctr")).unwrap();
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert_eq!(status["Deferred Removals"], "1", "{status:?}");
    assert_eq!(status["Deferred Deletions"], "1", "{status:?}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    // the namespace is gone with its process; the kernel removes the device at its last
    // close, and the next operation deletes it from the pool
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.create(&id("next"), None, &rw()).unwrap();
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert_eq!(status["Deferred Removals"], "0", "{status:?}");
    assert_eq!(status["Deferred Deletions"], "0", "{status:?}");
    d.remove(&id("next")).unwrap();
    assert_consistent(&d);
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_spare_device_shows_nothing_of_its_last_layer_and_goes_at_cleanup() {
    let root = Root::new("spares", &[]);
    let d = root.open();
    // making the base device left its device as a spare; cleanup removes it
    d.cleanup().unwrap();
    assert_eq!(d.backend().spare_devices().unwrap(), Vec::<String>::new());
    d.create(&id("a"), None, &rw()).unwrap();
    let p = d.get(&id("a"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("only-in-a"), "a").unwrap();
    d.put(&id("a")).unwrap();
    let spares = d.backend().spare_devices().unwrap();
    assert_eq!(spares.len(), 1, "the unmounted device is kept: {spares:?}");
    // the next activation takes the spare over, and sees its own layer only
    d.create(&id("b"), None, &rw()).unwrap();
    let p = d.get(&id("b"), &MountOpts::default()).unwrap();
    assert_eq!(d.backend().spare_devices().unwrap(), Vec::<String>::new());
    assert!(
        !p.join("only-in-a").exists(),
        "layer b shows layer a's file"
    );
    std::fs::write(p.join("only-in-b"), "b").unwrap();
    d.put(&id("b")).unwrap();
    let p = d.get(&id("a"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("only-in-a")).unwrap(), "a");
    assert!(
        !p.join("only-in-b").exists(),
        "layer a shows layer b's file"
    );
    d.put(&id("a")).unwrap();
    // a layer whose device is a spare's last table can still be removed
    d.remove(&id("a")).unwrap();
    d.remove(&id("b")).unwrap();
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert_ne!(status["Spare Devices"], "0", "{status:?}");
    d.cleanup().unwrap();
    assert_eq!(d.backend().spare_devices().unwrap(), Vec::<String>::new());
    assert_consistent(&d);
}

/// A base of `base` MiB, a layer limited to `limit` MiB: `first` MiB fit (more than the base
/// holds), `second` MiB more do not.
fn size_limit_grows_the_device_then_fills(
    fs: &str,
    base: u64,
    limit: u64,
    first: usize,
    second: usize,
) {
    let base_opt = format!("{base}M");
    let root = Root::new(
        &format!("size-{fs}"),
        &[("dm.basesize", &base_opt), ("dm.fs", fs)],
    );
    let d = root.open();
    let opts = CreateOpts {
        read_write: true,
        size_limit: Some(limit << 20),
        ..CreateOpts::default()
    };
    d.create(&id("big"), None, &opts).unwrap();
    let p = d.get(&id("big"), &MountOpts::default()).unwrap();
    // more than the base holds: the filesystem was grown with the device
    write_file(&p.join("a"), first << 20).unwrap();
    let e = write_file(&p.join("b"), second << 20).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    d.put(&id("big")).unwrap();
    // a child keeps its parent's size
    d.create(&id("child"), Some(&id("big")), &rw()).unwrap();
    let info = d.metadata(&id("child")).unwrap();
    assert_eq!(info.backend["device_size"], (limit << 20).to_string());
    let p = d.get(&id("child"), &MountOpts::default()).unwrap();
    assert_eq!(
        std::fs::metadata(p.join("a")).unwrap().len(),
        (first as u64) << 20
    );
    d.put(&id("child")).unwrap();
    // below the base: refused, nothing made
    let small = CreateOpts {
        size_limit: Some(8 << 20),
        ..CreateOpts::default()
    };
    assert!(d.create(&id("small"), None, &small).is_err());
    assert!(!d.exists(&id("small")));
    assert_consistent(&d);
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_size_past_the_base_grows_ext4_and_then_fails_with_enospc() {
    size_limit_grows_the_device_then_fills("ext4", 64, 128, 96, 48);
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_size_past_the_base_grows_xfs_and_then_fails_with_enospc() {
    // mkfs.xfs wants 300 MiB at least
    size_limit_grows_the_device_then_fills("xfs", 320, 512, 340, 200);
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_snapshot_of_a_mounted_layer_sees_what_was_written() {
    let root = Root::new("live", &[]);
    let d = root.open();
    d.create(&id("a"), None, &rw()).unwrap();
    let p = d.get(&id("a"), &MountOpts::default()).unwrap();
    // written, not synced: the suspend around the snapshot freezes (flushes) the filesystem
    std::fs::write(p.join("f"), "live").unwrap();
    d.create(&id("b"), Some(&id("a")), &rw()).unwrap();
    let q = d.get(&id("b"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(q.join("f")).unwrap(), "live");
    d.put(&id("b")).unwrap();
    d.put(&id("a")).unwrap();
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert_eq!(status["Unknown Devices"], "none");
    assert_eq!(status["Backing Filesystem"], "ext4");
    for k in [
        "Pool Name",
        "Pool Blocksize",
        "Data Space Used",
        "Data Space Total",
        "Metadata Space Used",
        "Metadata Space Total",
        "Base Device Size",
        "Deferred Removals",
        "Deferred Deletions",
        "Transaction Id",
    ] {
        assert!(status.contains_key(k), "status lacks {k}: {status:?}");
    }
}

/// Create + mount of a container layer on an image layer, devmapper against overlay2 in the
/// same run (both on an ext4 scratch image): prints the medians and their ratio. A
/// measurement, not a check: `graphctl vm -- <this binary> --ignored --nocapture
/// container_layer`.
#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn container_layer_create_and_mount_against_overlay2() {
    let fs = graphdriver_conformance::fixture::ScratchFs::new(
        Path::new("/var/tmp/graphdriver-test"),
        "ext4",
        8 << 30,
        "",
    )
    .unwrap();
    let reps: usize = std::env::var("GRAPHDRIVER_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut medians = Vec::new();
    for driver in ["overlay2", "devmapper"] {
        // GRAPHDRIVER_DM_BENCH_DIR: the devmapper root (and its loopback pool files) elsewhere
        let root = match std::env::var_os("GRAPHDRIVER_DM_BENCH_DIR") {
            Some(dir) if driver == "devmapper" => PathBuf::from(dir).join(driver),
            _ => fs.path().join(driver),
        };
        // GRAPHDRIVER_DM_BENCH_OPTS: devmapper options, `dm.fs=xfs,dm.basesize=...`
        let opts: BTreeMap<String, String> = match std::env::var("GRAPHDRIVER_DM_BENCH_OPTS") {
            Ok(o) if driver == "devmapper" => o
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let d = graphdriver_backends::open(driver, &root, &opts).unwrap();
        let img = id("image");
        d.create(&img, None, &CreateOpts::default()).unwrap();
        match std::env::var_os("GRAPHDRIVER_ROOTFS_TAR") {
            Some(tar) => {
                d.apply_diff(&img, None, &mut std::fs::File::open(tar).unwrap())
                    .unwrap();
            }
            None => {
                let p = d.get(&img, &MountOpts::default()).unwrap();
                for i in 0..200 {
                    std::fs::write(p.join(format!("f{i}")), vec![1u8; 4096]).unwrap();
                }
                d.put(&img).unwrap();
            }
        }
        let (mut times, mut creates, mut mounts) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..reps + 2 {
            let ctr = id(&format!("ctr-{r}"));
            let t = std::time::Instant::now();
            d.create(&ctr, Some(&img), &rw()).unwrap();
            let c = t.elapsed().as_secs_f64();
            d.get(&ctr, &MountOpts::default()).unwrap();
            let s = t.elapsed().as_secs_f64();
            d.put(&ctr).unwrap();
            d.remove(&ctr).unwrap();
            if r >= 2 {
                // two warm-up rounds
                times.push(s);
                creates.push(c);
                mounts.push(s - c);
            }
        }
        for v in [&mut times, &mut creates, &mut mounts] {
            v.sort_by(f64::total_cmp);
        }
        let median = times[times.len() / 2];
        println!(
            "{driver}: create + mount of a container layer: median {:.1} ms (min {:.1}, max {:.1}; create {:.1}, mount {:.1}; {reps} rounds)",
            median * 1e3,
            times[0] * 1e3,
            times[times.len() - 1] * 1e3,
            creates[creates.len() / 2] * 1e3,
            mounts[mounts.len() / 2] * 1e3,
        );
        medians.push(median);
        d.remove(&img).unwrap();
        d.cleanup().unwrap();
    }
    println!(
        "devmapper / overlay2: {:.1}x",
        medians[1] / medians[0].max(1e-9)
    );
}

/// A pool made by hand (as an administrator would with LVM or dmsetup), given with
/// `dm.thinpooldev`: used as it is, and left in place by `cleanup`.
#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_pool_given_by_the_user_is_used_and_kept() {
    use graphdriver_conformance::fixture::run;
    let dir = PathBuf::from(format!(
        "/var/tmp/graphdriver-test/userpool-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let data = LoopFile::new(&dir.join("data"), 4 << 30).unwrap();
    let meta = LoopFile::new(&dir.join("meta"), 64 << 20).unwrap();
    let (data_dev, meta_dev) = (data.dev(), meta.dev());
    let name = format!("gd-test-userpool-{}", std::process::id());
    run(Command::new("dmsetup").args([
        "create",
        &name,
        "--table",
        &format!("0 {} thin-pool {meta_dev} {data_dev} 128 1024", 8u64 << 20),
    ]))
    .unwrap();
    let root = Root::new("userpool", &[("dm.thinpooldev", &name)]);
    let d = root.open();
    d.create(&id("a"), None, &rw()).unwrap();
    let p = d.get(&id("a"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("f"), "user pool").unwrap();
    d.put(&id("a")).unwrap();
    d.create(&id("b"), Some(&id("a")), &rw()).unwrap();
    let q = d.get(&id("b"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(q.join("f")).unwrap(), "user pool");
    d.put(&id("b")).unwrap();
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert_eq!(status["Pool Name"], name);
    assert!(!status.contains_key("Data Loop File"));
    d.remove(&id("b")).unwrap();
    d.remove(&id("a")).unwrap();
    assert_consistent(&d);
    d.cleanup().unwrap();
    let listed = run(Command::new("dmsetup").args(["ls"])).unwrap();
    assert!(listed.contains(&name), "cleanup took the user's pool down");
    drop(d);
    drop(root);
    run(Command::new("dmsetup").args(["remove", &name])).unwrap();
    drop((data, meta));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `e` is the kernel's answer to a full thin pool reaching a filesystem: ENOSPC, EIO
/// for a write ext4 could not place, or EROFS once ext4 aborted its journal (whose blocks the
/// pool could not provide either).
fn pool_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EIO) | Some(libc::EROFS)
    )
}

/// A thin pool smaller than its devices (the loop data file 160 MiB, each device 512 MiB):
/// filling it fails a container's writes and an apply at once (the pool is made with
/// `error_if_no_space`, so nothing hangs for the kernel's 60 s), with a typed error for the
/// apply; the other layers keep their content; removing the layers that filled the pool
/// gives the space back, and the pool takes writes again (and says so in `status`).
#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_full_thin_pool_fails_writes_and_applies_and_takes_them_again_once_space_is_freed() {
    let root = Root::new(
        "poolfull",
        &[("dm.loopdatasize", "160M"), ("dm.basesize", "512M")],
    );
    let d = root.open();
    d.create(&id("base"), None, &rw()).unwrap();
    let p = d.get(&id("base"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("keep"), "kept").unwrap();
    d.put(&id("base")).unwrap();

    // a container's writes
    d.create(&id("ctr"), Some(&id("base")), &rw()).unwrap();
    let p = d.get(&id("ctr"), &MountOpts::default()).unwrap();
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert_eq!(status["When Full"], "writes fail (error_if_no_space)");
    let e = write_file(&p.join("fill"), 400 << 20).unwrap_err();
    assert!(pool_full(&e), "writing past the pool: {e}");
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert_eq!(status["Pool Mode"], "out_of_data_space", "{status:?}");
    let _ = d.put(&id("ctr"));

    // an apply into a new layer while the pool is full
    let applied = d
        .create(&id("applied"), Some(&id("base")), &CreateOpts::default())
        .and_then(|()| {
            d.apply_diff(
                &id("applied"),
                None,
                &mut incompressible_tar(40, 4 << 20).unwrap(),
            )
        });
    match applied {
        Ok(n) => panic!("an apply of 160 MiB into a full pool succeeded ({n} bytes)"),
        Err(e) => {
            println!("the apply into the full pool: {e}");
            assert!(e.is_storage_full(), "{e:?}");
        }
    }

    // the other layer is intact, and freeing the space makes the pool usable again
    for l in ["applied", "ctr"] {
        if d.exists(&id(l)) {
            d.remove(&id(l)).unwrap();
        }
    }
    drop(d);
    let d = root.open();
    let p = d.get(&id("base"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
    d.put(&id("base")).unwrap();
    d.create(&id("after"), Some(&id("base")), &rw()).unwrap();
    let p = d.get(&id("after"), &MountOpts::default()).unwrap();
    write_file(&p.join("mib"), 32 << 20).unwrap();
    d.put(&id("after")).unwrap();
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    assert_eq!(status["Pool Mode"], "rw", "{status:?}");
    let report = d.fsck(false).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_consistent(&d);
}

/// A disk that fails under the pool part-way through an apply: the pool's data device is a
/// device-mapper table of 96 MiB of a loop device followed by an `error` target (what a dying
/// disk answers: EIO), so the apply's writes past what the pool had allocated fail. The apply
/// fails with the I/O error (its staged files are synced before the merge, so the error is not
/// left to a later write-back) and leaves the layer as it was; the other layer keeps its
/// content; once the disk works again (the table reloaded whole) the store opens, recovers,
/// is consistent and clean, and takes new layers and writes.
#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn an_io_error_under_the_pool_fails_an_apply_and_loses_nothing() {
    use graphdriver_conformance::fixture::run;
    let pid = std::process::id();
    let dir = PathBuf::from(format!("/var/tmp/graphdriver-test/eio-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let data = LoopFile::new(&dir.join("data"), 1 << 30).unwrap();
    let meta = LoopFile::new(&dir.join("meta"), 64 << 20).unwrap();
    let (data_dev, meta_dev) = (data.dev(), meta.dev());
    let sectors = (1u64 << 30) / 512;
    let good = (96u64 << 20) / 512;
    let whole = format!("0 {sectors} linear {data_dev} 0");
    let failing = format!(
        "0 {good} linear {data_dev} 0\n{good} {} error",
        sectors - good
    );
    let disk = format!("gd-test-eio-disk-{pid}");
    let pool = format!("gd-test-eio-pool-{pid}");
    run(Command::new("dmsetup").args(["create", &disk, "--table", &failing])).unwrap();
    run(Command::new("dmsetup").args([
        "create",
        &pool,
        "--table",
        &format!("0 {sectors} thin-pool {meta_dev} /dev/mapper/{disk} 128 1024"),
    ]))
    .unwrap();
    let root = Root::new("eio", &[("dm.thinpooldev", &pool), ("dm.basesize", "512M")]);
    let d = root.open();
    d.create(&id("base"), None, &rw()).unwrap();
    let p = d.get(&id("base"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("keep"), "kept").unwrap();
    d.put(&id("base")).unwrap();

    // 160 MiB of incompressible files cannot fit in the 96 MiB that work
    d.create(&id("applied"), Some(&id("base")), &CreateOpts::default())
        .unwrap();
    let e = d
        .apply_diff(
            &id("applied"),
            None,
            &mut incompressible_tar(40, 4 << 20).unwrap(),
        )
        .expect_err("an apply onto a failing disk succeeded");
    let text = format!("{e:?}");
    println!("the apply onto the failing disk: {e}");
    assert!(
        text.contains("Input/output error") || text.contains("Read-only file system"),
        "the apply failed with {e:?}"
    );
    drop(d);

    // the disk is replaced by one that works (the same blocks, all of them readable)
    dm_reload(&disk, &whole).unwrap();
    let d = root.open();
    let p = d.get(&id("base"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
    d.put(&id("base")).unwrap();
    if d.exists(&id("applied")) {
        // as before the apply: its parent's file, none of the archive's
        let p = d.get(&id("applied"), &MountOpts::default()).unwrap();
        assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
        assert!(!p.join("data").exists(), "a failed apply left files");
        d.put(&id("applied")).unwrap();
        d.remove(&id("applied")).unwrap();
    }
    d.create(&id("after"), Some(&id("base")), &rw()).unwrap();
    let p = d.get(&id("after"), &MountOpts::default()).unwrap();
    write_file(&p.join("mib"), 32 << 20).unwrap();
    d.put(&id("after")).unwrap();
    let report = d.fsck(false).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    assert_consistent(&d);
    d.remove(&id("after")).unwrap();
    d.remove(&id("base")).unwrap();
    drop(d);
    drop(root);
    run(Command::new("dmsetup").args(["remove", &pool])).unwrap();
    run(Command::new("dmsetup").args(["remove", &disk])).unwrap();
    drop((data, meta));
    let _ = std::fs::remove_dir_all(&dir);
}

/// containerd's snapshotter suite keeps its bind mount of a snapshot after committing it; the
/// committed layer then gets a child, and the service mounts it read-only. The kernel will not
/// mount read-only a filesystem mounted read-write elsewhere (`EBUSY`): the mount must still
/// work, and be read-only.
#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn a_layer_a_client_still_holds_read_write_mounts_read_only_once_it_has_a_child() {
    let root = Root::new("client-held", &[]);
    let d = root.open();
    d.create(&id("base"), None, &rw()).unwrap();
    let p = d.get(&id("base"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("f"), "kept").unwrap();
    let client = root.path.join("client");
    std::fs::create_dir(&client).unwrap();
    rustix::mount::mount_bind(&p, &client).unwrap();
    d.put(&id("base")).unwrap();
    d.create(&id("child"), Some(&id("base")), &rw()).unwrap();
    let again = d.get(&id("base"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(again.join("f")).unwrap(), "kept");
    let err = std::fs::write(again.join("g"), "no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // the child sees the base as it was when it was made
    let c = d.get(&id("child"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(c.join("f")).unwrap(), "kept");
    d.put(&id("child")).unwrap();
    d.put(&id("base")).unwrap();
    rustix::mount::unmount(&client, rustix::mount::UnmountFlags::empty()).unwrap();
    d.remove(&id("child")).unwrap();
    d.remove(&id("base")).unwrap();
    assert_consistent(&d);
}
