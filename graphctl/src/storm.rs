//! The storm: several processes on one store for a while, each mixing create, mount + write,
//! apply, diff, changes and remove over shared parents, then checks that nothing leaked and
//! every surviving layer holds what its history says.
//!
//! `graphctl storm` makes two shared parents (`storm-base`, and `storm-mid` on it), starts
//! `--procs` worker processes (`graphctl __storm-worker`), each with its own random seed, and
//! waits for them. A worker only changes layers it made (ids `storm-wW-N`), as a runtime
//! changes only its containers; its layers are children of the shared parents or of its own
//! layers, so creates, mounts and removes race on the same parents, locks and journal. It
//! keeps, for each of its layers, the files the layer must show (its parent's and its own
//! writes and applies), and at the end mounts each one and compares. Any failed operation is
//! a failure (none is expected: no worker touches another's layers), counted by kind.
//! Then the coordinator checks that no mount is left below the root, that `fsck` finds
//! nothing, and removes everything.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use graphdriver_api::{CreateOpts, DriverError, GraphDriver, LayerId, MountOpts};
use serde::{Deserialize, Serialize};

/// The storm: worker processes mixing create, mount + write, apply, diff, changes and
/// remove over shared parents on this root, then checks (leaked mounts, fsck, every
/// layer's content against its history); exits 1 on any failure.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub procs: usize,
    /// Seconds each worker runs.
    #[arg(long, default_value_t = 30)]
    pub secs: u64,
    /// The random seed (each worker's is derived from it).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A storm worker (see `storm`).
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// Its number.
    pub worker: usize,
    /// Its random seed.
    pub seed: u64,
    /// Seconds it runs.
    pub secs: u64,
}

/// `graphctl storm`: runs the storm with this program as the workers, prints the report.
pub fn command(
    driver: &str,
    root: &Path,
    opts: &[(String, String)],
    args: &Args,
) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("find graphctl itself")?;
    let r = run(&exe, driver, root, opts, args.procs, args.secs, args.seed)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
    } else {
        let total: u64 = r.ops.values().sum();
        writeln!(
            out,
            "storm on {}: {} processes x {} s, {total} operations {:?}",
            r.driver, r.procs, r.secs, r.ops
        )?;
        writeln!(
            out,
            "failures: {:?}; layers checked against their history: {}, differing: {:?}; \
             leaked mounts: {:?}; fsck: {:?}; leaked devices and datasets: {:?}",
            r.failures,
            r.layers_checked,
            r.mismatches,
            r.leaked_mounts,
            r.fsck_findings,
            r.leaked_objects
        )?;
    }
    Ok(if r.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `graphctl __storm-worker`: one worker on `d`, its report as JSON on stdout.
pub fn worker_command(d: &dyn GraphDriver, args: &WorkerArgs) -> Result<ExitCode> {
    let r = worker(d, args.worker, args.seed, args.secs)?;
    serde_json::to_writer(std::io::stdout().lock(), &r)?;
    Ok(ExitCode::SUCCESS)
}

/// The files a layer must show: path → content.
type Files = BTreeMap<String, Vec<u8>>;

/// What one worker did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Operations done, by kind.
    pub ops: BTreeMap<String, u64>,
    /// Failed operations, by operation and error kind.
    pub failures: BTreeMap<String, u64>,
    /// Layers it left, each checked against its history.
    pub layers_checked: u64,
    /// Layers whose content differed from their history (each one a failure).
    pub mismatches: Vec<String>,
}

/// What the whole storm did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StormReport {
    /// The backend.
    pub driver: String,
    /// Worker processes.
    pub procs: usize,
    /// Seconds each ran.
    pub secs: u64,
    /// Operations done, by kind, over all workers.
    pub ops: BTreeMap<String, u64>,
    /// Failed operations, by kind.
    pub failures: BTreeMap<String, u64>,
    /// Layers checked against their history at the end.
    pub layers_checked: u64,
    /// Layers whose content differed from their history.
    pub mismatches: Vec<String>,
    /// Mounts left below the root after every worker exited.
    pub leaked_mounts: Vec<String>,
    /// What `fsck` found afterwards, and once everything was removed.
    pub fsck_findings: Vec<String>,
    /// Kernel objects of the store (device-mapper devices, loop devices, ZFS datasets) that
    /// were not there before the storm and are still there after everything was removed and
    /// cleaned up.
    pub leaked_objects: Vec<String>,
}

impl StormReport {
    /// Whether the storm found nothing wrong.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
            && self.mismatches.is_empty()
            && self.leaked_mounts.is_empty()
            && self.fsck_findings.is_empty()
            && self.leaked_objects.is_empty()
    }
}

fn lid(s: &str) -> LayerId {
    LayerId::new(s).expect("storm ids are valid")
}

