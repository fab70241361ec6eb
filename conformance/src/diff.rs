//! Changes, diffs and applies: `docker diff` semantics, OCI whiteouts, round trips that keep
//! every bit of metadata, deterministic export, and GNU tar in both directions.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use graphdriver_api::LayerId;

use super::support::*;
use super::{Case, Ctx, Skip};
use crate::tree_snapshot::{Compare, Snapshot};

/// The diff cases.
pub const CASES: &[Case] = &[
    Case {
        name: "diff::diff_then_apply_round_trips",
        run: diff_then_apply_round_trips,
    },
    Case {
        name: "diff::changes_report_ancestors_once",
        run: changes_report_ancestors_once,
    },
    Case {
        name: "diff::deleted_directory_is_one_change",
        run: deleted_directory_is_one_change,
    },
    Case {
        name: "diff::changes_of_a_root_layer_are_all_added",
        run: changes_of_a_root_layer_are_all_added,
    },
    Case {
        name: "diff::export_is_deterministic",
        run: export_is_deterministic,
    },
    Case {
        name: "diff::whiteouts_delete_lower_entries",
        run: whiteouts_delete_lower_entries,
    },
    Case {
        name: "diff::opaque_marker_clears_only_lower_entries",
        run: opaque_marker_clears_only_lower_entries,
    },
    Case {
        name: "diff::whiteout_round_trip",
        run: whiteout_round_trip,
    },
    Case {
        name: "diff::xattrs_round_trip",
        run: xattrs_round_trip,
    },
    Case {
        name: "diff::long_names_and_nanosecond_mtimes_round_trip",
        run: long_names_and_nanosecond_mtimes_round_trip,
    },
    Case {
        name: "diff::sparse_file_round_trip",
        run: sparse_file_round_trip,
    },
    Case {
        name: "diff::gnu_tar_archive_applies",
        run: gnu_tar_archive_applies,
    },
    Case {
        name: "diff::gnu_tar_extracts_our_export",
        run: gnu_tar_extracts_our_export,
    },
    Case {
        name: "diff::diff_against_another_layer",
        run: diff_against_another_layer,
    },
    Case {
        name: "diff::a_diff_dropped_unread_holds_nothing",
        run: a_diff_dropped_unread_holds_nothing,
    },
];

/// One entry of an archive, as its headers say.
#[derive(Debug)]
struct TarEntry {
    name: String,
    kind: graphdriver_kit::archive::Kind,
    size: u64,
    /// Its xattrs, in archive order.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TarEntry {
    fn xattr(&self, name: &str) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads an archive's headers. (Not the `tar` crate: it splits PAX records at newlines, and
/// binary xattr values hold them.)
fn tar_entries(bytes: &[u8]) -> Result<Vec<TarEntry>> {
    let mut r = graphdriver_kit::archive::TarReader::new(bytes);
    let mut out = Vec::new();
    while let Some(e) = r
        .next_entry()
        .map_err(|e| anyhow::anyhow!("read archive: {e}"))?
    {
        out.push(TarEntry {
            name: String::from_utf8_lossy(&e.name).into_owned(),
            kind: e.kind,
            size: e.size,
            xattrs: e.xattrs,
        });
    }
    Ok(out)
}

fn entry_names(entries: &[TarEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

/// A valid VFS_CAP_REVISION_2 `security.capability` value (20 bytes, little-endian):
/// revision 2 with the effective flag, permitted CAP_NET_BIND_SERVICE, nothing inheritable.
/// (`0x02000002` is not a valid header: the kernel refuses it with EINVAL.)
fn capability() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

/// Runs GNU tar; skips when there is none.
fn gnu_tar(args: &[&OsStr]) -> Result<()> {
    let out = match Command::new("tar").args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Skip("GNU tar is not installed".into()).into())
        }
        Err(e) => return Err(e).context("run tar"),
    };
    ensure!(
        out.status.success(),
        "tar {args:?} exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every path below `root`, each directory after its contents, the root last.
fn post_order(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if std::fs::symlink_metadata(root)?.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(root)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            out.extend(post_order(&n)?);
        }
    }
    out.push(root.to_owned());
    Ok(out)
}

/// Gives every entry below `root` and `root` itself its own mtime with nanoseconds.
fn stamp_tree(root: &Path) -> Result<()> {
    for (i, p) in post_order(root)?.iter().enumerate() {
        let i = i as i64;
        set_mtime(p, 1_600_000_000 + i * 3_601, 123_456_789 - i * 1_001)?;
    }
    Ok(())
}

