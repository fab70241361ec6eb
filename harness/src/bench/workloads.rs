//! The workloads, each beside its baseline.

use std::fs::File;
use std::io::{BufWriter, Write};
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

    log("  child: create a layer on the image against a copy of its tree");
    let reflink = t.fs.fs() != "ext4";
    let (base_name, flags): (&str, &[&str]) = if reflink {
        ("cp -a --reflink=always", &["cp", "-a", "--reflink=always"])
    } else {
        ("cp -a", &["cp", "-a"])
    };
    out.extend(pair("child").run(
        "create",
        &mut |r| {
            let id = lid(&format!("child-{r}"));
            let (s, _) = time(|| {
                Ok(d.create(
                    &id,
                    Some(&img),
                    &CreateOpts {
                        read_write: true,
                        ..CreateOpts::default()
                    },
                )?)
            })?;
            d.remove(&id)?;
            Ok(s)
        },
        base_name,
        &mut |r| {
            let dst = work.join(format!("copy-{r}"));
            let (s, _) = time(|| run(cmd(flags).arg(&view).arg(&dst)))?;
            remove(&dst)?;
            Ok(s)
        },
    )?);
    if reflink {
        // and against a full copy, which is what reflinks save
        let mut full = pair("child").run(
            "create",
            &mut |r| {
                let id = lid(&format!("childf-{r}"));
                let (s, _) = time(|| {
                    Ok(d.create(
                        &id,
                        Some(&img),
                        &CreateOpts {
                            read_write: true,
                            ..CreateOpts::default()
                        },
                    )?)
                })?;
                d.remove(&id)?;
                Ok(s)
            },
            "cp -a --reflink=never",
            &mut |r| {
                let dst = work.join(format!("copyf-{r}"));
                let (s, _) =
                    time(|| run(cmd(&["cp", "-a", "--reflink=never"]).arg(&view).arg(&dst)))?;
                remove(&dst)?;
                Ok(s)
            },
        )?;
        out.append(&mut full);
    }
    d.put(&img)?;
    d.cleanup()?;
    Ok(out)
}
