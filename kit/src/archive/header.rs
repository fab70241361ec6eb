//! The tar header both directions share: [`Header`], with its type as a [`Kind`].

/// The type of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with data.
    Regular,
    /// A hard link to an earlier entry (`link` names it).
    Hardlink,
    /// A symbolic link (`link` is its target).
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A directory.
    Directory,
    /// A FIFO.
    Fifo,
    /// Any other type flag (a GNU or vendor type no layer needs: the reader skips its data,
    /// applying it is refused).
    Other(u8),
}

impl Kind {
    /// The type of the ustar type flag `flag`: `\0` and `7` (contiguous file) are regular
    /// files, as every tar reads them.
    pub fn from_flag(flag: u8) -> Kind {
        match flag {
            b'0' | 0 | b'7' => Kind::Regular,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Directory,
            b'6' => Kind::Fifo,
            other => Kind::Other(other),
        }
    }

    /// The ustar type flag.
    pub fn flag(self) -> u8 {
        match self {
            Kind::Regular => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Directory => b'5',
            Kind::Fifo => b'6',
            Kind::Other(flag) => flag,
        }
    }

    /// Whether a member of this type carries data: only a regular file's is read (links,
    /// devices, directories and fifos have none whatever their size field says, and an
    /// unknown member's is skipped).
    pub fn has_data(self) -> bool {
        self == Kind::Regular
    }
}

/// One entry's header: what the reader reads and the writer writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name in the archive (directories end with `/`).
    pub name: Vec<u8>,
    /// The entry type.
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Data size (regular files only).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Hard link or symlink target.
    pub link: Vec<u8>,
    /// Device major and minor numbers.
    pub dev: (u32, u32),
    /// Extended attributes: in archive order as read; the writer writes them in this order
    /// (export sorts them by name).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}
