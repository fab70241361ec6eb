//! What layers hold and how children see it: special modes and owners, devices and links,
//! long chains, deletions, recreations, renames and hard links, and parents that never change
//! under their children.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{ensure, Context, Result};

use super::support::*;
use super::{Case, Ctx};
use crate::tree_snapshot::{Compare, Snapshot};

/// The content cases.
pub const CASES: &[Case] = &[
    Case {
        name: "content::special_modes_seen_through_child",
        run: special_modes_seen_through_child,
    },
    Case {
        name: "content::chain_of_128_layers",
        run: chain_of_128_layers,
    },
    Case {
        name: "content::opaque_directory_recreated_128_times",
        run: opaque_directory_recreated_128_times,
    },
    Case {
        name: "content::same_size_rewrite_in_same_second_is_detected",
        run: same_size_rewrite_in_same_second_is_detected,
    },
    Case {
        name: "content::recreating_a_lower_directory",
        run: recreating_a_lower_directory,
    },
    Case {
        name: "content::chown_chmod_of_lower_entries",
        run: chown_chmod_of_lower_entries,
    },
    Case {
        name: "content::deletions_persist_through_empty_layer",
        run: deletions_persist_through_empty_layer,
    },
    Case {
        name: "content::file_moved_by_hardlink_and_unlink",
        run: file_moved_by_hardlink_and_unlink,
    },
    Case {
        name: "content::renames",
        run: renames,
    },
    Case {
        name: "content::hardlinks_within_a_layer",
        run: hardlinks_within_a_layer,
    },
    Case {
        name: "content::devices_fifos_symlinks_through_layers",
        run: devices_fifos_symlinks_through_layers,
    },
    Case {
        name: "content::parent_unchanged_by_child_writes",
        run: parent_unchanged_by_child_writes,
    },
];

/// Fails unless `/rel` of `tree` has this kind, mode and owner.
fn expect_node(
    tree: &Snapshot,
    rel: &str,
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let n = node(tree, rel)?;
    ensure!(
        n.kind == kind && n.mode == mode && n.uid == uid && n.gid == gid,
        "/{rel} is {} {:04o} {}:{}, want {kind} {mode:04o} {uid}:{gid}",
        n.kind,
        n.mode,
        n.uid,
        n.gid
    );
    Ok(())
}

/// The sorted names in directory `dir`.
fn names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        out.push(e?.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

/// Fails unless `path` holds exactly `want`.
fn expect_content(path: &Path, want: &str) -> Result<()> {
    let got = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        got == want.as_bytes(),
        "{} holds {:?}, want {want:?}",
        path.display(),
        String::from_utf8_lossy(&got)
    );
    Ok(())
}

fn special_modes_seen_through_child(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| {
        std::fs::create_dir(p.join("sticky"))?;
        // chown clears setuid and setgid, so it comes first
        chown(&p.join("sticky"), 1, 2)?;
        chmod(&p.join("sticky"), 0o1705)?;
        write(&p.join("suid"), "set-user-id")?;
        chown(&p.join("suid"), 1, 2)?;
        chmod(&p.join("suid"), 0o4222)?;
        std::fs::create_dir(p.join("sgid"))?;
        chmod(&p.join("sgid"), 0o2755)?;
        write(&p.join("sgid/inner"), "inside")?;
        set_xattr(&p.join("sticky"), "user.seen", b"by children")?;
        set_xattr(&p.join("suid"), "trusted.seen", b"by children too")?;
        chown(p, 5, 6)?;
        chmod(p, 0o700)
    })?;
    let expected: [(&str, char, u32, u32, u32); 4] = [
        ("", 'd', 0o700, 5, 6),
        ("sticky", 'd', 0o1705, 1, 2),
        ("suid", 'f', 0o4222, 1, 2),
        ("sgid", 'd', 0o2755, 0, 0),
    ];
    let parent_view = view(ctx, &base)?;
    for (rel, kind, mode, uid, gid) in expected {
        expect_node(&parent_view, rel, kind, mode, uid, gid).context("in the base layer")?;
    }
    let child = id("child");
    ctx.d().create(&child, Some(&base), &rw())?;
    let child_view = view(ctx, &child)?;
    for (rel, kind, mode, uid, gid) in expected {
        expect_node(&child_view, rel, kind, mode, uid, gid).context("seen through the child")?;
    }
    // A backend may give a child a root directory of its own (an overlay upper dir), so only
    // its mode and owner must follow the parent, as checked above; everything else must not
    // differ at all.
    same_tree_but_root_mtime(
        &parent_view,
        &child_view,
        "base (left) and its child (right)",
    )?;
    expect_changes(ctx, &child, &[])?;
    // and once more through a child that wrote something
    with_mount(ctx.d(), &child, |p| write(&p.join("extra"), "x"))?;
    let grandchild = id("grandchild");
    ctx.d().create(&grandchild, Some(&child), &rw())?;
    let g = view(ctx, &grandchild)?;
    for (rel, kind, mode, uid, gid) in expected {
        expect_node(&g, rel, kind, mode, uid, gid).context("seen through the grandchild")?;
    }
    Ok(())
}

