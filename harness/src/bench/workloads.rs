//! The workloads, each beside its baseline.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use graphdriver_api::{CreateOpts, GraphDriver, LayerId};

use super::measure::{time, Measurement, Pair};
use super::{remove, Target};
use crate::drivers;
use crate::fixture::run;

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
        let mut r = graphdriver_api::archive::TarReader::new(std::io::BufReader::new(f));
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

fn lid(s: &str) -> LayerId {
    LayerId::new(s).expect("bench ids are valid")
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(args[0]);
    c.args(&args[1..]);
    c
}

/// Runs every workload on `t`.
pub fn run_all(
    t: &Target,
    image: &Image,
    reps: usize,
    warmup: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Measurement>> {
    let root = t.fs.path().join("root");
    let work = t.fs.path().join("work");
    std::fs::create_dir_all(&work)?;
    let d = drivers::open(&t.driver, &root, &Default::default())?;
    let d: &dyn GraphDriver = d.as_ref();
    let pair = |workload: &'static str| Pair {
        workload,
        backend: &t.label,
        param: None,
        reps,
        warmup,
    };
    let mut out = Vec::new();

    log("  import: apply_diff of the image against tar -xpf");
    out.extend(pair("import").run(
        "apply_diff",
        &mut |r| {
            let id = lid(&format!("import-{r}"));
            d.create(&id, None, &CreateOpts::default())?;
            let (s, _) = time(|| Ok(d.apply_diff(&id, None, &mut File::open(&image.tar)?)?))?;
            d.remove(&id)?;
            Ok(s)
        },
        "tar -xpf",
        &mut |r| {
            let dir = work.join(format!("tar-x-{r}"));
            std::fs::create_dir(&dir)?;
            let (s, _) = time(|| {
                run(cmd(&[
                    "tar",
                    "--xattrs",
                    "--xattrs-include=*",
                    "--numeric-owner",
                    "-xpf",
                ])
                .arg(&image.tar)
                .arg("-C")
                .arg(&dir))
            })?;
            remove(&dir)?;
            Ok(s)
        },
    )?);

    let img = lid("image");
    d.create(&img, None, &CreateOpts::default())?;
    d.apply_diff(&img, None, &mut File::open(&image.tar)?)?;
    let view = d.get(&img, None)?;

    log("  export: diff of the image against tar -cf");
    let export = work.join("export.tar");
    out.extend(pair("export").run(
        "diff",
        &mut |_| {
            let (s, _) = time(|| {
                let mut w = BufWriter::with_capacity(1 << 20, File::create(&export)?);
                std::io::copy(&mut d.diff(&img, None)?, &mut w)?;
                w.flush()?;
                Ok(())
            })?;
            remove(&export)?;
            Ok(s)
        },
        "tar -cf",
        &mut |_| {
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
                .arg(&view)
                .arg("."))
            })?;
            remove(&export)?;
            Ok(s)
        },
    )?);

    out.extend(container(t, d, &img, &view, &work, reps, warmup, log)?);
    d.put(&img)?;
    out.extend(children_by_parent_size(t, d, reps, warmup, log)?);
    out.extend(changes(t, d, &work, reps, warmup, log)?);
    if t.driver == "overlay2" {
        out.extend(depth(t, d, reps, warmup, log)?);
    }
    d.cleanup()?;
    Ok(out)
}

