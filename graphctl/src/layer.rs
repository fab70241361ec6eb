//! The layer verbs: `create`, `remove`, `exists`, `ls`, `mount`, `unmount`, `status`,
//! `fsck`, `diff`, `apply`, `changes`, each one call of the driver's trait.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};

/// One layer verb.
#[derive(Subcommand, Debug)]
pub enum LayerCmd {
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
}

fn lid(s: &str) -> Result<LayerId> {
    Ok(LayerId::new(s)?)
}

/// Runs `cmd` on `d`, writing what it prints to `out`.
pub fn run(cmd: LayerCmd, d: &dyn GraphDriver, out: &mut dyn Write) -> Result<ExitCode> {
    match cmd {
        LayerCmd::Create {
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
        LayerCmd::Remove { id } => d.remove(&lid(&id)?)?,
        LayerCmd::Exists { id } => {
            if !d.exists(&lid(&id)?) {
                return Ok(ExitCode::from(1));
            }
        }
        LayerCmd::Ls { json } => {
            let ids = d.list()?;
            if json {
                let infos = ids
                    .iter()
                    .map(|i| d.metadata(i))
                    .collect::<Result<Vec<_>, _>>()?;
                serde_json::to_writer_pretty(&mut *out, &infos)?;
                writeln!(out)?;
            } else {
                for i in ids {
                    writeln!(out, "{i}")?;
                }
            }
        }
        LayerCmd::Mount { id } => writeln!(
            out,
            "{}",
            d.get(&lid(&id)?, &MountOpts::default())?.display()
        )?,
        LayerCmd::Unmount { id } => d.put(&lid(&id)?)?,
        LayerCmd::Status { json } => {
            let s = d.status();
            if json {
                let m: BTreeMap<_, _> = s.into_iter().collect();
                serde_json::to_writer_pretty(&mut *out, &m)?;
                writeln!(out)?;
            } else {
                for (k, v) in s {
                    writeln!(out, "{k}: {v}")?;
                }
            }
        }
        LayerCmd::Fsck { repair, json } => {
            let report = d.fsck(repair)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &report)?;
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
        LayerCmd::Diff { id, parent, output } => {
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
                    io::copy(&mut r, out)?;
                }
            }
        }
        LayerCmd::Apply { id, parent, input } => {
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
        LayerCmd::Changes { id, parent, json } => {
            let parent = parent.as_deref().map(lid).transpose()?;
            let changes = d.changes(&lid(&id)?, parent.as_ref())?;
            if json {
                let v: Vec<_> = changes
                    .iter()
                    .map(|c| serde_json::json!({"path": c.path.to_string_lossy(), "kind": c.kind.letter().to_string()}))
                    .collect();
                serde_json::to_writer_pretty(&mut *out, &v)?;
                writeln!(out)?;
            } else {
                for c in changes {
                    writeln!(out, "{c}")?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
