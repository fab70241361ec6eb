//! The workloads, each beside its baseline.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use graphdriver_api::idmap::IdMap;
use graphdriver_api::{CreateOpts, DriverError, GraphDriver, LayerId, MountOpts};

use super::measure::{time, Measurement, Pair};
use super::{remove, Progress, Target};
use graphdriver_backends as drivers;
use graphdriver_conformance::fixture::run;

/// The image every workload starts from.
pub struct Image {
    /// The tar.
    pub tar: PathBuf,
    /// Entries in it.
    pub entries: usize,
    /// Its size.
    pub bytes: u64,
}

impl Image {
    /// Reads the tar once (so it is in the page cache) and counts its entries.
    pub fn load(tar: &Path) -> Result<Image> {
        let f = File::open(tar).with_context(|| format!("open the image {}", tar.display()))?;
        let bytes = f.metadata()?.len();
        let mut r = graphdriver_kit::archive::TarReader::new(std::io::BufReader::new(f));
        let mut entries = 0;
        let mut buf = vec![0u8; 1 << 16];
        while r
            .next_entry()
            .map_err(|e| anyhow::anyhow!("read {}: {e}", tar.display()))?
            .is_some()
        {
            while r
                .read_data(&mut buf)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", tar.display()))?
                > 0
            {}
            entries += 1;
        }
        Ok(Image {
            tar: tar.to_owned(),
            entries,
            bytes,
        })
    }
}

pub(super) fn lid(s: &str) -> LayerId {
    LayerId::new(s).expect("bench ids are valid")
}

/// `tar -xpf TAR -C DIR` by GNU tar, keeping xattrs and numeric owners.
pub(super) fn untar(tar: &Path, dir: &Path) -> Result<()> {
    run(cmd(&[
        "tar",
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "-xpf",
    ])
    .arg(tar)
    .arg("-C")
    .arg(dir))?;
    Ok(())
}

pub(super) fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]);
    c
}

/// What every workload gets: the backend, its driver, a scratch directory beside it on the
/// same filesystem, and how many rounds to run.
pub struct Ctx<'a> {
    /// The backend as benchmarked.
    pub t: &'a Target,
    /// Its driver, opened on the scratch filesystem.
    pub d: &'a dyn GraphDriver,
    /// A directory for baselines, on the same filesystem as the driver's root.
    pub work: PathBuf,
    /// Timed rounds per measurement.
    pub reps: usize,
    /// Untimed rounds first.
    pub warmup: usize,
    /// `--quick`: smaller inputs.
    pub quick: bool,
}

impl Ctx<'_> {
    /// A pair of measurements (the backend against its baseline) of `workload`.
    pub fn pair<'p>(&'p self, workload: &'p str, param: Option<String>) -> Pair<'p> {
        Pair {
            workload,
            backend: &self.t.label,
            param,
            reps: self.reps,
            warmup: self.warmup,
        }
    }

    /// Rounds for workloads that write gigabytes or make dozens of layers per round.
    pub fn heavy_reps(&self) -> usize {
        if self.quick {
            1
        } else {
            self.reps.min(3)
        }
    }

    /// Whether each layer is a full copy of its parent (vfs): the many-layer workloads run
    /// fewer rounds there.
    pub fn copies(&self) -> bool {
        self.t.driver == "vfs"
    }

    /// Untimed rounds before [`heavy_reps`](Self::heavy_reps) ones: none with `--quick`.
    pub fn heavy_warmup(&self) -> usize {
        if self.quick {
            0
        } else {
            self.warmup
        }
    }

    /// Bytes in use on the backing filesystem, after writing back what is dirty: the real
    /// disk use, from the filesystem's own free-space count (statfs), not from file sizes.
    pub fn used_bytes(&self) -> Result<u64> {
        // btrfs deletes removed subvolumes in the background: wait for them, or space freed
        // by earlier workloads shows up inside the next measurement (an image measured at 0)
        if graphdriver_kit::fs::BackingFs::of(self.t.fs.path())?.is_btrfs() {
            run(Command::new("btrfs")
                .args(["subvolume", "sync"])
                .arg(self.t.fs.path()))?;
        }
        let dir = File::open(self.t.fs.path())?;
        rustix::fs::syncfs(&dir)?;
        let st = rustix::fs::fstatfs(&dir)?;
        Ok((st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64)
    }

    /// A measurement of `values` on this backend, without a baseline.
    pub fn measurement(
        &self,
        workload: &str,
        subject: &str,
        param: Option<String>,
        unit: &str,
        values: &[f64],
    ) -> Measurement {
        Measurement::of(workload, &self.t.label, subject, param, unit, values)
    }

    /// The same, as this backend's baseline.
    pub fn baseline(
        &self,
        workload: &str,
        subject: &str,
        param: Option<String>,
        unit: &str,
        values: &[f64],
    ) -> Measurement {
        Measurement {
            backend: format!("baseline for {}", self.t.label),
            ..self.measurement(workload, subject, param, unit, values)
        }
    }
}

