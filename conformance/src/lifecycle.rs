//! Creating, listing, mounting and removing layers, and surviving crashes while doing so.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use graphdriver_api::{CreateOpts, DriverError, LayerId, MountOpts, MountSpec};
use graphdriver_kit::fs::mountinfo::MountTable;

use super::support::*;
use super::{Case, Ctx};
use crate::tree_snapshot::{Compare, Snapshot};

/// The lifecycle cases.
pub const CASES: &[Case] = &[
    Case {
        name: "lifecycle::fsck_finds_and_repairs_planted_damage",
        run: fsck_finds_and_repairs_planted_damage,
    },
    Case {
        name: "lifecycle::fsck_detaches_a_mount_leaked_inside_a_layer",
        run: fsck_detaches_a_mount_leaked_inside_a_layer,
    },
    Case {
        name: "lifecycle::empty_layer_has_bare_root",
        run: empty_layer_has_bare_root,
    },
    Case {
        name: "lifecycle::exists_list_and_remove",
        run: exists_list_and_remove,
    },
    Case {
        name: "lifecycle::duplicate_id_is_rejected",
        run: duplicate_id_is_rejected,
    },
    Case {
        name: "lifecycle::invalid_ids_are_rejected",
        run: invalid_ids_are_rejected,
    },
    Case {
        name: "lifecycle::missing_parent_is_rejected",
        run: missing_parent_is_rejected,
    },
    Case {
        name: "lifecycle::remove_with_children_fails",
        run: remove_with_children_fails,
    },
    Case {
        name: "lifecycle::remove_mounted_fails",
        run: remove_mounted_fails,
    },
    Case {
        name: "lifecycle::remove_unknown_is_not_found",
        run: remove_unknown_is_not_found,
    },
    Case {
        name: "lifecycle::mount_counts_nest",
        run: mount_counts_nest,
    },
    Case {
        name: "lifecycle::mount_spec_shows_a_writable_layer",
        run: mount_spec_shows_a_writable_layer,
    },
    Case {
        name: "lifecycle::disk_usage_counts_what_a_layer_wrote",
        run: disk_usage_counts_what_a_layer_wrote,
    },
    Case {
        name: "lifecycle::a_mount_label_is_refused_not_dropped",
        run: a_mount_label_is_refused_not_dropped,
    },
    Case {
        name: "lifecycle::mount_count_survives_reopen",
        run: mount_count_survives_reopen,
    },
    Case {
        name: "lifecycle::layer_with_children_is_read_only",
        run: layer_with_children_is_read_only,
    },
    Case {
        name: "lifecycle::parent_and_metadata_are_recorded",
        run: parent_and_metadata_are_recorded,
    },
    Case {
        name: "lifecycle::cleanup_unmounts_everything",
        run: cleanup_unmounts_everything,
    },
    Case {
        name: "lifecycle::size_limit_is_enforced_or_refused",
        run: size_limit_is_enforced_or_refused,
    },
    Case {
        name: "lifecycle::crash_during_create_is_rolled_back",
        run: crash_during_create_is_rolled_back,
    },
    Case {
        name: "lifecycle::crash_during_remove_is_finished",
        run: crash_during_remove_is_finished,
    },
    Case {
        name: "lifecycle::crash_between_mount_and_count_is_unmounted",
        run: crash_between_mount_and_count_is_unmounted,
    },
    Case {
        name: "lifecycle::kill_at_every_store_failpoint_leaves_layers_whole",
        run: kill_at_every_store_failpoint_leaves_layers_whole,
    },
];

fn empty_layer_has_bare_root(ctx: &mut Ctx) -> Result<()> {
    let base = id("base");
    ctx.d().create(&base, None, &CreateOpts::default())?;
    let tree = view(ctx, &base)?;
    let root = tree.get("").context("no root")?;
    ensure!(
        root.kind == 'd' && root.mode == 0o755 && root.uid == 0 && root.gid == 0,
        "root is {root:?}, want d 0755 0:0"
    );
    ensure!(
        tree.nodes.len() == 1,
        "a new layer has entries:\n{}",
        tree.render(20)
    );
    ensure!(changes(ctx, &base)?.is_empty(), "a new layer has changes");
    Ok(())
}

