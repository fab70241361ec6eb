//! `graphctl bench`: the bench report (graphdriver-bench), with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};

/// Benchmark the backends against standard tools; writes report.json and report.md.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backends to measure (default: every backend this build and kernel offer).
    #[arg(long, value_delimiter = ',')]
    pub drivers: Vec<String>,
    /// Where the reports go.
    #[arg(long, default_value = "bench-report")]
    pub out: PathBuf,
    /// Fewer repetitions (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Measure nothing: write report.md and report.html again from OUT/report.json.
    #[arg(long)]
    pub render: bool,
    /// The image tar (default: the Debian rootfs made by scripts/debian-rootfs.sh;
    /// env GRAPHDRIVER_ROOTFS_TAR).
    #[arg(long, env = "GRAPHDRIVER_ROOTFS_TAR")]
    pub image: Option<PathBuf>,
    /// Where scratch filesystem images go.
    #[arg(long, default_value = "/var/tmp/graphdriver-bench")]
    pub scratch: PathBuf,
}

/// Runs the bench as `args` say (or only renders its reports again).
pub fn run(args: &Args) -> Result<ExitCode> {
    if args.render {
        graphdriver_bench::render(&args.out)?;
        eprintln!(
            "bench: wrote {0}/report.md and {0}/report.html",
            args.out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    bench(
        &args.drivers,
        &args.out,
        args.quick,
        args.image.clone(),
        &args.scratch,
    )
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
        graphdriver_backends::names()
            .into_iter()
            .filter(|d| graphdriver_backends::kernel_offers(d))
            .map(String::from)
            .collect()
    } else {
        drivers.to_vec()
    };
    let opts = graphdriver_bench::BenchOpts {
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
        graphdriver_bench::run(&opts, &mut Bar::default())?;
    } else {
        graphdriver_bench::run(
            &opts,
            &mut graphdriver_bench::Lines(std::time::Instant::now()),
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

impl graphdriver_bench::Progress for Bar {
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
