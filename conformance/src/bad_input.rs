//! Malformed and malicious archives, and crashes while applying: nothing outside the layer
//! changes, nothing half-applied is visible, and errors name the entry.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use graphdriver_api::{ChangeKind, CreateOpts, DriverError, LayerId, MountOpts};

use super::support::*;
use super::{Case, Ctx};
use crate::tree_snapshot::Compare;

/// The bad-input cases.
pub const CASES: &[Case] = &[
    Case {
        name: "bad_input::dotdot_paths_are_rejected",
        run: dotdot_paths_are_rejected,
    },
    Case {
        name: "bad_input::absolute_paths_are_rejected",
        run: absolute_paths_are_rejected,
    },
    Case {
        name: "bad_input::symlink_breakout_is_rejected",
        run: symlink_breakout_is_rejected,
    },
    Case {
        name: "bad_input::lower_symlink_cannot_redirect_writes",
        run: lower_symlink_cannot_redirect_writes,
    },
    Case {
        name: "bad_input::hardlink_breakout_is_rejected",
        run: hardlink_breakout_is_rejected,
    },
    Case {
        name: "bad_input::malformed_whiteouts_are_rejected",
        run: malformed_whiteouts_are_rejected,
    },
    Case {
        name: "bad_input::truncated_archive_changes_nothing",
        run: truncated_archive_changes_nothing,
    },
    Case {
        name: "bad_input::garbage_archive_changes_nothing",
        run: garbage_archive_changes_nothing,
    },
    Case {
        name: "bad_input::later_duplicate_entry_wins",
        run: later_duplicate_entry_wins,
    },
    Case {
        name: "bad_input::apply_to_parent_or_mounted_layer_fails",
        run: apply_to_parent_or_mounted_layer_fails,
    },
    Case {
        name: "bad_input::kill_during_apply_leaves_layer_unchanged",
        run: kill_during_apply_leaves_layer_unchanged,
    },
    Case {
        name: "bad_input::crash_during_merge_is_completed",
        run: crash_during_merge_is_completed,
    },
    Case {
        name: "bad_input::opaque_layer_root_hides_nothing",
        run: opaque_layer_root_hides_nothing,
    },
    Case {
        name: "bad_input::whiteouts_of_staging_names_are_rejected",
        run: whiteouts_of_staging_names_are_rejected,
    },
    Case {
        name: "bad_input::nul_in_names_is_rejected",
        run: nul_in_names_is_rejected,
    },
    Case {
        name: "bad_input::whited_out_parent_hides_what_was_below_it",
        run: whited_out_parent_hides_what_was_below_it,
    },
    Case {
        name: "bad_input::implied_parent_follows_lower_symlink_inside_layer",
        run: implied_parent_follows_lower_symlink_inside_layer,
    },
    Case {
        name: "bad_input::deep_path_over_a_parent_applies_in_linear_time",
        run: deep_path_over_a_parent_applies_in_linear_time,
    },
    Case {
        name: "bad_input::ten_thousand_deep_tree_applies_diffs_and_removes",
        run: ten_thousand_deep_tree_applies_diffs_and_removes,
    },
    Case {
        name: "bad_input::implied_directories_keep_their_mtime",
        run: implied_directories_keep_their_mtime,
    },
    Case {
        name: "bad_input::deep_parent_has_children_and_takes_deep_applies",
        run: deep_parent_has_children_and_takes_deep_applies,
    },
    Case {
        name: "bad_input::unfinishable_journal_entry_quarantines_one_layer",
        run: unfinishable_journal_entry_quarantines_one_layer,
    },
];

/// A layer with one file, to apply bad archives to; returns it and its tree.
fn target(ctx: &Ctx) -> Result<LayerId> {
    let base = layer(ctx, "base", None, |p| {
        write(&p.join("pre/existing"), "before")?;
        link("pre", &p.join("alias"))
    })?;
    let t = id("target");
    ctx.d().create(&t, Some(&base), &CreateOpts::default())?;
    Ok(t)
}

/// Applies `tar` to `t`, expecting `InvalidArchive` naming `entry`, and checks nothing changed
/// inside or outside the layer.
fn rejected(ctx: &Ctx, t: &LayerId, tar: &[u8], entry: &str, sentinel: &Sentinel) -> Result<()> {
    let before = view(ctx, t)?;
    let e = expect_err(
        ctx.d().apply_diff(t, None, &mut &tar[..]),
        &format!("apply archive with {entry:?}"),
        |e| matches!(e, DriverError::InvalidArchive { .. }),
    )?;
    if let DriverError::InvalidArchive { entry: named, .. } = &e {
        ensure!(
            named == entry,
            "error names entry {named:?}, want {entry:?} ({e})"
        );
    }
    same_tree(
        &before,
        &view(ctx, t)?,
        Compare::default(),
        "layer after a rejected archive",
    )?;
    sentinel.check()
}

