//! Test fixtures: scratch filesystems on loop devices, released by `Drop` even on panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A filesystem image mounted through a loop device for the lifetime of the value.
///
/// Images live in a file under `dir` (sparse, so only what is written takes space); `mount -o
/// loop` sets the loop device to clear itself when unmounted, so nothing is leaked when the
/// value is dropped, even during a panic.
#[derive(Debug)]
pub struct ScratchFs {
    image: PathBuf,
    mount: PathBuf,
    fs: String,
    /// The pool, for `zfs` (a pool on the image file, its root dataset mounted at `mount`).
    pool: Option<String>,
}

impl ScratchFs {
    /// Makes a `size`-byte image of filesystem `fs` (`ext4`, `xfs`, `btrfs`, `zfs`) under
    /// `dir` and mounts it; `mount_opts` are passed to `mount -o` (for `zfs`: `zpool create
    /// -O`, comma-separated, e.g. `compression=lz4`).
    pub fn new(dir: &Path, fs: &str, size: u64, mount_opts: &str) -> Result<ScratchFs> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let unique = format!("{fs}-{}-{}", std::process::id(), next_serial());
        let image = dir.join(format!("{unique}.img"));
        let mount = dir.join(&unique);
        std::fs::create_dir(&mount).with_context(|| format!("create {}", mount.display()))?;
        let f =
            std::fs::File::create(&image).with_context(|| format!("create {}", image.display()))?;
        f.set_len(size)
            .with_context(|| format!("size {}", image.display()))?;
        drop(f);
        if fs == "zfs" {
            return ScratchFs::zpool(image, mount, unique, mount_opts);
        }
        let mkfs: Vec<&str> = match fs {
            "ext4" => vec!["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-I", "256"],
            "xfs" => vec!["mkfs.xfs", "-q", "-f", "-K", "-m", "reflink=1"],
            "btrfs" => vec!["mkfs.btrfs", "-q", "-f", "-K"],
            other => bail!("no scratch filesystem of type {other}"),
        };
        let scratch = ScratchFs {
            image: image.clone(),
            mount: mount.clone(),
            fs: fs.to_owned(),
            pool: None,
        };
        run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image))
            .with_context(|| format!("{} (install {})", mkfs[0], package_of(fs)))?;
        let mut opts = "loop".to_owned();
        if !mount_opts.is_empty() {
            opts.push(',');
            opts.push_str(mount_opts);
        }
        run(Command::new("mount")
            .args(["-t", fs, "-o", &opts])
            .arg(&image)
            .arg(&mount))?;
        Ok(scratch)
    }

    /// A pool named after `unique` on the image file, its root dataset mounted at `mount`.
    fn zpool(image: PathBuf, mount: PathBuf, unique: String, opts: &str) -> Result<ScratchFs> {
        let pool = unique.replace('-', "_");
        let scratch = ScratchFs {
            image: image.clone(),
            mount: mount.clone(),
            fs: "zfs".into(),
            pool: Some(pool.clone()),
        };
        let mut cmd = Command::new("zpool");
        cmd.args(["create", "-f", "-o", "cachefile=none", "-m"])
            .arg(&mount);
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            cmd.args(["-O", o]);
        }
        cmd.arg(&pool).arg(&image);
        run(&mut cmd).context("zpool create (load the zfs module; install zfsutils-linux)")?;
        Ok(scratch)
    }

    /// The pool, for a `zfs` scratch filesystem.
    pub fn pool(&self) -> Option<&str> {
        self.pool.as_deref()
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The image file the filesystem (or pool) lives on.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The filesystem type.
    pub fn fs(&self) -> &str {
        &self.fs
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            let _ = run(Command::new("zpool").args(["destroy", "-f", pool]));
        }
        // Lazy: a mount still referenced by a straggler must not keep the image alive.
        let _ = rustix::mount::unmount(&self.mount, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.mount);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A zfs dataset mounted at a directory for the lifetime of the value (`zfs create` with
/// `mountpoint=legacy`, then `mount(2)`); destroyed with everything below it on drop.
#[derive(Debug)]
pub struct ZfsDataset {
    name: String,
    mount: PathBuf,
}

impl ZfsDataset {
    /// Makes a dataset with a unique name below `parent` and mounts it at `dir`.
    pub fn new(parent: &str, dir: &Path) -> Result<ZfsDataset> {
        let name = format!("{parent}/case-{}-{}", std::process::id(), next_serial());
        run(Command::new("zfs").args(["create", "-o", "mountpoint=legacy", &name]))?;
        let ds = ZfsDataset {
            name,
            mount: dir.to_owned(),
        };
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        rustix::mount::mount(
            ds.name.as_str(),
            dir,
            "zfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .with_context(|| format!("mount {} at {}", ds.name, dir.display()))?;
        Ok(ds)
    }

    /// The dataset's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ZfsDataset {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.mount, rustix::mount::UnmountFlags::DETACH);
        let _ = run(Command::new("zfs").args(["destroy", "-R", "-f", &self.name]));
    }
}

/// A sparse file attached to a loop device (for device-mapper tables made by hand); detached
/// and deleted when dropped.
pub struct LoopFile {
    path: PathBuf,
    dev: String,
}

impl LoopFile {
    /// Makes `path`, `size` bytes of holes, and attaches it.
    pub fn new(path: &Path, size: u64) -> Result<LoopFile> {
        std::fs::File::create(path)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("make {}", path.display()))?;
        let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(path))?
            .trim()
            .to_owned();
        Ok(LoopFile {
            path: path.to_owned(),
            dev,
        })
    }

    /// The loop device, `/dev/loopN`.
    pub fn dev(&self) -> &str {
        &self.dev
    }
}