fn exists_list_and_remove(ctx: &mut Ctx) -> Result<()> {
    let d = ctx.d();
    let (a, b) = (id("a"), id("b"));
    ensure!(d.list()?.is_empty(), "a fresh root lists layers");
    d.create(&a, None, &CreateOpts::default())?;
    d.create(&b, Some(&a), &rw())?;
    ensure!(d.exists(&a) && d.exists(&b), "created layers do not exist");
    ensure!(
        d.list()? == vec![a.clone(), b.clone()],
        "list is {:?}",
        d.list()?
    );
    d.remove(&b)?;
    ensure!(!d.exists(&b), "removed layer still exists");
    ensure!(
        d.list()? == vec![a.clone()],
        "list after remove is {:?}",
        d.list()?
    );
    d.remove(&a)?;
    ensure!(
        d.list()?.is_empty(),
        "list after removing all is {:?}",
        d.list()?
    );
    // the id can be used again
    d.create(&a, None, &CreateOpts::default())?;
    ensure!(d.exists(&a), "re-created layer does not exist");
    Ok(())
}

fn duplicate_id_is_rejected(ctx: &mut Ctx) -> Result<()> {
    let a = layer(ctx, "a", None, |p| write(&p.join("kept"), "data"))?;
    expect_err(
        ctx.d().create(&a, None, &CreateOpts::default()),
        "create a twice",
        |e| matches!(e, DriverError::AlreadyExists(x) if *x == a),
    )?;
    let tree = view(ctx, &a)?;
    ensure!(
        tree.get("kept").is_some(),
        "the existing layer lost its content"
    );
    Ok(())
}