fn dotdot_paths_are_rejected(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let s = Sentinel::new(ctx)?;
    for name in [
        "../evil",
        "a/../../evil",
        "./../evil",
        "pre/../../evil",
        "ok/..",
    ] {
        let tar = TarBuilder::default()
            .file("fine", b"x")
            .file(name, b"pwned")
            .finish();
        rejected(ctx, &t, &tar, name, &s)?;
    }
    absent(&ctx.root.join("../evil"))?;
    absent(&ctx.work.join("evil"))?;
    Ok(())
}

fn absolute_paths_are_rejected(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let s = Sentinel::new(ctx)?;
    let abs = s.path().join("evil").display().to_string();
    let tar = TarBuilder::default()
        .dir("d/")
        .file(&abs, b"pwned")
        .finish();
    rejected(ctx, &t, &tar, &abs, &s)?;
    let tar = TarBuilder::default()
        .symlink("l", "x")
        .hardlink("h", "/etc/passwd")
        .finish();
    rejected(ctx, &t, &tar, "h", &s)
}

fn symlink_breakout_is_rejected(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let s = Sentinel::new(ctx)?;
    let out = s.path().display().to_string();
    let tar = TarBuilder::default()
        .symlink("esc", &out)
        .file("esc/pwned", b"pwned")
        .finish();
    rejected(ctx, &t, &tar, "esc/pwned", &s)?;
    let up = format!("{}{}", "../".repeat(40), out.trim_start_matches('/'));
    let tar = TarBuilder::default()
        .symlink("up", &up)
        .file("up/keep", b"overwritten")
        .finish();
    rejected(ctx, &t, &tar, "up/keep", &s)?;
    // through a symlink to a directory inside the layer is refused too: tar entries name
    // real paths
    let tar = TarBuilder::default()
        .symlink("in", "pre")
        .file("in/x", b"x")
        .finish();
    rejected(ctx, &t, &tar, "in/x", &s)
}

fn lower_symlink_cannot_redirect_writes(ctx: &mut Ctx) -> Result<()> {
    let s = Sentinel::new(ctx)?;
    let out = s.path().display().to_string();
    let base = layer(ctx, "base", None, |p| link(&out, &p.join("lib")))?;
    let (t, _) = apply_new(
        ctx,
        "t",
        Some(&base),
        &TarBuilder::default()
            .file("lib/pwned", b"pwned")
            .file("lib/keep", b"overwritten")
            .finish(),
    )?;
    s.check()?;
    let tree = view(ctx, &t)?;
    ensure!(
        tree.nodes.keys().any(|k| k.ends_with("pwned")),
        "the archive's file is not in the layer:\n{}",
        tree.render(40)
    );
    Ok(())
}

fn hardlink_breakout_is_rejected(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let s = Sentinel::new(ctx)?;
    let keep = s.path().join("keep").display().to_string();
    for target in [
        "../../../../etc/passwd",
        keep.as_str(),
        "pre/../../x",
        "nowhere",
    ] {
        let tar = TarBuilder::default()
            .file("a", b"x")
            .hardlink("h", target)
            .finish();
        rejected(ctx, &t, &tar, "h", &s)?;
    }
    // A hard link to a symlink links the symlink itself; replacing it writes a new file.
    let tar = TarBuilder::default()
        .symlink("s", &keep)
        .hardlink("h", "s")
        .file("s", b"pwned")
        .finish();
    ctx.d().apply_diff(&t, None, &mut &tar[..])?;
    s.check()?;
    let tree = view(ctx, &t)?;
    let h = tree.get("h").context("no h")?;
    ensure!(
        h.kind == 'l' && h.content == keep,
        "h is {h:?}, want the symlink"
    );
    ensure!(
        tree.get("s").map(|n| n.kind) == Some('f'),
        "s is not a regular file"
    );
    // a hard link to a directory
    let tar = TarBuilder::default().dir("d/").hardlink("hd", "d").finish();
    let t2 = id("t2");
    ctx.d().create(&t2, None, &CreateOpts::default())?;
    rejected(ctx, &t2, &tar, "hd", &s)
}