impl Drop for LoopFile {
    fn drop(&mut self) {
        let _ = run(Command::new("losetup").args(["-d", &self.dev]));
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Swaps the table of device-mapper device `name` for `table` (`dmsetup suspend`, `load`,
/// `resume`): how the I/O-error tests make a disk fail under a filesystem or pool, and work
/// again.
pub fn dm_reload(name: &str, table: &str) -> Result<()> {
    for args in [
        vec!["suspend", name],
        vec!["load", name, "--table", table],
        vec!["resume", name],
    ] {
        run(Command::new("dmsetup").args(&args))?;
    }
    Ok(())
}

fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn package_of(fs: &str) -> &'static str {
    match fs {
        "xfs" => "xfsprogs",
        "btrfs" => "btrfs-progs",
        "zfs" => "zfsutils-linux",
        _ => "e2fsprogs",
    }
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes mounts and images a crashed earlier run left under `dir` (names this module made).
pub fn sweep(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd.flatten() {
        let p = ent.path();
        let name = ent.file_name().to_string_lossy().into_owned();
        let ours = ["ext4-", "xfs-", "btrfs-", "zfs-"]
            .iter()
            .any(|f| name.starts_with(f));
        if !ours {
            continue;
        }
        if let Some(pid) = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok()) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue; // a live run's
            }
        }
        if p.is_dir() {
            let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// A layer tar of `files` regular files of `each` bytes below `data/` (xorshift bytes, which
/// no filesystem compression shrinks), streamed from a thread through a pipe so it is never
/// held whole: what the full-disk tests fill a layer with.
pub fn incompressible_tar(files: usize, each: u64) -> std::io::Result<impl std::io::Read> {
    let (r, w) = std::io::pipe()?;
    std::thread::spawn(move || {
        let mut b = tar::Builder::new(w);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..files {
            let mut h = tar::Header::new_ustar();
            h.set_size(each);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            let data: Vec<u8> = (0..each)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            // the reader may stop early (the apply failed): the pipe then breaks, which ends
            // this thread
            if b.append_data(&mut h, format!("data/file-{i}"), data.as_slice())
                .is_err()
            {
                return;
            }
        }
        let _ = b.finish();
    });
    Ok(r)
}

/// A fresh scratch filesystem of the kind `driver` needs for the suite (16 GiB, sparse) under
/// `/var/tmp/graphdriver-check`, after sweeping what dead runs left there; for `graphctl
/// check` and a backend's own conformance test.
pub fn suite_scratch(driver: &str) -> Result<ScratchFs> {
    let dir = Path::new("/var/tmp/graphdriver-check");
    sweep(dir);
    ScratchFs::new(dir, scratch_fs(driver), 16 << 30, "")
}

/// The filesystem a driver's scratch roots are made on, for the suite and the benchmarks.
pub fn scratch_fs(driver: &str) -> &'static str {
    match driver {
        "btrfs" => "btrfs",
        "zfs" => "zfs",
        _ => "ext4",
    }
}

/// Makes `dir`, the directory of one conformance case, ready for a fresh driver of `name`.
/// For zfs on a zfs scratch filesystem: a dataset of its own mounted at `dir`, so the case's
/// layers (datasets below the one holding the root) are its own; destroyed when the value
/// is dropped. Nothing for the other drivers.
pub fn case_dir(name: &str, dir: &Path) -> Result<Option<ZfsDataset>> {
    std::fs::create_dir_all(dir)?;
    if name == "zfs" {
        let parent = dir.parent().unwrap_or(dir).canonicalize()?;
        let mounts = graphdriver_kit::fs::mountinfo::MountTable::read()?;
        if let Some(m) = mounts.holding(&parent) {
            if m.fstype == "zfs" {
                return Ok(Some(ZfsDataset::new(&m.source, dir)?));
            }
        }
    }
    Ok(None)
}