fn invalid_ids_are_rejected(ctx: &mut Ctx) -> Result<()> {
    for bad in [
        "",
        ".",
        "..",
        ".x",
        "a/b",
        "../escape",
        "a b",
        &"x".repeat(129),
    ] {
        expect_err(LayerId::new(bad), &format!("id {bad:?}"), |e| {
            matches!(e, DriverError::InvalidId { .. })
        })?;
    }
    // through another process, which takes strings (the helper): nothing is created
    let out = ctx.helper().args(["create", "../escape"]).output()?;
    ensure!(
        out.status.code() == Some(1),
        "helper create ../escape exited {:?}",
        out.status
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("invalid layer id"),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(ctx.d().list()?.is_empty(), "an invalid id created a layer");
    absent(&ctx.root.join("escape"))?;
    Ok(())
}

fn missing_parent_is_rejected(ctx: &mut Ctx) -> Result<()> {
    let (x, nope) = (id("x"), id("nope"));
    expect_err(
        ctx.d().create(&x, Some(&nope), &rw()),
        "create on a missing parent",
        |e| matches!(e, DriverError::NotFound(p) if *p == nope),
    )?;
    ensure!(
        !ctx.d().exists(&x),
        "the layer exists after a failed create"
    );
    ensure!(ctx.d().list()?.is_empty(), "list is {:?}", ctx.d().list()?);
    ctx.d().create(&x, None, &rw())?; // nothing half-made blocks the id
    Ok(())
}

fn remove_with_children_fails(ctx: &mut Ctx) -> Result<()> {
    let a = layer(ctx, "a", None, |p| write(&p.join("f"), "x"))?;
    let b = id("b");
    ctx.d().create(&b, Some(&a), &rw())?;
    expect_err(
        ctx.d().remove(&a),
        "remove a parent",
        |e| matches!(e, DriverError::HasChildren { children, .. } if children == &vec![b.clone()]),
    )?;
    ensure!(
        ctx.d().exists(&a) && ctx.d().exists(&b),
        "a failed remove removed something"
    );
    ensure!(
        view(ctx, &b)?.get("f").is_some(),
        "child lost its view of the parent"
    );
    ctx.d().remove(&b)?;
    ctx.d().remove(&a)?;
    Ok(())
}

fn remove_mounted_fails(ctx: &mut Ctx) -> Result<()> {
    let a = id("a");
    ctx.d().create(&a, None, &rw())?;
    let p = ctx.d().get(&a, &MountOpts::default())?;
    write(&p.join("f"), "x")?;
    expect_err(ctx.d().remove(&a), "remove a mounted layer", |e| {
        matches!(e, DriverError::Busy { .. })
    })?;
    ensure!(ctx.d().exists(&a), "a failed remove removed the layer");
    ensure!(p.join("f").exists(), "the mounted layer lost its content");
    ctx.d().put(&a)?;
    ctx.d().remove(&a)?;
    ensure!(!ctx.d().exists(&a), "remove after put failed");
    Ok(())
}

fn remove_unknown_is_not_found(ctx: &mut Ctx) -> Result<()> {
    let x = id("ghost");
    expect_err(ctx.d().remove(&x), "remove unknown", |e| {
        matches!(e, DriverError::NotFound(_))
    })?;
    expect_err(
        ctx.d().get(&x, &MountOpts::default()),
        "mount unknown",
        |e| matches!(e, DriverError::NotFound(_)),
    )?;
    expect_err(ctx.d().put(&x), "unmount unknown", |e| {
        matches!(e, DriverError::NotFound(_))
    })?;
    expect_err(ctx.d().changes(&x, None), "changes of unknown", |e| {
        matches!(e, DriverError::NotFound(_))
    })?;
    expect_err(
        ctx.d().apply_diff(&x, None, &mut &b""[..]),
        "apply to unknown",
        |e| matches!(e, DriverError::NotFound(_)),
    )?;
    Ok(())
}

fn mounted(path: &std::path::Path) -> Result<bool> {
    Ok(MountTable::read()?.contains(path))
}

fn mount_counts_nest(ctx: &mut Ctx) -> Result<()> {
    let a = id("a");
    ctx.d().create(&a, None, &rw())?;
    let p1 = ctx.d().get(&a, &MountOpts::default())?;
    let p2 = ctx.d().get(&a, &MountOpts::default())?;
    ensure!(
        p1 == p2,
        "two mounts of one layer gave {} and {}",
        p1.display(),
        p2.display()
    );
    write(&p1.join("f"), "x")?;
    ctx.d().put(&a)?;
    ensure!(
        mounted(&p1)? && p1.join("f").exists(),
        "unmounted after one put of two gets"
    );
    ctx.d().put(&a)?;
    ensure!(!mounted(&p1)?, "still mounted after the last put");
    expect_err(ctx.d().put(&a), "a put too many", |e| {
        matches!(e, DriverError::NotMounted(_))
    })?;
    ensure!(
        view(ctx, &a)?.get("f").is_some(),
        "content written through the mount is gone"
    );
    Ok(())
}

/// Makes the one `mount(2)` a [`MountSpec`] describes at `target`.
fn mount_by_spec(spec: &MountSpec, target: &Path) -> Result<()> {
    use rustix::mount::{mount, mount_bind_recursive, MountFlags};
    if spec.fs_type == "bind" {
        mount_bind_recursive(&spec.source, target)
    } else {
        let data = std::ffi::CString::new(spec.options.join(","))
            .context("mount options with a NUL byte")?;
        mount(
            &spec.source,
            target,
            spec.fs_type.as_str(),
            MountFlags::empty(),
            data.as_c_str(),
        )
    }
    .with_context(|| format!("mount {spec:?} at {}", target.display()))
}

fn mount_spec_shows_a_writable_layer(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| write(&p.join("f"), "from base"))?;
    let c = id("c");
    ctx.d().create(&c, Some(&base), &rw())?;
    ensure!(
        ctx.d().mount_spec(&base)?.is_none(),
        "a layer with a child got a mount spec: it is read-only"
    );
    let Some(spec) = ctx.d().mount_spec(&c)? else {
        // the backend has no one-call mount: `get` is the only way, and still works
        return with_mount(ctx.d(), &c, |p| {
            ensure!(p.join("f").exists(), "the parent's file is not seen");
            Ok(())
        });
    };
    let target = ctx.work.join("spec-mount");
    std::fs::create_dir_all(&target)?;
    mount_by_spec(&spec, &target)?;
    let r = (|| {
        let got = std::fs::read_to_string(target.join("f")).context("read the parent's file")?;
        ensure!(got == "from base", "the parent's file reads {got:?}");
        write(&target.join("g"), "written through the spec")
    })();
    rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty())
        .context("unmount the spec's mount")?;
    r?;
    // the driver counted no mount, and the write is the layer's
    expect_err(
        ctx.d().put(&c),
        "a put of a layer only mounted by spec",
        |e| matches!(e, DriverError::NotMounted(_)),
    )?;
    expect_changes(ctx, &c, &["A /g"])?;
    ensure!(
        view(ctx, &c)?.get("g").is_some(),
        "the write through the spec is not in the layer"
    );
    ctx.d().remove(&c)?;
    Ok(())
}

