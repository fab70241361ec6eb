//! A full disk part-way through an apply, a create and a container's writes, on every host
//! backend (vfs, overlay2, btrfs), each on a small loop filesystem of its own: the operation
//! fails with the kernel's ENOSPC in a typed error or succeeds whole, the layer is as before
//! or complete, the space a failed operation used is given back, and the store is clean (fsck
//! finds nothing, now and after reopening). Needs root.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::io::Write;
use std::path::Path;

use graphdriver_api::{CreateOpts, DriverError, GraphDriver, LayerId, MountOpts};
use graphdriver_backends as drivers;
use graphdriver_conformance::fixture::{incompressible_tar, ScratchFs};

const DRIVERS: &[(&str, &str, u64)] = &[
    ("vfs", "ext4", 96 << 20),
    ("overlay2", "ext4", 96 << 20),
    ("btrfs", "btrfs", 160 << 20),
];

fn lid(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn scratch(fs: &str, size: u64) -> ScratchFs {
    ScratchFs::new(Path::new("/var/tmp/graphdriver-test"), fs, size, "").unwrap()
}

fn open(name: &str, fs: &ScratchFs) -> Box<dyn GraphDriver> {
    drivers::open(name, &fs.path().join("root"), &Default::default()).unwrap()
}

/// Free bytes on the filesystem at `p`, after writing back what is dirty.
fn free(p: &Path) -> u64 {
    let f = std::fs::File::open(p).unwrap();
    rustix::fs::syncfs(&f).unwrap();
    let s = rustix::fs::statvfs(p).unwrap();
    s.f_bavail * s.f_frsize
}

fn no_space(e: &DriverError) -> bool {
    e.is_storage_full()
}

fn small_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [("etc/os-release", &b"NAME=base\n"[..]), ("bin/sh", b"#!\n")] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Files a failed atomic write left (`.NAME.PID.N.tmp`) anywhere below `dir`.
fn leftovers(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                out.push(e.path());
            }
        }
    }
    out
}

fn assert_clean(d: &dyn GraphDriver, root: &Path, what: &str) {
    let left = leftovers(root);
    assert!(left.is_empty(), "{} {what}: left {left:?}", d.name());
    let report = d.fsck(false).unwrap();
    assert!(
        report.findings.is_empty(),
        "{} {what}: fsck found {:?}",
        d.name(),
        report.findings
    );
}

fn sorted(d: &dyn GraphDriver) -> Vec<String> {
    let mut v: Vec<String> = d.list().unwrap().iter().map(|l| l.to_string()).collect();
    v.sort();
    v
}

#[test]
fn an_apply_that_fills_the_disk_fails_with_enospc_and_changes_nothing() {
    for &(name, fstype, size) in DRIVERS {
        if !drivers::kernel_offers(name) {
            continue;
        }
        let fs = scratch(fstype, size);
        let d = open(name, &fs);
        d.create(&lid("base"), None, &CreateOpts::default())
            .unwrap();
        d.apply_diff(&lid("base"), None, &mut small_tar().as_slice())
            .unwrap();
        d.create(&lid("child"), Some(&lid("base")), &CreateOpts::default())
            .unwrap();
        let before = free(fs.path());
        // Twice the filesystem: the disk fills part-way through.
        let err = d
            .apply_diff(
                &lid("child"),
                None,
                &mut incompressible_tar(40, size / 20).unwrap(),
            )
            .expect_err("an archive twice the disk's size applied");
        assert!(no_space(&err), "{name}: not ENOSPC: {err:?}");
        assert!(
            d.changes(&lid("child"), None).unwrap().is_empty(),
            "{name}: the child changed"
        );
        let after = free(fs.path());
        assert!(
            after + (4 << 20) >= before,
            "{name}: the failed apply kept {} KiB",
            (before - after) >> 10
        );
        assert_eq!(sorted(d.as_ref()), ["base", "child"], "{name}");
        assert_clean(d.as_ref(), fs.path(), "after the failed apply");
        // The layer takes an archive that fits.
        d.apply_diff(
            &lid("child"),
            None,
            &mut incompressible_tar(2, 1 << 20).unwrap(),
        )
        .unwrap();
        assert_eq!(d.changes(&lid("child"), None).unwrap().len(), 3, "{name}");
        drop(d);
        let d = open(name, &fs);
        assert_eq!(sorted(d.as_ref()), ["base", "child"], "{name}");
        assert_clean(d.as_ref(), fs.path(), "reopened");
        d.remove(&lid("child")).unwrap();
        d.remove(&lid("base")).unwrap();
    }
}