/// Steps [`run_all`] reports to its progress display, per backend.
pub const STEPS: usize = 14;

/// The parameter that marks cold-cache measurements.
pub const COLD: &str = "cold page cache";

/// Drops the page cache (after writing back dirty pages), so the next read comes from disk.
pub fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("drop the page cache")
}

/// Runs every workload on `t`.
#[allow(clippy::too_many_arguments)]
pub fn run_all(
    t: &Target,
    image: &Image,
    archives: &super::images::Archives,
    reps: usize,
    warmup: usize,
    quick: bool,
    progress: &mut dyn Progress,
) -> Result<Vec<Measurement>> {
    let root = t.fs.path().join("root");
    let work = t.fs.path().join("work");
    std::fs::create_dir_all(&work)?;
    let d = drivers::open(&t.driver, &root, &Default::default())?;
    let d: &dyn GraphDriver = d.as_ref();
    let cx = Ctx {
        t,
        d,
        work: work.clone(),
        reps,
        warmup,
        quick,
    };
    let mut out = Vec::new();

    progress.step(
        &t.label,
        "import: apply_diff of the image against tar -xpf + syncfs",
    );
    out.extend(import(&cx, image, None)?);

    let img = lid("image");
    let before = cx.used_bytes()?;
    d.create(&img, None, &CreateOpts::default())?;
    let image_size = d.apply_diff(&img, None, &mut File::open(&image.tar)?)?;
    let image_disk = cx.used_bytes()?.saturating_sub(before);
    let view = d.get(&img, &MountOpts::default())?;

    progress.step(&t.label, "export: diff of the image against tar -cf");
    out.extend(export(&cx, &img, &view, None)?);

    progress.step(
        &t.label,
        "cold cache: import and export after dropping the page cache",
    );
    let cold = Ctx {
        reps: cx.heavy_reps(),
        warmup: 0,
        work: work.clone(),
        ..cx
    };
    out.extend(import(&cold, image, Some(COLD.into()))?);
    out.extend(export(&cold, &img, &view, Some(COLD.into()))?);

    progress.step(&t.label, "container: create + mount + unmount on the image");
    out.extend(container(t, d, &img, &view, &work, reps, warmup)?);

    progress.step(
        &t.label,
        "idmap: create + idmapped mount + unmount against unmapped and a chown-copy",
    );
    match idmapped_container(t, d, &img, &view, &work, reps, warmup) {
        Ok(ms) => out.extend(ms),
        Err(e) => match e.downcast_ref::<DriverError>() {
            Some(DriverError::Unsupported { reason, .. }) => {
                progress.note(&format!("{}: no idmapped mounts here: {reason}", t.label))
            }
            _ => return Err(e),
        },
    }

    progress.step(
        &t.label,
        "many: 5 and 50 containers on the image, time and disk",
    );
    out.extend(super::scale::many(
        &cx, &img, &view, image_size, image_disk,
    )?);

    progress.step(
        &t.label,
        "concurrency: create/mount/unmount/remove from 2x cores workers",
    );
    out.extend(super::scale::concurrency(&cx, &img)?);
    d.put(&img)?;

    progress.step(
        &t.label,
        "removal: a container layer of 10,000 files and an image layer",
    );
    out.extend(super::scale::removal(&cx, image)?);

    progress.step(
        &t.label,
        "copy-up: first writes, appends, chmod and chown by file size",
    );
    out.extend(super::cow::copy_up(&cx)?);

    progress.step(
        &t.label,
        "churn: 16 layers of partial updates to 1 MiB files",
    );
    out.extend(super::cow::churn(&cx)?);

    progress.step(
        &t.label,
        "child: create a layer over parents of 10 and 10,000 files",
    );
    out.extend(children_by_parent_size(t, d, reps, warmup)?);

    progress.step(
        &t.label,
        "changes: 10 files changed over a 10,000-file image",
    );
    out.extend(changes(t, d, &work, reps, warmup)?);

    progress.step(&t.label, "depth: mount and lookup over 1 to 500 layers");
    out.extend(depth(&cx)?);

    progress.step(
        &t.label,
        "images: import and save of the OCI image (gzip, zstd) against tar",
    );
    out.extend(super::images::images(&cx, t, archives)?);
    d.remove(&img)?;
    d.cleanup()?;
    Ok(out)
}