fn malformed_whiteouts_are_rejected(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let s = Sentinel::new(ctx)?;
    for name in [".wh..", ".wh...", "pre/.wh.", "pre/.wh..wh.x"] {
        let tar = TarBuilder::default()
            .file("ok", b"1")
            .file(name, b"")
            .finish();
        rejected(ctx, &t, &tar, name, &s)?;
    }
    Ok(())
}

/// An archive with a few files, one of them large.
fn sample_archive(ctx: &Ctx) -> Result<Vec<u8>> {
    let src = layer(ctx, "src", None, |p| {
        for i in 0..20 {
            write(&p.join(format!("dir/f{i}")), vec![i as u8; 64 * 1024])?;
        }
        write(&p.join("big"), vec![9u8; 4 << 20])
    })?;
    diff_bytes(ctx, &src)
}

fn truncated_archive_changes_nothing(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let s = Sentinel::new(ctx)?;
    let tar = sample_archive(ctx)?;
    for cut in [tar.len() / 2, tar.len() - 2048 - 100, 700] {
        let before = view(ctx, &t)?;
        let e = expect_err(
            ctx.d().apply_diff(&t, None, &mut &tar[..cut]),
            "apply a truncated archive",
            |e| matches!(e, DriverError::InvalidArchive { .. }),
        )?;
        ensure!(
            e.to_string().contains("truncated"),
            "error does not say the archive is truncated: {e}"
        );
        same_tree(
            &before,
            &view(ctx, &t)?,
            Compare::default(),
            "layer after a truncated archive",
        )?;
    }
    s.check()?;
    // and the full archive still applies
    let size = ctx.d().apply_diff(&t, None, &mut &tar[..])?;
    ensure!(size == 20 * 64 * 1024 + (4 << 20), "applied size {size}");
    Ok(())
}

fn garbage_archive_changes_nothing(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let s = Sentinel::new(ctx)?;
    let before = view(ctx, &t)?;
    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    expect_err(
        ctx.d().apply_diff(&t, None, &mut &garbage[..]),
        "apply garbage",
        |e| matches!(e, DriverError::InvalidArchive { .. }),
    )?;
    // a valid header followed by garbage instead of the next header
    let mut tar = TarBuilder::default().file("first", b"1").finish();
    tar.truncate(1024);
    tar.extend_from_slice(&garbage[..2048]);
    expect_err(
        ctx.d().apply_diff(&t, None, &mut &tar[..]),
        "apply archive with a corrupt header",
        |e| matches!(e, DriverError::InvalidArchive { entry, .. } if entry == "first"),
    )?;
    same_tree(
        &before,
        &view(ctx, &t)?,
        Compare::default(),
        "layer after garbage",
    )?;
    s.check()
}

fn later_duplicate_entry_wins(ctx: &mut Ctx) -> Result<()> {
    let tar = TarBuilder::default()
        .file("f", b"first")
        .file("f", b"second")
        .file("x", b"file")
        .dir("x/")
        .file("x/inner", b"i")
        .dir("y/")
        .file("y/gone", b"g")
        .file("y", b"now a file")
        .finish();
    let (t, _) = apply_new(ctx, "t", None, &tar)?;
    let tree = view(ctx, &t)?;
    let want = [("f", 'f'), ("x", 'd'), ("x/inner", 'f'), ("y", 'f')];
    for (p, k) in want {
        ensure!(
            tree.get(p).map(|n| n.kind) == Some(k),
            "{p} is not {k}:\n{}",
            tree.render(20)
        );
    }
    ensure!(
        tree.get("y/gone").is_none(),
        "y/gone survived y becoming a file"
    );
    with_mount(ctx.d(), &t, |p| {
        ensure!(
            std::fs::read(p.join("f"))? == b"second",
            "f is not the later entry"
        );
        Ok(())
    })
}

fn apply_to_parent_or_mounted_layer_fails(ctx: &mut Ctx) -> Result<()> {
    let tar = TarBuilder::default().file("new", b"1").finish();
    let a = layer(ctx, "a", None, |p| write(&p.join("f"), "x"))?;
    ctx.d().create(&id("b"), Some(&a), &rw())?;
    expect_err(
        ctx.d().apply_diff(&a, None, &mut &tar[..]),
        "apply to a parent",
        |e| matches!(e, DriverError::HasChildren { .. }),
    )?;
    let c = id("c");
    ctx.d().create(&c, None, &rw())?;
    ctx.d().get(&c, &MountOpts::default())?;
    expect_err(
        ctx.d().apply_diff(&c, None, &mut &tar[..]),
        "apply to a mounted layer",
        |e| matches!(e, DriverError::Busy { .. }),
    )?;
    ctx.d().put(&c)?;
    ensure!(
        view(ctx, &a)?.get("new").is_none() && view(ctx, &c)?.get("new").is_none(),
        "a refused apply wrote"
    );
    Ok(())
}

