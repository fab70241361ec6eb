//! Idmapped mounts and what a crash leaves of them (the conformance suite's `idmap::*`
//! cases check the behaviour on every backend).
#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::path::Path;

use graphdriver_api::idmap::IdMap;
use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};
use graphdriver_conformance::fixture::ScratchFs;
use graphdriver_kit::fs::mountinfo::MountTable;

#[test]
fn an_idmapped_copy_no_mount_count_records_is_detached_at_open() {
    let fs = ScratchFs::new(Path::new("/var/tmp/graphdriver-test"), "ext4", 1 << 30, "").unwrap();
    let root = fs.path().join("root");
    let id = LayerId::new("c").unwrap();
    let copy = {
        let d = graphdriver_vfs::open(&root, &Default::default()).unwrap();
        d.create(&id, None, &CreateOpts::default()).unwrap();
        let map = IdMap::single(0, 100_000, 65536).unwrap();
        let copy = d.get(&id, &MountOpts::mapped(map)).unwrap();
        assert!(MountTable::read().unwrap().contains(&copy));
        copy
    };
    // as a process killed between attaching the copy to a layer already mounted and counting
    // it leaves things: the count records the backend's mount, and no copy
    let count = std::fs::read_dir(root.join("vfs/.store/mounts"))
        .or_else(|_| std::fs::read_dir(root.join(".store/mounts")))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&count).unwrap();
    let boot = text.split(' ').next().unwrap();
    std::fs::write(&count, format!("{boot} 1\n")).unwrap();

    let d = graphdriver_vfs::open(&root, &Default::default()).unwrap();
    assert!(
        !MountTable::read().unwrap().contains(&copy),
        "the unrecorded idmapped copy at {} is still mounted",
        copy.display()
    );
    assert!(!copy.exists(), "its mount point is left");
    d.put(&id).unwrap();
    d.remove(&id).unwrap();
    d.cleanup().unwrap();
}