/// Image import: `apply_diff` of the image into an empty layer, against `tar -xpf` into an
/// empty directory followed by a `syncfs` of its filesystem (`apply_diff` syncs its files
/// before it returns, so the baseline does the same work: both leave the image on the disk).
fn import(cx: &Ctx, image: &Image, param: Option<String>) -> Result<Vec<Measurement>> {
    let (d, work) = (cx.d, &cx.work);
    let cold = param.is_some();
    cx.pair("import", param).run(
        "apply_diff",
        &mut |r| {
            let id = lid(&format!("import-{r}"));
            d.create(&id, None, &CreateOpts::default())?;
            if cold {
                drop_caches()?;
            }
            let (s, _) = time(|| Ok(d.apply_diff(&id, None, &mut File::open(&image.tar)?)?))?;
            d.remove(&id)?;
            Ok(s)
        },
        "tar -xpf + syncfs",
        &mut |r| {
            let dir = work.join(format!("tar-x-{r}"));
            std::fs::create_dir(&dir)?;
            if cold {
                drop_caches()?;
            }
            let (s, _) = time(|| {
                untar(&image.tar, &dir)?;
                rustix::fs::syncfs(File::open(&dir)?)?;
                Ok(())
            })?;
            remove(&dir)?;
            Ok(s)
        },
    )
}

/// Image export: `diff` of the image layer, against `tar -cf` of its mounted tree.
fn export(cx: &Ctx, img: &LayerId, view: &Path, param: Option<String>) -> Result<Vec<Measurement>> {
    let d = cx.d;
    let export = cx.work.join("export.tar");
    let cold = param.is_some();
    cx.pair("export", param).run(
        "diff",
        &mut |_| {
            if cold {
                drop_caches()?;
            }
            let (s, _) = time(|| {
                let mut w = BufWriter::with_capacity(1 << 20, File::create(&export)?);
                std::io::copy(&mut d.diff(img, None)?, &mut w)?;
                w.flush()?;
                Ok(())
            })?;
            remove(&export)?;
            Ok(s)
        },
        "tar -cf",
        &mut |_| {
            if cold {
                drop_caches()?;
            }
            let (s, _) = time(|| {
                run(cmd(&[
                    "tar",
                    "--xattrs",
                    "--numeric-owner",
                    "--format=posix",
                    "-cf",
                ])
                .arg(&export)
                .arg("-C")
                .arg(view)
                .arg("."))
            })?;
            remove(&export)?;
            Ok(s)
        },
    )
}

pub(super) fn rw() -> CreateOpts {
    CreateOpts {
        read_write: true,
        ..CreateOpts::default()
    }
}

/// Container start: create a writable layer on the image, mount it, unmount it; against the
/// same work done by hand (a copy of the tree for vfs, the directories and the raw mount
/// syscalls for overlay2).
#[allow(clippy::too_many_arguments)]
fn container(
    t: &Target,
    d: &dyn GraphDriver,
    img: &LayerId,
    view: &Path,
    work: &Path,
    reps: usize,
    warmup: usize,
) -> Result<Vec<Measurement>> {
    // a copy per container for vfs; cheap and noisy elsewhere: many rounds (98 in a full run)
    let reps = if t.driver == "vfs" { reps } else { reps * 14 };
    let pair = Pair {
        workload: "container",
        backend: &t.label,
        param: None,
        reps,
        warmup,
    };
    let mut subject = |r: usize| -> Result<f64> {
        let id = lid(&format!("ctr-{r}"));
        let (s, _) = time(|| {
            d.create(&id, Some(img), &rw())?;
            d.get(&id, &MountOpts::default())?;
            d.put(&id)?;
            Ok(())
        })?;
        d.remove(&id)?;
        Ok(s)
    };
    let mut out = pair.run(
        "create+mount+unmount",
        &mut subject,
        raw_container_name(t),
        &mut |r| raw_container(t, view, work, &r.to_string()),
    )?;
    if t.driver == "vfs" && t.fs.fs() != "ext4" && reps > 3 {
        // and against a full copy, which is what reflinks save
        out.extend(pair.run(
            "create+mount+unmount",
            &mut subject,
            "cp -a --reflink=never",
            &mut |r| {
                let dst = work.join(format!("copy-{r}"));
                let (s, _) =
                    time(|| run(cmd(&["cp", "-a", "--reflink=never"]).arg(view).arg(&dst)))?;
                remove(&dst)?;
                Ok(s)
            },
        )?);
    }
    Ok(out)
}

