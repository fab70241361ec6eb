//! Workloads of many layers: many containers on one image (time and real disk use),
//! concurrent container cycles, and removal of big layers.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use graphdriver_api::{CreateOpts, LayerId, MountOpts};

use super::measure::{time, Measurement};
use super::percentile;
use super::workloads::{cmd, lid, raw_container, raw_container_name, rw, untar, Ctx, Image};
use graphdriver_conformance::fixture::run;

/// What a container writes in this workload, like a process's state file.
const CONTAINER_WRITE: usize = 4096;

/// Many containers from one image (5 and 50): the time to create and mount them all, the disk
/// they use together (from the backing filesystem's free space), and each one's size and
/// virtual size as `docker ps -s` shows them. Baselines: the same number of containers made
/// by hand (see [`raw_container`]), and as many full copies of the image (the image layer's
/// own measured disk use, times the count).
pub fn many(
    cx: &Ctx,
    img: &LayerId,
    view: &Path,
    image_size: u64,
    image_disk: u64,
) -> Result<Vec<Measurement>> {
    let d = cx.d;
    let counts: &[usize] = if cx.quick { &[2, 5] } else { &[5, 50] };
    let mut out = Vec::new();
    for &n in counts {
        let param = Some(format!("{n} containers"));
        let (mut secs, mut raw_secs, mut disk, mut sizes) = (vec![], vec![], vec![], vec![]);
        // one round of 55 full copies is enough for vfs (and minutes on ext4)
        let rounds = if cx.copies() { 1 } else { cx.heavy_reps() };
        for round in 0..rounds {
            let before = cx.used_bytes()?;
            let ids: Vec<LayerId> = (0..n).map(|i| lid(&format!("many-{i}"))).collect();
            let (s, _) = time(|| {
                for id in &ids {
                    d.create(id, Some(img), &rw())?;
                    let p = d.get(id, &MountOpts::default())?;
                    std::fs::write(p.join("state"), vec![7u8; CONTAINER_WRITE])?;
                }
                Ok(())
            })?;
            secs.push(s);
            disk.push(cx.used_bytes()?.saturating_sub(before) as f64);
            // docker ps -s: the bytes the container wrote, each inode once (measured on up to
            // five of them: on vfs each is a walk of the whole tree)
            for id in ids.iter().take(5) {
                sizes.push(d.diff_size(id, None)? as f64);
            }
            for id in &ids {
                d.put(id)?;
                d.remove(id)?;
            }
            let (s, _) = time(|| {
                for i in 0..n {
                    raw_container(cx.t, view, &cx.work, &format!("many-{round}-{i}"))?;
                }
                Ok(())
            })?;
            raw_secs.push(s);
        }
        for size in &sizes {
            ensure!(
                *size >= CONTAINER_WRITE as f64,
                "a container that wrote {CONTAINER_WRITE} bytes has size {size}"
            );
        }
        let base_t = cx.baseline(
            "many",
            &format!("{} x{n}", raw_container_name(cx.t)),
            param.clone(),
            "s",
            &raw_secs,
        );
        out.push(
            cx.measurement("many", "create+mount all", param.clone(), "s", &secs)
                .against(&base_t),
        );
        out.push(base_t);
        let base_d = cx.baseline(
            "many",
            "full copies of the image",
            param.clone(),
            "bytes",
            &[(image_disk * n as u64) as f64],
        );
        out.push(
            cx.measurement("many", "disk used", param.clone(), "bytes", &disk)
                .against(&base_d),
        );
        out.push(base_d);
        out.push(cx.measurement("many", "size per container", param.clone(), "bytes", &sizes));
        let virt: Vec<f64> = sizes.iter().map(|s| s + image_size as f64).collect();
        out.push(cx.measurement("many", "virtual size per container", param, "bytes", &virt));
    }
    Ok(out)
}

