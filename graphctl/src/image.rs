//! `graphctl image ...`: the image store (crate `graphdriver-image`) above the driver, kept in
//! `<root>/images/`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;
use clap::Subcommand;
use graphdriver_api::GraphDriver;
use graphdriver_image::{Compression, ImageRecord, ImageStore, ImportEvent, LayerRecord};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// The image store's directory under the driver root.
pub const IMAGES_DIR: &str = "images";

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Import the images of an OCI image layout (directory or tar) or a `docker save` tar.
    Import {
        /// The layout directory or archive.
        path: PathBuf,
    },
    /// List images.
    Ls {
        /// As JSON (times as RFC 3339).
        #[arg(long)]
        json: bool,
    },
    /// An image's layers, top first, with their sizes and DiffIDs.
    History {
        /// The image.
        name: String,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image and the layers no other image uses.
    Rm {
        /// The image.
        name: String,
    },
    /// Write an image as an OCI image layout tar (the same layers give the same bytes).
    Save {
        /// The image.
        name: String,
        /// The output file.
        #[arg(short = 'o')]
        output: PathBuf,
        /// How the layers are compressed.
        #[arg(long, value_enum, default_value_t = SaveCompression::Gzip)]
        compression: SaveCompression,
    },
}

/// `--compression` of `image save`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SaveCompression {
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
    /// Plain tars.
    None,
}

impl From<SaveCompression> for Compression {
    fn from(c: SaveCompression) -> Compression {
        match c {
            SaveCompression::Gzip => Compression::Gzip,
            SaveCompression::Zstd => Compression::Zstd,
            SaveCompression::None => Compression::None,
        }
    }
}

pub fn run(
    cmd: ImageCmd,
    driver: Arc<dyn GraphDriver>,
    root: &Path,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let store = ImageStore::open(&root.join(IMAGES_DIR), driver)?;
    match cmd {
        ImageCmd::Import { path } => {
            let mut bars = LayerBars::default();
            let report = store.import_with_progress(&path, &mut |e| bars.event(e))?;
            for c in &report.existing {
                writeln!(out, "{}: Already exists", short(c.hex()))?;
            }
            for c in &report.applied {
                writeln!(out, "{}: Applied", short(c.hex()))?;
            }
            for r in &report.images {
                writeln!(out, "Loaded image: {} ({})", r.name, r.config)?;
            }
        }
        ImageCmd::Ls { json } => {
            let images = store.list()?;
            if json {
                let v: Vec<_> = images.iter().map(image_json).collect();
                serde_json::to_writer_pretty(&mut *out, &v)?;
                writeln!(out)?;
            } else {
                // the name column as wide as the longest name, so the columns stay aligned
                let w = images
                    .iter()
                    .map(|r| r.name.to_string().len())
                    .max()
                    .unwrap_or(0)
                    .max(20);
                writeln!(
                    out,
                    "{:<w$} {:<12} {:>6} {:>12}  CREATED",
                    "NAME", "IMAGE ID", "LAYERS", "SIZE"
                )?;
                for r in &images {
                    writeln!(
                        out,
                        "{:<w$} {:<12} {:>6} {:>12}  {}",
                        r.name.to_string(),
                        short(r.config.hex()),
                        r.layers.len(),
                        r.size(),
                        r.created.as_deref().unwrap_or("-")
                    )?;
                }
            }
        }
        ImageCmd::History { name, json } => {
            let layers = store.history(&name)?;
            if json {
                let v: Vec<_> = layers.iter().map(layer_json).collect();
                serde_json::to_writer_pretty(&mut *out, &v)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{:<12} {:>12}  DIFF ID", "LAYER", "SIZE")?;
                for l in &layers {
                    writeln!(
                        out,
                        "{:<12} {:>12}  {}",
                        short(l.chain_id.hex()),
                        l.size,
                        l.diff_id
                    )?;
                }
            }
        }
        ImageCmd::Save {
            name,
            output,
            compression,
        } => {
            let report = store.save(&name, &output, compression.into())?;
            writeln!(
                out,
                "Saved {name} ({}, manifest {}) to {}",
                report.config,
                report.manifest,
                output.display()
            )?;
        }
        ImageCmd::Rm { name } => {
            let report = store.remove(&name)?;
            writeln!(out, "Untagged: {}", report.image.name)?;
            for id in &report.removed {
                writeln!(out, "Deleted: {id}")?;
            }
            for id in &report.kept {
                writeln!(out, "Kept (in use; removed at a later open): {id}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar per layer on a terminal (drawn on stderr; nothing when it is not a
/// terminal, where the report lines on stdout say the same).
struct LayerBars {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

impl Default for LayerBars {
    fn default() -> Self {
        LayerBars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: BTreeMap::new(),
        }
    }
}

impl LayerBars {
    fn event(&mut self, e: ImportEvent<'_>) {
        match e {
            ImportEvent::Applying { chain_id, size } => {
                let bar = self
                    .multi
                    .add(ProgressBar::new(size.unwrap_or(0)))
                    .with_prefix(short(chain_id.hex()).to_owned());
                let template = if size.is_some() {
                    "{prefix}: Applying [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
                } else {
                    "{prefix}: Applying {bytes} {bytes_per_sec}"
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                self.bars.insert(chain_id.to_string(), bar);
            }
            ImportEvent::Read { chain_id, bytes } => {
                if let Some(b) = self.bars.get(chain_id.as_str()) {
                    b.set_position(bytes);
                }
            }
            ImportEvent::Applied { chain_id } => {
                if let Some(b) = self.bars.get(chain_id.as_str()) {
                    if let Ok(style) = ProgressStyle::with_template("{prefix}: Applied {bytes}") {
                        b.set_style(style);
                    }
                    b.finish();
                }
            }
            ImportEvent::Exists { chain_id } => {
                let _ = self
                    .multi
                    .println(format!("{}: Already exists", short(chain_id.hex())));
            }
        }
    }
}

pub fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn image_json(r: &ImageRecord) -> serde_json::Value {
    json!({
        "name": r.name,
        "manifest": r.manifest,
        "config": r.config,
        "created": r.created,
        "imported": rfc3339(r.imported),
        "size": r.size(),
        "layers": r.layers.iter().map(layer_json).collect::<Vec<_>>(),
    })
}

fn layer_json(l: &LayerRecord) -> serde_json::Value {
    json!({
        "chain_id": l.chain_id,
        "diff_id": l.diff_id,
        "blob": l.blob,
        "media_type": l.media_type,
        "compressed_size": l.compressed_size,
        "size": l.size,
    })
}