/// A container started the way a runtime does for a container in a user namespace: an
/// idmapped mount (the map's root is host uid 100000), against the same start unmapped, and
/// against what peers did before idmapped mounts: a copy of the image chowned into the map.
fn idmapped_container(
    t: &Target,
    d: &dyn GraphDriver,
    img: &LayerId,
    view: &Path,
    work: &Path,
    reps: usize,
    warmup: usize,
) -> Result<Vec<Measurement>> {
    const HOST_ROOT: u32 = 100_000;
    let mapped = MountOpts::mapped(IdMap::single(0, HOST_ROOT, 65536)?);
    // Unsupported here ends the workload before anything is timed
    let probe = lid("idmap-probe");
    d.create(&probe, Some(img), &rw())?;
    let tried = d.get(&probe, &mapped).and_then(|_| d.put(&probe));
    d.remove(&probe)?;
    tried?;
    let start = |opts: &MountOpts, r: usize| -> Result<f64> {
        let id = lid(&format!("idmap-{r}"));
        let (s, _) = time(|| {
            d.create(&id, Some(img), &rw())?;
            d.get(&id, opts)?;
            d.put(&id)?;
            Ok(())
        })?;
        d.remove(&id)?;
        Ok(s)
    };
    let light = if t.driver == "vfs" { reps } else { reps * 14 };
    let mut out = Pair {
        workload: "idmap",
        backend: &t.label,
        param: None,
        reps: light,
        warmup,
    }
    .run(
        "create+idmapped mount+unmount",
        &mut |r| start(&mapped, r),
        "create+mount+unmount, unmapped",
        &mut |r| start(&MountOpts::default(), r),
    )?;
    out.extend(
        Pair {
            workload: "idmap",
            backend: &t.label,
            param: None,
            reps,
            warmup,
        }
        .run(
            "create+idmapped mount+unmount",
            &mut |r| start(&mapped, r),
            "cp -a + chown of every entry into the map",
            &mut |r| {
                let dst = work.join(format!("chowned-{r}"));
                let (s, _) = time(|| {
                    run(cmd(&["cp", "-a", "--reflink=never"]).arg(view).arg(&dst))?;
                    shift_owners(&dst, HOST_ROOT)
                })?;
                remove(&dst)?;
                Ok(s)
            },
        )?,
    );
    Ok(out)
}

/// Adds `by` to the owner and group of every entry under `dir`, as a chown-copy of an image
/// for a user namespace does.
fn shift_owners(dir: &Path, by: u32) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    std::os::unix::fs::lchown(dir, Some(meta.uid() + by), Some(meta.gid() + by))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(dir)? {
            shift_owners(&e?.path(), by)?;
        }
    }
    Ok(())
}

/// What [`raw_container`] does on this backend.
pub(super) fn raw_container_name(t: &Target) -> &'static str {
    match t.driver.as_str() {
        "overlay2" => "mkdir + fsopen/fsmount + umount",
        "btrfs" => "btrfs subvolume snapshot",
        _ if t.fs.fs() == "ext4" => "cp -a",
        _ => "cp -a --reflink=always",
    }
}