fn kill_during_apply_leaves_layer_unchanged(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let tar = sample_archive(ctx)?;
    let before = view(ctx, &t)?;
    ctx.close();
    let mut child = ctx
        .helper()
        .args(["apply", "target"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    {
        let mut stdin = child.stdin.take().context("no stdin")?;
        stdin.write_all(&tar[..tar.len() / 2])?;
        stdin.flush()?;
        // let it extract what it was given, then kill it mid-archive
        std::thread::sleep(Duration::from_millis(300));
        child.kill()?;
        drop(stdin);
    }
    let status = child.wait()?;
    ensure!(
        status.code().is_none(),
        "helper apply was meant to be killed, exited {status:?}"
    );
    ctx.reopen()?;
    same_tree(
        &before,
        &view(ctx, &t)?,
        Compare::default(),
        "layer after a killed apply",
    )?;
    let size = ctx
        .d()
        .apply_diff(&t, None, &mut &tar[..])
        .context("apply after a killed apply")?;
    ensure!(size == 20 * 64 * 1024 + (4 << 20), "applied size {size}");
    Ok(())
}

fn crash_during_merge_is_completed(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let tar = TarBuilder::default()
        .file("pre/existing", b"after")
        .file(".wh.alias", b"")
        .dir("new/")
        .file("new/f", b"n")
        .finish();
    let (reference, _) = apply_new(ctx, "reference", ctx.d().parent(&t)?.as_ref(), &tar)?;
    let want = view(ctx, &reference)?;
    let input = ctx.work.join("merge.tar");
    std::fs::write(&input, &tar)?;
    ctx.helper_has_failpoints()?;
    ctx.close();
    let out = ctx
        .helper()
        .args(["apply", "target", "-i"])
        .arg(&input)
        .env("GRAPHDRIVER_FAILPOINT", "apply.merge")
        .output()?;
    ensure!(
        out.status.code().is_none(),
        "helper apply was meant to crash at the merge, exited {:?}",
        out.status
    );
    ctx.reopen()?;
    let got = view(ctx, &t)?;
    // Directories the merge moved entries into carry the time of their merge.
    same_tree(
        &want,
        &got,
        Compare {
            root: false,
            dir_mtimes: false,
            ..Compare::default()
        },
        "layer whose merge was interrupted, after reopen",
    )
}

/// The value of `status` key `key`.
fn status_value(ctx: &Ctx, key: &str) -> Result<String> {
    ctx.d()
        .status()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .with_context(|| format!("status has no {key:?}"))
}

/// Checks the store works around quarantined layers: `good` mounts with its content, a new
/// child of it can be made and applied to.
fn store_still_works(ctx: &Ctx, good: &[(&LayerId, &str)], fresh: &str) -> Result<()> {
    for (lid, file) in good {
        let tree = view(ctx, lid).with_context(|| format!("mount {lid} beside a bad layer"))?;
        ensure!(tree.get(file).is_some(), "{lid} lost {file}");
    }
    let tar = TarBuilder::default().file("fresh", b"f").finish();
    apply_new(ctx, fresh, Some(good[0].0), &tar)
        .with_context(|| format!("apply to a new layer {fresh} beside a bad layer"))?;
    ensure!(
        view(ctx, &id(fresh))?.get("fresh").is_some(),
        "{fresh} lacks its file"
    );
    Ok(())
}

fn unfinishable_journal_entry_quarantines_one_layer(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| write(&p.join("b"), "b"))?;
    let good = layer(ctx, "good", Some("base"), |p| write(&p.join("g"), "g"))?;
    let bad = layer(ctx, "bad", Some("base"), |p| write(&p.join("x"), "x"))?;
    let worse = layer(ctx, "worse", Some("base"), |p| write(&p.join("w"), "w"))?;
    ctx.close();
    // A merge whose staging directory is gone cannot be finished nor rolled back; a record
    // that is not JSON cannot even be read.
    let journal = store_meta(ctx)?.join("journal");
    let gone = ctx.work.join("no-such-staging");
    let record = serde_json::json!({
        "id": "bad",
        "op": "apply",
        "staging": gone,
        "target": gone.join("target"),
        "lowers": [],
        "merging": true,
    });
    std::fs::write(journal.join("bad.json"), record.to_string())?;
    std::fs::write(journal.join("worse.json"), b"{ not json")?;
    ctx.reopen()
        .context("open a store with an unfinishable journal entry")?;
    let q = status_value(ctx, "Quarantined Layers")?;
    ensure!(
        q.contains("bad (") && q.contains("worse ("),
        "status does not report both bad layers: {q:?}"
    );
    let mut all = ctx.d().list()?;
    all.sort();
    ensure!(
        all == vec![bad.clone(), base.clone(), good.clone(), worse.clone()],
        "layers listed: {all:?}"
    );
    store_still_works(ctx, &[(&good, "g"), (&base, "b")], "fresh1")?;
    for lid in [&bad, &worse] {
        expect_err(
            ctx.d().get(lid, &MountOpts::default()),
            "mount a quarantined layer",
            |e| matches!(e, DriverError::Quarantined { .. }),
        )?;
        expect_err(
            ctx.d()
                .create(&id("kid"), Some(lid), &CreateOpts::default()),
            "create a child of a quarantined layer",
            |e| matches!(e, DriverError::Quarantined { .. }),
        )?;
        expect_err(
            ctx.d()
                .apply_diff(lid, None, &mut &TarBuilder::default().finish()[..]),
            "apply to a quarantined layer",
            |e| matches!(e, DriverError::Quarantined { .. }),
        )?;
    }
    // Still so in a new process, and removing a quarantined layer ends its quarantine.
    ctx.reopen()?;
    ensure!(status_value(ctx, "Quarantined Layers")?.contains("bad ("));
    ctx.d().remove(&bad).context("remove a quarantined layer")?;
    ctx.d()
        .remove(&worse)
        .context("remove a quarantined layer")?;
    ensure!(
        status_value(ctx, "Quarantined Layers")? == "none",
        "quarantine outlived removal: {:?}",
        status_value(ctx, "Quarantined Layers")?
    );
    ctx.reopen()?;
    store_still_works(ctx, &[(&good, "g")], "fresh2")?;
    // The id is free again.
    apply_new(
        ctx,
        "bad",
        Some(&base),
        &TarBuilder::default().file("y", b"y").finish(),
    )?;
    Ok(())
}

/// A parent with files and symlinks to its own root, and an empty child of it.
fn parent_with_root_links(ctx: &Ctx) -> Result<(LayerId, LayerId)> {
    let base = layer(ctx, "base", None, |p| {
        write(&p.join("keep"), "k")?;
        write(&p.join("dir/inner"), "i")?;
        link(".", &p.join("dot"))?;
        link("/", &p.join("slash"))
    })?;
    let t = id("target");
    ctx.d().create(&t, Some(&base), &CreateOpts::default())?;
    Ok((base, t))
}

/// Checks the store opens again and `lids` still mount.
fn store_reopens(ctx: &mut Ctx, lids: &[&LayerId]) -> Result<()> {
    ctx.reopen().context("reopen the store")?;
    for lid in lids {
        view(ctx, lid).with_context(|| format!("mount {lid} after reopen"))?;
    }
    let q = status_value(ctx, "Quarantined Layers")?;
    ensure!(q == "none", "layers were quarantined: {q}");
    Ok(())
}

fn opaque_layer_root_hides_nothing(ctx: &mut Ctx) -> Result<()> {
    let (base, t) = parent_with_root_links(ctx)?;
    let parent = view(ctx, &base)?;
    // In each form, on every backend: the opaque root is ignored (overlayfs ignores opaque on
    // its upper root), the rest of the archive applies.
    for (n, marker) in [
        ".wh..wh..opq",
        "./.wh..wh..opq",
        "dot/.wh..wh..opq",
        "slash/.wh..wh..opq",
    ]
    .into_iter()
    .enumerate()
    {
        let lid = id(&format!("t{n}"));
        ctx.d().create(&lid, Some(&base), &CreateOpts::default())?;
        let tar = TarBuilder::default()
            .file(marker, b"")
            .file("new", b"n")
            .finish();
        ctx.d()
            .apply_diff(&lid, None, &mut &tar[..])
            .with_context(|| format!("apply {marker:?}"))?;
        let got = view(ctx, &lid)?;
        ensure!(
            got.get("new").is_some(),
            "{marker:?}: the archive's file is missing"
        );
        for keep in ["keep", "dir/inner", "dot", "slash"] {
            ensure!(
                got.get(keep).is_some(),
                "{marker:?} hid the parent's {keep}"
            );
        }
        ensure!(
            parent.get(".wh..wh..opq").is_none() && got.get(".wh..wh..opq").is_none(),
            "{marker:?} left a marker file"
        );
    }
    // A container that creates /.wh..wh..opq: its diff imports without emptying anything.
    let c = id("container");
    ctx.d().create(&c, Some(&base), &rw())?;
    with_mount(ctx.d(), &c, |p| write(&p.join(".wh..wh..opq"), ""))?;
    let exported = diff_bytes(ctx, &c)?;
    ctx.d()
        .apply_diff(&t, None, &mut &exported[..])
        .context("import a diff holding /.wh..wh..opq")?;
    ensure!(
        view(ctx, &t)?.get("keep").is_some(),
        "importing the diff emptied the layer"
    );
    store_reopens(ctx, &[&base, &t, &id("t0"), &id("t3")])
}

fn whiteouts_of_staging_names_are_rejected(ctx: &mut Ctx) -> Result<()> {
    let (base, t) = parent_with_root_links(ctx)?;
    let s = Sentinel::new(ctx)?;
    for name in [
        ".wh..graphdriver-apply.target",
        "dot/.wh..graphdriver-apply.target",
        "slash/.wh..graphdriver-apply.target",
        "dir/.wh..graphdriver-apply.x",
        "dot/.graphdriver-apply.target/tree/x",
    ] {
        let tar = TarBuilder::default()
            .file("fine", b"x")
            .file(name, b"")
            .finish();
        rejected(ctx, &t, &tar, name, &s)?;
    }
    let tar = TarBuilder::default()
        .hardlink("h", ".graphdriver-apply.target/manifest")
        .finish();
    rejected(ctx, &t, &tar, "h", &s)?;
    store_reopens(ctx, &[&base, &t])
}

fn nul_in_names_is_rejected(ctx: &mut Ctx) -> Result<()> {
    let t = target(ctx)?;
    let s = Sentinel::new(ctx)?;
    for name in [".wh.a\0b", "a\0b", "pre/.wh.x\0", "d\0/f", ".wh..wh..opq\0"] {
        let tar = TarBuilder::default()
            .file("fine", b"x")
            .file(name, b"")
            .finish();
        rejected(ctx, &t, &tar, name, &s)?;
    }
    let tar = TarBuilder::default().symlink("s", "a\0b").finish();
    rejected(ctx, &t, &tar, "s", &s)?;
    let tar = TarBuilder::default()
        .hardlink("h", "pre/existing\0x")
        .finish();
    rejected(ctx, &t, &tar, "h", &s)?;
    let base = ctx.d().parent(&t)?.context("target has a parent")?;
    store_reopens(ctx, &[&base, &t])
}

fn whited_out_parent_hides_what_was_below_it(ctx: &mut Ctx) -> Result<()> {
    let l1 = layer(ctx, "l1", None, |p| {
        write(&p.join("a/secret"), "s")?;
        link("/etc", &p.join("a/b"))?;
        write(&p.join("etc/passwd"), "root")
    })?;
    // `a` deleted, or made opaque, by the layer above
    for (n, hide) in [".wh.a", "a/.wh..wh..opq"].into_iter().enumerate() {
        let (l2, _) = apply_new(
            ctx,
            &format!("hide{n}"),
            Some(&l1),
            &TarBuilder::default().file(hide, b"").finish(),
        )?;
        // a hardlink to the hidden file finds nothing
        let l3 = id(&format!("top{n}"));
        ctx.d().create(&l3, Some(&l2), &CreateOpts::default())?;
        let s = Sentinel::new(ctx)?;
        let tar = TarBuilder::default().hardlink("h", "a/secret").finish();
        rejected(ctx, &l3, &tar, "h", &s)?;
        // a path through the hidden symlink is a new directory, and deletes nothing
        let tar = TarBuilder::default()
            .file("a/b/.wh.passwd", b"")
            .file("a/b/x", b"x")
            .finish();
        ctx.d()
            .apply_diff(&l3, None, &mut &tar[..])
            .with_context(|| format!("apply over {hide}"))?;
        let got = view(ctx, &l3)?;
        let why = || format!("over {hide}:\n{}", got.render(40));
        ensure!(got.get("etc/passwd").is_some(), "passwd deleted {}", why());
        ensure!(got.get("etc/x").is_none(), "x landed in etc {}", why());
        ensure!(
            got.get("a/b/x").is_some() && got.get("a/secret").is_none(),
            "wrong a/ {}",
            why()
        );
        ensure!(
            std::fs::symlink_metadata(ctx.d().get(&l3, &MountOpts::default())?.join("a/b"))?
                .is_dir(),
            "a/b is not a directory {}",
            why()
        );
        ctx.d().put(&l3)?;
    }
    Ok(())
}

fn implied_parent_follows_lower_symlink_inside_layer(ctx: &mut Ctx) -> Result<()> {
    let s = Sentinel::new(ctx)?;
    let base = layer(ctx, "base", None, |p| {
        link("/some/abs/path", &p.join("lib"))?;
        write(&p.join("usr/lib/old"), "o")?;
        link("usr/lib", &p.join("rel"))?;
        link("../../usr/lib", &p.join("up"))
    })?;
    let tar = TarBuilder::default()
        .file("lib/evil", b"e")
        .file("rel/f", b"f")
        .file("up/g", b"g")
        .finish();
    let (t, _) = apply_new(ctx, "t", Some(&base), &tar)?;
    s.check()?;
    // containerd's rule, on every backend: an implied parent is what the layer's symlink
    // names, inside the layer, created where missing; the symlinks stay
    let got = view(ctx, &t)?;
    for want in [
        "some/abs/path/evil",
        "usr/lib/f",
        "usr/lib/g",
        "usr/lib/old",
    ] {
        ensure!(
            got.get(want).is_some(),
            "{want} missing:\n{}",
            got.render(40)
        );
    }
    let root = ctx.d().get(&t, &MountOpts::default())?;
    let links = ["lib", "rel", "up"]
        .iter()
        .all(|l| std::fs::symlink_metadata(root.join(l)).is_ok_and(|m| m.is_symlink()));
    ctx.d().put(&t)?;
    ensure!(links, "a symlink was replaced:\n{}", got.render(40));
    Ok(())
}

fn deep_path_over_a_parent_applies_in_linear_time(ctx: &mut Ctx) -> Result<()> {
    let (b, _) = apply_new(
        ctx,
        "b",
        None,
        &TarBuilder::default().file("f", b"").finish(),
    )?;
    let deep = "d/".repeat(2000) + "f";
    let tar = TarBuilder::default().file(&deep, b"x").finish();
    let started = std::time::Instant::now();
    let (c, _) = apply_new(ctx, "c", Some(&b), &tar)?;
    let took = started.elapsed();
    // Not a performance target (the bench has those): a guard against the cubic merge this
    // case was written for, which took minutes at this depth; linear takes 0.4 s here and
    // 5 s under emulation in the VM.
    ensure!(
        took < Duration::from_secs(60),
        "a 2000-deep apply over a parent took {took:?}"
    );
    let changes = ctx.d().changes(&c, None)?;
    ensure!(
        changes
            .iter()
            .any(|ch| ch.path.to_string_lossy().ends_with("/d/f")),
        "the deep file is not among the changes"
    );
    Ok(())
}

/// Runs `f` with the open-file limit at 256, far below the depths the deep cases walk (their
/// walks must hold a bounded number of open files), then checks in a reopened store that `f`
/// left no layer.
fn with_few_open_files(ctx: &mut Ctx, f: impl FnOnce(&mut Ctx) -> Result<()>) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let low = Rlimit {
        current: Some(256),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, low)?;
    let r = f(ctx);
    setrlimit(Resource::Nofile, limit)?;
    r?;
    // what `f` removed stays removed in a new process
    ctx.reopen()?;
    ensure!(
        ctx.d().list()?.is_empty(),
        "layers left: {:?}",
        ctx.d().list()?
    );
    Ok(())
}

