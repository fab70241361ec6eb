//! The image store (crate `graphdriver-image`) on each backend: import of the Debian image
//! from an OCI layout tar with a gzip and with a zstd layer, against GNU tar extracting the
//! same compressed layer; and `image save` with each compression, against `tar -cf` of the
//! image's tree piped through `gzip -6` / `zstd -3` (the levels `save` uses).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use graphdriver_api::GraphDriver;
use graphdriver_api::MountOpts;
use graphdriver_image::{layer_media_type, Compression, Digest, ImageStore};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::measure::{time, Measurement, Pair};
use super::workloads::{cmd, Ctx};
use super::{remove, Target};
use graphdriver_backends as drivers;
use graphdriver_conformance::fixture::run;

/// The Debian image as OCI layout tars, one per compression, and the compressed layer alone
/// (what the GNU tar baseline extracts).
pub struct Archives {
    /// `(compression, layout tar, layer blob)`.
    pub each: Vec<(Compression, PathBuf, PathBuf)>,
}

const NAME: &str = "bench:image";

impl Archives {
    /// Compresses `rootfs_tar` as gzip (level 6) and zstd (level 3) into `dir` and wraps
    /// each in an OCI image layout tar of one layer.
    pub fn make(rootfs_tar: &Path, dir: &Path) -> Result<Archives> {
        std::fs::create_dir_all(dir)?;
        let mut each = Vec::new();
        for c in [Compression::Gzip, Compression::Zstd] {
            let ext = match c {
                Compression::Gzip => "gz",
                _ => "zst",
            };
            let blob = dir.join(format!("rootfs.tar.{ext}"));
            let layout = dir.join(format!("image-{ext}.tar"));
            let (diff_id, blob_digest) = compress(rootfs_tar, &blob, c)
                .with_context(|| format!("compress {}", rootfs_tar.display()))?;
            write_layout(&layout, &blob, &diff_id, &blob_digest, c)
                .with_context(|| format!("write {}", layout.display()))?;
            each.push((c, layout, blob));
        }
        Ok(Archives { each })
    }
}

/// Hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `src` into `out`; returns the DiffID and the blob digest.
fn compress(src: &Path, out: &Path, c: Compression) -> Result<(Digest, Digest)> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(src)?);
    let file = Hashing {
        inner: BufWriter::with_capacity(1 << 20, File::create(out)?),
        hash: Sha256::new(),
    };
    let mut diff = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut file = match c {
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::new(6));
            pump(&mut input, &mut enc, &mut diff, &mut buf)?;
            enc.finish()?
        }
        _ => {
            let mut enc = zstd::stream::write::Encoder::new(file, 3)?;
            pump(&mut input, &mut enc, &mut diff, &mut buf)?;
            enc.finish()?
        }
    };
    file.flush()?;
    let digest = |h: Sha256| Digest::parse(&format!("sha256:{}", hex(&h.finalize())), "bench");
    Ok((digest(diff)?, digest(file.hash)?))
}

fn pump(r: &mut impl Read, w: &mut impl Write, h: &mut Sha256, buf: &mut [u8]) -> Result<()> {
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OCI image layout tar holding one image, [`NAME`], of the one layer `blob`.
fn write_layout(
    out: &Path,
    blob: &Path,
    diff_id: &Digest,
    blob_digest: &Digest,
    c: Compression,
) -> Result<()> {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))?;
    let config_digest = Digest::of(&config);
    let blob_len = std::fs::metadata(blob)?.len();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{"mediaType": layer_media_type(c), "digest": blob_digest, "size": blob_len}],
    }))?;
    let manifest_digest = Digest::of(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": NAME},
        }],
    }))?;
    let mut t = tar::Builder::new(BufWriter::with_capacity(1 << 20, File::create(out)?));
    let mut add = |name: String, data: &mut dyn Read, len: u64| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        t.append_data(&mut h, name, data)?;
        Ok(())
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add("oci-layout".into(), &mut &layout[..], layout.len() as u64)?;
    add("index.json".into(), &mut &index[..], index.len() as u64)?;
    for (d, bytes) in [(&manifest_digest, &manifest), (&config_digest, &config)] {
        add(d.blob_path(), &mut &bytes[..], bytes.len() as u64)?;
    }
    add(blob_digest.blob_path(), &mut File::open(blob)?, blob_len)?;
    t.into_inner()?.flush()?;
    Ok(())
}