/// A container start done by hand, without the driver, timed: a copy of the image's tree
/// for vfs, the directories and the raw mount syscalls for overlay2, a snapshot by the btrfs
/// tool. What it made is removed (untimed).
pub(super) fn raw_container(t: &Target, view: &Path, work: &Path, tag: &str) -> Result<f64> {
    match t.driver.as_str() {
        "overlay2" => {
            let lower = t.fs.path().join("root/overlay2/image/diff");
            let dir = work.join(format!("raw-{tag}"));
            let (s, _) = time(|| raw_overlay_cycle(&lower, &dir))?;
            remove(&dir)?;
            Ok(s)
        }
        "btrfs" => {
            let src = t.fs.path().join("root/btrfs/subvolumes/image");
            let dst = work.join(format!("snap-{tag}"));
            let (s, _) =
                time(|| run(cmd(&["btrfs", "subvolume", "snapshot"]).arg(&src).arg(&dst)))?;
            run(cmd(&["btrfs", "subvolume", "delete"]).arg(&dst))?;
            Ok(s)
        }
        _ => {
            let flags: &[&str] = if t.fs.fs() == "ext4" {
                &["cp", "-a"]
            } else {
                &["cp", "-a", "--reflink=always"]
            };
            let dst = work.join(format!("copy-{tag}"));
            let (s, _) = time(|| run(cmd(flags).arg(view).arg(&dst)))?;
            remove(&dst)?;
            Ok(s)
        }
    }
}

/// What overlay2 does for a container, by hand: the directories and the mount syscalls.
fn raw_overlay_cycle(lower: &Path, dir: &Path) -> Result<()> {
    use rustix::mount::*;
    for d in ["", "diff", "work", "merged"] {
        std::fs::create_dir(dir.join(d))?;
    }
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // one lower: `lowerdir` (kernels before 6.8, such as the test VM's, lack `lowerdir+`)
    fsconfig_set_string(&fs, "lowerdir", lower)?;
    fsconfig_set_string(&fs, "upperdir", dir.join("diff"))?;
    fsconfig_set_string(&fs, "workdir", dir.join("work"))?;
    fsconfig_create(&fs)?;
    let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    move_mount(
        m.as_fd(),
        "",
        rustix::fs::CWD,
        dir.join("merged"),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    drop(m);
    unmount(dir.join("merged"), UnmountFlags::DETACH)?;
    Ok(())
}

/// Child creation over parents of 10 and 10,000 files: constant time is what copy-on-write
/// promises (vfs copies, so it grows).
fn children_by_parent_size(
    t: &Target,
    d: &dyn GraphDriver,
    reps: usize,
    warmup: usize,
) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for files in [10usize, 10_000] {
        let parent = lid(&format!("parent-{files}"));
        d.create(&parent, None, &CreateOpts::default())?;
        let p = d.get(&parent, &MountOpts::default())?;
        for i in 0..files {
            let dir = p.join(format!("d{:02}", i / 200));
            if i % 200 == 0 {
                std::fs::create_dir(&dir)?;
            }
            std::fs::write(dir.join(format!("f{i:05}")), b"x")?;
        }
        d.put(&parent)?;
        // children stay until all are made (many containers on one image), so no removal's
        // background work lands in a later creation
        let mut v = Vec::new();
        let mut made = Vec::new();
        for round in 0..warmup + reps {
            let child = lid(&format!("child-{files}-{round}"));
            let (s, _) = time(|| Ok(d.create(&child, Some(&parent), &rw())?))?;
            made.push(child);
            if round >= warmup {
                v.push(s);
            }
        }
        for child in made {
            d.remove(&child)?;
        }
        out.push(Measurement::of(
            "child",
            &t.label,
            "create",
            Some(format!("parent of {files} files")),
            "s",
            &v,
        ));
        d.remove(&parent)?;
    }
    // the larger parent against the smaller: 1.0 means constant in the parent's size
    if let [small, large] = &mut out[..] {
        large.ratio_to_baseline = Some(large.median / small.median);
        large.baseline = Some("the same over a parent of 10 files".into());
    }
    Ok(out)
}

