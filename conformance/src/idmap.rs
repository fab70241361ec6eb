//! Idmapped mounts: a container in a user namespace sees its image owned by its own root,
//! writes it, and the image layer is shared by every map without a copy.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use graphdriver_api::idmap::IdMap;
use graphdriver_api::{DriverError, GraphDriver, LayerId, MountOpts};
use graphdriver_kit::idmap::UserNs;

use super::support::*;
use super::{Case, Ctx, Refused};

pub const CASES: &[Case] = &[
    Case {
        name: "idmap::a_mapped_container_owns_and_writes_its_image",
        run: a_mapped_container_owns_and_writes_its_image,
    },
    Case {
        name: "idmap::two_maps_share_one_image_layer_without_a_copy",
        run: two_maps_share_one_image_layer_without_a_copy,
    },
    Case {
        name: "idmap::a_layer_shows_one_map_at_a_time",
        run: a_layer_shows_one_map_at_a_time,
    },
];

/// Host uid (and gid) 100000 is the first map's root, 200000 the second's.
fn map(host_root: u32) -> IdMap {
    IdMap::single(0, host_root, 65536).expect("a valid map")
}

/// An image layer: root-owned `/etc/conf` (0644), `/home/user/notes` owned by 1000:1000
/// (0600), and a 4 MiB root-owned `/big`, which a copy would show.
fn image(ctx: &Ctx) -> Result<LayerId> {
    layer(ctx, "image", None, |root| {
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::create_dir_all(root.join("home/user"))?;
        write(&root.join("etc/conf"), "image\n")?;
        write(&root.join("home/user/notes"), "mine\n")?;
        chmod(&root.join("home/user/notes"), 0o600)?;
        chown(&root.join("home/user"), 1000, 1000)?;
        chown(&root.join("home/user/notes"), 1000, 1000)?;
        write(&root.join("big"), vec![7u8; 4 << 20])?;
        Ok(())
    })
}

/// Mounts `lid` with `opts`; an `Unsupported` answer is [`Refused`], with its reason.
fn get_or_skip(d: &dyn GraphDriver, lid: &LayerId, opts: &MountOpts) -> Result<std::path::PathBuf> {
    match d.get(lid, opts) {
        Ok(p) => Ok(p),
        Err(DriverError::Unsupported { reason, .. }) => Err(Refused(reason).into()),
        Err(e) => Err(e).with_context(|| format!("mount {lid} with an id map")),
    }
}

/// Checks that `path` is owned by `want` (uid, gid) as this process sees it.
fn expect_owner(path: &Path, want: (u32, u32), what: &str) -> Result<()> {
    let got = owner(path)?;
    ensure!(
        got == want,
        "{what}: {} is owned by {got:?}, want {want:?}",
        path.display()
    );
    Ok(())
}

fn owner(path: &Path) -> Result<(u32, u32)> {
    let m = std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((m.uid(), m.gid()))
}