/// Concurrency: 2x cores workers each run create / mount / unmount / remove cycles of
/// container layers on the image; operations (cycles) per second and the p99 latency of a
/// cycle, against one worker running the same number of cycles alone.
pub fn concurrency(cx: &Ctx, img: &LayerId) -> Result<Vec<Measurement>> {
    let workers = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    // vfs copies the image per cycle
    let per_worker = match (cx.t.driver.as_str(), cx.quick) {
        ("vfs", true) => 1,
        ("vfs", false) => 2,
        (_, true) => 10,
        (_, false) => 40,
    };
    let total = workers * per_worker;
    let cycle = |w: usize, i: usize| -> Result<f64> {
        let id = lid(&format!("conc-{w}-{i}"));
        let (s, _) = time(|| {
            cx.d.create(&id, Some(img), &rw())?;
            cx.d.get(&id, &MountOpts::default())?;
            cx.d.put(&id)?;
            cx.d.remove(&id)?;
            Ok(())
        })?;
        Ok(s)
    };
    let (mut par_ops, mut par_p99, mut ser_ops, mut ser_p99) = (vec![], vec![], vec![], vec![]);
    let warmup = if cx.copies() { 0 } else { cx.heavy_warmup() };
    for round in 0..warmup + cx.heavy_reps() {
        let t0 = Instant::now();
        let lat: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    s.spawn(move || -> Result<Vec<f64>> {
                        (0..per_worker).map(|i| cycle(w, i)).collect()
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a worker panicked"))??,
                );
            }
            Ok::<_, anyhow::Error>(all)
        })?;
        let par = total as f64 / t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let ser_lat: Vec<f64> = (0..total).map(|i| cycle(0, i)).collect::<Result<_>>()?;
        let ser = total as f64 / t0.elapsed().as_secs_f64();
        if round >= warmup {
            par_ops.push(par);
            par_p99.push(percentile(&lat, 0.99));
            ser_ops.push(ser);
            ser_p99.push(percentile(&ser_lat, 0.99));
        }
    }
    let param = Some(format!("{workers} workers x {per_worker} cycles"));
    let base_ops = cx.baseline(
        "concurrency",
        "one worker: cycles per second",
        param.clone(),
        "ops/s",
        &ser_ops,
    );
    let base_p99 = cx.baseline(
        "concurrency",
        "one worker: p99 cycle latency",
        param.clone(),
        "s",
        &ser_p99,
    );
    Ok(vec![
        cx.measurement(
            "concurrency",
            "cycles per second",
            param.clone(),
            "ops/s",
            &par_ops,
        )
        .against(&base_ops),
        cx.measurement("concurrency", "p99 cycle latency", param, "s", &par_p99)
            .against(&base_p99),
        base_ops,
        base_p99,
    ])
}

/// Writes `n` one-line files in directories of 200 under `dir`.
fn write_files(dir: &Path, n: usize) -> Result<()> {
    for i in 0..n {
        let sub = dir.join(format!("r{:02}", i / 200));
        if i % 200 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        std::fs::write(sub.join(format!("f{i:05}")), format!("file {i}\n"))?;
    }
    Ok(())
}

/// Removal: a container layer in which 10,000 files were written, and the image layer
/// itself; against `rm -rf` of the same trees made by hand (the files written by the same
/// code; the image by `tar -xpf`).
pub fn removal(cx: &Ctx, image: &Image) -> Result<Vec<Measurement>> {
    let d = cx.d;
    let pair = |param: &str| super::measure::Pair {
        reps: cx.heavy_reps(),
        warmup: 0,
        ..cx.pair("removal", Some(param.into()))
    };
    let rm = |dir: &Path| -> Result<f64> {
        let (s, _) = time(|| run(cmd(&["rm", "-rf"]).arg(dir)))?;
        ensure!(!dir.exists(), "rm -rf left {}", dir.display());
        Ok(s)
    };
    let base = lid("removal-base");
    d.create(&base, None, &CreateOpts::default())?;
    let mut out = pair("container layer, 10,000 files written").run(
        "remove",
        &mut |r| {
            let id = lid(&format!("removal-ctr-{r}"));
            d.create(&id, Some(&base), &rw())?;
            write_files(&d.get(&id, &MountOpts::default())?, 10_000)?;
            d.put(&id)?;
            cx.used_bytes()?; // written back, as the baseline's
            let (s, _) = time(|| Ok(d.remove(&id)?))?;
            Ok(s)
        },
        "rm -rf",
        &mut |r| {
            let dir = cx.work.join(format!("removal-{r}"));
            write_files(&dir, 10_000)?;
            cx.used_bytes()?;
            rm(&dir)
        },
    )?;
    d.remove(&base)?;
    out.extend(pair("image layer").run(
        "remove",
        &mut |r| {
            let id = lid(&format!("removal-img-{r}"));
            d.create(&id, None, &CreateOpts::default())?;
            d.apply_diff(&id, None, &mut std::fs::File::open(&image.tar)?)?;
            cx.used_bytes()?;
            let (s, _) = time(|| Ok(d.remove(&id)?))?;
            Ok(s)
        },
        "rm -rf",
        &mut |r| {
            let dir = cx.work.join(format!("removal-img-{r}"));
            std::fs::create_dir(&dir)?;
            untar(&image.tar, &dir)?;
            cx.used_bytes()?;
            rm(&dir)
        },
    )?);
    Ok(out)
}
