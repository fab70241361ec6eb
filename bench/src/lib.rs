//! The bench behind `graphctl bench`: copy-on-write costs of every backend, side by side with the same work
//! done by standard tools in the same run, so every figure is also a ratio.
//!
//! Workloads run on scratch filesystems on loop devices (the root disk here is slow and
//! noisy for heavy writes); each backend is measured against its baseline alternately, round
//! by round, after a warm-up, with the page cache warm. The report is `report.json` (every
//! measurement; schema in `docs/bench-schema.md`) and `report.md` (tables).

mod cow;
mod html;
mod images;
pub mod measure;
mod report;
mod scale;
mod workloads;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

pub use measure::{percentile, Measurement};
pub use report::write_reports;

use graphdriver_conformance::fixture::ScratchFs;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Backends to measure.
    pub drivers: Vec<String>,
    /// Where the reports go.
    pub out: PathBuf,
    /// Fewer repetitions and smaller inputs (CI).
    pub quick: bool,
    /// The Debian root filesystem tar used as the image.
    pub rootfs_tar: PathBuf,
    /// Where scratch images are made.
    pub scratch_dir: PathBuf,
}

/// Facts about the machine and the run, recorded with every report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// `uname -r`.
    pub kernel: String,
    /// CPU model and count.
    pub cpu: String,
    /// Total memory.
    pub memory: String,
    /// Unix time the run started.
    pub started: u64,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Repetitions per measurement.
    pub reps: usize,
    /// Warm-up rounds per measurement.
    pub warmup: usize,
    /// Page cache state.
    pub cache: String,
    /// The image: path and entry count.
    pub image: String,
    /// The image tar's size in bytes (throughput is this over a median time).
    pub image_bytes: u64,
    /// Each scratch filesystem: type and mount options.
    pub filesystems: Vec<String>,
}

/// A whole report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BenchReport {
    /// Schema version of this JSON.
    pub schema: u32,
    /// The run.
    pub run: RunInfo,
    /// Every measurement.
    pub measurements: Vec<Measurement>,
}

/// A backend as benchmarked: a driver on a filesystem.
#[derive(Debug)]
pub struct Target {
    /// Label in reports, e.g. `vfs (xfs)`.
    pub label: String,
    /// The driver.
    pub driver: String,
    /// The filesystem it runs on.
    pub fs: ScratchFs,
}

/// Where a run reports how far it got: a progress bar on a terminal, plain lines otherwise.
pub trait Progress {
    /// The run has `total` steps (workloads on backends).
    fn start(&mut self, total: usize);
    /// The next step begins: `target` (a backend label) runs `what`.
    fn step(&mut self, target: &str, what: &str);
    /// A line to show that is not a step.
    fn note(&mut self, line: &str);
    /// The run is over.
    fn finish(&mut self);
}

/// A [`Progress`] that prints a line per step, with the time since the start.
pub struct Lines(pub std::time::Instant);

impl Progress for Lines {
    fn start(&mut self, total: usize) {
        self.0 = std::time::Instant::now();
        eprintln!("bench: {total} steps");
    }
    fn step(&mut self, target: &str, what: &str) {
        eprintln!(
            "bench: [{:6.1} s] {target}: {what}",
            self.0.elapsed().as_secs_f64()
        );
    }
    fn note(&mut self, line: &str) {
        eprintln!("bench: {line}");
    }
    fn finish(&mut self) {}
}

/// Reads `dir/report.json` and writes `report.md` and `report.html` from it again.
pub fn render(dir: &Path) -> Result<BenchReport> {
    let path = dir.join("report.json");
    let report: BenchReport = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("read {}", path.display()))?,
    )
    .with_context(|| format!("parse {}", path.display()))?;
    write_reports(&report, dir)?;
    Ok(report)
}

/// Runs the benchmark and writes the reports.
pub fn run(opts: &BenchOpts, progress: &mut dyn Progress) -> Result<BenchReport> {
    let (reps, warmup) = if opts.quick { (3, 1) } else { (7, 1) };
    graphdriver_conformance::fixture::sweep(&opts.scratch_dir);
    let mut targets = Vec::new();
    for d in &opts.drivers {
        for fs in fs_for(d, opts.quick) {
            let scratch = ScratchFs::new(&opts.scratch_dir, fs, 24 << 30, "")
                .with_context(|| format!("make a {fs} scratch filesystem for {d}"))?;
            targets.push(Target {
                label: format!("{d} ({fs})"),
                driver: d.clone(),
                fs: scratch,
            });
        }
    }
    let image = workloads::Image::load(&opts.rootfs_tar)?;
    let archives = images::Archives::make(&opts.rootfs_tar, &opts.scratch_dir.join("images"))
        .context("make the OCI image archives")?;
    let run = RunInfo {
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        cpu: cpu_model(),
        memory: mem_total(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        quick: opts.quick,
        reps,
        warmup,
        cache: format!(
            "warm (inputs read once before timing), except measurements whose param is \"{}\": \
             for those the page cache was dropped (sync; echo 3 > /proc/sys/vm/drop_caches) \
             before every round, of the backend and of its baseline alike",
            workloads::COLD
        ),
        image: format!(
            "{} ({} entries, {} bytes)",
            opts.rootfs_tar.display(),
            image.entries,
            image.bytes
        ),
        image_bytes: image.bytes,
        filesystems: targets
            .iter()
            .map(|t| {
                format!(
                    "{}: {} on a loop device, mounted at {} with {}; driver options: none",
                    t.label,
                    t.fs.fs(),
                    t.fs.path().display(),
                    mount_options(t.fs.path())
                )
            })
            .collect(),
    };
    let mut measurements = Vec::new();
    progress.start(targets.len() * workloads::STEPS);
    for t in &targets {
        let ms = workloads::run_all(t, &image, &archives, reps, warmup, opts.quick, progress)
            .with_context(|| format!("benchmark {}", t.label))?;
        measurements.extend(ms);
    }
    progress.finish();
    let report = BenchReport {
        schema: 1,
        run,
        measurements,
    };
    std::fs::create_dir_all(&opts.out)?;
    write_reports(&report, &opts.out)?;
    Ok(report)
}

/// Filesystems a driver is measured on: vfs on ext4 (full copies) and on xfs (reflinks).
fn fs_for(driver: &str, quick: bool) -> Vec<&'static str> {
    match driver {
        "vfs" if quick => vec!["xfs"],
        "vfs" => vec!["ext4", "xfs"],
        "btrfs" => vec!["btrfs"],
        _ => vec!["ext4"],
    }
}

/// The options `path` is mounted with, from /proc/self/mounts.
fn mount_options(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 3 && Path::new(f[1]) == path).then(|| f[3].to_owned())
        })
        .unwrap_or_else(|| "unknown options".into())
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model} x{n}")
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Removes a path (file or tree), ignoring absence.
pub(crate) fn remove(p: &Path) -> Result<()> {
    if p.is_dir() {
        graphdriver_kit::fs::tree::remove_tree(p)?;
    } else if p.exists() {
        std::fs::remove_file(p)?;
    }
    Ok(())
}