/// Bytes no compressor or deduplication shrinks (xorshift; the seed is fixed).
fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn disk_usage_counts_what_a_layer_wrote(ctx: &mut Ctx) -> Result<()> {
    const WROTE: usize = 4 << 20;
    let base = layer(ctx, "base", None, |p| write(&p.join("f"), "base"))?;
    let c = id("c");
    ctx.d().create(&c, Some(&base), &rw())?;
    let before = ctx.d().disk_usage(&c)?;
    with_mount(ctx.d(), &c, |p| {
        write(&p.join("big"), incompressible(WROTE))?;
        let f = std::fs::File::open(p)?;
        rustix::fs::syncfs(&f).context("syncfs")?;
        Ok(())
    })?;
    let after = ctx.d().disk_usage(&c)?;
    match (before, after) {
        (None, None) => {}
        (Some(b), Some(a)) => ensure!(
            a >= b + WROTE as u64 * 9 / 10,
            "disk usage went from {b} to {a} bytes after {WROTE} bytes were written"
        ),
        (b, a) => anyhow::bail!("disk usage was {b:?} before a write and {a:?} after it"),
    }
    expect_err(
        ctx.d().disk_usage(&id("missing")),
        "disk usage of a missing layer",
        |e| matches!(e, DriverError::NotFound(_)),
    )?;
    Ok(())
}

fn a_mount_label_is_refused_not_dropped(ctx: &mut Ctx) -> Result<()> {
    const LABEL: &str = "system_u:object_r:container_file_t:s0:c1,c2";
    let a = id("a");
    let labelled = CreateOpts {
        mount_label: Some(LABEL.into()),
        ..rw()
    };
    expect_err(
        ctx.d().create(&a, None, &labelled),
        "create with a mount label",
        |e| matches!(e, DriverError::Unsupported { .. }),
    )?;
    ensure!(!ctx.d().exists(&a), "a refused create left the layer");
    // an empty label is no label
    ctx.d().create(
        &a,
        None,
        &CreateOpts {
            mount_label: Some(String::new()),
            ..rw()
        },
    )?;
    expect_err(
        ctx.d().get(
            &a,
            &MountOpts {
                mount_label: Some(LABEL.into()),
                ..MountOpts::default()
            },
        ),
        "get with a mount label",
        |e| matches!(e, DriverError::Unsupported { .. }),
    )?;
    // nothing was mounted or counted
    expect_err(ctx.d().put(&a), "a put after a refused get", |e| {
        matches!(e, DriverError::NotMounted(_))
    })?;
    with_mount(ctx.d(), &a, |_| Ok(()))?;
    ctx.d().remove(&a)?;
    Ok(())
}

fn mount_count_survives_reopen(ctx: &mut Ctx) -> Result<()> {
    let a = id("a");
    ctx.d().create(&a, None, &rw())?;
    let p = ctx.d().get(&a, &MountOpts::default())?;
    ctx.d().get(&a, &MountOpts::default())?;
    ctx.reopen()?;
    ensure!(
        mounted(&p)?,
        "reopening the driver unmounted a counted mount"
    );
    expect_err(ctx.d().remove(&a), "remove after reopen", |e| {
        matches!(e, DriverError::Busy { .. })
    })?;
    ctx.d().put(&a)?;
    ctx.d().put(&a)?;
    ensure!(!mounted(&p)?, "still mounted after both puts");
    expect_err(ctx.d().put(&a), "a put too many", |e| {
        matches!(e, DriverError::NotMounted(_))
    })?;
    Ok(())
}

fn layer_with_children_is_read_only(ctx: &mut Ctx) -> Result<()> {
    let a = layer(ctx, "a", None, |p| write(&p.join("f"), "x"))?;
    ctx.d().create(&id("b"), Some(&a), &rw())?;
    let r = with_mount(ctx.d(), &a, |p| Ok(std::fs::write(p.join("new"), "y")));
    let e = r?.err().context("wrote into a layer that has children")?;
    ensure!(
        e.raw_os_error() == Some(libc::EROFS),
        "write failed with {e}, want EROFS"
    );
    Ok(())
}

fn parent_and_metadata_are_recorded(ctx: &mut Ctx) -> Result<()> {
    let a = id("a");
    ctx.d().create(&a, None, &CreateOpts::default())?;
    let b = id("b");
    ctx.d().create(&b, Some(&a), &rw())?;
    ensure!(
        ctx.d().parent(&b)? == Some(a.clone()),
        "parent of b is {:?}",
        ctx.d().parent(&b)?
    );
    ensure!(ctx.d().parent(&a)?.is_none(), "a has a parent");
    let ma = ctx.d().metadata(&a)?;
    let mb = ctx.d().metadata(&b)?;
    ensure!(
        !ma.read_write && mb.read_write,
        "read_write not recorded: {ma:?} {mb:?}"
    );
    ensure!(mb.created >= ma.created, "created times out of order");
    let status = ctx.d().status();
    ensure!(
        status.iter().any(|(k, v)| k == "Layers" && v == "2"),
        "status lacks Layers=2: {status:?}"
    );
    Ok(())
}

