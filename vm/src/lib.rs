//! The test VM: runs a command as root under Debian's kernel (installed by `vm/setup.sh`)
//! in qemu, for kernel features this host lacks (device-mapper, ZFS, quotas).
//!
//! The guest boots the uncompressed kernel (PVH entry: no decompression under emulation) with
//! a tiny initramfs made here (static busybox, the virtio, 9p and overlay modules, and
//! `vm/init`), which mounts the host's root read-only over 9p under a tmpfs overlay (guest
//! writes go to RAM, never to the host) and switches to `vm/stage2.sh`: modules, then the
//! command at the caller's working directory, its exit status written back through a shared
//! job directory. The binaries built here run there unchanged, at the same paths.
//!
//! Software emulation only (`-accel tcg`): this host's nested KVM does not boot Debian
//! kernels. Both guest scripts are compiled in, so `graphctl` alone is the runner.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

const INIT: &str = include_str!("../init");
const STAGE2: &str = include_str!("../stage2.sh");
const EXTRACT_VMLINUX: &str = include_str!("../extract-vmlinux.py");

/// Modules the initramfs loads (in this order) to reach the host's root.
const BOOT_MODULES: [&str; 11] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// How to run the VM.
#[derive(Debug, Clone)]
pub struct VmOpts {
    /// Modules to load before the command (`None`: [`default_modules`]).
    pub modules: Option<Vec<String>>,
    /// Guest memory, as qemu's `-m` takes it (files the guest writes live in it).
    pub mem: String,
    /// Virtual CPUs.
    pub cpus: usize,
    /// Host directories shared read-write at the same path.
    pub shared: Vec<PathBuf>,
}

impl Default for VmOpts {
    fn default() -> Self {
        VmOpts {
            modules: None,
            mem: "3G".into(),
            cpus: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shared: Vec::new(),
        }
    }
}

/// What a run gave.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// The command's exit status (125 when the guest never reported one).
    pub status: i32,
    /// From starting qemu to the guest's stage 2 (kernel and initramfs).
    pub boot: Option<Duration>,
    /// From starting qemu to starting the command (boot and modules).
    pub to_command: Option<Duration>,
    /// From starting qemu to its exit.
    pub total: Duration,
}

/// The guest kernel: `$GRAPHDRIVER_VM_KERNEL`, or the newest Debian kernel in /boot with its
/// modules.
pub fn kernel_version() -> Result<String> {
    if let Ok(v) = std::env::var("GRAPHDRIVER_VM_KERNEL") {
        return Ok(v);
    }
    let mut found: Vec<String> = std::fs::read_dir("/boot")
        .context("read /boot")?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let v = n.strip_prefix("vmlinuz-")?.to_owned();
            (v.ends_with("-amd64") && Path::new("/lib/modules").join(&v).join("kernel").is_dir())
                .then_some(v)
        })
        .collect();
    found.sort_by_key(|v| version_key(v));
    found
        .pop()
        .context("no guest kernel in /boot: run vm/setup.sh (as root)")
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The module files of `kver` by module name (`modules.dep`, names with `_` for `-`), and
/// each one's dependencies.
struct ModuleIndex {
    dir: PathBuf,
    deps: std::collections::HashMap<String, (String, Vec<String>)>,
}

impl ModuleIndex {
    fn read(kver: &str) -> Result<ModuleIndex> {
        let dir = Path::new("/lib/modules").join(kver);
        let text = std::fs::read_to_string(dir.join("modules.dep"))
            .with_context(|| format!("read {}/modules.dep", dir.display()))?;
        let mut deps = std::collections::HashMap::new();
        for line in text.lines() {
            let Some((file, rest)) = line.split_once(':') else {
                continue;
            };
            let d = rest.split_whitespace().map(str::to_owned).collect();
            deps.insert(module_name(file), (file.to_owned(), d));
        }
        Ok(ModuleIndex { dir, deps })
    }

    fn has(&self, name: &str) -> bool {
        self.deps.contains_key(&name.replace('-', "_"))
    }