fn ten_thousand_deep_tree_applies_diffs_and_removes(ctx: &mut Ctx) -> Result<()> {
    const DEPTH: usize = 10_000;
    let deep = "d/".repeat(DEPTH) + "f";
    let tar = TarBuilder::default().file(&deep, b"x").finish();
    let (lid, size) = apply_new(ctx, "deep", None, &tar)?;
    ensure!(size == 1, "applied size {size}");
    // The walks hold a bounded number of open files: far fewer than the depth.
    with_few_open_files(ctx, |ctx| {
        let changes = ctx
            .d()
            .changes(&lid, None)
            .context("changes of a deep layer")?;
        ensure!(
            changes.len() == DEPTH + 1,
            "{} changes, want {}",
            changes.len(),
            DEPTH + 1
        );
        let size = ctx
            .d()
            .diff_size(&lid, None)
            .context("diff size of a deep layer")?;
        ensure!(size == 1, "diff size {size}");
        let exported = diff_bytes(ctx, &lid).context("diff of a deep layer")?;
        let (copy, size) =
            apply_new(ctx, "copy", None, &exported).context("apply the diff of a deep layer")?;
        ensure!(size == 1, "applied size of the copy {size}");
        ensure!(
            ctx.d().changes(&copy, None)?.len() == DEPTH + 1,
            "the copy differs"
        );
        ctx.d().remove(&copy).context("remove the copy")?;
        ctx.d().remove(&lid).context("remove a deep layer")?;
        Ok(())
    })
}

