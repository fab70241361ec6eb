//! `graphctl vm`: a command in the test VM (graphdriver-vm).

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

/// Run a command as root in a throw-away VM on Debian's kernel (for device-mapper, ZFS,
/// quotas); streams its output and exits with its status. Install the VM with
/// vm/setup.sh first.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Modules to load first (default: loop, dm-thin-pool, and zfs when built for the
    /// guest kernel).
    #[arg(long, value_delimiter = ',')]
    pub modules: Option<Vec<String>>,
    /// Guest memory (the guest's files live in it).
    #[arg(long, default_value = "3G")]
    pub mem: String,
    /// Virtual CPUs (default: this machine's).
    #[arg(long)]
    pub cpus: Option<usize>,
    /// Share this host directory read-write at the same path (repeatable); everything
    /// else the guest writes stays in its memory.
    #[arg(long = "share")]
    pub shared: Vec<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Runs the command in the VM and exits with its status.
pub fn run(args: &Args) -> Result<ExitCode> {
    let mut opts = graphdriver_vm::VmOpts {
        modules: args.modules.clone(),
        mem: args.mem.clone(),
        shared: args.shared.clone(),
        ..Default::default()
    };
    if let Some(c) = args.cpus {
        opts.cpus = c;
    }
    let outcome = graphdriver_vm::run(&opts, &args.command, &mut io::stdout())?;
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
