//! `graphctl`: drive a graphdriver backend from the shell, run the conformance suite and the
//! benchmarks. One file per subcommand (the layer verbs, each one trait call, share
//! `layer.rs`); the work is in the library crates.
//!
//! Exit codes: 0 ok, 1 the operation failed (the error on stderr), 2 usage. `exists` exits 0
//! when the layer exists and 1 when it does not; `fsck` exits 1 when it leaves something
//! unrepaired.

mod bench;
mod check;
mod container;
mod image;
mod layer;
mod snapshotter;
mod storm;
mod vm;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use graphdriver_conformance::helper;

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
    /// A backend option, key=value (repeatable): `store.native_diff=false` for any backend,
    /// `overlay2.mount_api=auto|new|legacy` (also env GRAPHDRIVER_OVERLAY_MOUNT_API),
    /// `btrfs.loopback=SIZE`, `zfs.fsname=POOL/DATASET`, `dm.*` (see the README).
    #[arg(long = "opt", global = true, value_parser = parse_opt)]
    opts: Vec<(String, String)>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    #[command(flatten)]
    Layer(layer::LayerCmd),
    /// Run the conformance suite.
    Check(check::Args),
    /// Benchmark the backends against standard tools; writes report.json and report.md.
    Bench(bench::Args),
    /// Run a command as root in a throw-away VM on Debian's kernel (for device-mapper, ZFS,
    /// quotas); streams its output and exits with its status. Install the VM with
    /// vm/setup.sh first.
    Vm(vm::Args),
    /// Serve containerd's snapshot API (containerd.services.snapshots.v1) on a unix socket,
    /// for a `[proxy_plugins.NAME]` of type "snapshot"; until SIGINT or SIGTERM.
    Snapshotter(snapshotter::Args),
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
    Storm(storm::Args),
    /// A storm worker (see `storm`).
    #[command(name = "__storm-worker", hide = true)]
    StormWorker(storm::WorkerArgs),
}

fn parse_opt(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn main() -> ExitCode {
    // the conformance suite's other process (`graphctl check` passes itself)
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(helper::ARG) {
        return helper::main(&argv[2..], graphdriver_backends::opener);
    }
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("graphctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The libraries' diagnostics (`tracing` events) on stderr, filtered by `GRAPHDRIVER_LOG`
/// (`RUST_LOG` syntax, e.g. `graphdriver_devmapper=debug`; default: warnings);
/// `GRAPHDRIVER_DM_TRACE=1` adds devmapper's step times.
fn init_logging() {
    let mut filter = std::env::var("GRAPHDRIVER_LOG").unwrap_or_else(|_| "warn".into());
    if std::env::var_os("GRAPHDRIVER_DM_TRACE").is_some() {
        filter.push_str(",graphdriver_devmapper=debug");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("graphctl: GRAPHDRIVER_LOG={filter:?}: {e}; logging warnings");
        tracing_subscriber::EnvFilter::new("warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .without_time()
        .init();
}

fn run(mut cli: Cli) -> Result<ExitCode> {
    // the environment variables graphctl documents as options (libraries read none)
    if let Ok(api) = std::env::var("GRAPHDRIVER_OVERLAY_MOUNT_API") {
        if cli.driver != "overlay2" {
            eprintln!(
                "graphctl: GRAPHDRIVER_OVERLAY_MOUNT_API applies to --driver overlay2 only (pass \
                 --opt overlay2.mount_api={api} there); ignored for --driver {}",
                cli.driver
            );
        } else if !cli.opts.iter().any(|(k, _)| k == "overlay2.mount_api") {
            cli.opts.push(("overlay2.mount_api".into(), api));
        }
    }
    let opts: BTreeMap<String, String> = cli.opts.iter().cloned().collect();
    // the subcommands that open no driver here
    let cmd = match cli.cmd {
        Cmd::Check(args) => return check::run(&cli.driver, &opts, args),
        Cmd::Bench(args) => return bench::run(&args),
        Cmd::Vm(args) => return vm::run(&args),
        Cmd::Storm(args) => return storm::command(&cli.driver, &cli.root, &cli.opts, &args),
        cmd => cmd,
    };
    let d = graphdriver_backends::open(&cli.driver, &cli.root, &opts)
        .with_context(|| format!("open {} driver at {}", cli.driver, cli.root.display()))?;
    let out = io::stdout();
    match cmd {
        Cmd::Layer(cmd) => layer::run(cmd, d.as_ref(), &mut out.lock()),
        Cmd::StormWorker(args) => storm::worker_command(d.as_ref(), &args),
        Cmd::Snapshotter(args) => {
            let dir = args
                .metadata
                .clone()
                .unwrap_or_else(|| cli.root.join("containerd"));
            snapshotter::run(d, &dir, &args.address)
        }
        Cmd::Image { cmd } => image::run(cmd, Arc::from(d), &cli.root, &mut out.lock()),
        Cmd::Container { cmd } => container::run(cmd, Arc::from(d), &cli.root, &mut out.lock()),
        Cmd::Check(_) | Cmd::Bench(_) | Cmd::Vm(_) | Cmd::Storm(_) => {
            unreachable!("handled above")
        }
    }
}
