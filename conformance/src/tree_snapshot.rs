//! A tree's content and metadata as a value, to compare two trees and show how they differ.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `d`, `f`, `l`, `c`, `b`, `p` or `s`.
    pub kind: char,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (regular files).
    pub size: u64,
    /// Modification time in nanoseconds (not compared for directories unless asked).
    pub mtime_ns: i128,
    /// Content hash (regular files), or symlink target.
    pub content: String,
    /// Device number.
    pub rdev: u64,
    /// Xattrs except backend-private ones.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// For hardlinked files: the first path (in sorted order) of the same inode.
    pub link_group: Option<PathBuf>,
}

/// What to compare.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    /// Compare directory mtimes too.
    pub dir_mtimes: bool,
    /// Compare the root directory's own metadata.
    pub root: bool,
    /// Compare mtimes at all.
    pub mtimes: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            dir_mtimes: true,
            root: true,
            mtimes: true,
        }
    }
}

/// A whole tree: relative path (the root is `""`) to node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The entries.
    pub nodes: BTreeMap<PathBuf, Node>,
}

impl Snapshot {
    /// Reads the tree at `root` (no symlink is followed).
    pub fn capture(root: &Path) -> Result<Snapshot> {
        let mut nodes = BTreeMap::new();
        let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let path = root.join(&rel);
            let md = std::fs::symlink_metadata(&path)
                .with_context(|| format!("stat {}", path.display()))?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_file() {
                'f'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else if ft.is_fifo() {
                'p'
            } else {
                's'
            };
            let content = match kind {
                'f' => hash_file(&path)?,
                'l' => std::fs::read_link(&path)?.display().to_string(),
                _ => String::new(),
            };
            let link_group = (kind == 'f' && md.nlink() > 1).then(|| {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone()
            });
            let xattrs = xattrs(&path)?;
            nodes.insert(
                rel.clone(),
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if kind == 'f' { md.size() } else { 0 },
                    mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
                    content,
                    rdev: md.rdev(),
                    xattrs,
                    link_group,
                },
            );
            if kind == 'd' {
                let mut names: Vec<_> = std::fs::read_dir(&path)?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<std::io::Result<_>>()?;
                names.sort();
                for n in names.into_iter().rev() {
                    stack.push(rel.join(n));
                }
            }
        }
        // Link groups must not depend on walk order: name each by its smallest path.
        let mut groups: HashMap<PathBuf, PathBuf> = HashMap::new();
        for (p, n) in &nodes {
            if let Some(g) = &n.link_group {
                let e = groups.entry(g.clone()).or_insert_with(|| p.clone());
                if p < e {
                    *e = p.clone();
                }
            }
        }
        for n in nodes.values_mut() {
            if let Some(g) = &n.link_group {
                n.link_group = groups.get(g).cloned();
            }
        }
        Ok(Snapshot { nodes })
    }

    /// The differences from `other`, one line each (empty when equal).
    pub fn diff(&self, other: &Snapshot, how: Compare) -> Vec<String> {
        let mut out = Vec::new();
        let keys: std::collections::BTreeSet<_> =
            self.nodes.keys().chain(other.nodes.keys()).collect();
        for k in keys {
            if k.as_os_str().is_empty() && !how.root {
                continue;
            }
            match (self.nodes.get(k), other.nodes.get(k)) {
                (Some(_), None) => out.push(format!("only left:  /{}", k.display())),
                (None, Some(_)) => out.push(format!("only right: /{}", k.display())),
                (Some(a), Some(b)) => {
                    let mut a = a.clone();
                    let mut b = b.clone();
                    if !how.mtimes || (a.kind == 'd' && !how.dir_mtimes) {
                        a.mtime_ns = 0;
                        b.mtime_ns = 0;
                    }
                    if a != b {
                        out.push(format!(
                            "differs:    /{}\n    left:  {}\n    right: {}",
                            k.display(),
                            a.line(),
                            b.line()
                        ));
                    }
                }
                (None, None) => {}
            }
        }
        out
    }

    /// The tree, one line per entry, for failure dumps (at most `max` lines).
    pub fn render(&self, max: usize) -> String {
        let mut s = String::new();
        for (i, (p, n)) in self.nodes.iter().enumerate() {
            if i == max {
                let _ = writeln!(s, "  ... {} more", self.nodes.len() - max);
                break;
            }
            let _ = writeln!(s, "  /{:<40} {}", p.display(), n.line());
        }
        s
    }

    /// The node at `rel`.
    pub fn get(&self, rel: &str) -> Option<&Node> {
        self.nodes.get(Path::new(rel.trim_start_matches('/')))
    }
}

impl Node {
    fn line(&self) -> String {
        let mut s = format!("{} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid);
        if self.kind == 'f' {
            let _ = write!(s, " size={} hash={}", self.size, self.content);
        }
        if self.kind == 'l' {
            let _ = write!(s, " -> {}", self.content);
        }
        if matches!(self.kind, 'c' | 'b') {
            let _ = write!(s, " rdev={:#x}", self.rdev);
        }
        let _ = write!(s, " mtime={}", self.mtime_ns);
        for (k, v) in &self.xattrs {
            let _ = write!(s, " {k}={}", String::from_utf8_lossy(v));
        }
        if let Some(g) = &self.link_group {
            let _ = write!(s, " link=/{}", g.display());
        }
        s
    }
}

fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    // FNV-1a: stable across runs and Rust versions.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    Ok(format!("{:016x}", h.finish()))
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(out),
        Ok(n) => {
            let mut buf = vec![0u8; n];
            let n = rustix::fs::llistxattr(path, &mut buf[..])?;
            buf.truncate(n);
            buf
        }
        Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("list xattrs of {}", path.display())),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if graphdriver_kit::fs::tree::is_private_xattr(name) {
            continue;
        }
        let cname = std::ffi::CString::new(name)?;
        let n = rustix::fs::lgetxattr_query(path, &cname)?;
        let mut v = vec![0u8; n];
        let n = rustix::fs::lgetxattr(path, &cname, &mut v[..])?;
        v.truncate(n);
        out.push((String::from_utf8_lossy(name).into_owned(), v));
    }
    out.sort();
    Ok(out)
}

/// The path of `rel` inside `root`, for `OsStr` paths given as bytes.
pub fn join_bytes(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel))
}
