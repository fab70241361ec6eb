//! Copy-on-write granularity: what the first write to a lower file costs by its size (and a
//! metadata-only change), and what a chain of partial updates costs in disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use anyhow::Result;
use graphdriver_api::CreateOpts;
use graphdriver_api::MountOpts;

use super::measure::{time, Measurement};
use super::workloads::{lid, rw, Ctx};

/// A file size in the reports: `4 KiB`, `64 MiB`, `1 GiB`.
pub fn size_label(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}

/// Writes `size` bytes of data that no filesystem can store as holes or share.
fn write_data(path: &Path, size: u64, seed: u8) -> Result<()> {
    let mut f = File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    let mut n: u32 = 0;
    while left > 0 {
        for (i, b) in chunk.iter_mut().enumerate().step_by(512) {
            *b = seed ^ (n as u8) ^ (i >> 9) as u8 | 1;
        }
        chunk[..4].copy_from_slice(&n.to_le_bytes());
        let len = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..len])?;
        left -= len as u64;
        n += 1;
    }
    Ok(())
}

/// The operations measured on a lower file, each on a fresh container.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    /// Open for writing and write one byte in the middle: the copy-up.
    Write,
    /// Open with `O_APPEND` and add one byte.
    Append,
    /// `chmod`: a metadata-only change.
    Chmod,
    /// `chown`: a metadata-only change.
    Chown,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Write => "first 1-byte write",
            Op::Append => "1-byte append",
            Op::Chmod => "chmod",
            Op::Chown => "chown",
        }
    }

    fn apply(self, path: &Path, size: u64) -> Result<()> {
        match self {
            Op::Write => OpenOptions::new()
                .write(true)
                .open(path)?
                .write_all_at(b"w", size / 2)?,
            Op::Append => OpenOptions::new()
                .append(true)
                .open(path)?
                .write_all(b"a")?,
            Op::Chmod => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?,
            Op::Chown => std::os::unix::fs::lchown(path, Some(1000), Some(1000))?,
        }
        Ok(())
    }
}

/// Copy-up: an image layer holds files of 4 KiB, 1 MiB, 64 MiB and 1 GiB (not 1 GiB with
/// `--quick`); on a fresh container each round, the first 1-byte write to each (and then a
/// second one), a 1-byte append, a chmod and a chown, timed, with the disk each used (from
/// statfs, after writing back). Baseline: the same operation on a plain file of the same size
/// on the same filesystem, which copies nothing.
pub fn copy_up(cx: &Ctx) -> Result<Vec<Measurement>> {
    let d = cx.d;
    let sizes: &[u64] = if cx.quick {
        &[4 << 10, 1 << 20, 64 << 20]
    } else {
        &[4 << 10, 1 << 20, 64 << 20, 1 << 30]
    };
    let image = lid("copyup-image");
    d.create(&image, None, &CreateOpts::default())?;
    let p = d.get(&image, &MountOpts::default())?;
    let plain = cx.work.join("copyup-plain");
    std::fs::create_dir_all(&plain)?;
    for (i, &size) in sizes.iter().enumerate() {
        write_data(&p.join(format!("f{size}")), size, i as u8)?;
        write_data(&plain.join(format!("f{size}")), size, i as u8)?;
    }
    d.put(&image)?;
    // per (op, size): times, second-write times, disk used, baseline times
    let ops = [Op::Write, Op::Append, Op::Chmod, Op::Chown];
    let n = ops.len() * sizes.len();
    let (mut t, mut t2, mut space, mut base, mut base2) = (
        vec![vec![]; n],
        vec![vec![]; n],
        vec![vec![]; n],
        vec![vec![]; n],
        vec![vec![]; n],
    );
    // a fresh container per operation and round, each copying up to 1 GiB
    let (reps, warmup) = match (cx.quick, cx.copies()) {
        (true, _) => (2, 0),
        // vfs copies the whole image (1 GiB of it) per container
        (false, true) => (cx.heavy_reps(), 0),
        (false, false) => (cx.reps.min(5), cx.warmup),
    };
    for round in 0..warmup + reps {
        for (oi, &op) in ops.iter().enumerate() {
            let ctr = lid(&format!("copyup-{round}-{oi}"));
            d.create(&ctr, Some(&image), &rw())?;
            let root = d.get(&ctr, &MountOpts::default())?;
            for (si, &size) in sizes.iter().enumerate() {
                let k = oi * sizes.len() + si;
                let f = root.join(format!("f{size}"));
                let before = cx.used_bytes()?;
                let (s, _) = time(|| op.apply(&f, size))?;
                let used = cx.used_bytes()?.saturating_sub(before);
                let second = match op {
                    Op::Write => Some(time(|| op.apply(&f, size))?.0),
                    _ => None,
                };
                let pf = plain.join(format!("f{size}"));
                cx.used_bytes()?;
                let (b, _) = time(|| op.apply(&pf, size))?;
                let b2 = match op {
                    Op::Write => Some(time(|| op.apply(&pf, size))?.0),
                    _ => None,
                };
                if round >= warmup {
                    t[k].push(s);
                    space[k].push(used as f64);
                    base[k].push(b);
                    if let (Some(s2), Some(b2)) = (second, b2) {
                        t2[k].push(s2);
                        base2[k].push(b2);
                    }
                }
            }
            d.put(&ctr)?;
            d.remove(&ctr)?;
        }
    }
    d.remove(&image)?;
    super::remove(&plain)?;
    let mut out = Vec::new();
    for (oi, &op) in ops.iter().enumerate() {
        for (si, &size) in sizes.iter().enumerate() {
            let k = oi * sizes.len() + si;
            let param = Some(size_label(size));
            let mut pair = |name: &str, v: &[f64], bv: &[f64]| {
                let b = cx.baseline(
                    "copy-up",
                    &format!("{name} (plain file)"),
                    param.clone(),
                    "s",
                    bv,
                );
                out.push(
                    cx.measurement("copy-up", name, param.clone(), "s", v)
                        .against(&b),
                );
                out.push(b);
            };
            pair(op.name(), &t[k], &base[k]);
            if op == Op::Write {
                pair("second 1-byte write", &t2[k], &base2[k]);
            }
            out.push(cx.measurement(
                "copy-up",
                &format!("{}: disk used", op.name()),
                param.clone(),
                "bytes",
                &space[k],
            ));
        }
    }
    Ok(out)
}