/// A tree with every kind of entry and metadata an image carries, for the GNU tar cases.
fn rich_tree(p: &Path) -> Result<()> {
    std::fs::create_dir(p.join("a"))?;
    chown(&p.join("a"), 1, 2)?;
    chmod(&p.join("a"), 0o2755)?;
    set_xattr(&p.join("a"), "user.dir", b"dir value")?;
    set_xattr(&p.join("a"), "trusted.dir", b"trusted dir value")?;
    std::fs::create_dir(p.join("a/sticky"))?;
    chmod(&p.join("a/sticky"), 0o1777)?;
    write(&p.join("a/suid"), "setuid program")?;
    chmod(&p.join("a/suid"), 0o4755)?;
    write(&p.join("a/f"), "a file with xattrs and two names")?;
    chown(&p.join("a/f"), 1000, 1000)?;
    chmod(&p.join("a/f"), 0o640)?;
    set_xattr(&p.join("a/f"), "user.k", b"v\0binary\xff")?;
    set_xattr(&p.join("a/f"), "trusted.t", b"tv")?;
    write(&p.join("a/cap"), "capable")?;
    set_xattr(&p.join("a/cap"), "security.capability", &capability())?;
    std::fs::create_dir(p.join("b"))?;
    std::fs::hard_link(p.join("a/f"), p.join("b/hard"))?;
    link("../a/f", &p.join("b/sym"))?;
    link("/nonexistent/target", &p.join("b/abs"))?;
    mknod(&p.join("b/fifo"), 'p', 0, 0)?;
    mknod(&p.join("b/null"), 'c', 1, 3)?;
    write(&p.join("c/d/e/f/file"), vec![b'z'; 70_000])?;
    write(&p.join("c/empty"), "")?;
    std::fs::create_dir(p.join("c/emptydir"))?;
    chown(p, 0, 0)?;
    chmod(p, 0o750)?;
    set_xattr(p, "user.root", b"on the root")?;
    stamp_tree(p)
}

fn diff_then_apply_round_trips(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| {
        write(&p.join("keep.txt"), "unchanged")?;
        write(&p.join("mod/size.txt"), "short")?;
        write(&p.join("mod/same.txt"), "1234")?;
        write(&p.join("mod/trunc.txt"), "data")?;
        write(&p.join("mod/append.txt"), "a")?;
        write(&p.join("mod/meta.txt"), "meta")?;
        write(&p.join("del/file.txt"), "gone")?;
        write(&p.join("del/other.txt"), "stays")?;
        write(&p.join("deldir/a"), "a")?;
        write(&p.join("deldir/b/c"), "c")?;
        write(&p.join("xdir/inner"), "i")?;
        set_xattr(&p.join("xdir"), "user.keep", b"1")?;
        set_xattr(&p.join("xdir"), "user.drop", b"1")?;
        write(&p.join("xfile"), "x")?;
        set_xattr(&p.join("xfile"), "user.keep", b"1")?;
        set_xattr(&p.join("xfile"), "user.drop", b"1")?;
        link("keep.txt", &p.join("link.sym"))?;
        write(&p.join("t1"), "file, then a directory")?;
        write(&p.join("t2/x"), "directory, then a file")?;
        link("keep.txt", &p.join("t3"))
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        write(&p.join("mod/size.txt"), "much longer content than before")?;
        write(&p.join("mod/same.txt"), "5678")?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(p.join("mod/trunc.txt"))?
            .set_len(0)?;
        std::io::Write::write_all(
            &mut std::fs::OpenOptions::new()
                .append(true)
                .open(p.join("mod/append.txt"))?,
            b"b",
        )?;
        chown(&p.join("mod/meta.txt"), 3, 4)?;
        chmod(&p.join("mod/meta.txt"), 0o4755)?;
        std::fs::remove_file(p.join("del/file.txt"))?;
        std::fs::remove_dir_all(p.join("deldir"))?;
        remove_xattr(&p.join("xdir"), "user.drop")?;
        set_xattr(&p.join("xdir"), "user.new", b"new")?;
        remove_xattr(&p.join("xfile"), "user.drop")?;
        std::fs::remove_file(p.join("link.sym"))?;
        link("mod/size.txt", &p.join("link.sym"))?;
        std::fs::remove_file(p.join("t1"))?;
        write(&p.join("t1/inner"), "inner")?;
        std::fs::remove_dir_all(p.join("t2"))?;
        write(&p.join("t2"), "now a file")?;
        std::fs::remove_file(p.join("t3"))?;
        mknod(&p.join("t3"), 'p', 0, 0)?;
        let n = p.join("new");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        write(&n.join("nested/deep/er/file.bin"), data)?;
        std::fs::create_dir(n.join("sticky"))?;
        chmod(&n.join("sticky"), 0o1777)?;
        std::fs::create_dir(n.join("sgid"))?;
        chown(&n.join("sgid"), 0, 5)?;
        chmod(&n.join("sgid"), 0o2750)?;
        write(&n.join("suid"), "suid")?;
        chmod(&n.join("suid"), 0o4711)?;
        write(&n.join("sgidfile"), "sgid")?;
        chown(&n.join("sgidfile"), 1, 1)?;
        chmod(&n.join("sgidfile"), 0o2755)?;
        write(&n.join("exec.sh"), "#!/bin/sh\n")?;
        chmod(&n.join("exec.sh"), 0o755)?;
        write(&n.join("x.txt"), "xattrs")?;
        set_xattr(&n.join("x.txt"), "user.a", b"1")?;
        set_xattr(&n.join("x.txt"), "trusted.b", b"2")?;
        std::fs::create_dir(n.join("xd"))?;
        set_xattr(&n.join("xd"), "user.c", b"3")?;
        write(&n.join("h1"), "linked")?;
        std::fs::hard_link(n.join("h1"), n.join("h2"))?;
        write(&n.join("empty"), "")?;
        std::fs::create_dir(n.join("emptydir"))?;
        link("/usr/bin", &n.join("abs"))?;
        mknod(&n.join("fifo"), 'p', 0, 0)
    })?;
    expect_changes(
        ctx,
        &child,
        &[
            "C /del",
            "D /del/file.txt",
            "D /deldir",
            "C /link.sym",
            "C /mod",
            "C /mod/append.txt",
            "C /mod/meta.txt",
            "C /mod/same.txt",
            "C /mod/size.txt",
            "C /mod/trunc.txt",
            "A /new",
            "A /new/abs",
            "A /new/empty",
            "A /new/emptydir",
            "A /new/exec.sh",
            "A /new/fifo",
            "A /new/h1",
            "A /new/h2",
            "A /new/nested",
            "A /new/nested/deep",
            "A /new/nested/deep/er",
            "A /new/nested/deep/er/file.bin",
            "A /new/sgid",
            "A /new/sgidfile",
            "A /new/sticky",
            "A /new/suid",
            "A /new/x.txt",
            "A /new/xd",
            "C /t1",
            "A /t1/inner",
            "C /t2",
            "C /t3",
            "C /xdir",
            "C /xfile",
        ],
    )?;
    round_trip(ctx, &child, "copy")?;
    Ok(())
}