#[test]
fn a_full_disk_from_a_containers_writes_leaves_create_whole_or_refused() {
    for &(name, fstype, size) in DRIVERS {
        if !drivers::kernel_offers(name) {
            continue;
        }
        let fs = scratch(fstype, size);
        let d = open(name, &fs);
        // A base big enough that vfs's full copy of it needs real space.
        d.create(&lid("base"), None, &CreateOpts::default())
            .unwrap();
        d.apply_diff(
            &lid("base"),
            None,
            &mut incompressible_tar(4, size / 16).unwrap(),
        )
        .unwrap();
        let rw = CreateOpts {
            read_write: true,
            ..CreateOpts::default()
        };
        d.create(&lid("c"), Some(&lid("base")), &rw).unwrap();
        let p = d.get(&lid("c"), &MountOpts::default()).unwrap();
        // The container writes until the disk is full.
        let mut f = std::fs::File::create(p.join("fill")).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        let e = loop {
            if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_data()) {
                break e;
            }
        };
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            "{name}: the container's write failed with {e}"
        );
        drop(f);
        d.put(&lid("c")).unwrap();

        // A create on the full disk: whole, or refused with ENOSPC and nothing left.
        for i in 0..3 {
            let id = lid(&format!("full-{i}"));
            match d.create(&id, Some(&lid("base")), &rw) {
                Ok(()) => {
                    assert!(d.exists(&id), "{name}");
                    // Mounting needs a little space for the mount count: it may be refused.
                    match d.get(&id, &MountOpts::default()) {
                        Ok(m) => {
                            assert_eq!(
                                std::fs::read(m.join("data/file-0")).unwrap().len() as u64,
                                size / 16,
                                "{name}: a child made on a full disk is not whole"
                            );
                            d.put(&id).unwrap();
                        }
                        Err(e) => assert!(no_space(&e), "{name}: mount failed with {e:?}"),
                    }
                }
                Err(e) => {
                    assert!(no_space(&e), "{name}: create failed with {e:?}");
                    assert!(!d.exists(&id), "{name}: a refused create left {id}");
                }
            }
        }
        assert_clean(d.as_ref(), fs.path(), "after creates on a full disk");
        // A create takes space: it never spends the reserve kept for the remove that frees it.
        let reserve = fs
            .path()
            .join("root")
            .join(name)
            .join(".store/space-reserve");
        assert!(
            reserve.exists(),
            "{name}: a create on a full disk gave up the space reserve"
        );
        let made: Vec<String> = sorted(d.as_ref());
        drop(d);
        let d = open(name, &fs);
        assert_eq!(
            sorted(d.as_ref()),
            made,
            "{name}: reopening changed the layers"
        );
        assert_clean(d.as_ref(), fs.path(), "reopened on a full disk");

        // Removing the container gives the space back (btrfs: once its cleaner has deleted
        // the subvolume, in the background); a create then works.
        d.remove(&lid("c")).unwrap();
        if fstype == "btrfs" {
            let st = std::process::Command::new("btrfs")
                .arg("subvolume")
                .arg("sync")
                .arg(fs.path())
                .output()
                .unwrap();
            assert!(st.status.success());
        }
        d.create(&lid("after"), Some(&lid("base")), &rw).unwrap();
        let m = d.get(&lid("after"), &MountOpts::default()).unwrap();
        assert_eq!(
            std::fs::read(m.join("data/file-3")).unwrap().len() as u64,
            size / 16,
            "{name}"
        );
        d.put(&lid("after")).unwrap();
        for l in sorted(d.as_ref()).iter().rev() {
            if l != "base" {
                d.remove(&lid(l)).unwrap();
            }
        }
        d.remove(&lid("base")).unwrap();
    }
}

/// Fills the filesystem at `dir` with a file of its own, in shrinking chunks, until the
/// kernel refuses even 4 KiB; returns the file.
fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 64 << 10, 4 << 10] {
        let buf = vec![0x3cu8; chunk];
        while f.write_all(&buf).and_then(|_| f.sync_data()).is_ok() {}
    }
    path
}

/// A disk filled by someone else: creates and applies fail with a storage-full error (or
/// succeed whole) without spending the space reserve, which stays for the removes that
/// free space; every layer can then be removed, and once the disk has room the store makes
/// layers again.
#[test]
fn on_a_full_disk_creates_leave_the_reserve_to_removes() {
    for &(name, fstype, size) in DRIVERS {
        if !drivers::kernel_offers(name) {
            continue;
        }
        let fs = scratch(fstype, size);
        let d = open(name, &fs);
        for l in ["a", "b", "c"] {
            d.create(&lid(l), None, &CreateOpts::default()).unwrap();
            d.apply_diff(&lid(l), None, &mut &small_tar()[..]).unwrap();
        }
        let filler = fill(fs.path());
        for i in 0..4 {
            let id = lid(&format!("full-{i}"));
            let made = d
                .create(&id, Some(&lid("a")), &CreateOpts::default())
                .and_then(|()| d.apply_diff(&id, None, &mut &small_tar()[..]));
            if let Err(e) = made {
                assert!(no_space(&e), "{name}: {id} failed with {e:?}");
            }
        }
        let reserve = fs
            .path()
            .join("root")
            .join(name)
            .join(".store/space-reserve");
        assert!(
            reserve.exists(),
            "{name}: an operation that takes space gave up the reserve"
        );
        // every layer goes, children first, on the disk still full
        for l in sorted(d.as_ref()).iter().rev() {
            d.remove(&lid(l))
                .unwrap_or_else(|e| panic!("{name}: removing {l} on a full disk: {e:?}"));
        }
        assert!(sorted(d.as_ref()).is_empty(), "{name}");
        std::fs::remove_file(filler).unwrap();
        d.create(&lid("after"), None, &CreateOpts::default())
            .unwrap();
        d.apply_diff(&lid("after"), None, &mut &small_tar()[..])
            .unwrap();
        assert!(reserve.exists(), "{name}: the reserve was not made again");
        assert_clean(d.as_ref(), fs.path(), "after the disk had room again");
        d.remove(&lid("after")).unwrap();
    }
}
