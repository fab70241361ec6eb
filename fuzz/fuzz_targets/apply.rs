//! A whole apply (stage, then merge) of arbitrary bytes into a scratch layer on tmpfs, as
//! a full-tree backend (vfs, btrfs, zfs, devmapper) and as overlay2 (the layer an upper
//! directory over a lower one) do it; the first byte picks which.
//!
//! After each input: nothing outside the layer changed (a directory beside it that the
//! layer's symlinks point into, the lower layer, the scratch root), and an archive refused
//! before the merge left the layer exactly as it was. Never a panic.
#![no_main]

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use graphdriver_kit::archive::{apply, ApplyTarget, STAGING_PREFIX};
use libfuzzer_sys::fuzz_target;

struct Scratch {
    root: PathBuf,
    layer: PathBuf,
    lower: PathBuf,
    outside: PathBuf,
    staging_parent: PathBuf,
    outside_before: Tree,
    lower_before: Tree,
    /// The layer as `build_layer` last made it; None once an input may have changed it
    /// (then it is built again).
    layer_before: Mutex<Option<Tree>>,
}

/// Every entry below a directory: type and mode, owner, size, mtime, link target, and the
/// content of small files.
type Tree = BTreeMap<PathBuf, (u32, u32, u32, u64, i64, i64, Option<PathBuf>, Vec<u8>)>;

fn tree(dir: &Path) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let link = m
                .file_type()
                .is_symlink()
                .then(|| std::fs::read_link(&p).unwrap());
            let content = if m.is_file() && m.len() <= 4096 {
                std::fs::read(&p).unwrap_or_default()
            } else {
                Vec::new()
            };
            if m.is_dir() {
                todo.push(p.clone());
            }
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let v = (
                m.mode(),
                m.uid(),
                m.gid(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                link,
                content,
            );
            out.insert(rel, v);
        }
    }
    out
}

fn build_layer(s: &Scratch) {
    let _ = std::fs::remove_dir_all(&s.layer);
    let l = &s.layer;
    std::fs::create_dir_all(l.join("etc")).unwrap();
    std::fs::create_dir_all(l.join("usr/bin")).unwrap();
    std::fs::write(l.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(l.join("usr/bin/sh"), b"#!\n").unwrap();
    std::fs::hard_link(l.join("usr/bin/sh"), l.join("usr/bin/dash")).unwrap();
    symlink("usr/bin", l.join("bin")).unwrap();
    symlink("etc", l.join("conf")).unwrap();
    // Links out of the layer: an apply must never write through them.
    symlink("../outside", l.join("out-rel")).unwrap();
    symlink(&s.outside, l.join("out-abs")).unwrap();
    symlink("../../outside/secret", l.join("etc/secret")).unwrap();
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let root = PathBuf::from(format!(
            "/dev/shm/graphdriver-fuzz-apply-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let (layer, lower, outside) =
            (root.join("layer"), root.join("lower"), root.join("outside"));
        let staging_parent = root.join("staging");
        for d in [&lower, &outside, &staging_parent] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(outside.join("secret"), b"do not touch\n").unwrap();
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(lower.join("lib/modules")).unwrap();
        std::fs::write(lower.join("etc/lower-only"), b"lower\n").unwrap();
        std::fs::write(lower.join("lib/libc.so"), b"ELF").unwrap();
        symlink("../outside", lower.join("lib/out")).unwrap();
        let mut s = Scratch {
            outside_before: Tree::new(),
            lower_before: Tree::new(),
            layer_before: Mutex::new(None),
            root,
            layer,
            lower,
            outside,
            staging_parent,
        };
        s.outside_before = tree(&s.outside);
        s.lower_before = tree(&s.lower);
        s
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut archive)) = data.split_first() else {
        return;
    };
    let s = scratch();
    // An input refused before the merge leaves the layer as it was (checked below), so the
    // layer is built again only after one that may have changed it.
    let mut layer_before = s.layer_before.lock().unwrap();
    let before = layer_before.get_or_insert_with(|| {
        build_layer(s);
        tree(&s.layer)
    });
    let target = ApplyTarget {
        dir: s.layer.clone(),
        staging_parent: s.staging_parent.clone(),
        lowers: if mode & 1 == 1 {
            vec![s.lower.clone()]
        } else {
            Vec::new()
        },
        overlay_xattrs: Default::default(),
    };
    let staging = s.staging_parent.join(format!("{STAGING_PREFIX}fuzz"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).unwrap();
    let mut merging = false;
    let result = apply(&mut archive, &target, &staging, &mut || {
        merging = true;
        Ok(())
    });

    assert!(
        tree(&s.outside) == s.outside_before,
        "the apply wrote outside the layer"
    );
    assert!(
        tree(&s.lower) == s.lower_before,
        "the apply changed the lower layer"
    );
    let mut top: Vec<_> = std::fs::read_dir(&s.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["layer", "lower", "outside", "staging"],
        "the apply wrote beside the layer"
    );
    if result.is_err() && !merging {
        assert!(
            tree(&s.layer) == *before,
            "a refused archive changed the layer"
        );
    } else {
        *layer_before = None;
    }
    std::fs::remove_dir_all(&staging).unwrap();
});