/// Runs `script` with `sh -c` as the root of a namespace with `map`, in directory `dir`
/// (entered before joining the namespace, as a runtime enters a container's root: the
/// driver's own directories are not the container's to search); returns its stdout.
fn in_namespace(map: &IdMap, dir: &Path, script: &str) -> Result<String> {
    let ns = UserNs::new(map)?;
    let out = ns
        .run_as_root(
            Command::new("/bin/sh")
                .args(["-c", script])
                .current_dir(dir),
        )
        .context("run a shell in the user namespace")?;
    ensure!(
        out.status.success(),
        "in the user namespace, `{script}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn a_mapped_container_owns_and_writes_its_image(ctx: &mut Ctx) -> Result<()> {
    let img = image(ctx)?;
    let c = id("c");
    ctx.d().create(&c, Some(&img), &rw())?;
    let m = map(100_000);
    let root = get_or_skip(ctx.d(), &c, &MountOpts::mapped(m.clone()))?;
    // the host sees the image through the map
    expect_owner(
        &root.join("etc/conf"),
        (100_000, 100_000),
        "etc/conf as the host sees it",
    )?;
    expect_owner(
        &root.join("home/user/notes"),
        (101_000, 101_000),
        "notes as the host sees it",
    )?;
    expect_owner(
        &root,
        (100_000, 100_000),
        "the layer root as the host sees it",
    )?;
    // the namespace's root owns the image and writes it; its uid 1000 owns its notes
    let seen = in_namespace(
        &m,
        &root,
        "stat -c %u:%g etc/conf home/user/notes && echo container >> etc/conf \
         && echo new > etc/new && mkdir home/user/made && chown 1000:1000 home/user/made",
    )?;
    ensure!(seen == "0:0\n1000:1000", "ids seen inside: {seen:?}");
    expect_owner(
        &root.join("etc/new"),
        (100_000, 100_000),
        "a new file as the host sees it",
    )?;
    expect_owner(
        &root.join("home/user/made"),
        (101_000, 101_000),
        "a chowned directory",
    )?;
    ensure!(
        std::fs::read_to_string(root.join("etc/conf"))? == "image\ncontainer\n",
        "the written file"
    );
    ctx.d().put(&c)?;

    // stored unmapped: changes, the diff's headers and an unmapped mount say 0 and 1000
    expect_changes(
        ctx,
        &c,
        &[
            "C /etc",
            "C /etc/conf",
            "A /etc/new",
            "C /home",
            "C /home/user",
            "A /home/user/made",
        ],
    )?;
    let tar = diff_bytes(ctx, &c)?;
    let mut owners = Vec::new();
    let mut archive = tar::Archive::new(&tar[..]);
    for e in archive.entries()? {
        let e = e?;
        let h = e.header();
        owners.push((
            e.path()?.to_string_lossy().trim_end_matches('/').to_owned(),
            h.uid()?,
            h.gid()?,
        ));
    }
    for (path, want) in [("etc/new", 0), ("etc/conf", 0), ("home/user/made", 1000)] {
        let got = owners.iter().find(|(p, ..)| p == path);
        ensure!(
            matches!(got, Some((_, u, g)) if *u == want && *g == want),
            "{path} in the diff: {got:?}, want {want}:{want}"
        );
    }
    with_mount(ctx.d(), &c, |root| {
        expect_owner(&root.join("etc/new"), (0, 0), "etc/new unmapped")?;
        expect_owner(&root.join("home/user/made"), (1000, 1000), "made unmapped")?;
        Ok(())
    })?;
    // the image is as it was
    with_mount(ctx.d(), &img, |root| {
        ensure!(
            std::fs::read_to_string(root.join("etc/conf"))? == "image\n",
            "the image's conf"
        );
        absent(&root.join("etc/new"))
    })?;
    Ok(())
}

fn two_maps_share_one_image_layer_without_a_copy(ctx: &mut Ctx) -> Result<()> {
    let img = image(ctx)?;
    let (a, b, plain) = (id("a"), id("b"), id("plain"));
    for c in [&a, &b, &plain] {
        ctx.d().create(c, Some(&img), &rw())?;
    }
    let pa = get_or_skip(ctx.d(), &a, &MountOpts::mapped(map(100_000)))?;
    let pb = get_or_skip(ctx.d(), &b, &MountOpts::mapped(map(200_000)))?;
    let pp = ctx.d().get(&plain, &MountOpts::default())?;
    let both = (|| {
        for (root, host) in [(&pa, 100_000), (&pb, 200_000), (&pp, 0)] {
            expect_owner(&root.join("big"), (host, host), "big")?;
            expect_owner(
                &root.join("home/user/notes"),
                (host + 1000, host + 1000),
                "notes",
            )?;
            let mut first = [0u8; 1];
            std::fs::File::open(root.join("big"))?.read_exact(&mut first)?;
            ensure!(first == [7], "big's content in {}", root.display());
        }
        Ok(())
    })();
    for c in [&a, &b, &plain] {
        ctx.d().put(c)?;
    }
    both?;
    // nothing was copied: the mapped layers hold what the unmapped one holds, nothing
    for c in [&a, &b, &plain] {
        ensure!(
            ctx.d().changes(c, None)?.is_empty(),
            "{c} has changes after a mapped mount"
        );
        ensure!(
            ctx.d().diff_size(c, None)? == 0,
            "{c} holds bytes after a mapped mount"
        );
    }
    let plain_use = ctx.d().disk_usage(&plain)?;
    for c in [&a, &b] {
        match (ctx.d().disk_usage(c)?, plain_use) {
            (Some(mapped), Some(unmapped)) => ensure!(
                mapped.abs_diff(unmapped) < 1 << 20,
                "{c} uses {mapped} bytes of disk, an unmapped container {unmapped}: a copy?"
            ),
            (None, None) => {}
            (x, y) => bail!("disk usage known for one container and not another: {x:?} {y:?}"),
        }
    }
    Ok(())
}

fn a_layer_shows_one_map_at_a_time(ctx: &mut Ctx) -> Result<()> {
    let img = image(ctx)?;
    let c = id("c");
    ctx.d().create(&c, Some(&img), &rw())?;
    // a map the kernel would refuse is refused before anything is mounted
    let overlapping = IdMap {
        uids: vec![
            graphdriver_api::idmap::IdRange {
                inside: 0,
                outside: 100_000,
                count: 10,
            },
            graphdriver_api::idmap::IdRange {
                inside: 5,
                outside: 300_000,
                count: 10,
            },
        ],
        gids: map(100_000).gids,
    };
    expect_err(
        ctx.d().get(&c, &MountOpts::mapped(overlapping)),
        "get with overlapping ranges",
        |e| matches!(e, DriverError::InvalidIdMap { .. }),
    )?;
    expect_err(ctx.d().put(&c), "put after a refused get", |e| {
        matches!(e, DriverError::NotMounted(_))
    })?;

    let (ma, mb) = (
        MountOpts::mapped(map(100_000)),
        MountOpts::mapped(map(200_000)),
    );
    let first = get_or_skip(ctx.d(), &c, &ma)?;
    let again = ctx.d().get(&c, &ma)?;
    ensure!(
        first == again,
        "the same map gave {} then {}",
        first.display(),
        again.display()
    );
    expect_err(ctx.d().get(&c, &mb), "get with a second map", |e| {
        matches!(e, DriverError::Busy { .. })
    })?;
    // unmapped while mapped: a view with the stored ids, or Busy where the backend's one
    // mount is the mapped one (overlay2)
    let mut count = 2;
    match ctx.d().get(&c, &MountOpts::default()) {
        Ok(p) => {
            count += 1;
            expect_owner(
                &p.join("etc/conf"),
                (0, 0),
                "the unmapped view of a mapped layer",
            )?;
            expect_owner(
                &first.join("etc/conf"),
                (100_000, 100_000),
                "the mapped view",
            )?;
        }
        Err(DriverError::Busy { .. }) => {}
        Err(e) => bail!("an unmapped get of a mapped layer: {e}"),
    }
    for _ in 0..count {
        ctx.d().put(&c)?;
    }
    expect_err(ctx.d().put(&c), "a put past the count", |e| {
        matches!(e, DriverError::NotMounted(_))
    })?;
    // unmounted, the layer takes another map
    let pb = ctx.d().get(&c, &mb)?;
    let seen = owner(&pb.join("etc/conf"));
    ctx.d().put(&c)?;
    ensure!(
        seen? == (200_000, 200_000),
        "the second map, once the first is gone"
    );
    ctx.d().remove(&c)?;
    Ok(())
}