fn changes_report_ancestors_once(ctx: &mut Ctx) -> Result<()> {
    let depth_dir = |k: usize| -> String {
        (0..=k)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    layer(ctx, "base", None, |p| {
        std::fs::create_dir_all(p.join(depth_dir(9)))?;
        write(&p.join(depth_dir(9)).join("old"), "deleted by the child")?;
        write(&p.join(depth_dir(1)).join("old2"), "modified by the child")
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        for k in 0..10 {
            write(&p.join(depth_dir(k)).join("f"), format!("f at {k}"))?;
            write(&p.join(depth_dir(k)).join("g"), format!("g at {k}"))?;
        }
        write(&p.join("top"), "top")?;
        std::fs::remove_file(p.join(depth_dir(9)).join("old"))?;
        write(&p.join(depth_dir(1)).join("old2"), "modified!")
    })?;
    let mut want: Vec<(PathBuf, char)> = Vec::new();
    for k in 0..10 {
        let d = Path::new("/").join(depth_dir(k));
        want.push((d.clone(), 'C'));
        want.push((d.join("f"), 'A'));
        want.push((d.join("g"), 'A'));
    }
    want.push((Path::new("/").join(depth_dir(9)).join("old"), 'D'));
    want.push((Path::new("/").join(depth_dir(1)).join("old2"), 'C'));
    want.push(("/top".into(), 'A'));
    // sorted by path: component by component, so every directory precedes its contents
    want.sort();
    let want: Vec<String> = want
        .iter()
        .map(|(p, k)| format!("{k} {}", p.display()))
        .collect();
    let refs: Vec<&str> = want.iter().map(String::as_str).collect();
    expect_changes(ctx, &child, &refs)?;
    round_trip(ctx, &child, "copy")?;
    Ok(())
}

fn deleted_directory_is_one_change(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| {
        write(&p.join("parentdir/gone/a/b/c/file"), "deep")?;
        write(&p.join("parentdir/gone/a/x"), "x")?;
        write(&p.join("parentdir/gone/top"), "top")?;
        link("a", &p.join("parentdir/gone/link"))?;
        write(&p.join("parentdir/keep"), "keep")
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        std::fs::remove_dir_all(p.join("parentdir/gone")).context("rm -rf parentdir/gone")
    })?;
    expect_changes(ctx, &child, &["C /parentdir", "D /parentdir/gone"])?;
    let entries = tar_entries(&diff_bytes(ctx, &child)?)?;
    let names = entry_names(&entries);
    ensure!(
        names == ["parentdir/", "parentdir/.wh.gone"],
        "the diff holds {names:?}, want [\"parentdir/\", \"parentdir/.wh.gone\"]"
    );
    round_trip(ctx, &child, "copy")?;
    Ok(())
}

fn changes_of_a_root_layer_are_all_added(ctx: &mut Ctx) -> Result<()> {
    let solo = layer(ctx, "solo", None, |p| {
        write(&p.join("a/b/f"), "1234")?;
        write(&p.join("a/g"), "xy")?;
        write(&p.join("h"), "")?;
        std::fs::create_dir(p.join("empty"))?;
        link("h", &p.join("link"))?;
        mknod(&p.join("fifo"), 'p', 0, 0)
    })?;
    expect_changes(
        ctx,
        &solo,
        &[
            "A /a", "A /a/b", "A /a/b/f", "A /a/g", "A /empty", "A /fifo", "A /h", "A /link",
        ],
    )?;
    let size = ctx.d().diff_size(&solo, None)?;
    ensure!(size == 6, "diff_size is {size}, want 6 (4 + 2 bytes)");
    let entries = tar_entries(&diff_bytes(ctx, &solo)?)?;
    let names = entry_names(&entries);
    ensure!(
        names.first() == Some(&"./"),
        "a whole-tree export does not begin with ./: {names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    let want = [
        "./", "a/", "a/b/", "a/b/f", "a/g", "empty/", "fifo", "h", "link",
    ];
    ensure!(sorted == want, "the diff holds {names:?}, want {want:?}");
    for (i, n) in names.iter().enumerate() {
        let parent = Path::new(n.trim_end_matches('/')).parent();
        if let Some(parent) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let pname = format!("{}/", parent.display());
            ensure!(
                names[..i].contains(&pname.as_str()),
                "{n} comes before its parent {pname}: {names:?}"
            );
        }
    }
    round_trip(ctx, &solo, "copy")?;
    Ok(())
}