fn chain_name(i: usize) -> String {
    format!("l{i:03}")
}

fn chain_of_128_layers(ctx: &mut Ctx) -> Result<()> {
    const N: usize = 128;
    for i in 0..N {
        let parent = (i > 0).then(|| chain_name(i - 1));
        layer(ctx, &chain_name(i), parent.as_deref(), |p| {
            write(&p.join(format!("f{i}")), i.to_string())?;
            write(&p.join("shared"), i.to_string())
        })?;
    }
    let check = |upto: usize| -> Result<()> {
        with_mount(ctx.d(), &id(&chain_name(upto)), |p| {
            let mut want: Vec<String> = (0..=upto).map(|i| format!("f{i}")).collect();
            want.push("shared".into());
            want.sort();
            let got = names(p)?;
            ensure!(
                got == want,
                "layer {} holds {got:?}, want {want:?}",
                chain_name(upto)
            );
            for i in 0..=upto {
                expect_content(&p.join(format!("f{i}")), &i.to_string())?;
            }
            expect_content(&p.join("shared"), &upto.to_string())
        })
        .with_context(|| format!("layer {}", chain_name(upto)))
    };
    check(N - 1)?;
    // later layers did not change earlier ones
    check(64)?;
    check(0)?;
    expect_changes(ctx, &id(&chain_name(0)), &["A /f0", "A /shared"])?;
    // 1 and 2: "0" -> "1" is a same-size rewrite; 10: the size changes
    for i in [1, 2, 10, 64, 100, N - 1] {
        let a = format!("A /f{i}");
        expect_changes(ctx, &id(&chain_name(i)), &[a.as_str(), "C /shared"])?;
    }
    Ok(())
}

fn opaque_directory_recreated_128_times(ctx: &mut Ctx) -> Result<()> {
    const N: usize = 128;
    for i in 0..N {
        let parent = (i > 0).then(|| chain_name(i - 1));
        layer(ctx, &chain_name(i), parent.as_deref(), |p| {
            let d = p.join("d");
            if i > 0 {
                std::fs::remove_dir_all(&d).with_context(|| format!("rm -rf {}", d.display()))?;
            }
            std::fs::create_dir(&d)?;
            write(&d.join(format!("f{i}")), format!("generation {i}"))
        })?;
    }
    let top = id(&chain_name(N - 1));
    with_mount(ctx.d(), &top, |p| {
        let root = names(p)?;
        ensure!(root == ["d"], "the top's root holds {root:?}, want [\"d\"]");
        let got = names(&p.join("d"))?;
        ensure!(
            got == ["f127"],
            "the top's d holds {got:?}, want [\"f127\"]"
        );
        expect_content(&p.join("d/f127"), "generation 127")
    })?;
    let mid = id(&chain_name(64));
    expect_changes(ctx, &mid, &["C /d", "D /d/f63", "A /d/f64"])?;
    with_mount(ctx.d(), &mid, |p| {
        let got = names(&p.join("d"))?;
        ensure!(
            got == ["f64"],
            "layer l064's d holds {got:?}, want [\"f64\"]"
        );
        Ok(())
    })?;
    round_trip(ctx, &mid, "copy-of-l064")?;
    Ok(())
}