/// The import and save measurements on one backend, through an image store on a second
/// driver instance on the same scratch filesystem.
pub fn images(cx: &Ctx, t: &Target, archives: &Archives) -> Result<Vec<Measurement>> {
    let driver: Arc<dyn GraphDriver> = Arc::from(drivers::open(
        &t.driver,
        &t.fs.path().join("image-root"),
        &Default::default(),
    )?);
    let store = ImageStore::open(&cx.work.join("image-store"), driver.clone())?;
    let mut out = Vec::new();
    let pair = |param: &str| Pair {
        workload: "images",
        backend: &t.label,
        param: Some(param.to_owned()),
        reps: cx.heavy_reps(),
        warmup: cx.heavy_warmup(),
    };
    for (c, layout, blob) in &archives.each {
        let (cname, tar_flag) = match c {
            Compression::Gzip => ("gzip", "-z"),
            _ => ("zstd", "--zstd"),
        };
        // + syncfs: an import leaves its layers on the disk before it returns (apply_diff
        // syncs), so the baseline does too
        let baseline = format!("tar {tar_flag} -xpf + syncfs");
        out.extend(pair(&format!("import {cname}")).run(
            "image import",
            &mut |_| {
                let (s, _) = time(|| Ok(store.import(layout)?))?;
                store.remove(NAME)?;
                Ok(s)
            },
            &baseline,
            &mut |r| {
                let dir = cx.work.join(format!("tar-xz-{r}"));
                std::fs::create_dir(&dir)?;
                let (s, _) = time(|| {
                    run(cmd(&[
                        "tar",
                        "--xattrs",
                        "--xattrs-include=*",
                        "--numeric-owner",
                        tar_flag,
                        "-xpf",
                    ])
                    .arg(blob)
                    .arg("-C")
                    .arg(&dir))?;
                    rustix::fs::syncfs(File::open(&dir)?)?;
                    Ok(())
                })?;
                remove(&dir)?;
                Ok(s)
            },
        )?);
    }
    // Save: both compressions of one imported image, against tar piped into the compressor.
    let (_, gzip_layout, _) = &archives.each[0];
    store.import(gzip_layout)?;
    let top = store
        .get(NAME)?
        .top_layer()?
        .context("the image has a layer")?;
    let view = driver.get(&top, &MountOpts::default())?;
    let saved = cx.work.join("saved.tar");
    let result = (|| -> Result<()> {
        for (c, cname, pipe) in [
            (Compression::Gzip, "gzip", "gzip -6"),
            (Compression::Zstd, "zstd", "zstd -q -3"),
        ] {
            let shell = format!(
                "tar --xattrs --numeric-owner --format=posix -cf - -C '{}' . | {pipe} > '{}'",
                view.display(),
                saved.display()
            );
            out.extend(pair(&format!("save {cname}")).run(
                "image save",
                &mut |_| {
                    let (s, _) = time(|| Ok(store.save(NAME, &saved, c)?))?;
                    remove(&saved)?;
                    Ok(s)
                },
                &format!("tar -cf - | {pipe}"),
                &mut |_| {
                    let (s, _) = time(|| run(&mut cmd(&["sh", "-c", &shell])))?;
                    remove(&saved)?;
                    Ok(s)
                },
            )?);
        }
        Ok(())
    })();
    driver.put(&top)?;
    store.remove(NAME)?;
    result?;
    Ok(out)
}