/// Fails unless two archives are byte-identical, naming the first differing entry.
fn same_bytes(a: &[u8], b: &[u8], what: &str) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let (ea, eb) = (tar_entries(a)?, tar_entries(b)?);
    bail!(
        "{what}: archives differ ({} and {} bytes, first difference at byte {at})\n  left:  {:?}\n  right: {:?}",
        a.len(),
        b.len(),
        ea,
        eb
    )
}

/// One step of building a tree.
type Step = Box<dyn Fn(&Path) -> Result<()>>;

fn export_is_deterministic(ctx: &mut Ctx) -> Result<()> {
    // Builds the same content in a different order each time.
    let build = |p: &Path, reverse: bool| -> Result<()> {
        let mut steps: Vec<Step> = vec![
            Box::new(|p| write(&p.join("dir/a"), "alpha")),
            Box::new(|p| write(&p.join("dir/b"), vec![b'b'; 5000])),
            Box::new(|p| write(&p.join("z"), "zulu")),
            Box::new(|p| link("dir/a", &p.join("sym"))),
            Box::new(|p| mknod(&p.join("fifo"), 'p', 0, 0)),
            Box::new(|p| {
                std::fs::create_dir_all(p.join("x/y"))?;
                set_xattr(&p.join("x"), "user.two", b"2")?;
                set_xattr(&p.join("x"), "user.one", b"1")
            }),
            Box::new(|p| {
                write(&p.join("linked/first"), "one inode")?;
                std::fs::hard_link(p.join("linked/first"), p.join("linked/second"))?;
                Ok(())
            }),
        ];
        if reverse {
            steps.reverse();
        }
        for s in &steps {
            s(p)?;
        }
        set_tree_mtimes(p, 1_700_000_000, 987_654_321)
    };
    let r1 = layer(ctx, "r1", None, |p| build(p, false))?;
    let r2 = layer(ctx, "r2", None, |p| build(p, true))?;
    let a = diff_bytes(ctx, &r1)?;
    let entries = tar_entries(&a)?;
    let names = entry_names(&entries);
    ensure!(
        names.len() == 12,
        "the export of r1 does not hold 12 entries: {names:?}"
    );
    // Filesystems list directories in different orders (r1 and r2 above share one, so the
    // comparison alone cannot tell): the same bytes everywhere need a canonical order.
    let sorted = names.windows(2).all(|w| {
        Path::new(w[0].trim_end_matches('/')).components()
            < Path::new(w[1].trim_end_matches('/')).components()
    });
    ensure!(sorted, "the export of r1 is not in path order: {names:?}");
    same_bytes(&a, &diff_bytes(ctx, &r1)?, "r1 exported twice")?;
    same_bytes(&a, &diff_bytes(ctx, &r2)?, "r1 and r2, built alike")?;
    // and children with whiteouts and modifications, built alike
    layer(ctx, "base", None, |p| {
        write(&p.join("x"), "deleted")?;
        write(&p.join("y"), "modified")?;
        write(&p.join("sub/w"), "deleted")?;
        write(&p.join("sub/v"), "kept")
    })?;
    let child = |ctx: &Ctx, name: &str, reverse: bool| -> Result<LayerId> {
        layer(ctx, name, Some("base"), |p| {
            let mut steps: Vec<Step> = vec![
                Box::new(|p| Ok(std::fs::remove_file(p.join("x"))?)),
                Box::new(|p| write(&p.join("y"), "modified!")),
                Box::new(|p| Ok(std::fs::remove_file(p.join("sub/w"))?)),
                Box::new(|p| write(&p.join("sub/new"), "new")),
                Box::new(|p| write(&p.join("z"), "added")),
            ];
            if reverse {
                steps.reverse();
            }
            for s in &steps {
                s(p)?;
            }
            for rel in ["y", "sub/new", "z", "sub"] {
                set_mtime(&p.join(rel), 1_700_000_100, 5)?;
            }
            Ok(())
        })
    };
    let c1 = child(ctx, "c1", false)?;
    let c2 = child(ctx, "c2", true)?;
    let a = diff_bytes(ctx, &c1)?;
    let names: Vec<String> = tar_entries(&a)?.into_iter().map(|e| e.name).collect();
    let want = [".wh.x", "sub/", "sub/new", "sub/.wh.w", "y", "z"];
    let (mut s1, mut s2) = (names.clone(), want.to_vec());
    s1.sort();
    s2.sort();
    ensure!(s1 == s2, "the diff of c1 holds {names:?}, want {want:?}");
    same_bytes(&a, &diff_bytes(ctx, &c1)?, "c1 exported twice")?;
    same_bytes(&a, &diff_bytes(ctx, &c2)?, "c1 and c2, built alike")
}

