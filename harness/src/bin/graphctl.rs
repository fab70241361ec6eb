//! `graphctl`: drive a graphdriver backend from the shell, run the conformance suite and the
//! benchmarks.
//!
//! Exit codes: 0 ok, 1 the operation failed (the error on stderr), 2 usage. `exists` exits 0
//! when the layer exists and 1 when it does not; `fsck` exits 1 when it leaves something
//! unrepaired.

#[path = "graphctl/container.rs"]
mod container;
#[path = "graphctl/image.rs"]
mod image;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IsTerminal;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};
use graphdriver_harness::conformance::{self, Env};
use graphdriver_harness::{drivers, fixture};

#[derive(Parser, Debug)]
#[command(
    name = "graphctl",
    version,
    about = "Container storage drivers: layers, diffs, conformance and benchmarks"
)]
struct Cli {
    /// The backend.
    #[arg(long, global = true, default_value = "vfs")]
    driver: String,
    /// The driver root (env GRAPHDRIVER_ROOT).
    #[arg(
        long,
        global = true,
        env = "GRAPHDRIVER_ROOT",
        default_value = "/var/lib/graphdriver"
    )]
    root: PathBuf,
    /// A backend option, key=value (repeatable).
    #[arg(long = "opt", global = true, value_parser = parse_opt)]
    opts: Vec<(String, String)>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a layer.
    Create {
        /// The new layer's id.
        id: String,
        /// Its parent.
        #[arg(long)]
        parent: Option<String>,
        /// A writable container layer rather than an image layer.
        #[arg(long)]
        rw: bool,
        /// A size limit in bytes.
        #[arg(long)]
        size: Option<u64>,
    },
    /// Remove a layer.
    Remove {
        /// The layer.
        id: String,
    },
    /// Exit 0 if the layer exists, 1 if not.
    Exists {
        /// The layer.
        id: String,
    },
    /// List layers.
    Ls {
        /// As JSON, with parents.
        #[arg(long)]
        json: bool,
    },
    /// Mount a layer and print its path.
    Mount {
        /// The layer.
        id: String,
    },
    /// Release one mount of a layer.
    Unmount {
        /// The layer.
        id: String,
    },
    /// Print what the driver knows about its backing store.
    Status {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the store against its backend (records, data, graph, mount counts; what opening
    /// it settled); exit 1 if anything is left unrepaired
    Fsck {
        /// Repair what can be repaired (a record without data is quarantined)
        #[arg(long)]
        repair: bool,
        /// As JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a layer's diff (an OCI layer tar) to stdout or a file.
    Diff {
        /// The layer.
        id: String,
        /// Diff against this layer instead of the parent.
        #[arg(long)]
        parent: Option<String>,
        /// Output file.
        #[arg(short = 'o')]
        output: Option<PathBuf>,
    },
    /// Apply an OCI layer tar to a layer (created if absent); prints the applied size.
    Apply {
        /// The layer.
        id: String,
        /// Its parent, when the layer is created.
        #[arg(long)]
        parent: Option<String>,
        /// Input file (default stdin).
        #[arg(short = 'i')]
        input: Option<PathBuf>,
    },
    /// List a layer's changes ("A /path", "C /path", "D /path").
    Changes {
        /// The layer.
        id: String,
        /// Against this layer instead of the parent.
        #[arg(long)]
        parent: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the conformance suite.
    Check {
        /// Only cases whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Where scratch roots go (default: a fresh ext4 loop image under /var/tmp).
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark the backends against standard tools; writes report.json and report.md.
    Bench {
        /// Backends to measure (default: every backend this build and kernel offer).
        #[arg(long, value_delimiter = ',')]
        drivers: Vec<String>,
        /// Where the reports go.
        #[arg(long, default_value = "bench-report")]
        out: PathBuf,
        /// Fewer repetitions (for CI).
        #[arg(long)]
        quick: bool,
        /// Measure nothing: write report.md and report.html again from OUT/report.json.
        #[arg(long)]
        render: bool,
        /// The image tar (default: the Debian rootfs made by scripts/debian-rootfs.sh;
        /// env GRAPHDRIVER_ROOTFS_TAR).
        #[arg(long, env = "GRAPHDRIVER_ROOTFS_TAR")]
        image: Option<PathBuf>,
        /// Where scratch filesystem images go.
        #[arg(long, default_value = "/var/tmp/graphdriver-bench")]
        scratch: PathBuf,
    },
    /// Run a command as root in a throw-away VM on Debian's kernel (for device-mapper, ZFS,
    /// quotas); streams its output and exits with its status. Install the VM with
    /// vm/setup.sh first.
    Vm {
        /// Modules to load first (default: loop, dm-thin-pool, and zfs when built for the
        /// guest kernel).
        #[arg(long, value_delimiter = ',')]
        modules: Option<Vec<String>>,
        /// Guest memory (the guest's files live in it).
        #[arg(long, default_value = "3G")]
        mem: String,
        /// Virtual CPUs (default: this machine's).
        #[arg(long)]
        cpus: Option<usize>,
        /// Share this host directory read-write at the same path (repeatable); everything
        /// else the guest writes stays in its memory.
        #[arg(long = "share")]
        shared: Vec<PathBuf>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Serve containerd's snapshot API (containerd.services.snapshots.v1) on a unix socket,
    /// for a `[proxy_plugins.NAME]` of type "snapshot"; until SIGINT or SIGTERM.
    Snapshotter {
        /// The socket (a stale one is replaced).
        #[arg(long)]
        address: PathBuf,
        /// Where the snapshot records go (default: ROOT/containerd).
        #[arg(long)]
        metadata: Option<PathBuf>,
    },
    /// The image store: import, ls, history, rm, save (kept in ROOT/images/).
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Containers on images: create, ls [-s], rm, commit (kept in ROOT/images/).
    Container {
        #[command(subcommand)]
        cmd: container::ContainerCmd,
    },
    /// The storm: worker processes mixing create, mount + write, apply, diff, changes and
    /// remove over shared parents on this root, then checks (leaked mounts, fsck, every
    /// layer's content against its history); exits 1 on any failure.
    Storm {
        /// Worker processes.
        #[arg(long, default_value_t = 4)]
        procs: usize,
        /// Seconds each worker runs.
        #[arg(long, default_value_t = 30)]
        secs: u64,
        /// The random seed (each worker's is derived from it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A storm worker (see `storm`).
    #[command(name = "__storm-worker", hide = true)]
    StormWorker { worker: usize, seed: u64, secs: u64 },
    /// Test helper: mount a layer N times and exit without unmounting.
    #[command(name = "__hold", hide = true)]
    Hold { id: String, n: u32 },
    /// Test helper: mount and unmount a layer N times.
    #[command(name = "__cycle", hide = true)]
    Cycle { id: String, n: u32 },
}

fn parse_opt(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("graphctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn lid(s: &str) -> Result<LayerId> {
    Ok(LayerId::new(s)?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let opts: BTreeMap<String, String> = cli.opts.iter().cloned().collect();
    if let Cmd::Check {
        filter,
        scratch,
        json,
    } = &cli.cmd
    {
        return check(&cli.driver, &opts, filter.clone(), scratch.clone(), *json);
    }
    if let Cmd::Bench {
        drivers,
        out,
        quick,
        render,
        image,
        scratch,
    } = &cli.cmd
    {
        if *render {
            graphdriver_harness::bench::render(out)?;
            eprintln!(
                "bench: wrote {0}/report.md and {0}/report.html",
                out.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        return bench(drivers, out, *quick, image.clone(), scratch);
    }
    if let Cmd::Vm {
        modules,
        mem,
        cpus,
        shared,
        command,
    } = &cli.cmd
    {
        return vm(modules, mem, *cpus, shared, command);
    }
    if let Cmd::Storm {
        procs,
        secs,
        seed,
        json,
    } = &cli.cmd
    {
        let exe = std::env::current_exe().context("find graphctl itself")?;
        let r = graphdriver_harness::storm::run(
            &exe,
            &cli.driver,
            &cli.root,
            &cli.opts,
            *procs,
            *secs,
            *seed,
        )?;
        let mut out = io::stdout().lock();
        if *json {
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
        return Ok(if r.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let d = drivers::open(&cli.driver, &cli.root, &opts)
        .with_context(|| format!("open {} driver at {}", cli.driver, cli.root.display()))?;
    if let Cmd::StormWorker { worker, seed, secs } = &cli.cmd {
        let r = graphdriver_harness::storm::worker(d.as_ref(), *worker, *seed, *secs)?;
        serde_json::to_writer(io::stdout().lock(), &r)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Cmd::Snapshotter { address, metadata } = &cli.cmd {
        let dir = metadata
            .clone()
            .unwrap_or_else(|| cli.root.join("containerd"));
        return snapshotter(d, &dir, address);
    }
    if let Cmd::Image { cmd } = cli.cmd {
        let out = io::stdout();
        return image::run(cmd, Arc::from(d), &cli.root, &mut out.lock());
    }
    if let Cmd::Container { cmd } = cli.cmd {
        let out = io::stdout();
        return container::run(cmd, Arc::from(d), &cli.root, &mut out.lock());
    }
    let d: &dyn GraphDriver = d.as_ref();
    let out = io::stdout();
    let mut out = out.lock();
    match cli.cmd {
        Cmd::Create {
            id,
            parent,
            rw,
            size,
        } => {
            let parent = parent.as_deref().map(lid).transpose()?;
            let opts = CreateOpts {
                read_write: rw,
                size_limit: size,
                ..CreateOpts::default()
            };
            d.create(&lid(&id)?, parent.as_ref(), &opts)?;
        }
        Cmd::Remove { id } => d.remove(&lid(&id)?)?,
        Cmd::Exists { id } => {
            if !d.exists(&lid(&id)?) {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Ls { json } => {
            let ids = d.list()?;
            if json {
                let infos = ids
                    .iter()
                    .map(|i| d.metadata(i))
                    .collect::<Result<Vec<_>, _>>()?;
                serde_json::to_writer_pretty(&mut out, &infos)?;
                writeln!(out)?;
            } else {
                for i in ids {
                    writeln!(out, "{i}")?;
                }
            }
        }
        Cmd::Mount { id } => writeln!(
            out,
            "{}",
            d.get(&lid(&id)?, &MountOpts::default())?.display()
        )?,
        Cmd::Unmount { id } => d.put(&lid(&id)?)?,
        Cmd::Status { json } => {
            let s = d.status();
            if json {
                let m: BTreeMap<_, _> = s.into_iter().collect();
                serde_json::to_writer_pretty(&mut out, &m)?;
                writeln!(out)?;
            } else {
                for (k, v) in s {
                    writeln!(out, "{k}: {v}")?;
                }
            }
        }
        Cmd::Fsck { repair, json } => {
            let report = d.fsck(repair)?;
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                for f in &report.findings {
                    let kind = serde_json::to_value(f.kind)?;
                    writeln!(
                        out,
                        "{:<9} {:<22} {:<20} {}{}",
                        if f.repaired.is_some() {
                            "repaired"
                        } else {
                            "found"
                        },
                        kind.as_str().unwrap_or("?"),
                        f.layer.as_ref().map_or("-", |l| l.as_str()),
                        f.detail,
                        f.repaired
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )?;
                }
                let left = report
                    .findings
                    .iter()
                    .filter(|f| f.repaired.is_none())
                    .count();
                writeln!(
                    out,
                    "fsck: {} layers, {} findings, {} repaired, {left} left",
                    report.layers,
                    report.findings.len(),
                    report.findings.len() - left
                )?;
            }
            if !report.is_clean() {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Diff { id, parent, output } => {
            let parent = parent.as_deref().map(lid).transpose()?;
            let mut r = d.diff(&lid(&id)?, parent.as_ref())?;
            match output {
                Some(p) => {
                    let f = File::create(&p).with_context(|| format!("create {}", p.display()))?;
                    let mut w = BufWriter::with_capacity(1 << 20, f);
                    io::copy(&mut r, &mut w)?;
                    w.flush()?;
                }
                None => {
                    io::copy(&mut r, &mut out)?;
                }
            }
        }
        Cmd::Apply { id, parent, input } => {
            let id = lid(&id)?;
            let parent = parent.as_deref().map(lid).transpose()?;
            if !d.exists(&id) {
                d.create(&id, parent.as_ref(), &CreateOpts::default())?;
            }
            let mut r: Box<dyn Read> = match input {
                Some(p) => {
                    Box::new(File::open(&p).with_context(|| format!("open {}", p.display()))?)
                }
                None => Box::new(io::stdin().lock()),
            };
            let size = d.apply_diff(&id, parent.as_ref(), &mut r)?;
            writeln!(out, "{size}")?;
        }
        Cmd::Changes { id, parent, json } => {
            let parent = parent.as_deref().map(lid).transpose()?;
            let changes = d.changes(&lid(&id)?, parent.as_ref())?;
            if json {
                let v: Vec<_> = changes
                    .iter()
                    .map(|c| serde_json::json!({"path": c.path.to_string_lossy(), "kind": c.kind.letter().to_string()}))
                    .collect();
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                for c in changes {
                    writeln!(out, "{c}")?;
                }
            }
        }
        Cmd::Hold { id, n } => {
            let id = lid(&id)?;
            for _ in 0..n {
                d.get(&id, &MountOpts::default())?;
            }
        }
        Cmd::Cycle { id, n } => {
            let id = lid(&id)?;
            for _ in 0..n {
                d.get(&id, &MountOpts::default())?;
                d.put(&id)?;
            }
        }
        Cmd::Check { .. }
        | Cmd::Bench { .. }
        | Cmd::Vm { .. }
        | Cmd::Snapshotter { .. }
        | Cmd::Image { .. }
        | Cmd::Container { .. }
        | Cmd::Storm { .. }
        | Cmd::StormWorker { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `graphctl snapshotter`: serves until SIGINT or SIGTERM, then stops cleanly.
fn snapshotter(driver: Box<dyn GraphDriver>, dir: &Path, address: &Path) -> Result<ExitCode> {
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};
    let s = Arc::new(
        graphdriver_containerd::Snapshotter::open(driver, dir)
            .with_context(|| format!("open the snapshot records in {}", dir.display()))?,
    );
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let served = rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("catch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("catch SIGINT")?;
        eprintln!(
            "graphctl: serving containerd's snapshot API on {}",
            address.display()
        );
        graphdriver_containerd::serve(s.clone(), address, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
        .with_context(|| format!("serve on {}", address.display()))
    });
    // calls still running past the service's grace period get a little longer; close
    // waits for one that holds the lock and refuses the rest
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    let closed = s
        .close()
        .context("release the driver's resources after serving");
    served?;
    let held = closed?;
    if held > 0 {
        eprintln!("graphctl: stopped; {held} snapshot mounts kept for the containers using them");
    }
    Ok(ExitCode::SUCCESS)
}

fn check(
    driver: &str,
    opts: &BTreeMap<String, String>,
    filter: Option<String>,
    scratch: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    let names: Vec<String> = if driver == "all" {
        drivers::names().into_iter().map(String::from).collect()
    } else {
        vec![driver.to_owned()]
    };
    let graphctl = std::env::current_exe().context("find graphctl itself")?;
    let dir = Path::new("/var/tmp/graphdriver-check");
    if scratch.is_none() {
        fixture::sweep(dir);
    }
    let mut total = conformance::Report::default();
    let mut reports = Vec::new();
    let stdout = io::stdout();
    for name in names {
        // each driver on the filesystem it needs, unless one was given
        let (_fs, scratch) = match &scratch {
            Some(p) => (None, p.clone()),
            None => {
                let fs =
                    match fixture::ScratchFs::new(dir, drivers::scratch_fs(&name), 16 << 30, "") {
                        Ok(fs) => fs,
                        // a backend this machine cannot run (no zfs module) is skipped unless
                        // GRAPHDRIVER_REQUIRE names it
                        Err(e) if !Env::required_by_environment(&name) => {
                            println!("skip {name}: no scratch filesystem for it here: {e:#}");
                            total.skipped += 1;
                            continue;
                        }
                        Err(e) => {
                            return Err(
                                e.context("make the scratch filesystem (or pass --scratch DIR)")
                            )
                        }
                    };
                let p = fs.path().to_owned();
                (Some(fs), p)
            }
        };
        let env = Env {
            required: Env::required_by_environment(&name),
            driver: name,
            opts: opts.clone(),
            scratch,
            graphctl: graphctl.clone(),
            filter: filter.clone(),
        };
        let mut log: Box<dyn Write> = if json {
            Box::new(io::stderr())
        } else {
            Box::new(stdout.lock())
        };
        let r = conformance::run(&env, &mut log)?;
        writeln!(log, "{}: {}", r.driver, r.summary())?;
        total.passed += r.passed;
        total.failed += r.failed;
        total.skipped += r.skipped;
        reports.push(r);
    }
    if json {
        serde_json::to_writer_pretty(stdout.lock(), &reports)?;
        println!();
    }
    println!("{}", total.summary());
    if total.failed > 0 {
        return Ok(ExitCode::from(1));
    }
    if total.passed == 0 && total.skipped == 0 {
        bail!("no case matched");
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(
    drivers: &[String],
    out: &Path,
    quick: bool,
    image: Option<PathBuf>,
    scratch: &Path,
) -> Result<ExitCode> {
    let image = match image {
        Some(p) => p,
        None => {
            let default = dirs_cache().join("bookworm-minbase.tar");
            if !default.exists() {
                bail!(
                    "no image: run scripts/debian-rootfs.sh (it makes {}) or pass --image TAR",
                    default.display()
                );
            }
            default
        }
    };
    let drivers = if drivers.is_empty() {
        drivers::names()
            .into_iter()
            .filter(|d| drivers::kernel_offers(d))
            .map(String::from)
            .collect()
    } else {
        drivers.to_vec()
    };
    let opts = graphdriver_harness::bench::BenchOpts {
        drivers,
        out: out.to_owned(),
        quick,
        rootfs_tar: image,
        scratch_dir: scratch.to_owned(),
    };
    let started = std::time::Instant::now();
    // a bar redraws one line and never ends it: only on a terminal that can show that (not
    // a serial console such as the VM's, TERM=dumb, whose reader waits for whole lines)
    let redraws = std::io::stderr().is_terminal()
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb");
    if redraws {
        graphdriver_harness::bench::run(&opts, &mut Bar::default())?;
    } else {
        graphdriver_harness::bench::run(
            &opts,
            &mut graphdriver_harness::bench::Lines(std::time::Instant::now()),
        )?;
    }
    eprintln!(
        "bench: done in {:.0} s; reports in {}/report.md and report.json",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A progress bar for `bench` on a terminal: the step count, the elapsed time and what runs.
#[derive(Default)]
struct Bar(Option<indicatif::ProgressBar>);

impl graphdriver_harness::bench::Progress for Bar {
    fn start(&mut self, total: usize) {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
        self.0 = Some(bar);
    }
    fn step(&mut self, target: &str, what: &str) {
        if let Some(b) = &self.0 {
            if !b.message().is_empty() {
                b.inc(1);
            }
            b.set_message(format!("{target}: {what}"));
        }
    }
    fn note(&mut self, line: &str) {
        match &self.0 {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_with_message("done");
        }
    }
}

fn vm(
    modules: &Option<Vec<String>>,
    mem: &str,
    cpus: Option<usize>,
    shared: &[PathBuf],
    command: &[String],
) -> Result<ExitCode> {
    let mut opts = graphdriver_harness::vm::VmOpts {
        modules: modules.clone(),
        mem: mem.to_owned(),
        shared: shared.to_vec(),
        ..Default::default()
    };
    if let Some(c) = cpus {
        opts.cpus = c;
    }
    let outcome = graphdriver_harness::vm::run(&opts, command, &mut io::stdout())?;
    let secs = |d: Option<std::time::Duration>| {
        d.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "?".into())
    };
    eprintln!(
        "graphctl vm: boot {}, boot to command {} (modules loaded), total {:.1} s, exit {}",
        secs(outcome.boot),
        secs(outcome.to_command),
        outcome.total.as_secs_f64(),
        outcome.status
    );
    Ok(ExitCode::from(u8::try_from(outcome.status).unwrap_or(125)))
}

/// `$GRAPHDRIVER_CACHE`, or `~/.cache/graphdriver` (where scripts/debian-rootfs.sh writes).
fn dirs_cache() -> PathBuf {
    if let Some(c) = std::env::var_os("GRAPHDRIVER_CACHE") {
        return PathBuf::from(c);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    base.join("graphdriver")
}