fn same_size_rewrite_in_same_second_is_detected(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| {
        write(&p.join("f"), "aaaa")?;
        write(&p.join("g"), "aaaa")
    })?;
    let before = view(ctx, &base)?;
    let g_mtime = node(&before, "g")?.mtime_ns;
    let child = layer(ctx, "child", Some("base"), |p| {
        // no sleep: the rewrite lands within the same second as the original write
        write(&p.join("f"), "bbbb")?;
        write(&p.join("g"), "bbbb")?;
        // g is what a coarse timestamp clock gives: size and mtime exactly the parent's
        let sec = (g_mtime.div_euclid(1_000_000_000)) as i64;
        let nsec = (g_mtime.rem_euclid(1_000_000_000)) as i64;
        set_mtime(&p.join("g"), sec, nsec)
    })?;
    let after = view(ctx, &child)?;
    for rel in ["f", "g"] {
        let (old, new) = (node(&before, rel)?, node(&after, rel)?);
        ensure!(
            old.size == new.size && old.content != new.content,
            "/{rel}: the rewrite is not a same-size rewrite ({old:?} -> {new:?})"
        );
    }
    ensure!(
        node(&after, "g")?.mtime_ns == g_mtime,
        "the child's /g does not keep the parent's mtime"
    );
    expect_changes(ctx, &child, &["C /f", "C /g"])?;
    let copy = round_trip(ctx, &child, "copy")?;
    with_mount(ctx.d(), &copy, |p| {
        expect_content(&p.join("f"), "bbbb")?;
        expect_content(&p.join("g"), "bbbb")
    })
}

fn recreating_a_lower_directory(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| {
        write(&p.join("d/x"), "x")?;
        write(&p.join("d/y"), "y")
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        std::fs::remove_dir_all(p.join("d"))?;
        std::fs::create_dir(p.join("d"))?;
        write(&p.join("d/z"), "z")
    })?;
    with_mount(ctx.d(), &child, |p| {
        let got = names(&p.join("d"))?;
        ensure!(got == ["z"], "the child's d holds {got:?}, want [\"z\"]");
        Ok(())
    })?;
    expect_changes(ctx, &child, &["C /d", "D /d/x", "D /d/y", "A /d/z"])?;
    round_trip(ctx, &child, "copy")?;
    Ok(())
}

fn chown_chmod_of_lower_entries(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| {
        write(&p.join("a/f"), "file")?;
        write(&p.join("b/g"), "in b")?;
        write(&p.join("c/h"), "untouched")
    })?;
    let before = view(ctx, &base)?;
    let child = layer(ctx, "child", Some("base"), |p| {
        chown(&p.join("a/f"), 7, 8)?;
        chmod(&p.join("b"), 0o700)
    })?;
    let v = view(ctx, &child)?;
    expect_node(&v, "a/f", 'f', node(&before, "a/f")?.mode, 7, 8)?;
    expect_node(&v, "b", 'd', 0o700, 0, 0)?;
    ensure!(
        node(&v, "a/f")?.content == node(&before, "a/f")?.content,
        "chown changed the content of /a/f"
    );
    let after = view(ctx, &base)?;
    same_tree(
        &before,
        &after,
        Compare::default(),
        "base before (left) and after (right) its child's chown and chmod",
    )?;
    expect_changes(ctx, &child, &["C /a", "C /a/f", "C /b"])?;
    round_trip(ctx, &child, "copy")?;
    Ok(())
}

fn deletions_persist_through_empty_layer(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| {
        write(&p.join("f"), "file")?;
        write(&p.join("e/x"), "x")?;
        write(&p.join("e/sub/y"), "y")?;
        write(&p.join("keep"), "keep")
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        std::fs::remove_file(p.join("f"))?;
        std::fs::remove_dir_all(p.join("e"))?;
        Ok(())
    })?;
    expect_changes(ctx, &child, &["D /e", "D /f"])?;
    let grandchild = id("grandchild");
    ctx.d().create(&grandchild, Some(&child), &rw())?;
    with_mount(ctx.d(), &grandchild, |p| {
        absent(&p.join("f"))?;
        absent(&p.join("e"))?;
        expect_content(&p.join("keep"), "keep")
    })?;
    expect_changes(ctx, &grandchild, &[])?;
    same_tree_but_root_mtime(
        &view(ctx, &child)?,
        &view(ctx, &grandchild)?,
        "child (left) and its empty child (right)",
    )
}