const BASE: &str = "storm-base";
/// The most layers a worker holds at once (a create past it is a remove): the storm is a
/// steady state that runs for as long as asked on a small filesystem.
const MAX_LAYERS: usize = 40;
/// A worker stops after this many failed operations (the first few are printed).
const MAX_FAILURES: u64 = 100;
const MID: &str = "storm-mid";

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice())
            .expect("a tar in memory");
    }
    b.into_inner().expect("a tar in memory")
}

fn base_files() -> Vec<(String, Vec<u8>)> {
    (0..20)
        .map(|i| (format!("base/f{i}"), format!("base {i}\n").into_bytes()))
        .collect()
}

fn mid_files() -> Vec<(String, Vec<u8>)> {
    vec![
        ("mid/config".to_owned(), b"mid\n".to_vec()),
        ("base/f0".to_owned(), b"replaced by mid\n".to_vec()),
    ]
}

/// The files the shared parents show.
fn shared() -> (Files, Files) {
    let base: Files = base_files().into_iter().collect();
    let mut mid = base.clone();
    mid.extend(mid_files());
    (base, mid)
}

/// Runs the storm on `driver` at `root` (opened with `opts`), with `graphctl` as the worker
/// binary.
pub fn run(
    graphctl: &Path,
    driver: &str,
    root: &Path,
    opts: &[(String, String)],
    procs: usize,
    secs: u64,
    seed: u64,
) -> Result<StormReport> {
    let d = graphdriver_backends::open(driver, root, &opts.iter().cloned().collect())?;
    let objects_before = kernel_objects(root);
    for (id, parent, files) in [(BASE, None, base_files()), (MID, Some(BASE), mid_files())] {
        let id = lid(id);
        if !d.exists(&id) {
            d.create(&id, parent.map(lid).as_ref(), &CreateOpts::default())?;
            d.apply_diff(&id, None, &mut tar_of(&files).as_slice())?;
        }
    }
    // Mounts the driver keeps for itself (btrfs on a loop image) are not leaks.
    let before = mounts_below(root)?;
    let mut children = Vec::new();
    for w in 0..procs {
        let mut c = Command::new(graphctl);
        c.arg("--driver").arg(driver).arg("--root").arg(root);
        for (k, v) in opts {
            c.arg("--opt").arg(format!("{k}={v}"));
        }
        c.arg("__storm-worker")
            .arg(w.to_string())
            .arg(seed.wrapping_add(w as u64 * 7919).to_string())
            .arg(secs.to_string())
            .stdout(Stdio::piped());
        children.push(c.spawn().context("start a storm worker")?);
    }
    let mut report = StormReport {
        driver: driver.to_owned(),
        procs,
        secs,
        ..StormReport::default()
    };
    for (w, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("storm worker {w} exited with {}", out.status);
        }
        let r: WorkerReport = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("storm worker {w}'s report"))?;
        for (k, v) in r.ops {
            *report.ops.entry(k).or_default() += v;
        }
        for (k, v) in r.failures {
            *report.failures.entry(k).or_default() += v;
        }
        report.layers_checked += r.layers_checked;
        report.mismatches.extend(r.mismatches);
    }
    report.leaked_mounts = mounts_below(root)?
        .into_iter()
        .filter(|m| !before.contains(m))
        .collect();
    let fsck = d.fsck(false)?;
    report.fsck_findings = fsck.findings.iter().map(|f| format!("{f:?}")).collect();
    // Everything the storm made goes, children first.
    let mut ids = d.list()?;
    ids.sort_by_key(|id| std::cmp::Reverse(depth(d.as_ref(), id)));
    for id in ids {
        d.remove(&id)
            .with_context(|| format!("remove {id} after the storm"))?;
    }
    let fsck = d.fsck(false)?;
    report.fsck_findings.extend(
        fsck.findings
            .iter()
            .map(|f| format!("once everything was removed: {f:?}")),
    );
    d.cleanup().context("clean up after the storm")?;
    report.leaked_objects = kernel_objects(root)
        .difference(&objects_before)
        .cloned()
        .collect();
    Ok(report)
}