/// Change detection: a layer that changed 10 files over a 10,000-file image; `changes` and
/// `diff` through the backend against the naive walk of both trees.
fn changes(
    t: &Target,
    d: &dyn GraphDriver,
    work: &Path,
    reps: usize,
    warmup: usize,
) -> Result<Vec<Measurement>> {
    let base = lid("tenk");
    d.create(&base, None, &CreateOpts::default())?;
    let p = d.get(&base, &MountOpts::default())?;
    for i in 0..10_000 {
        let dir = p.join(format!("d{:02}", i / 200));
        if i % 200 == 0 {
            std::fs::create_dir(&dir)?;
        }
        std::fs::write(dir.join(format!("f{i:05}")), format!("file {i}\n"))?;
    }
    d.put(&base)?;
    let top = lid("tenk-top");
    d.create(&top, Some(&base), &rw())?;
    let p = d.get(&top, &MountOpts::default())?;
    for i in 0..10 {
        let f = p.join(format!("d{:02}/f{:05}", i * 5, i * 1000));
        std::fs::write(&f, format!("changed {i}\n"))?;
    }
    d.put(&top)?;
    let naive = |_r: usize| -> Result<f64> {
        let (s, n) = time(|| {
            let layer = d.get(&top, &MountOpts::default())?;
            let parent = d.get(&base, &MountOpts::default())?;
            let c = graphdriver_kit::NaiveDiff::changes(&layer, &parent);
            d.put(&base)?;
            d.put(&top)?;
            Ok(c?.len())
        })?;
        anyhow::ensure!(n > 0, "the naive walk found no changes");
        Ok(s)
    };
    let pair = Pair {
        workload: "changes",
        backend: &t.label,
        param: Some("10 of 10,000 files".into()),
        reps,
        warmup,
    };
    let mut out = pair.run(
        "changes",
        &mut |_| {
            let (s, c) = time(|| Ok(d.changes(&top, None)?))?;
            anyhow::ensure!(
                c.len() == 20,
                "changes found {} entries, want 20 (10 files, 10 directories)",
                c.len()
            );
            Ok(s)
        },
        "naive walk",
        &mut { naive },
    )?;
    let export = work.join("changes.tar");
    out.extend(
        Pair {
            workload: "diff",
            ..pair
        }
        .run(
            "diff",
            &mut |_| {
                let (s, _) = time(|| {
                    let mut w = BufWriter::new(File::create(&export)?);
                    std::io::copy(&mut d.diff(&top, None)?, &mut w)?;
                    Ok(())
                })?;
                Ok(s)
            },
            "naive walk",
            &mut { naive },
        )?,
    );
    remove(&export)?;
    d.remove(&top)?;
    d.remove(&base)?;
    Ok(out)
}

/// Mount time by depth: a container layer over chains of 1 to 500 layers (500 is overlayfs's
/// limit; the others have none, and stack the same chains).
fn depth(cx: &Ctx) -> Result<Vec<Measurement>> {
    let d = cx.d;
    let depths: &[usize] = if cx.quick && cx.t.driver != "overlay2" {
        &[1, 16, 64]
    } else {
        &[1, 16, 64, 128, 256, 500]
    };
    let mut chain: Vec<LayerId> = Vec::new();
    let mut out = Vec::new();
    for &depth in depths {
        while chain.len() < depth {
            let l = lid(&format!("depth-{:03}", chain.len()));
            d.create(&l, chain.last(), &CreateOpts::default())?;
            let tar = graphdriver_conformance::support::TarBuilder::default()
                .file(&format!("f{}", chain.len()), b"x")
                .finish();
            d.apply_diff(&l, None, &mut &tar[..])?;
            chain.push(l);
        }
        let top = lid(&format!("depth-top-{depth}"));
        // depth layers below the container
        d.create(&top, chain.last(), &rw())?;
        // a kernel that cannot mount this deep (overlay through the legacy mount(2) on a
        // kernel before 6.8) ends the series: the report has the depths it could mount
        match d.get(&top, &MountOpts::default()) {
            Ok(_) => d.put(&top)?,
            Err(graphdriver_api::DriverError::Backend(e))
                if matches!(
                    e.downcast_ref::<graphdriver_overlay2::OverlayError>(),
                    Some(graphdriver_overlay2::OverlayError::TooDeep { .. })
                ) =>
            {
                eprintln!(
                    "bench: {}: depth {depth} and deeper not measured: {e}",
                    cx.t.label
                );
                d.remove(&top)?;
                break;
            }
            Err(e) => return Err(e.into()),
        }
        let mut v = Vec::new();
        let mut lookup = Vec::new();
        for round in 0..cx.warmup + cx.reps {
            let (s, p) = time(|| Ok(d.get(&top, &MountOpts::default())?))?;
            let (l, _) = time(|| Ok(std::fs::metadata(p.join("f0"))?))?;
            d.put(&top)?;
            if round >= cx.warmup {
                v.push(s);
                lookup.push(l);
            }
        }
        d.remove(&top)?;
        out.push(cx.measurement("depth", "mount", Some(depth.to_string()), "s", &v));
        out.push(cx.measurement(
            "depth",
            "first lookup of a bottom-layer file",
            Some(depth.to_string()),
            "s",
            &lookup,
        ));
    }
    for l in chain.iter().rev() {
        d.remove(l)?;
    }
    Ok(out)
}