fn whiteouts_delete_lower_entries(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| {
        write(&p.join("f"), "deleted")?;
        write(&p.join("keep"), "kept")?;
        write(&p.join("sub/g"), "deleted")?;
        write(&p.join("sub/h"), "kept")?;
        write(&p.join("sub/gg"), "kept, its name begins like g's")
    })?;
    let before = view(ctx, &base)?;
    let tar = TarBuilder::default()
        .file(".wh.f", b"")
        .file("sub/.wh.g", b"")
        .finish();
    let (top, size) = apply_new(ctx, "top", Some(&base), &tar)?;
    ensure!(size == 0, "applying only whiteouts returned size {size}");
    let after = view(ctx, &top)?;
    for gone in ["f", "sub/g"] {
        ensure!(
            after.get(gone).is_none(),
            "/{gone} survived its whiteout:\n{}",
            after.render(20)
        );
    }
    for rel in ["keep", "sub", "sub/h", "sub/gg"] {
        let (mut a, mut b) = (node(&before, rel)?.clone(), node(&after, rel)?.clone());
        if rel == "sub" {
            // Deleting an entry updates its directory's mtime on any filesystem, and the
            // archive has no entry for sub/ that would set it; a directory's mtime alone is
            // not a change either.
            (a.mtime_ns, b.mtime_ns) = (0, 0);
        }
        ensure!(a == b, "/{rel} changed: {a:?} -> {b:?}");
    }
    ensure!(
        after.nodes.len() == before.nodes.len() - 2,
        "entries appeared:\n{}",
        after.render(20)
    );
    // no whiteout file is left in the layer itself
    with_mount(ctx.d(), &top, |p| {
        absent(&p.join(".wh.f"))?;
        absent(&p.join("sub/.wh.g"))
    })?;
    expect_changes(ctx, &top, &["D /f", "C /sub", "D /sub/g"])
}

fn opaque_marker_clears_only_lower_entries(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| {
        write(&p.join("d/old"), "lower")?;
        write(&p.join("d/sub/deep"), "lower, deeper")?;
        write(&p.join("e/old"), "lower")?;
        write(&p.join("other/x"), "untouched")
    })?;
    let before = view(ctx, &base)?;
    let tar = TarBuilder::default()
        .dir("d/")
        .file("d/new", b"from the archive")
        // after the entry it must not delete
        .file("d/.wh..wh..opq", b"")
        // and before one
        .dir("e/")
        .file("e/.wh..wh..opq", b"")
        .file("e/new2", b"also from the archive")
        .finish();
    let (top, _) = apply_new(ctx, "top", Some(&base), &tar)?;
    with_mount(ctx.d(), &top, |p| {
        for (dir, want) in [("d", "new"), ("e", "new2")] {
            let mut got: Vec<String> = std::fs::read_dir(p.join(dir))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()?;
            got.sort();
            ensure!(got == [want], "{dir} holds {got:?}, want [{want:?}]");
        }
        Ok(())
    })?;
    let after = view(ctx, &top)?;
    ensure!(
        node(&after, "d/new")?.size == 16 && node(&after, "e/new2")?.size == 21,
        "the archive's files lost data:\n{}",
        after.render(20)
    );
    for rel in ["other", "other/x"] {
        let (a, b) = (node(&before, rel)?, node(&after, rel)?);
        ensure!(a == b, "/{rel} changed: {a:?} -> {b:?}");
    }
    expect_changes(
        ctx,
        &top,
        &[
            "C /d",
            "A /d/new",
            "D /d/old",
            "D /d/sub",
            "C /e",
            "A /e/new2",
            "D /e/old",
        ],
    )
}

fn whiteout_round_trip(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| {
        write(&p.join("f"), "file")?;
        write(&p.join("gone/a"), "a")?;
        write(&p.join("gone/b/c"), "c")?;
        write(&p.join("keep/x"), "x")?;
        write(&p.join("keep/y"), "y")
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        std::fs::remove_file(p.join("f"))?;
        std::fs::remove_dir_all(p.join("gone"))?;
        std::fs::remove_file(p.join("keep/x"))?;
        Ok(())
    })?;
    let entries = tar_entries(&diff_bytes(ctx, &child)?)?;
    let mut whiteouts: Vec<&str> = entries
        .iter()
        .filter(|e| e.name.contains(".wh."))
        .map(|e| e.name.as_str())
        .collect();
    whiteouts.sort();
    let want = [".wh.f", ".wh.gone", "keep/.wh.x"];
    ensure!(
        whiteouts == want,
        "whiteouts in the diff: {whiteouts:?}, want {want:?} (all entries: {:?})",
        entry_names(&entries)
    );
    for e in entries.iter().filter(|e| e.name.contains(".wh.")) {
        ensure!(
            e.kind == graphdriver_kit::archive::Kind::Regular && e.size == 0,
            "whiteout {} is {:?} of {} bytes, want an empty regular file",
            e.name,
            e.kind,
            e.size
        );
    }
    ensure!(
        !entries.iter().any(|e| e.name.starts_with("gone/")),
        "the diff carries the contents of a deleted directory: {:?}",
        entry_names(&entries)
    );
    let copy = round_trip(ctx, &child, "copy")?;
    with_mount(ctx.d(), &copy, |p| {
        absent(&p.join("f"))?;
        absent(&p.join("gone"))?;
        absent(&p.join("keep/x"))?;
        ensure!(p.join("keep/y").exists(), "keep/y is gone");
        Ok(())
    })
}

