//! `graphctl snapshotter`: containerd's snapshot API over one backend, on a unix socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use graphdriver_api::GraphDriver;

/// Serve containerd's snapshot API (containerd.services.snapshots.v1) on a unix socket,
/// for a `[proxy_plugins.NAME]` of type "snapshot"; until SIGINT or SIGTERM.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The socket (a stale one is replaced).
    #[arg(long)]
    pub address: PathBuf,
    /// Where the snapshot records go (default: ROOT/containerd).
    #[arg(long)]
    pub metadata: Option<PathBuf>,
}

/// `graphctl snapshotter`: serves until SIGINT or SIGTERM, then stops cleanly.
pub fn run(driver: Box<dyn GraphDriver>, dir: &Path, address: &Path) -> Result<ExitCode> {
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