/// The kernel objects a backend makes for the store at `root`: loop devices on files below
/// it, device-mapper devices that rest on those (directly or through other such devices), and
/// ZFS datasets below the dataset `root` is mounted from. What other processes make meanwhile
/// (a test's scratch filesystems) is not counted.
fn kernel_objects(root: &Path) -> BTreeSet<String> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let mut out = BTreeSet::new();
    // block device name (loop3, dm-2) -> what it rests on
    let mut ours: BTreeSet<String> = BTreeSet::new();
    let mut dms: Vec<(String, String, Vec<String>)> = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dev = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if let Ok(file) = std::fs::read_to_string(p.join("loop/backing_file")) {
            if Path::new(file.trim()).starts_with(&root) {
                out.insert(format!("loop device {dev} on {}", file.trim()));
                ours.insert(dev.clone());
            }
        }
        if let Ok(name) = std::fs::read_to_string(p.join("dm/name")) {
            let slaves = std::fs::read_dir(p.join("slaves"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|s| s.file_name().to_string_lossy().into_owned())
                .collect();
            dms.push((dev, name.trim().to_owned(), slaves));
        }
    }
    // a thin device rests on the pool, the pool on the loop devices
    loop {
        let before = ours.len();
        for (dev, name, slaves) in &dms {
            if !ours.contains(dev) && slaves.iter().any(|s| ours.contains(s)) {
                ours.insert(dev.clone());
                out.insert(format!("dm device {name}"));
            }
        }
        if ours.len() == before {
            break;
        }
    }
    // and devices named as ours are (the same name up to its last '-'): a thin device's
    // idle spare rests on nothing (an `error` table)
    let families: Vec<String> = dms
        .iter()
        .filter(|(dev, _, _)| ours.contains(dev))
        .filter_map(|(_, name, _)| Some(format!("{}-", name.rsplit_once('-')?.0)))
        .collect();
    for (_, name, _) in &dms {
        if families.iter().any(|f| name.starts_with(f.as_str())) {
            out.insert(format!("dm device {name}"));
        }
    }
    if let Some(dataset) = zfs_dataset_of(&root) {
        if let Ok(o) = Command::new("zfs")
            .args(["list", "-H", "-o", "name", "-t", "all", "-r", &dataset])
            .stderr(Stdio::null())
            .output()
        {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                out.insert(format!("zfs dataset {l}"));
            }
        }
    }
    out
}

/// The ZFS dataset the mount holding `path` comes from, if that is ZFS.
fn zfs_dataset_of(path: &Path) -> Option<String> {
    let table = graphdriver_kit::fs::mountinfo::MountTable::read().ok()?;
    let m = table.holding(path)?;
    (m.fstype == "zfs").then(|| m.source.clone())
}

/// The mount points below `root` (not `root` itself).
fn mounts_below(root: &Path) -> Result<Vec<String>> {
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&canonical) && Path::new(m) != canonical)
        .map(str::to_owned)
        .collect())
}

fn depth(d: &dyn GraphDriver, id: &LayerId) -> usize {
    let mut n = 0;
    let mut cur = d.parent(id).ok().flatten();
    while let Some(p) = cur {
        n += 1;
        cur = d.parent(&p).ok().flatten();
    }
    n
}

/// A layer a worker made, and what it must show.
struct Mine {
    id: LayerId,
    files: Files,
    children: usize,
    parent: Option<usize>,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn kind(e: &DriverError) -> &'static str {
    match e {
        DriverError::NotFound(_) => "NotFound",
        DriverError::AlreadyExists(_) => "AlreadyExists",
        DriverError::HasChildren { .. } => "HasChildren",
        DriverError::Busy { .. } => "Busy",
        DriverError::Quarantined { .. } => "Quarantined",
        DriverError::NotMounted(_) => "NotMounted",
        DriverError::InvalidArchive { .. } => "InvalidArchive",
        DriverError::Io { .. } => "Io",
        DriverError::RollbackFailed { .. } => "RollbackFailed",
        DriverError::RetryFailed { .. } => "RetryFailed",
        _ => "other",
    }
}

