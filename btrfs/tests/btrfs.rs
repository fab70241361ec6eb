//! btrfs beyond the shared suite: subvolumes made inside a layer go with it, and qgroup
//! limits. Runs as root on a btrfs loop image.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::io::Write;
use std::path::Path;
use std::process::Command;

use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};
use graphdriver_conformance::fixture::{run, ScratchFs};

fn scratch() -> ScratchFs {
    ScratchFs::new(Path::new("/var/tmp/graphdriver-test"), "btrfs", 2 << 30, "").unwrap()
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

#[test]
fn a_subvolume_created_inside_a_mounted_layer_is_gone_after_remove() {
    let fs = scratch();
    let d = graphdriver_btrfs::open(fs.path(), &Default::default()).unwrap();
    let base = id("base");
    d.create(&base, None, &CreateOpts::default()).unwrap();
    let ctr = id("ctr");
    d.create(
        &ctr,
        Some(&base),
        &CreateOpts {
            read_write: true,
            ..CreateOpts::default()
        },
    )
    .unwrap();
    let p = d.get(&ctr, &MountOpts::default()).unwrap();
    // what a container running btrfs tools (or docker-in-docker) does
    run(Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(p.join("inner")))
    .unwrap();
    std::fs::create_dir(p.join("inner/deeper")).unwrap();
    run(Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(p.join("inner/deeper/nested")))
    .unwrap();
    std::fs::write(p.join("inner/deeper/nested/file"), "x").unwrap();
    d.put(&ctr).unwrap();
    d.remove(&ctr).unwrap();
    let listed = run(Command::new("btrfs")
        .args(["subvolume", "list", "-o"])
        .arg(fs.path().join("btrfs/subvolumes")))
    .unwrap();
    assert!(
        !listed.contains("inner"),
        "subvolumes left behind:\n{listed}"
    );
    assert!(!fs.path().join("btrfs/subvolumes/ctr").exists());
    d.remove(&base).unwrap();
}

#[test]
fn a_50_mib_limit_holds_25_mib_and_refuses_50_more_with_edquot() {
    let fs = scratch();
    let d = graphdriver_btrfs::open(fs.path(), &Default::default()).unwrap();
    let base = id("base");
    d.create(&base, None, &CreateOpts::default()).unwrap();
    let l = id("limited");
    let opts = CreateOpts {
        read_write: true,
        size_limit: Some(50 << 20),
        ..CreateOpts::default()
    };
    d.create(&l, Some(&base), &opts).unwrap();
    assert!(
        d.status()
            .iter()
            .any(|(k, v)| k == "Quota" && v.starts_with("on")),
        "{:?}",
        d.status()
    );
    let p = d.get(&l, &MountOpts::default()).unwrap();
    let write = |name: &str, mib: usize| -> std::io::Result<()> {
        let mut f = std::fs::File::create(p.join(name))?;
        let chunk = vec![0x33u8; 1 << 20];
        for _ in 0..mib {
            f.write_all(&chunk)?;
            f.sync_data()?;
        }
        Ok(())
    };
    write("a", 25).expect("25 MiB fit in a 50 MiB limit");
    let e = write("b", 50).expect_err("50 MiB more must not fit");
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    d.put(&l).unwrap();
    let used = d
        .backend()
        .usage(&l)
        .unwrap()
        .expect("usage from the qgroup");
    assert!(
        (25 << 20..=51 << 20).contains(&used),
        "qgroup says {used} bytes"
    );
    // the driver's account is the qgroup's (after a sync)
    let account = d
        .disk_usage(&l)
        .unwrap()
        .expect("an account with qgroups on");
    assert!(
        (25 << 20..=51 << 20).contains(&account),
        "disk_usage says {account} bytes"
    );
    // once a child shares its extents, the layer's exclusive bytes say little: no account
    let child = LayerId::new("limited-child").unwrap();
    d.create(&child, Some(&l), &CreateOpts::default()).unwrap();
    assert_eq!(d.disk_usage(&l).unwrap(), None);
}