fn rw() -> CreateOpts {
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
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Measurement>> {
    log("  container: create + mount + unmount of a layer on the image");
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
            d.get(&id, None)?;
            d.put(&id)?;
            Ok(())
        })?;
        d.remove(&id)?;
        Ok(s)
    };
    match t.driver.as_str() {
        "overlay2" => {
            let lower = t.fs.path().join("root/overlay2/image/diff");
            pair.run(
                "create+mount+unmount",
                &mut subject,
                "mkdir + fsopen/fsmount + umount",
                &mut |r| {
                    let dir = work.join(format!("raw-{r}"));
                    let (s, _) = time(|| raw_overlay_cycle(&lower, &dir))?;
                    remove(&dir)?;
                    Ok(s)
                },
            )
        }
        "btrfs" => {
            let src = t.fs.path().join("root/btrfs/subvolumes/image");
            pair.run(
                "create+mount+unmount",
                &mut subject,
                "btrfs subvolume snapshot",
                &mut |r| {
                    let dst = work.join(format!("snap-{r}"));
                    let (s, _) =
                        time(|| run(cmd(&["btrfs", "subvolume", "snapshot"]).arg(&src).arg(&dst)))?;
                    run(cmd(&["btrfs", "subvolume", "delete"]).arg(&dst))?;
                    Ok(s)
                },
            )
        }
        _ => {
            let reflink = t.fs.fs() != "ext4";
            let (name, flags): (&str, &[&str]) = if reflink {
                ("cp -a --reflink=always", &["cp", "-a", "--reflink=always"])
            } else {
                ("cp -a", &["cp", "-a"])
            };
            let copy = |flags: &[&str], r: usize| -> Result<f64> {
                let dst = work.join(format!("copy-{r}"));
                let (s, _) = time(|| run(cmd(flags).arg(view).arg(&dst)))?;
                remove(&dst)?;
                Ok(s)
            };
            let mut out = pair.run("create+mount+unmount", &mut subject, name, &mut |r| {
                copy(flags, r)
            })?;
            if reflink {
                // and against a full copy, which is what reflinks save
                out.extend(pair.run(
                    "create+mount+unmount",
                    &mut subject,
                    "cp -a --reflink=never",
                    &mut |r| copy(&["cp", "-a", "--reflink=never"], r),
                )?);
            }
            Ok(out)
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
    fsconfig_set_string(&fs, "lowerdir+", lower)?;
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
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Measurement>> {
    log("  child: create a layer over parents of 10 and 10,000 files");
    let mut out = Vec::new();
    for files in [10usize, 10_000] {
        let parent = lid(&format!("parent-{files}"));
        d.create(&parent, None, &CreateOpts::default())?;
        let p = d.get(&parent, None)?;
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
        let (median, min, max) = super::measure::summarize(&v);
        out.push(Measurement {
            workload: "child".into(),
            backend: t.label.clone(),
            subject: "create".into(),
            param: Some(format!("parent of {files} files")),
            unit: "s".into(),
            n: v.len(),
            median,
            min,
            max,
            ratio_to_baseline: None,
            baseline: None,
        });
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
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Measurement>> {
    log("  changes: 10 files changed over a 10,000-file image");
    let base = lid("tenk");
    d.create(&base, None, &CreateOpts::default())?;
    let p = d.get(&base, None)?;
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
    let p = d.get(&top, None)?;
    for i in 0..10 {
        let f = p.join(format!("d{:02}/f{:05}", i * 5, i * 1000));
        std::fs::write(&f, format!("changed {i}\n"))?;
    }
    d.put(&top)?;
    let naive = |_r: usize| -> Result<f64> {
        let (s, n) = time(|| {
            let layer = d.get(&top, None)?;
            let parent = d.get(&base, None)?;
            let c = graphdriver_api::NaiveDiff::changes(&layer, &parent);
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

/// Mount time by depth: a container layer over chains of 1 to 500 layers.
fn depth(
    t: &Target,
    d: &dyn GraphDriver,
    reps: usize,
    warmup: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Measurement>> {
    log("  depth: mount time of a container over 1, 16, 64, 128, 256 and 500 layers");
    let mut chain: Vec<LayerId> = Vec::new();
    let mut out = Vec::new();
    for depth in [1usize, 16, 64, 128, 256, 500] {
        while chain.len() < depth {
            let l = lid(&format!("depth-{:03}", chain.len()));
            d.create(&l, chain.last(), &CreateOpts::default())?;
            let tar = crate::conformance::support::TarBuilder::default()
                .file(&format!("f{}", chain.len()), b"x")
                .finish();
            d.apply_diff(&l, None, &mut &tar[..])?;
            chain.push(l);
        }
        let top = lid(&format!("depth-top-{depth}"));
        // depth layers below the container: depth lowers (500 is the kernel's limit)
        d.create(&top, chain.last(), &rw())?;
        let mut v = Vec::new();
        let mut lookup = Vec::new();
        for round in 0..warmup + reps {
            let (s, p) = time(|| Ok(d.get(&top, None)?))?;
            let (l, _) = time(|| Ok(std::fs::metadata(p.join("f0"))?))?;
            d.put(&top)?;
            if round >= warmup {
                v.push(s);
                lookup.push(l);
            }
        }
        d.remove(&top)?;
        for (what, vals) in [
            ("mount", &v),
            ("first lookup of a bottom-layer file", &lookup),
        ] {
            let (median, min, max) = super::measure::summarize(vals);
            out.push(Measurement {
                workload: "depth".into(),
                backend: t.label.clone(),
                subject: what.into(),
                param: Some(depth.to_string()),
                unit: "s".into(),
                n: vals.len(),
                median,
                min,
                max,
                ratio_to_baseline: None,
                baseline: None,
            });
        }
    }
    for l in chain.iter().rev() {
        d.remove(l)?;
    }
    Ok(out)
}