/// One worker: `secs` seconds of random operations on its own layers, then the check of each.
/// Prints its [`WorkerReport`] as JSON.
pub fn worker(d: &dyn GraphDriver, w: usize, seed: u64, secs: u64) -> Result<WorkerReport> {
    let mut rng = Rng(seed | 1);
    let (base, mid) = shared();
    let mut mine: Vec<Mine> = Vec::new();
    let mut report = WorkerReport::default();
    let mut serial = 0u64;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let op = match rng.below(10) {
            // a steady state: each worker holds at most MAX_LAYERS layers
            0..=2 if mine.len() >= MAX_LAYERS => "remove",
            0..=2 => "create",
            3 | 4 => "write",
            5 => "apply",
            6 => "diff",
            7 => "changes",
            _ => "remove",
        };
        // the layer an operation changes: one of mine with no child
        let leaves: Vec<usize> = (0..mine.len()).filter(|&i| mine[i].children == 0).collect();
        let result: Result<(), DriverError> = match op {
            "create" => {
                serial += 1;
                let id = lid(&format!("storm-w{w}-{serial}"));
                let choice = rng.below(mine.len() + 2);
                let (parent_id, files, parent) = match choice {
                    0 => (lid(BASE), base.clone(), None),
                    1 => (lid(MID), mid.clone(), None),
                    i => (
                        mine[i - 2].id.clone(),
                        mine[i - 2].files.clone(),
                        Some(i - 2),
                    ),
                };
                let opts = CreateOpts {
                    read_write: rng.below(2) == 0,
                    ..CreateOpts::default()
                };
                d.create(&id, Some(&parent_id), &opts).map(|()| {
                    if let Some(p) = parent {
                        mine[p].children += 1;
                    }
                    mine.push(Mine {
                        id,
                        files,
                        children: 0,
                        parent,
                    });
                })
            }
            "write" if !leaves.is_empty() => {
                let i = leaves[rng.below(leaves.len())];
                serial += 1;
                let name = format!("w{w}/write-{serial}");
                let data = format!("written by {w} as {serial}\n").repeat(1 + rng.below(200));
                match d.get(&mine[i].id, &MountOpts::default()) {
                    Ok(p) => {
                        let wrote = std::fs::create_dir_all(p.join(format!("w{w}")))
                            .and_then(|()| std::fs::write(p.join(&name), &data));
                        let put = d.put(&mine[i].id);
                        match (wrote, put) {
                            (Ok(()), Ok(())) => {
                                mine[i].files.insert(name, data.into_bytes());
                                Ok(())
                            }
                            (Err(e), _) => Err(DriverError::io("write into", p, e)),
                            (_, Err(e)) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            "apply" if !leaves.is_empty() => {
                let i = leaves[rng.below(leaves.len())];
                serial += 1;
                let files = vec![(
                    format!("w{w}/applied-{serial}"),
                    format!("applied by {w} as {serial}\n").into_bytes(),
                )];
                d.apply_diff(&mine[i].id, None, &mut tar_of(&files).as_slice())
                    .map(|_| mine[i].files.extend(files))
            }
            "diff" if !mine.is_empty() => {
                let i = rng.below(mine.len());
                d.diff(&mine[i].id, None).and_then(|mut r| {
                    let mut sink = Vec::new();
                    r.read_to_end(&mut sink)
                        .map(|_| ())
                        .map_err(|e| DriverError::io("read the diff of", mine[i].id.as_str(), e))
                })
            }
            "changes" if !mine.is_empty() => {
                let i = rng.below(mine.len());
                d.changes(&mine[i].id, None).map(|_| ())
            }
            "remove" if !leaves.is_empty() => {
                let i = leaves[rng.below(leaves.len())];
                d.remove(&mine[i].id).map(|()| {
                    let gone = mine.remove(i);
                    if let Some(p) = gone.parent {
                        mine[p].children -= 1;
                    }
                    for m in &mut mine {
                        if let Some(p) = m.parent.as_mut() {
                            if *p > i {
                                *p -= 1;
                            }
                        }
                    }
                })
            }
            _ => continue,
        };
        *report.ops.entry(op.to_owned()).or_default() += 1;
        if let Err(e) = result {
            let failed: u64 = report.failures.values().sum();
            if failed < 10 {
                let mut msg = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    msg = format!("{msg}: {c}");
                    cause = c.source();
                }
                eprintln!("storm worker {w}: {op}: {msg}");
            }
            *report
                .failures
                .entry(format!("{op}: {}", kind(&e)))
                .or_default() += 1;
            if failed + 1 >= MAX_FAILURES {
                eprintln!("storm worker {w}: stopping after {MAX_FAILURES} failures");
                break;
            }
        }
    }
    for m in &mine {
        report.layers_checked += 1;
        match check(d, m) {
            Ok(()) => {}
            Err(e) => report.mismatches.push(format!("{}: {e:#}", m.id)),
        }
    }
    Ok(report)
}

/// Mounts the layer and compares every file below `base/`, `mid/` and `wW/` with what its
/// history says.
fn check(d: &dyn GraphDriver, m: &Mine) -> Result<()> {
    let p = d.get(&m.id, &MountOpts::default())?;
    let result = (|| -> Result<()> {
        let mut got = Files::new();
        let mut todo = vec![p.clone()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir)? {
                let e = e?;
                let t = e.file_type()?;
                if t.is_dir() {
                    todo.push(e.path());
                } else if t.is_file() {
                    let rel = e.path().strip_prefix(&p)?.to_string_lossy().into_owned();
                    got.insert(rel, std::fs::read(e.path())?);
                }
            }
        }
        if got != m.files {
            let missing: Vec<_> = m.files.keys().filter(|k| !got.contains_key(*k)).collect();
            let extra: Vec<_> = got.keys().filter(|k| !m.files.contains_key(*k)).collect();
            let changed: Vec<_> = got
                .iter()
                .filter(|(k, v)| m.files.get(*k).is_some_and(|want| want != *v))
                .map(|(k, _)| k)
                .collect();
            bail!(
                "content differs from its history: missing {missing:?}, unexpected {extra:?}, \
                 changed {changed:?}"
            );
        }
        Ok(())
    })();
    d.put(&m.id)?;
    result
}