    /// `name` and every module it needs, dependencies first (names normalised).
    fn load_order(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(&name.replace('-', "_"), &mut out, 0);
        out
    }

    fn visit(&self, name: &str, out: &mut Vec<String>, depth: usize) {
        if depth > 64 || out.iter().any(|m| m == name) {
            return;
        }
        if let Some((_, deps)) = self.deps.get(name) {
            for d in deps {
                self.visit(&module_name(d), out, depth + 1);
            }
        }
        out.push(name.to_owned());
    }

    /// The module's file, or `None` when it is built in (or absent).
    fn file(&self, name: &str) -> Option<PathBuf> {
        self.deps
            .get(&name.replace('-', "_"))
            .map(|(f, _)| self.dir.join(f))
    }
}

fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// `loop` and `dm-thin-pool`, and `zfs` when it is built for the guest kernel.
pub fn default_modules(kver: &str) -> Vec<String> {
    let mut v = vec!["loop".to_owned(), "dm-thin-pool".to_owned()];
    if ModuleIndex::read(kver).is_ok_and(|m| m.has("zfs")) {
        v.push("zfs".into());
    }
    v
}

/// `$GRAPHDRIVER_CACHE/vm`, or `~/.cache/graphdriver/vm`.
fn cache_dir() -> PathBuf {
    let base = std::env::var_os("GRAPHDRIVER_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("graphdriver"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/graphdriver")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache/graphdriver"));
    base.join("vm")
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A newc cpio archive, written in memory.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Cpio {
        Cpio {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, b"");
    }

    fn file(&mut self, name: &str, exec: bool, data: &[u8]) {
        self.entry(name, if exec { 0o100755 } else { 0o100644 }, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, b"");
        self.out
    }
}

/// Reads a module file, decompressing `.ko.xz`/`.ko.zst`/`.ko.gz` with the usual tools.
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).with_context(|| format!("read {}", path.display())),
        Some(t) => {
            let out = Command::new(t)
                .arg("-dc")
                .arg(path)
                .output()
                .with_context(|| format!("run {t} -dc {}", path.display()))?;
            if !out.status.success() {
                bail!("{t} -dc {} failed", path.display());
            }
            Ok(out.stdout)
        }
    }
}