/// Sets a backend-private xattr; `false` when the backend does not let one in at all.
fn set_private_xattr(path: &Path, name: &str) -> Result<bool> {
    let n = std::ffi::CString::new(name)?;
    match rustix::fs::lsetxattr(path, &n, b"private", rustix::fs::XattrFlags::empty()) {
        Ok(()) => Ok(true),
        Err(e)
            if [
                rustix::io::Errno::PERM,
                rustix::io::Errno::NOTSUP,
                rustix::io::Errno::OPNOTSUPP,
                rustix::io::Errno::INVAL,
            ]
            .contains(&e) =>
        {
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("set {name} on {}", path.display())),
    }
}

fn xattrs_round_trip(ctx: &mut Ctx) -> Result<()> {
    layer(ctx, "base", None, |p| {
        write(&p.join("lowerfile"), "lower")?;
        std::fs::create_dir(p.join("lowerdir"))?;
        Ok(())
    })?;
    let cap = capability();
    // Binary, with newlines and '=': PAX records are delimited by length, not by lines
    // (a capability mask can hold a 0x0a byte).
    let bin: &[u8] = b"\0\xff\x01 binary=\n12 x=y\n";
    let mut private = Vec::new();
    let child = layer(ctx, "child", Some("base"), |p| {
        write(&p.join("nf"), "new file")?;
        set_xattr(&p.join("nf"), "user.a", b"1")?;
        set_xattr(&p.join("nf"), "user.bin", bin)?;
        set_xattr(&p.join("nf"), "trusted.b", b"2")?;
        set_xattr(&p.join("nf"), "security.capability", &cap)?;
        std::fs::create_dir(p.join("nd"))?;
        set_xattr(&p.join("nd"), "user.d", b"dir")?;
        set_xattr(&p.join("nd"), "trusted.e", b"dir-trusted")?;
        set_xattr(&p.join("nd"), "security.capability", &cap)?;
        set_xattr(&p.join("lowerfile"), "user.added", b"x")?;
        set_xattr(&p.join("lowerfile"), "trusted.added", b"y")?;
        set_xattr(&p.join("lowerdir"), "user.ld", b"z")?;
        for (rel, name) in [
            ("nf", "trusted.overlay.test"),
            ("nd", "trusted.overlay.test"),
            ("nd", "user.overlay.test"),
        ] {
            if set_private_xattr(&p.join(rel), name)? {
                private.push((rel, name));
            }
        }
        Ok(())
    })?;
    let want_nf: Vec<(String, Vec<u8>)> = vec![
        ("security.capability".into(), cap.clone()),
        ("trusted.b".into(), b"2".to_vec()),
        ("user.a".into(), b"1".to_vec()),
        ("user.bin".into(), bin.to_vec()),
    ];
    let v = view(ctx, &child)?;
    ensure!(
        node(&v, "nf")?.xattrs == want_nf,
        "the child's /nf has xattrs {:?}, want {want_nf:?}",
        node(&v, "nf")?.xattrs
    );
    let entries = tar_entries(&diff_bytes(ctx, &child)?)?;
    let find = |name: &str| -> Result<&TarEntry> {
        entries
            .iter()
            .find(|e| e.name == name)
            .with_context(|| format!("no {name} in the diff: {:?}", entry_names(&entries)))
    };
    let expected: [(&str, &str, &[u8]); 10] = [
        ("nf", "user.a", b"1"),
        ("nf", "user.bin", bin),
        ("nf", "trusted.b", b"2"),
        ("nf", "security.capability", &cap),
        ("nd/", "user.d", b"dir"),
        ("nd/", "trusted.e", b"dir-trusted"),
        ("nd/", "security.capability", &cap),
        ("lowerfile", "user.added", b"x"),
        ("lowerfile", "trusted.added", b"y"),
        ("lowerdir/", "user.ld", b"z"),
    ];
    for (entry, key, value) in expected {
        let e = find(entry)?;
        ensure!(
            e.xattr(key) == Some(value),
            "{entry} carries {key} = {:?}, want {value:?} (xattrs: {:?})",
            e.xattr(key),
            e.xattrs
        );
    }
    for e in &entries {
        for (k, _) in &e.xattrs {
            let x = String::from_utf8_lossy(k);
            ensure!(
                !x.starts_with("trusted.overlay.") && !x.starts_with("user.overlay."),
                "{} exports the backend-private xattr {x} (set: {private:?})",
                e.name
            );
        }
    }
    let copy = round_trip(ctx, &child, "copy")?;
    let c = view(ctx, &copy)?;
    ensure!(
        node(&c, "nf")?.xattrs == want_nf,
        "after the round trip /nf has xattrs {:?}, want {want_nf:?}",
        node(&c, "nf")?.xattrs
    );
    Ok(())
}