/// Deeper than the open-file limit and than `PATH_MAX`, but less deep than the case above:
/// under emulation in the VM, every level costs.
fn deep_parent_has_children_and_takes_deep_applies(ctx: &mut Ctx) -> Result<()> {
    const DEPTH: usize = 3_000;
    let deep = "d/".repeat(DEPTH) + "f";
    let (lid, _) = apply_new(
        ctx,
        "deep",
        None,
        &TarBuilder::default().file(&deep, b"x").finish(),
    )?;
    with_few_open_files(ctx, |ctx| {
        // A child of the deep layer (a full copy on vfs), and a deep apply over it that
        // merges into every one of its directories.
        let child = id("deep-child");
        ctx.d()
            .create(&child, Some(&lid), &CreateOpts::default())
            .context("create a child of a deep layer")?;
        ensure!(
            ctx.d().changes(&child, None)?.is_empty(),
            "an untouched child of a deep layer has changes"
        );
        let over = "d/".repeat(DEPTH) + "g";
        let tar = TarBuilder::default().file(&over, b"y").finish();
        let (top, size) = apply_new(ctx, "deep-over", Some(&lid), &tar)
            .context("apply a deep path over a deep parent")?;
        ensure!(size == 1, "applied size over the deep parent {size}");
        let changes = ctx
            .d()
            .changes(&top, None)
            .context("changes over a deep parent")?;
        let added: Vec<_> = changes
            .iter()
            .filter(|c| c.kind != ChangeKind::Modified)
            .collect();
        ensure!(
            changes.len() == DEPTH + 1
                && added.len() == 1
                && added[0].kind == ChangeKind::Added
                && added[0].path.as_os_str().as_bytes().ends_with(b"/d/g"),
            "{} changes over the deep parent ({} not modified directories), want {DEPTH} \
             modified directories and the new file",
            changes.len(),
            added.len()
        );
        for l in [&top, &child, &lid] {
            ctx.d().remove(l).with_context(|| format!("remove {l}"))?;
        }
        Ok(())
    })
}