fn cleanup_unmounts_everything(ctx: &mut Ctx) -> Result<()> {
    let a = id("a");
    let b = id("b");
    ctx.d().create(&a, None, &rw())?;
    ctx.d().create(&b, None, &rw())?;
    let pa = ctx.d().get(&a, &MountOpts::default())?;
    let pb = ctx.d().get(&b, &MountOpts::default())?;
    ctx.d().get(&b, &MountOpts::default())?;
    ctx.d().cleanup()?;
    ensure!(!mounted(&pa)? && !mounted(&pb)?, "cleanup left mounts");
    ensure!(
        MountTable::read()?.below(&ctx.root).next().is_none(),
        "mounts left below the root"
    );
    ctx.d().remove(&a)?;
    ctx.d().remove(&b)?;
    Ok(())
}

fn size_limit_is_enforced_or_refused(ctx: &mut Ctx) -> Result<()> {
    let a = id("a");
    let opts = CreateOpts {
        read_write: true,
        size_limit: Some(8 << 20),
        ..CreateOpts::default()
    };
    match ctx.d().create(&a, None, &opts) {
        Err(DriverError::Unsupported { reason, .. }) => {
            ensure!(!ctx.d().exists(&a), "a refused size limit left a layer");
            ensure!(!reason.is_empty(), "no reason given");
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok(()) => with_mount(ctx.d(), &a, |p| {
            let r = std::fs::File::create(p.join("big")).and_then(|mut f| {
                let chunk = vec![7u8; 1 << 20];
                for _ in 0..16 {
                    f.write_all(&chunk)?;
                }
                f.sync_all()
            });
            let e = r
                .err()
                .context("wrote 16 MiB into a layer limited to 8 MiB")?;
            let code = e.raw_os_error();
            ensure!(
                code == Some(libc::EDQUOT) || code == Some(libc::ENOSPC),
                "failed with {e}, want EDQUOT or ENOSPC"
            );
            Ok(())
        }),
    }
}

/// Runs the helper with a failpoint that aborts it; fails unless it died.
fn crash_at(ctx: &Ctx, point: &str, args: &[&str]) -> Result<()> {
    ctx.helper_has_failpoints()?;
    let out = ctx
        .helper()
        .args(args)
        .env("GRAPHDRIVER_FAILPOINT", point)
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        !out.status.success() && out.status.code().is_none(),
        "helper {args:?} was meant to crash at {point}, exited {:?}",
        out.status
    );
    Ok(())
}

fn crash_during_create_is_rolled_back(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| write(&p.join("f"), "x"))?;
    ctx.close();
    crash_at(
        ctx,
        "create.after-make",
        &["create", "child", "--parent", "base", "--rw"],
    )?;
    ctx.reopen()?;
    let child = id("child");
    ensure!(
        !ctx.d().exists(&child),
        "a create that crashed before committing left a layer"
    );
    ensure!(
        ctx.d().list()? == vec![base.clone()],
        "list is {:?}",
        ctx.d().list()?
    );
    ctx.d()
        .remove(&base)
        .context("the parent still counts a child that was rolled back")?;
    let base = layer(ctx, "base", None, |p| write(&p.join("f"), "x"))?;
    ctx.d()
        .create(&child, Some(&base), &rw())
        .context("the id of a rolled-back layer is not free")?;
    Ok(())
}

fn crash_during_remove_is_finished(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| write(&p.join("f"), "x"))?;
    layer(ctx, "child", Some("base"), |p| write(&p.join("g"), "y"))?;
    ctx.close();
    crash_at(ctx, "remove.after-record", &["remove", "child"])?;
    ctx.reopen()?;
    let child = id("child");
    ensure!(
        !ctx.d().exists(&child),
        "a remove that crashed half-way left the layer visible"
    );
    ctx.d()
        .remove(&base)
        .context("the parent still has the removed child")?;
    ensure!(ctx.d().list()?.is_empty(), "list is {:?}", ctx.d().list()?);
    let base = layer(ctx, "base", None, |_| Ok(()))?;
    ctx.d().create(&child, Some(&base), &rw())?;
    ensure!(
        view(ctx, &child)?.get("g").is_none(),
        "old data of a removed layer came back"
    );
    Ok(())
}