fn file_moved_by_hardlink_and_unlink(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| {
        write(&p.join("a/f"), "moved content")
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        std::fs::create_dir(p.join("b"))?;
        std::fs::hard_link(p.join("a/f"), p.join("b/f"))?;
        std::fs::remove_file(p.join("a/f"))?;
        Ok(())
    })?;
    with_mount(ctx.d(), &child, |p| {
        absent(&p.join("a/f"))?;
        expect_content(&p.join("b/f"), "moved content")?;
        let nlink = std::fs::symlink_metadata(p.join("b/f"))?.nlink();
        ensure!(nlink == 1, "b/f has {nlink} links after a/f was unlinked");
        Ok(())
    })?;
    expect_changes(ctx, &child, &["C /a", "D /a/f", "A /b", "A /b/f"])?;
    round_trip(ctx, &child, "copy")?;
    Ok(())
}

fn renames(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| {
        write(&p.join("old.txt"), "a file")?;
        write(&p.join("olddir/x"), "x")?;
        write(&p.join("olddir/sub/y"), "y")?;
        write(&p.join("stay/z"), "z")
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        rename(&p.join("old.txt"), &p.join("new.txt"))?;
        rename(&p.join("olddir"), &p.join("newdir"))?;
        rename(&p.join("stay/z"), &p.join("stay/moved"))?;
        Ok(())
    })?;
    with_mount(ctx.d(), &child, |p| {
        absent(&p.join("old.txt"))?;
        absent(&p.join("olddir"))?;
        expect_content(&p.join("new.txt"), "a file")?;
        expect_content(&p.join("newdir/x"), "x")?;
        expect_content(&p.join("newdir/sub/y"), "y")?;
        expect_content(&p.join("stay/moved"), "z")
    })?;
    expect_changes(
        ctx,
        &child,
        &[
            "A /new.txt",
            "A /newdir",
            "A /newdir/sub",
            "A /newdir/sub/y",
            "A /newdir/x",
            "D /old.txt",
            "D /olddir",
            "C /stay",
            "A /stay/moved",
            "D /stay/z",
        ],
    )?;
    round_trip(ctx, &child, "copy")?;
    Ok(())
}

fn hardlinks_within_a_layer(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| write(&p.join("base.txt"), "base"))?;
    let child = layer(ctx, "child", Some("base"), |p| {
        write(&p.join("f"), vec![b'h'; 10_000])?;
        std::fs::hard_link(p.join("f"), p.join("g"))?;
        std::fs::create_dir(p.join("sub"))?;
        std::fs::hard_link(p.join("f"), p.join("sub/h"))?;
        write(&p.join("p"), vec![b'p'; 3_000])?;
        std::fs::hard_link(p.join("p"), p.join("q"))?;
        Ok(())
    })?;
    let check = |v: &Snapshot, what: &str| -> Result<()> {
        for (rel, group) in [
            ("f", "f"),
            ("g", "f"),
            ("sub/h", "f"),
            ("p", "p"),
            ("q", "p"),
        ] {
            let g = node(v, rel)?.link_group.clone();
            ensure!(
                g.as_deref() == Some(Path::new(group)),
                "{what}: /{rel} is linked with {g:?}, want /{group}\n{}",
                v.render(40)
            );
        }
        Ok(())
    };
    check(&view(ctx, &child)?, "child")?;
    ensure!(
        ctx.d().diff_size(&child, None)? == 13_000,
        "diff_size of the child is {}, want 13000 (each inode once)",
        ctx.d().diff_size(&child, None)?
    );
    let copy = round_trip(ctx, &child, "copy")?;
    check(&view(ctx, &copy)?, "after diff and apply")
}