/// Churn: a chain of 16 layers over an image of 16 files of 1 MiB; each layer is prepared
/// (created on the previous one and mounted), 4 of the files are updated in place (4 KiB
/// each), and it is committed (unmounted; the next layer is its child). The time per layer,
/// and the disk the chain uses against the bytes the updates changed: block-level
/// copy-on-write stores little more than those, file-level copies whole files. Time baseline:
/// the same updates to plain files.
pub fn churn(cx: &Ctx) -> Result<Vec<Measurement>> {
    const FILES: usize = 16;
    const LAYERS: usize = 16;
    const PER_LAYER: usize = 4;
    const UPDATE: usize = 4096;
    let d = cx.d;
    let update = |dir: &Path, layer: usize| -> Result<()> {
        for j in 0..PER_LAYER {
            let f = (layer * PER_LAYER + j) % FILES;
            let off = ((layer * 7 + j * 13) % 256) * UPDATE;
            OpenOptions::new()
                .write(true)
                .open(dir.join(format!("f{f:02}")))?
                .write_all_at(&[layer as u8 | 0x80; UPDATE], off as u64)?;
        }
        Ok(())
    };
    let plain = cx.work.join("churn-plain");
    std::fs::create_dir_all(&plain)?;
    let (mut per_layer, mut base_per_layer, mut disk) = (vec![], vec![], vec![]);
    for round in 0..cx.heavy_warmup() + cx.heavy_reps() {
        let base = lid(&format!("churn-{round}-base"));
        d.create(&base, None, &CreateOpts::default())?;
        let p = d.get(&base, &MountOpts::default())?;
        for f in 0..FILES {
            write_data(&p.join(format!("f{f:02}")), 1 << 20, f as u8)?;
            write_data(&plain.join(format!("f{f:02}")), 1 << 20, f as u8)?;
        }
        d.put(&base)?;
        let before = cx.used_bytes()?;
        let mut chain = vec![base];
        for layer in 0..LAYERS {
            let id = lid(&format!("churn-{round}-{layer:02}"));
            let (s, _) = time(|| {
                d.create(&id, chain.last(), &rw())?;
                update(&d.get(&id, &MountOpts::default())?, layer)?;
                d.put(&id)?;
                Ok(())
            })?;
            chain.push(id);
            let (b, _) = time(|| update(&plain, layer))?;
            if round >= cx.heavy_warmup() {
                per_layer.push(s);
                base_per_layer.push(b);
            }
        }
        let used = cx.used_bytes()?.saturating_sub(before);
        if round >= cx.heavy_warmup() {
            disk.push(used as f64);
        }
        for id in chain.iter().rev() {
            d.remove(id)?;
        }
    }
    super::remove(&plain)?;
    let param = Some(format!(
        "{LAYERS} layers, {PER_LAYER} x 4 KiB updates each, 1 MiB files"
    ));
    let bt = cx.baseline(
        "churn",
        "the same updates to plain files",
        param.clone(),
        "s",
        &base_per_layer,
    );
    let bd = cx.baseline(
        "churn",
        "bytes the updates changed",
        param.clone(),
        "bytes",
        &[(LAYERS * PER_LAYER * UPDATE) as f64],
    );
    Ok(vec![
        cx.measurement(
            "churn",
            "prepare + update + commit, per layer",
            param.clone(),
            "s",
            &per_layer,
        )
        .against(&bt),
        bt,
        cx.measurement("churn", "disk used by the chain", param, "bytes", &disk)
            .against(&bd),
        bd,
    ])
}