fn crash_between_mount_and_count_is_unmounted(ctx: &mut Ctx) -> Result<()> {
    let base = layer(ctx, "base", None, |p| write(&p.join("f"), "x"))?;
    ctx.d().create(&id("ctr"), Some(&base), &rw())?;
    ctx.close();
    crash_at(ctx, "get.after-mount", &["mount", "ctr"])?;
    let leaked: Vec<_> = MountTable::read()?
        .below(&ctx.root)
        .map(|p| p.to_owned())
        .collect();
    ensure!(
        !leaked.is_empty(),
        "the crashed mount left nothing to reconcile (the failpoint came too late)"
    );
    ctx.reopen()?;
    ensure!(
        MountTable::read()?.below(&ctx.root).next().is_none(),
        "opening the driver left the crashed process's mount behind: {leaked:?}"
    );
    expect_err(
        ctx.d().put(&id("ctr")),
        "put of a layer nobody counted",
        |e| matches!(e, DriverError::NotMounted(_)),
    )?;
    ctx.d()
        .remove(&id("ctr"))
        .context("remove after the reconciled crash")?;
    Ok(())
}

/// What a kill at a crash point must leave once the store is opened again: the operation
/// undone (the layer as before) or finished (as a run without the kill leaves it).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Outcome {
    Before,
    Complete,
}

/// Every crash point of the store (`failpoint::STORE_POINTS`) and what a kill there leaves.
const KILLS: &[(&str, Outcome)] = &[
    ("create.after-journal", Outcome::Before),
    ("create.after-make", Outcome::Before),
    ("create.after-record", Outcome::Complete),
    ("remove.after-record", Outcome::Complete),
    ("remove.after-destroy", Outcome::Complete),
    ("get.after-mount", Outcome::Before),
    ("put.after-unmount", Outcome::Complete),
    ("apply.staged", Outcome::Before),
    ("apply.merge", Outcome::Complete),
    ("apply.merge.after-deletions", Outcome::Complete),
    ("apply.merge.mid-tree", Outcome::Complete),
    ("apply.after-merge", Outcome::Complete),
];