fn devices_fifos_symlinks_through_layers(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| {
        std::fs::create_dir_all(p.join("dev"))?;
        std::fs::create_dir_all(p.join("links"))?;
        mknod(&p.join("dev/null"), 'c', 1, 3)?;
        mknod(&p.join("dev/loop0"), 'b', 7, 0)?;
        mknod(&p.join("fifo"), 'p', 0, 0)?;
        write(&p.join("target"), "the target")?;
        link("../target", &p.join("links/rel"))?;
        link("/etc/passwd", &p.join("links/abs"))?;
        link("does/not/exist", &p.join("links/dangling"))?;
        link("../dev", &p.join("links/dir"))
    })?;
    let child = id("child");
    ctx.d().create(&child, Some(&base), &rw())?;
    let (b, c) = (view(ctx, &base)?, view(ctx, &child)?);
    for v in [&b, &c] {
        let want = [
            ("dev/null", 'c', rustix::fs::makedev(1, 3), ""),
            ("dev/loop0", 'b', rustix::fs::makedev(7, 0), ""),
            ("fifo", 'p', 0, ""),
            ("links/rel", 'l', 0, "../target"),
            ("links/abs", 'l', 0, "/etc/passwd"),
            ("links/dangling", 'l', 0, "does/not/exist"),
            ("links/dir", 'l', 0, "../dev"),
        ];
        for (rel, kind, rdev, target) in want {
            let n = node(v, rel)?;
            ensure!(
                n.kind == kind && (kind == 'l' || n.rdev == rdev) && n.content == target,
                "/{rel} is {n:?}, want kind {kind} rdev {rdev:#x} target {target:?}"
            );
        }
    }
    same_tree_but_root_mtime(&b, &c, "base (left) and its child (right)")?;
    expect_changes(ctx, &child, &[])?;
    // the whole base layer through diff and apply
    round_trip(ctx, &base, "base-copy")?;
    // a child that changes the types, numbers and targets
    let child2 = layer(ctx, "child2", Some("base"), |p| {
        std::fs::remove_file(p.join("fifo"))?;
        mknod(&p.join("fifo"), 'c', 1, 5)?;
        std::fs::remove_file(p.join("dev/loop0"))?;
        mknod(&p.join("dev/loop0"), 'b', 7, 1)?;
        mknod(&p.join("dev/pipe"), 'p', 0, 0)?;
        std::fs::remove_file(p.join("links/abs"))?;
        link("/etc/hostname", &p.join("links/abs"))?;
        std::fs::remove_file(p.join("links/dangling"))?;
        std::fs::remove_file(p.join("target"))?;
        link("links/rel", &p.join("target"))
    })?;
    expect_changes(
        ctx,
        &child2,
        &[
            "C /dev",
            "C /dev/loop0",
            "A /dev/pipe",
            "C /fifo",
            "C /links",
            "C /links/abs",
            "D /links/dangling",
            "C /target",
        ],
    )?;
    round_trip(ctx, &child2, "child2-copy")?;
    Ok(())
}

fn parent_unchanged_by_child_writes(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| {
        for i in 0..20 {
            write(
                &p.join(format!("dir{}/file{i}", i % 4)),
                format!("content {i}"),
            )?;
        }
        write(&p.join("big"), vec![b'b'; 300_000])?;
        write(&p.join("linked"), "shared inode")?;
        std::fs::hard_link(p.join("linked"), p.join("linked2"))?;
        link("linked", &p.join("symlink"))?;
        set_xattr(&p.join("dir0"), "user.dir", b"dir value")?;
        set_xattr(&p.join("big"), "user.file", b"file value")?;
        set_xattr(&p.join("big"), "trusted.file", b"trusted value")?;
        write(&p.join("suid"), "s")?;
        chmod(&p.join("suid"), 0o4755)?;
        mknod(&p.join("fifo"), 'p', 0, 0)?;
        chmod(p, 0o751)
    })?;
    let before = view(ctx, &base)?;
    layer(ctx, "child", Some("base"), |p| {
        for i in 0..20 {
            write(
                &p.join(format!("dir{}/file{i}", i % 4)),
                format!("rewritten {i}!"),
            )?;
        }
        std::fs::remove_dir_all(p.join("dir1"))?;
        rename(&p.join("dir2"), &p.join("dir2-renamed"))?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(p.join("big"))?
            .set_len(10)?;
        std::fs::write(p.join("linked2"), "through the second name")?;
        // through the symlink: the child's `linked`, never the parent's
        std::fs::write(p.join("symlink"), "through the symlink")?;
        std::fs::hard_link(p.join("suid"), p.join("suid-link"))?;
        chown(&p.join("suid"), 9, 9)?;
        chmod(&p.join("dir0"), 0o700)?;
        remove_xattr(&p.join("dir0"), "user.dir")?;
        set_xattr(&p.join("big"), "user.file", b"changed")?;
        remove_xattr(&p.join("big"), "trusted.file")?;
        std::fs::remove_file(p.join("fifo"))?;
        chmod(p, 0o700)?;
        chown(p, 3, 3)?;
        set_mtime(&p.join("dir3"), 1, 1)?;
        for i in 0..50 {
            write(&p.join(format!("new/{i}")), vec![b'n'; 1000 * i])?;
        }
        Ok(())
    })?;
    let after = view(ctx, &base)?;
    same_tree(
        &before,
        &after,
        Compare::default(),
        "base before (left) and after (right) its child wrote",
    )
}
