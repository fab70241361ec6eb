//! A disk that fails under a host backend part-way through an apply (vfs and overlay2 on ext4,
//! btrfs on btrfs): the filesystem lives on a device-mapper table over a loop device, which
//! after the first layer is made turns into one whose first 128 MiB are the loop device and
//! whose rest is an `error` target, so the apply's writes that land there fail with EIO, as a
//! dying disk answers. The apply fails with an I/O
//! error (never success with the data lost at write-back), the other layer keeps its
//! content, and once the disk works again (the table reloaded whole, the filesystem mounted
//! again) the store recovers: the failed layer is as before the apply, fsck is clean and new
//! layers take writes. devmapper's own case is in devmapper.rs (the error under its thin
//! pool). Needs device-mapper (this host's kernel has none): ignored here, run in the VM by
//! scripts/vm-tests.sh.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};
use graphdriver_backends as drivers;
use graphdriver_conformance::fixture::{dm_reload, incompressible_tar, run, LoopFile};

fn lid(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

const SIZE: u64 = 1 << 30;
const GOOD: u64 = 128 << 20;

/// A loop device under a device-mapper table, the filesystem on it mounted at `mnt`; all taken
/// down when dropped.
struct FailingDisk {
    dir: PathBuf,
    disk: LoopFile,
    name: String,
    mnt: PathBuf,
    fstype: &'static str,
}

impl FailingDisk {
    fn new(fstype: &'static str) -> FailingDisk {
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/var/tmp/graphdriver-test/eio-{fstype}-{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = LoopFile::new(&dir.with_extension("img"), SIZE).unwrap();
        let name = format!("gd-test-eio-{fstype}-{pid}");
        let disk = FailingDisk {
            mnt: dir.join("mnt"),
            dir,
            disk,
            name,
            fstype,
        };
        run(Command::new("dmsetup").args(["create", &disk.name, "--table", &disk.whole()]))
            .unwrap();
        // made on the whole device (every table and superblock copy written now), used on
        // the failing one
        let dev = disk.dev();
        match fstype {
            // the journal in the part that keeps working (mkfs puts it mid-disk by default,
            // and a filesystem whose journal cannot be read does not mount)
            "ext4" => run(Command::new("mkfs.ext4").args([
                "-q",
                "-F",
                "-J",
                "size=16,location=32M",
                "-E",
                "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                &dev,
            ])),
            _ => run(Command::new("mkfs.btrfs").args(["-q", "-f", "-K", &dev])),
        }
        .unwrap();
        std::fs::create_dir_all(&disk.mnt).unwrap();
        disk.mount();
        disk
    }

    fn dev(&self) -> String {
        format!("/dev/mapper/{}", self.name)
    }

    fn whole(&self) -> String {
        format!("0 {} linear {} 0", SIZE / 512, self.disk.dev())
    }

    fn failing(&self) -> String {
        format!(
            "0 {good} linear {} 0\n{good} {} error",
            self.disk.dev(),
            (SIZE - GOOD) / 512,
            good = GOOD / 512
        )
    }

    fn load(&self, table: &str) {
        dm_reload(&self.name, table).unwrap();
    }

    fn mount(&self) {
        let opts = if self.fstype == "ext4" {
            "noinit_itable"
        } else {
            "defaults"
        };
        run(Command::new("mount")
            .args(["-o", opts, &self.dev()])
            .arg(&self.mnt))
        .unwrap();
    }

    fn unmount(&self) {
        graphdriver_conformance::unmount_below(&self.mnt);
        let _ = run(Command::new("umount").arg(&self.mnt));
    }

    /// The disk starts failing past its first 128 MiB (the filesystem stays mounted).
    fn fail(&self) {
        self.load(&self.failing());
    }

    /// The disk replaced by one that works: the same blocks, all of them reachable.
    fn repair(&self) {
        self.unmount();
        self.load(&self.whole());
        self.mount();
    }

    fn root(&self) -> PathBuf {
        self.mnt.join("root")
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        self.unmount();
        let _ = run(Command::new("dmsetup").args(["remove", &self.name]));
        let _ = std::fs::remove_dir_all(&self.dir);
        // then the loop device and its image go with the field `disk`
    }
}

fn open(name: &str, root: &Path) -> Box<dyn GraphDriver> {
    drivers::open(name, root, &Default::default()).unwrap()
}

fn an_io_error_fails_an_apply_and_loses_nothing(name: &str, fstype: &'static str) {
    let disk = FailingDisk::new(fstype);
    let d = open(name, &disk.root());
    d.create(&lid("base"), None, &CreateOpts::default())
        .unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    h.set_mode(0o644);
    tar.append_data(&mut h, "keep", &b"kept"[..]).unwrap();
    d.apply_diff(&lid("base"), None, &mut &tar.into_inner().unwrap()[..])
        .unwrap();
    d.create(&lid("applied"), Some(&lid("base")), &CreateOpts::default())
        .unwrap();
    disk.fail();
    // 256 MiB of incompressible files cannot fit in the 128 MiB that work
    let e = d
        .apply_diff(
            &lid("applied"),
            None,
            &mut incompressible_tar(64, 4 << 20).unwrap(),
        )
        .expect_err("an apply onto a failing disk succeeded");
    let text = format!("{e:?}");
    println!("{name}: the apply onto the failing disk: {e}");
    assert!(
        text.contains("Input/output error") || text.contains("Read-only file system"),
        "{name}: the apply failed with {e:?}"
    );
    drop(d);

    disk.repair();
    let d = open(name, &disk.root());
    let p = d.get(&lid("base"), &MountOpts::default()).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
    d.put(&lid("base")).unwrap();
    if d.exists(&lid("applied")) {
        // as before the apply: its parent's file, none of the archive's
        let p = d.get(&lid("applied"), &MountOpts::default()).unwrap();
        assert_eq!(std::fs::read_to_string(p.join("keep")).unwrap(), "kept");
        assert!(
            !p.join("data").exists(),
            "{name}: a failed apply left files"
        );
        d.put(&lid("applied")).unwrap();
        d.remove(&lid("applied")).unwrap();
    }
    let rw = CreateOpts {
        read_write: true,
        ..CreateOpts::default()
    };
    d.create(&lid("after"), Some(&lid("base")), &rw).unwrap();
    let p = d.get(&lid("after"), &MountOpts::default()).unwrap();
    std::fs::write(p.join("written"), vec![7u8; 32 << 20]).unwrap();
    d.put(&lid("after")).unwrap();
    let report = d.fsck(false).unwrap();
    assert!(report.is_clean(), "{name}: {:#?}", report.findings);
    d.remove(&lid("after")).unwrap();
    d.remove(&lid("base")).unwrap();
    assert!(d.list().unwrap().is_empty(), "{name}");
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn vfs_on_a_failing_disk() {
    an_io_error_fails_an_apply_and_loses_nothing("vfs", "ext4");
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn overlay2_on_a_failing_disk() {
    an_io_error_fails_an_apply_and_loses_nothing("overlay2", "ext4");
}

#[test]
#[ignore = "needs device-mapper: run in the VM (scripts/vm-tests.sh)"]
fn btrfs_on_a_failing_disk() {
    an_io_error_fails_an_apply_and_loses_nothing("btrfs", "btrfs");
}