/// Long names, deep paths, long link targets, large ids and nanosecond (also pre-1970 and
/// post-2242) mtimes, below `p`.
fn long_and_precise(p: &Path) -> Result<()> {
    let long = "n".repeat(200);
    write(&p.join(&long), "a 200-character name")?;
    let mut deep = p.join("deep");
    for i in 0..6 {
        deep.push(format!("{i}{}", "d".repeat(59)));
    }
    write(&deep.join("file-at-the-bottom"), "deep")?;
    let target = format!("{}/target", "t".repeat(150));
    link(&target, &p.join("longlink"))?;
    write(&p.join("bigids"), "owned by large ids")?;
    chown(&p.join("bigids"), 3_000_000, 100_000)?;
    std::fs::create_dir(p.join("bigidsdir"))?;
    chown(&p.join("bigidsdir"), 100_000, 3_000_000)?;
    write(&p.join("old"), "before 1970")?;
    write(&p.join("future"), "after 2242")?;
    for (i, path) in post_order(p)?.iter().enumerate() {
        set_mtime(path, 1_500_000_000 + i as i64, 123_456_789 + i as i64)?;
    }
    set_mtime(&p.join("old"), -31_536_000, 500_000_001)?;
    set_mtime(&p.join("future"), 9_000_000_000, 999_999_999)?;
    set_mtime(&p.join("longlink"), 1_234_567_890, 1)?;
    set_mtime(p, 1_600_000_000, 123_456_789)
}

fn long_names_and_nanosecond_mtimes_round_trip(ctx: &mut Ctx) -> Result<()> {
    // a whole layer (export of the tree, root included) ...
    let solo = layer(ctx, "solo", None, long_and_precise)?;
    let v = view(ctx, &solo)?;
    let deepest = v
        .nodes
        .keys()
        .map(|k| k.as_os_str().len())
        .max()
        .unwrap_or(0);
    ensure!(deepest > 300, "the deepest path is only {deepest} bytes");
    for (rel, ns) in [
        ("old", -31_536_000 * 1_000_000_000 + 500_000_001),
        ("future", 9_000_000_000 * 1_000_000_000 + 999_999_999),
        ("", 1_600_000_000 * 1_000_000_000 + 123_456_789),
    ] {
        let got = node(&v, rel)?.mtime_ns;
        ensure!(got == ns, "/{rel} has mtime {got} ns, want {ns}");
    }
    round_trip(ctx, &solo, "solo-copy")?;
    // ... and the same as changes over a parent
    layer(ctx, "base", None, |p| write(&p.join("lower"), "lower"))?;
    let child = layer(ctx, "child", Some("base"), |p| {
        std::fs::create_dir(p.join("in-child"))?;
        long_and_precise(&p.join("in-child"))
    })?;
    round_trip(ctx, &child, "child-copy")?;
    Ok(())
}

fn sparse_file_round_trip(ctx: &mut Ctx) -> Result<()> {
    const MIB: u64 = 1 << 20;
    layer(ctx, "base", None, |p| write(&p.join("small"), "small"))?;
    let child = layer(ctx, "child", Some("base"), |p| {
        let f = File::create(p.join("sparse"))?;
        f.write_all_at(&[b'A'; 4096], 0)?;
        f.write_all_at(&[b'B'; 4096], 40 * MIB)?;
        f.set_len(64 * MIB)?;
        Ok(())
    })?;
    let copy = round_trip(ctx, &child, "copy")?;
    with_mount(ctx.d(), &copy, |p| {
        let f = File::open(p.join("sparse"))?;
        let len = f.metadata()?.len();
        ensure!(
            len == 64 * MIB,
            "the copy is {len} bytes, want {}",
            64 * MIB
        );
        for (off, want) in [
            (0, b'A'),
            (40 * MIB, b'B'),
            (20 * MIB, 0),
            (64 * MIB - 4096, 0),
        ] {
            let mut buf = [0u8; 4096];
            f.read_exact_at(&mut buf, off)?;
            ensure!(
                buf.iter().all(|&b| b == want),
                "the copy's 4 KiB at {off} are not all {want:#x}"
            );
        }
        Ok(())
    })
}

fn gnu_tar_archive_applies(ctx: &mut Ctx) -> Result<()> {
    let src = ctx.work.join("src");
    std::fs::create_dir(&src)?;
    rich_tree(&src)?;
    let original = Snapshot::capture(&src)?;
    let archive = ctx.work.join("gnu.tar");
    gnu_tar(&[
        "--xattrs".as_ref(),
        "--xattrs-include=*".as_ref(),
        "--numeric-owner".as_ref(),
        "--format=posix".as_ref(),
        "-C".as_ref(),
        src.as_os_str(),
        "-cf".as_ref(),
        archive.as_os_str(),
        ".".as_ref(),
    ])?;
    ensure!(
        Snapshot::capture(&src)? == original,
        "GNU tar changed the tree it archived"
    );
    let bytes = std::fs::read(&archive)?;
    let (lid, size) = apply_new(ctx, "from-gnu-tar", None, &bytes)?;
    let layer_view = view(ctx, &lid)?;
    same_tree(
        &original,
        &layer_view,
        Compare::default(),
        "the tree GNU tar archived (left) and the layer it was applied to (right)",
    )?;
    let want = ctx.d().diff_size(&lid, None)?;
    ensure!(
        size == want,
        "apply_diff returned {size}, diff_size is {want}"
    );
    Ok(())
}

