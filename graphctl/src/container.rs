//! `graphctl container ...`: containers (named writable layers on images) in the image store
//! (crate `graphdriver-image`), kept in `<root>/images/`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use graphdriver_api::GraphDriver;
use graphdriver_image::{ContainerRecord, ContainerSize, ContainerState, ImageStore};
use serde_json::json;

use crate::image::{rfc3339, short, IMAGES_DIR};

#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    /// Create a container: a writable layer with id NAME on IMAGE (`graphctl mount NAME`
    /// mounts it).
    Create {
        /// The image.
        image: String,
        /// The container's name (a layer id).
        name: String,
    },
    /// List containers.
    Ls {
        /// With each container's own size and its virtual size (image + container).
        #[arg(short = 's', long = "size")]
        size: bool,
        /// As JSON (times as RFC 3339).
        #[arg(long)]
        json: bool,
    },
    /// Remove a container and its layer (refused while it is mounted).
    Rm {
        /// The container.
        name: String,
    },
    /// Make an image of a container: its image's layers plus one with its changes.
    Commit {
        /// The container.
        name: String,
        /// The new image's name (an image of that name is replaced).
        image: String,
    },
}

pub fn run(
    cmd: ContainerCmd,
    driver: Arc<dyn GraphDriver>,
    root: &Path,
    out: &mut impl Write,
) -> Result<ExitCode> {
    let store = ImageStore::open(&root.join(IMAGES_DIR), driver)?;
    match cmd {
        ContainerCmd::Create { image, name } => {
            let c = store.create_container(&image, &name)?;
            writeln!(out, "{}", c.name)?;
        }
        ContainerCmd::Ls { size, json } => {
            let containers = store.containers()?;
            let mut rows = Vec::with_capacity(containers.len());
            for c in containers {
                let sizes = if size && c.state == ContainerState::Created {
                    Some(store.container_size(c.name.as_str())?)
                } else {
                    None
                };
                rows.push((c, sizes));
            }
            if json {
                let v: Vec<_> = rows.iter().map(|(c, s)| container_json(c, *s)).collect();
                serde_json::to_writer_pretty(&mut *out, &v)?;
                writeln!(out)?;
            } else {
                print_table(&rows, size, out)?;
            }
        }
        ContainerCmd::Rm { name } => {
            let report = store.remove_container(&name)?;
            writeln!(out, "{}", report.container.name)?;
            for id in &report.removed {
                writeln!(out, "Deleted: {id}")?;
            }
            for id in &report.kept {
                writeln!(out, "Kept (in use; removed at a later open): {id}")?;
            }
        }
        ContainerCmd::Commit { name, image } => {
            let r = store.commit_container(&name, &image)?;
            writeln!(out, "{}", r.config)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(
    rows: &[(ContainerRecord, Option<ContainerSize>)],
    size: bool,
    out: &mut impl Write,
) -> Result<()> {
    let w = rows
        .iter()
        .map(|(c, _)| c.name.as_str().len())
        .max()
        .unwrap_or(0)
        .max(12);
    let iw = rows
        .iter()
        .map(|(c, _)| c.image.to_string().len())
        .max()
        .unwrap_or(0)
        .max(12);
    write!(
        out,
        "{:<w$} {:<iw$} {:<12} {:<20}  {:<8}",
        "NAME", "IMAGE", "IMAGE ID", "CREATED", "STATE"
    )?;
    writeln!(out, "{}", if size { "  SIZE" } else { "" })?;
    for (c, s) in rows {
        write!(
            out,
            "{:<w$} {:<iw$} {:<12} {:<20}  {:<8}",
            c.name.as_str(),
            c.image.to_string(),
            short(c.image_id.hex()),
            rfc3339(c.created),
            state(c.state)
        )?;
        match s {
            Some(s) => writeln!(out, "  {} (virtual {})", s.size, s.virtual_size)?,
            None => writeln!(out)?,
        }
    }
    Ok(())
}

fn state(s: ContainerState) -> &'static str {
    match s {
        ContainerState::Creating => "creating",
        ContainerState::Created => "created",
        ContainerState::Removing => "removing",
    }
}

fn container_json(c: &ContainerRecord, s: Option<ContainerSize>) -> serde_json::Value {
    let mut v = json!({
        "name": c.name,
        "image": c.image,
        "image_id": c.image_id,
        "created": rfc3339(c.created),
        "state": state(c.state),
        "image_size": c.image_size(),
    });
    if let Some(s) = s {
        v["size"] = json!(s.size);
        v["virtual_size"] = json!(s.virtual_size);
    }
    v
}