/// The initramfs for `kver` with `modules` (and what they need) to load at boot: loading
/// them from RAM there is seconds faster under emulation than `modprobe` reading the
/// host's modules over 9p. Cached by kernel, init script and modules.
fn initramfs(kver: &str, cache: &Path, modules: &[String]) -> Result<PathBuf> {
    let busybox = which("busybox").context("no busybox: run vm/setup.sh")?;
    let key = fnv(format!("{INIT}{kver}{}{}", busybox.display(), modules.join(",")).as_bytes());
    let path = cache.join(format!("initrd-{kver}-{key:016x}.cpio"));
    if path.exists() {
        return Ok(path);
    }
    let index = ModuleIndex::read(kver)?;
    let mut c = Cpio::new();
    for d in ["bin", "m", "proc", "sys", "dev", "ro", "rw", "newroot"] {
        c.dir(d);
    }
    c.file(
        "bin/busybox",
        true,
        &std::fs::read(&busybox).with_context(|| format!("read {}", busybox.display()))?,
    );
    c.file("init", true, INIT.as_bytes());
    let mut order = String::new();
    for m in BOOT_MODULES {
        // absent from modules.dep: built into this kernel
        let Some(file) = index.file(m) else { continue };
        c.file(&format!("m/{m}.ko"), false, &module_bytes(&file)?);
        order.push_str(m);
        order.push('\n');
    }
    let mut loaded: Vec<String> = BOOT_MODULES.iter().map(|m| m.to_string()).collect();
    for m in modules {
        for dep in index.load_order(m) {
            if loaded.contains(&dep) {
                continue;
            }
            if let Some(file) = index.file(&dep) {
                c.file(&format!("m/{dep}.ko"), false, &module_bytes(&file)?);
                order.push_str(&dep);
                order.push('\n');
            }
            loaded.push(dep);
        }
    }
    c.file("m/order", false, order.as_bytes());
    // this process's own name: two VMs starting at once may both build it
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, c.finish()).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The uncompressed kernel (booting it skips seconds of decompression under emulation), or
/// the bzImage when it cannot be extracted.
fn kernel_image(kver: &str, cache: &Path) -> Result<PathBuf> {
    let bz = PathBuf::from(format!("/boot/vmlinuz-{kver}"));
    let elf = cache.join(format!("vmlinux-{kver}"));
    let fresh = |p: &Path| -> bool {
        let (Ok(a), Ok(b)) = (std::fs::metadata(p), std::fs::metadata(&bz)) else {
            return false;
        };
        a.len() > 0 && a.modified().ok() >= b.modified().ok()
    };
    if fresh(&elf) {
        return Ok(elf);
    }
    let script = cache.join(format!("extract-vmlinux.{}.py", std::process::id()));
    std::fs::write(&script, EXTRACT_VMLINUX)?;
    let tmp = elf.with_extension(format!("tmp{}", std::process::id()));
    let ok = Command::new("python3")
        .arg(&script)
        .arg(&bz)
        .arg(&tmp)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&script);
    if ok {
        std::fs::rename(&tmp, &elf)?;
        return Ok(elf);
    }
    Ok(bz)
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `cmd` as root in the VM, streaming the guest console (the command's output) to
/// `out`, and returns its status and timings.
pub fn run(opts: &VmOpts, cmd: &[String], out: &mut dyn Write) -> Result<VmOutcome> {
    if cmd.is_empty() {
        bail!("no command to run in the VM");
    }
    let qemu = which("qemu-system-x86_64").context("no qemu-system-x86_64: run vm/setup.sh")?;
    let kver = kernel_version()?;
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).with_context(|| format!("create {}", cache.display()))?;
    let modules = match &opts.modules {
        Some(m) => m.clone(),
        None => default_modules(&kver),
    };
    let initrd = initramfs(&kver, &cache, &modules)?;
    let kernel = kernel_image(&kver, &cache)?;

    let job = tempfile_dir()?;
    let _cleanup = RemoveOnDrop(job.clone());
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut script = format!(
        "cd {} 2>/dev/null || cd /\n",
        shell_quote(&cwd.to_string_lossy())
    );
    for (k, v) in std::env::vars() {
        if ["CARGO_", "RUST_", "GRAPHDRIVER_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            script.push_str(&format!("export {k}={}\n", shell_quote(&v)));
        }
    }
    script.push_str("exec");
    for a in cmd {
        script.push(' ');
        script.push_str(&shell_quote(a));
    }
    script.push('\n');
    std::fs::write(job.join("cmd.sh"), script)?;
    let stage2 = job.join("stage2.sh");
    std::fs::write(&stage2, STAGE2)?;
    std::fs::set_permissions(&stage2, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let shared: Vec<PathBuf> = opts
        .shared
        .iter()
        .map(|d| {
            d.canonicalize()
                .with_context(|| format!("resolve {}", d.display()))
        })
        .collect::<Result<_>>()?;
    let mut rw = String::new();
    for d in &shared {
        rw.push_str(&d.to_string_lossy());
        rw.push('\n');
    }
    std::fs::write(job.join("rw"), rw)?;
    std::fs::write(
        job.join("env"),
        format!("VM_MODULES={}\n", shell_quote(&modules.join(" "))),
    )?;

    let mut q = Command::new(qemu);
    q.args(["-accel", "tcg", "-M", "pc", "-cpu", "max"])
        .args(["-smp", &opts.cpus.to_string(), "-m", &opts.mem])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-vga",
            "none",
        ])
        .args(["-net", "none", "-no-reboot"])
        .args([
            "-chardev",
            "stdio,id=con,signal=on",
            "-serial",
            "chardev:con",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-fsdev",
            "local,id=fsroot,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=fsroot,mount_tag=hostroot",
            "-fsdev",
        ])
        .arg(format!(
            "local,id=fsjob,path={},security_model=none",
            job.display()
        ))
        .args(["-device", "virtio-9p-pci,fsdev=fsjob,mount_tag=vmjob"]);
    for (i, d) in shared.iter().enumerate() {
        q.arg("-fsdev")
            .arg(format!(
                "local,id=fsrw{i},path={},security_model=none,multidevs=remap",
                d.display()
            ))
            .arg("-device")
            .arg(format!("virtio-9p-pci,fsdev=fsrw{i},mount_tag=vmrw{i}"));
    }
    q.arg("-append").arg(
        "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init tsc=reliable mitigations=off \
         vm.stage2=/run/vmjob/stage2.sh",
    );
    q.stdin(Stdio::null()).stdout(Stdio::piped());

    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut child = q.spawn().context("start qemu")?;
    let stdout = child.stdout.take().context("qemu's console")?;
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line.retain(|&b| b != b'\r');
        let text = String::from_utf8_lossy(&line);
        if text.trim_end().ends_with("reboot: Power down") {
            continue;
        }
        out.write_all(&line)?;
        out.flush()?;
    }
    let qemu_status = child.wait().context("wait for qemu")?;
    let total = started.elapsed();
    let since = |name: &str| {
        std::fs::metadata(job.join(name))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(started_at).ok())
    };
    let status = match std::fs::read_to_string(job.join("rc")) {
        Ok(s) => s.trim().parse().unwrap_or(125),
        Err(_) => {
            eprintln!("graphctl vm: the guest did not report an exit status (qemu: {qemu_status})");
            125
        }
    };
    Ok(VmOutcome {
        status,
        boot: since("booted"),
        to_command: since("started"),
        total,
    })
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let p = base.join(format!("graphdriver-vm.{}.{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", p.display())),
        }
    }
    bail!("no free job directory name under {}", base.display())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_normalise_dashes_and_suffixes() {
        assert_eq!(
            module_name("kernel/drivers/md/dm-thin-pool.ko"),
            "dm_thin_pool"
        );
        assert_eq!(module_name("updates/dkms/zfs.ko.xz"), "zfs");
    }

    #[test]
    fn modules_load_after_what_they_need() {
        let mut deps = std::collections::HashMap::new();
        let dep = |f: &str, d: &[&str]| (f.to_owned(), d.iter().map(|s| s.to_string()).collect());
        deps.insert(
            "dm_thin_pool".to_owned(),
            dep(
                "kernel/drivers/md/dm-thin-pool.ko",
                &[
                    "kernel/drivers/md/persistent-data/dm-persistent-data.ko",
                    "kernel/drivers/md/dm-mod.ko",
                ],
            ),
        );
        deps.insert(
            "dm_persistent_data".to_owned(),
            dep(
                "kernel/drivers/md/persistent-data/dm-persistent-data.ko",
                &["kernel/drivers/md/dm-bufio.ko"],
            ),
        );
        deps.insert(
            "dm_bufio".to_owned(),
            dep("kernel/drivers/md/dm-bufio.ko", &[]),
        );
        deps.insert("dm_mod".to_owned(), dep("kernel/drivers/md/dm-mod.ko", &[]));
        let index = ModuleIndex {
            dir: PathBuf::from("/lib/modules/x"),
            deps,
        };
        assert_eq!(
            index.load_order("dm-thin-pool"),
            ["dm_bufio", "dm_persistent_data", "dm_mod", "dm_thin_pool"]
        );
    }

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("init", true, b"#!/bin/sh\n");
        let out = c.finish();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let tail = String::from_utf8_lossy(&out[out.len() - 124..]).into_owned();
        assert!(tail.contains("TRAILER!!!"));
    }

    #[test]
    fn shell_quoting_keeps_words_whole() {
        assert_eq!(shell_quote("plain/path-1"), "plain/path-1");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut v = vec!["6.1.0-9-amd64", "6.1.0-56-amd64", "6.10.0-1-amd64"];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v, ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.10.0-1-amd64"]);
    }
}