fn gnu_tar_extracts_our_export(ctx: &mut Ctx) -> Result<()> {
    let solo = layer(ctx, "solo", None, rich_tree)?;
    let archive = ctx.work.join("ours.tar");
    std::fs::write(&archive, diff_bytes(ctx, &solo)?)?;
    let out = ctx.work.join("out");
    std::fs::create_dir(&out)?;
    gnu_tar(&[
        "--xattrs".as_ref(),
        "--xattrs-include=*".as_ref(),
        "--numeric-owner".as_ref(),
        "-xpf".as_ref(),
        archive.as_os_str(),
        "-C".as_ref(),
        out.as_os_str(),
    ])?;
    same_tree(
        &view(ctx, &solo)?,
        &Snapshot::capture(&out)?,
        Compare::default(),
        "the layer (left) and GNU tar's extraction of its export (right)",
    )
}

fn diff_against_another_layer(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| {
        write(&p.join("x"), "deleted by mid")?;
        write(&p.join("y/1"), "deleted by top")?;
        write(&p.join("y/2"), "deleted by top")?;
        write(&p.join("keep"), "never touched")?;
        write(&p.join("m0"), "modified by mid")
    })?;
    layer(ctx, "mid", Some("base"), |p| {
        std::fs::remove_file(p.join("x"))?;
        write(&p.join("m"), "added by mid")?;
        write(&p.join("m0"), "mid was here")?;
        write(&p.join("tmp"), "added by mid, deleted by top")
    })?;
    let top = layer(ctx, "top", Some("mid"), |p| {
        write(&p.join("m"), "rewritten by top")?;
        write(&p.join("t"), "added by top")?;
        write(&p.join("sub/n"), "added by top")?;
        std::fs::remove_dir_all(p.join("y"))?;
        std::fs::remove_file(p.join("tmp"))?;
        Ok(())
    })?;
    let want = [
        "A /m", "C /m0", "A /sub", "A /sub/n", "A /t", "D /x", "D /y",
    ];
    let got: Vec<String> = ctx
        .d()
        .changes(&top, Some(&base))?
        .iter()
        .map(ToString::to_string)
        .collect();
    ensure!(
        got == want,
        "changes of top against base:\n  got:      {got:?}\n  expected: {want:?}"
    );
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut ctx.d().diff(&top, Some(&base))?, &mut tar)?;
    let entries = tar_entries(&tar)?;
    ensure!(
        !entries.iter().any(|e| e.name.contains("tmp")),
        "the diff against base mentions tmp, which base never had: {:?}",
        entry_names(&entries)
    );
    let (flat, size) = apply_new(ctx, "flat", Some(&base), &tar)?;
    let want_size = ctx.d().diff_size(&top, Some(&base))?;
    let flat_size = ctx.d().diff_size(&flat, None)?;
    ensure!(
        size == want_size && flat_size == want_size,
        "sizes differ: apply_diff returned {size}, diff_size of top against base is \
         {want_size}, of the flattened layer {flat_size}"
    );
    same_tree_but_root_mtime(
        &view(ctx, &top)?,
        &view(ctx, &flat)?,
        "top (left) and its diff against base applied over base (right)",
    )?;
    expect_changes(ctx, &flat, &want)
}

/// A runtime may stop reading an export half way (a cancelled `docker save`, a push that
/// failed): dropping the reader must stop the export, whichever way it reads the layer (a
/// whole tree, or a list of changes), and leave nothing holding the layer, which then
/// exports whole again and can be removed.
fn a_diff_dropped_unread_holds_nothing(ctx: &mut Ctx) -> Result<()> {
    // more archive than the export keeps in flight, so it waits for the reader
    let mib = vec![b'x'; 1 << 20];
    let base = layer(ctx, "base", None, |p| {
        (0..8).try_for_each(|i| write(&p.join(format!("d/{i}")), &mib))
    })?;
    let child = layer(ctx, "child", Some("base"), |p| {
        (0..8).try_for_each(|i| write(&p.join(format!("e/{i}")), &mib))
    })?;
    for lid in [&base, &child] {
        let mut r = ctx.d().diff(lid, None)?;
        let mut head = [0u8; 1024];
        r.read_exact(&mut head)
            .with_context(|| format!("read the start of the diff of {lid}"))?;
        drop(r);
        let whole = diff_bytes(ctx, lid)?;
        ensure!(
            whole.len() > 8 << 20,
            "the diff of {lid} after a dropped one is {} bytes",
            whole.len()
        );
    }
    let d = ctx.d();
    d.remove(&child)
        .context("remove the child after its diff was dropped")?;
    d.remove(&base)
        .context("remove the base after its diff was dropped")?;
    Ok(())
}