/// The helper process killed (aborted, as by `kill -9`) at each crash point of create, remove, mount,
/// unmount and apply: after the store is opened again the layer is as before or complete as
/// the point demands, never half; no mount is left; `fsck` finds nothing it did not repair
/// at open; and the layers still mount, unmount and go.
fn kill_at_every_store_failpoint_leaves_layers_whole(ctx: &mut Ctx) -> Result<()> {
    let listed: Vec<&str> = KILLS.iter().map(|(p, _)| *p).collect();
    ensure!(
        listed == graphdriver_kit::failpoint::STORE_POINTS,
        "the store's crash points are {:?}: each needs a kill here",
        graphdriver_kit::failpoint::STORE_POINTS
    );
    // An apply with a deletion, a replaced file and a new directory: the merge has all of
    // its phases to be killed in.
    let tar = TarBuilder::default()
        .file("f", b"applied")
        .file("d/.wh.g", b"")
        .dir("new/")
        .file("new/h", b"h")
        .finish();
    let input = ctx.work.join("kill.tar");
    std::fs::write(&input, &tar)?;
    let whole = Compare {
        root: false,
        dir_mtimes: false,
        ..Compare::default()
    };
    for (n, &(point, outcome)) in KILLS.iter().enumerate() {
        let name = |s: &str| format!("k{n}-{s}");
        let base = layer(ctx, &name("base"), None, |p| {
            write(&p.join("f"), "base")?;
            write(&p.join("d/g"), "g")
        })?;
        let (op, _) = point.split_once('.').context("a point is op.step")?;
        let child = id(&name("child"));
        let (args, before, complete): (Vec<String>, Option<Snapshot>, Option<Snapshot>) = match op {
            "create" => {
                let base_view = view(ctx, &base)?;
                let args = ["create", child.as_str(), "--parent", base.as_str(), "--rw"];
                (args.map(String::from).to_vec(), None, Some(base_view))
            }
            "remove" => {
                layer(ctx, child.as_str(), Some(base.as_str()), |p| {
                    write(&p.join("own"), "own")
                })?;
                let v = view(ctx, &child)?;
                (vec!["remove".into(), child.to_string()], Some(v), None)
            }
            "get" | "put" => {
                ctx.d().create(&child, Some(&base), &rw())?;
                let v = view(ctx, &child)?;
                let args = if op == "get" { "mount" } else { "unmount" };
                (
                    vec![args.into(), child.to_string()],
                    Some(v.clone()),
                    Some(v),
                )
            }
            "apply" => {
                ctx.d().create(&child, Some(&base), &rw())?;
                let v = view(ctx, &child)?;
                let (r, _) = apply_new(ctx, &name("reference"), Some(&base), &tar)?;
                let want = view(ctx, &r)?;
                ctx.d().remove(&r)?;
                let args = vec![
                    "apply".into(),
                    child.to_string(),
                    "-i".into(),
                    input.display().to_string(),
                ];
                (args, Some(v), Some(want))
            }
            other => anyhow::bail!("no kill case for operation {other} ({point})"),
        };
        ctx.close();
        if op == "put" {
            // a mount held by an earlier process, which the killed unmount then drops
            let out = ctx.helper().args(["mount", child.as_str()]).output()?;
            ensure!(out.status.success(), "helper mount: {out:?}");
        }
        crash_at(
            ctx,
            point,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .with_context(|| format!("kill at {point}"))?;
        ctx.reopen()?;
        let what = format!("after a kill at {point}");
        let leaked: Vec<_> = MountTable::read()?
            .below(&ctx.root)
            .map(|p| p.to_owned())
            .collect();
        ensure!(leaked.is_empty(), "{what}: mounts left: {leaked:?}");
        let want = match outcome {
            Outcome::Before => &before,
            Outcome::Complete => &complete,
        };
        match want {
            Some(tree) => {
                ensure!(ctx.d().exists(&child), "{what}: {child} is gone");
                same_tree(tree, &view(ctx, &child)?, whole, &what)?;
            }
            None => ensure!(!ctx.d().exists(&child), "{what}: {child} exists"),
        }
        if matches!(op, "get" | "put") {
            expect_err(
                ctx.d().put(&child),
                &format!("{what}: put of a layer no live process mounted"),
                |e| matches!(e, DriverError::NotMounted(_)),
            )?;
        }
        let report = ctx.d().fsck(false)?;
        ensure!(
            report.is_clean(),
            "{what}: fsck finds {:#?}",
            report.findings
        );
        if ctx.d().exists(&child) {
            ctx.d()
                .remove(&child)
                .with_context(|| format!("{what}: remove {child}"))?;
        }
        ctx.d()
            .remove(&base)
            .with_context(|| format!("{what}: remove {base} (its child is gone)"))?;
    }
    ensure!(ctx.d().list()?.is_empty(), "left: {:?}", ctx.d().list()?);
    Ok(())
}

/// Damage of every kind `fsck` knows, planted by hand in a closed store: what opening settles
/// is reported as repaired, the rest found, `--repair` repairs it (a record whose data is gone
/// is quarantined), and afterwards the store is clean and works.
/// A tmpfs mounted inside a mounted layer (as a container's bind mount that outlived it):
/// fsck reports it, repair detaches it, and the layer then unmounts and goes.
fn fsck_detaches_a_mount_leaked_inside_a_layer(ctx: &mut Ctx) -> Result<()> {
    use graphdriver_kit::store::FindingKind as K;
    let l = layer(ctx, "leaky", None, |p| write(&p.join("f"), "x"))?;
    let p = ctx.d().get(&l, &MountOpts::default())?;
    let inner = p.join("proc");
    std::fs::create_dir_all(&inner)?;
    rustix::mount::mount(
        "leak",
        &inner,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .context("mount a tmpfs inside the layer")?;
    let found = ctx.d().fsck(false)?;
    let leaked: Vec<_> = found
        .findings
        .iter()
        .filter(|f| f.kind == K::LeakedMount)
        .collect();
    ensure!(
        leaked.len() == 1 && leaked[0].layer.as_ref() == Some(&l) && leaked[0].repaired.is_none(),
        "want one leaked mount in {l}: {:#?}",
        found.findings
    );
    ensure!(
        found.findings.len() == 1,
        "only the leak: {:#?}",
        found.findings
    );
    let fixed = ctx.d().fsck(true)?;
    ensure!(
        fixed.is_clean() && fixed.findings.iter().any(|f| f.kind == K::LeakedMount),
        "after repair: {:#?}",
        fixed.findings
    );
    ensure!(
        !MountTable::read()?.contains(&inner),
        "the leaked mount is still there"
    );
    ctx.d().put(&l)?;
    ctx.d()
        .remove(&l)
        .context("remove the layer once the leak is gone")?;
    let done = ctx.d().fsck(false)?;
    ensure!(done.findings.is_empty(), "afterwards: {:#?}", done.findings);
    Ok(())
}

fn fsck_finds_and_repairs_planted_damage(ctx: &mut Ctx) -> Result<()> {
    use graphdriver_kit::store::FindingKind as K;
    let base = layer(ctx, "base", None, |p| write(&p.join("b"), "b"))?;
    let child = layer(ctx, "child", Some("base"), |p| write(&p.join("c"), "c"))?;
    layer(ctx, "orphan", Some("base"), |_| Ok(()))?;
    let clean = ctx.d().fsck(false)?;
    ensure!(
        clean.findings.is_empty() && clean.layers == 3,
        "a sound store: {clean:?}"
    );
    ctx.close();

    let meta = store_meta(ctx)?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    // a create a crash interrupted, and data whose record is gone
    std::fs::write(
        meta.join("journal/ghost.json"),
        r#"{"id":"ghost","op":"create"}"#,
    )?;
    std::fs::remove_file(meta.join("layers/orphan.json"))?;
    std::fs::remove_file(meta.join("children/base/orphan"))?;
    // the graph: an edge lost, an edge to nobody
    std::fs::remove_file(meta.join("children/base/child"))?;
    std::fs::write(meta.join("children/base/nobody"), b"")?;
    // mount counts: of no layer, and of a layer that is not mounted
    std::fs::write(meta.join("mounts/nobody"), format!("{} 1\n", boot.trim()))?;
    std::fs::write(meta.join("mounts/base"), format!("{} 2\n", boot.trim()))?;
    // records: one whose data is gone, one whose parent is gone
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta.join("layers/base.json"))?)?;
    let mut lost = record.clone();
    lost["id"] = "lost".into();
    std::fs::write(meta.join("layers/lost.json"), lost.to_string())?;
    let mut stray = record;
    stray["id"] = "stray".into();
    stray["parent"] = "gone".into();
    std::fs::write(meta.join("layers/stray.json"), stray.to_string())?;

    ctx.reopen().context("open a damaged store")?;
    let found = ctx.d().fsck(false)?;
    let has = |k: K, layer: &str, repaired: bool| {
        found.findings.iter().any(|f| {
            f.kind == k
                && f.layer.as_ref().map_or("-", |l| l.as_str()) == layer
                && f.repaired.is_some() == repaired
        })
    };
    for (k, l, repaired) in [
        (K::InterruptedOperation, "ghost", true),
        (K::OrphanData, "orphan", true),
        (K::MountCountMismatch, "base", true),
        (K::MissingEdge, "child", false),
        (K::DanglingEdge, "base", false),
        (K::StrayMountCount, "-", false),
        (K::MissingData, "lost", false),
        (K::MissingParent, "stray", false),
    ] {
        ensure!(
            has(k, l, repaired),
            "no {k:?} of {l} (repaired: {repaired}) among {:#?}",
            found.findings
        );
    }
    ensure!(!found.is_clean(), "a damaged store checks clean");

    let fixed = ctx.d().fsck(true)?;
    ensure!(fixed.is_clean(), "left after repair: {:#?}", fixed.findings);
    let after = ctx.d().fsck(false)?;
    let kinds: Vec<_> = after
        .findings
        .iter()
        .map(|f| (f.kind, f.layer.clone()))
        .collect();
    ensure!(
        kinds.iter().all(|(k, _)| *k == K::Quarantined) && kinds.len() == 2,
        "after repair, want the two quarantined layers only: {:#?}",
        after.findings
    );
    // the edge is back: the parent cannot be removed from under its child
    expect_err(ctx.d().remove(&base), "remove the parent of a child", |e| {
        matches!(e, DriverError::HasChildren { .. })
    })?;
    let c = with_mount(ctx.d(), &child, |p| {
        Ok(std::fs::read_to_string(p.join("c"))?)
    })?;
    ensure!(c == "c", "the child's content: {c:?}");
    for l in ["lost", "stray"] {
        ctx.d()
            .remove(&id(l))
            .with_context(|| format!("remove quarantined {l}"))?;
    }
    let done = ctx.d().fsck(false)?;
    ensure!(
        done.findings.is_empty(),
        "after removing the quarantined layers: {:#?}",
        done.findings
    );
    Ok(())
}