/// An archive that adds `etc/sub/b` without entries for `etc/` and `etc/sub/` does not
/// describe them: they keep the parent's metadata, mtime included, so two applies of the same
/// archive give the same tree and byte-identical diffs (and `image save` the same image).
fn implied_directories_keep_their_mtime(ctx: &mut Ctx) -> Result<()> {
    let (base, _) = apply_new(
        ctx,
        "base",
        None,
        &TarBuilder::default()
            .dir("etc/")
            .dir("etc/sub/")
            .file("etc/sub/a", b"a")
            .finish(),
    )?;
    let tar = TarBuilder::default().file("etc/sub/b", b"b").finish();
    let (one, _) = apply_new(ctx, "one", Some(&base), &tar)?;
    std::thread::sleep(Duration::from_millis(20));
    let (two, _) = apply_new(ctx, "two", Some(&base), &tar)?;
    let mtimes = with_mount(ctx.d(), &one, |p| {
        ["etc", "etc/sub"]
            .iter()
            .map(|d| Ok(std::fs::symlink_metadata(p.join(d))?.mtime()))
            .collect::<Result<Vec<_>>>()
    })?;
    ensure!(
        mtimes == [1_600_000_000, 1_600_000_000],
        "implied directories' mtimes {mtimes:?}, want the parent's 1600000000"
    );
    let (a, b) = (diff_bytes(ctx, &one)?, diff_bytes(ctx, &two)?);
    ensure!(a == b, "two applies of one archive give different diffs");
    Ok(())
}
