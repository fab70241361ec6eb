//! btrfs ioctls, called directly: no libbtrfsutil (and so no libclang or C headers at build
//! time), and nothing a kernel since 4.x lacks. Each function is named after its ioctl.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::ioctl::opcode::{read, read_write, write};

/// `BTRFS_IOCTL_MAGIC`, the group of every btrfs ioctl.
const BTRFS_IOCTL_MAGIC: u8 = 0x94;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
pub struct VolArgs {
    pub fd: i64,
    pub name: [u8; 4088],
}
const _: () = assert!(size_of::<VolArgs>() == 4096);

/// `struct btrfs_ioctl_vol_args_v2`.
#[repr(C)]
pub struct VolArgsV2 {
    pub fd: i64,
    pub transid: u64,
    pub flags: u64,
    pub unused: [u64; 4],
    pub name: [u8; 4040],
}
const _: () = assert!(size_of::<VolArgsV2>() == 4096);

/// `struct btrfs_qgroup_limit` inside `struct btrfs_ioctl_qgroup_limit_args`.
#[repr(C)]
#[derive(Default)]
pub struct QgroupLimitArgs {
    pub qgroupid: u64,
    pub flags: u64,
    pub max_rfer: u64,
    pub max_excl: u64,
    pub rsv_rfer: u64,
    pub rsv_excl: u64,
}
const _: () = assert!(size_of::<QgroupLimitArgs>() == 48);

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
pub struct QuotaCtlArgs {
    pub cmd: u64,
    pub status: u64,
}
const _: () = assert!(size_of::<QuotaCtlArgs>() == 16);

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
pub struct InoLookupArgs {
    pub treeid: u64,
    pub objectid: u64,
    pub name: [u8; 4080],
}
const _: () = assert!(size_of::<InoLookupArgs>() == 4096);

/// `struct btrfs_ioctl_fs_info_args`.
#[repr(C)]
pub struct FsInfoArgs {
    pub max_id: u64,
    pub num_devices: u64,
    pub fsid: [u8; 16],
    pub rest: [u8; 992],
}
const _: () = assert!(size_of::<FsInfoArgs>() == 1024);

const IOC_SUBVOL_CREATE: libc::c_ulong = write::<VolArgs>(BTRFS_IOCTL_MAGIC, 14) as _;
const IOC_SNAP_DESTROY: libc::c_ulong = write::<VolArgs>(BTRFS_IOCTL_MAGIC, 15) as _;
const IOC_INO_LOOKUP: libc::c_ulong = read_write::<InoLookupArgs>(BTRFS_IOCTL_MAGIC, 18) as _;
const IOC_SNAP_CREATE_V2: libc::c_ulong = write::<VolArgsV2>(BTRFS_IOCTL_MAGIC, 23) as _;
const IOC_SUBVOL_GETFLAGS: libc::c_ulong = read::<u64>(BTRFS_IOCTL_MAGIC, 25) as _;
const IOC_SUBVOL_SETFLAGS: libc::c_ulong = write::<u64>(BTRFS_IOCTL_MAGIC, 26) as _;
const IOC_FS_INFO: libc::c_ulong = read::<FsInfoArgs>(BTRFS_IOCTL_MAGIC, 31) as _;
const IOC_QUOTA_CTL: libc::c_ulong = read_write::<QuotaCtlArgs>(BTRFS_IOCTL_MAGIC, 40) as _;
// `_IOR` in the kernel header, though the kernel only reads the argument.
const IOC_QGROUP_LIMIT: libc::c_ulong = read::<QgroupLimitArgs>(BTRFS_IOCTL_MAGIC, 43) as _;

/// `BTRFS_SUBVOL_RDONLY`: the subvolume (or snapshot) is read-only.
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_QUOTA_CTL_ENABLE`.
pub const QUOTA_CTL_ENABLE: u64 = 1;
/// `BTRFS_QGROUP_LIMIT_MAX_EXCL`: limit the bytes only this subvolume holds.
pub const QGROUP_LIMIT_MAX_EXCL: u64 = 1 << 1;
/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOL_ROOT_INO: u64 = 256;

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn name_into(dst: &mut [u8], name: &CStr) -> io::Result<()> {
    let b = name.to_bytes_with_nul();
    if b.len() > dst.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(())
}

/// `ioctl(dir, BTRFS_IOC_SUBVOL_CREATE, {name})`: a new empty subvolume `name` in `dir`.
/// See ioctl_btrfs(2), `<linux/btrfs.h>`.
pub fn subvol_create(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut a = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    name_into(&mut a.name, name)?;
    // SAFETY: `a` is a valid, initialised btrfs_ioctl_vol_args the kernel only reads.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), IOC_SUBVOL_CREATE, &a as *const VolArgs) })
}

/// `ioctl(dir, BTRFS_IOC_SNAP_CREATE_V2, {fd: source, flags, name})`: a snapshot of the
/// subvolume open at `source`, named `name` in `dir`. See `<linux/btrfs.h>`.
pub fn snap_create_v2(
    dir: BorrowedFd<'_>,
    source: BorrowedFd<'_>,
    name: &CStr,
    flags: u64,
) -> io::Result<()> {
    let mut a = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags,
        unused: [0; 4],
        name: [0; 4040],
    };
    name_into(&mut a.name, name)?;
    // SAFETY: `a` is a valid, initialised btrfs_ioctl_vol_args_v2; `source` stays open for
    // the call; the kernel only writes `transid` back, inside the struct.
    check(unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            IOC_SNAP_CREATE_V2,
            &mut a as *mut VolArgsV2,
        )
    })
}

/// `ioctl(dir, BTRFS_IOC_SNAP_DESTROY, {name})`: deletes the subvolume `name` of `dir`
/// (ENOTEMPTY while it holds other subvolumes). See `<linux/btrfs.h>`.
pub fn snap_destroy(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut a = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    name_into(&mut a.name, name)?;
    // SAFETY: `a` is a valid, initialised btrfs_ioctl_vol_args the kernel only reads.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), IOC_SNAP_DESTROY, &a as *const VolArgs) })
}

/// `ioctl(subvol, BTRFS_IOC_SUBVOL_GETFLAGS)`.
pub fn subvol_getflags(subvol: BorrowedFd<'_>) -> io::Result<u64> {
    let mut f: u64 = 0;
    // SAFETY: the kernel writes one u64 to `f`.
    check(unsafe { libc::ioctl(subvol.as_raw_fd(), IOC_SUBVOL_GETFLAGS, &mut f as *mut u64) })?;
    Ok(f)
}

/// `ioctl(subvol, BTRFS_IOC_SUBVOL_SETFLAGS, flags)`.
pub fn subvol_setflags(subvol: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    // SAFETY: the kernel reads one u64 from `flags`.
    check(unsafe {
        libc::ioctl(
            subvol.as_raw_fd(),
            IOC_SUBVOL_SETFLAGS,
            &flags as *const u64,
        )
    })
}

/// `ioctl(fd, BTRFS_IOC_INO_LOOKUP, {treeid: 0, objectid: 256})`: the id of the subvolume
/// holding `fd`.
pub fn ino_lookup_tree_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut a = InoLookupArgs {
        treeid: 0,
        objectid: SUBVOL_ROOT_INO,
        name: [0; 4080],
    };
    // SAFETY: `a` is a valid btrfs_ioctl_ino_lookup_args the kernel fills in.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), IOC_INO_LOOKUP, &mut a as *mut InoLookupArgs) })?;
    Ok(a.treeid)
}

/// `ioctl(fd, BTRFS_IOC_FS_INFO)`: the filesystem's UUID.
pub fn fs_info_fsid(fd: BorrowedFd<'_>) -> io::Result<[u8; 16]> {
    let mut a = FsInfoArgs {
        max_id: 0,
        num_devices: 0,
        fsid: [0; 16],
        rest: [0; 992],
    };
    // SAFETY: `a` is a zeroed btrfs_ioctl_fs_info_args (1024 bytes) the kernel fills in.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), IOC_FS_INFO, &mut a as *mut FsInfoArgs) })?;
    Ok(a.fsid)
}

/// `ioctl(fd, BTRFS_IOC_QUOTA_CTL, {cmd})`.
pub fn quota_ctl(fd: BorrowedFd<'_>, cmd: u64) -> io::Result<()> {
    let mut a = QuotaCtlArgs { cmd, status: 0 };
    // SAFETY: `a` is a valid btrfs_ioctl_quota_ctl_args.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), IOC_QUOTA_CTL, &mut a as *mut QuotaCtlArgs) })
}

/// `ioctl(subvol, BTRFS_IOC_QGROUP_LIMIT, {qgroupid: 0, lim})`: limits the qgroup of the
/// subvolume open at `subvol`.
pub fn qgroup_limit(subvol: BorrowedFd<'_>, flags: u64, max_excl: u64) -> io::Result<()> {
    let mut a = QgroupLimitArgs {
        qgroupid: 0,
        flags,
        max_excl,
        ..QgroupLimitArgs::default()
    };
    // SAFETY: `a` is a valid btrfs_ioctl_qgroup_limit_args the kernel reads.
    check(unsafe {
        libc::ioctl(
            subvol.as_raw_fd(),
            IOC_QGROUP_LIMIT,
            &mut a as *mut QgroupLimitArgs,
        )
    })
}

/// `struct btrfs_ioctl_get_subvol_info_args` (504 bytes); only the fields used are named.
#[repr(C)]
struct SubvolInfoArgs {
    treeid: u64,
    name: [u8; 256],
    parent_id: u64,
    dirid: u64,
    generation: u64,
    flags: u64,
    uuids: [u8; 48],
    ctransid: u64,
    otransid: u64,
    stransid: u64,
    rtransid: u64,
    times: [u8; 64],
    reserved: [u64; 8],
}
const _: () = assert!(size_of::<SubvolInfoArgs>() == 504);

const IOC_GET_SUBVOL_INFO: libc::c_ulong = read::<SubvolInfoArgs>(BTRFS_IOCTL_MAGIC, 60) as _;
const IOC_TREE_SEARCH_V2: libc::c_ulong = read_write::<SearchArgsV2>(BTRFS_IOCTL_MAGIC, 17) as _;
const IOC_INO_PATHS: libc::c_ulong = read_write::<InoPathArgs>(BTRFS_IOCTL_MAGIC, 35) as _;

/// `struct btrfs_ioctl_search_args_v2` without its flexible `buf[]`: the search key (104
/// bytes) and `buf_size`. [`tree_search_v2`] lays it out as words, the buffer after it.
#[repr(C)]
struct SearchArgsV2 {
    key: [u64; 13],
    buf_size: u64,
}
const _: () = assert!(size_of::<SearchArgsV2>() == 112);

/// `struct btrfs_ioctl_ino_path_args`.
#[repr(C)]
struct InoPathArgs {
    inum: u64,
    size: u64,
    reserved: [u64; 4],
    /// The address of the `struct btrfs_data_container` the kernel fills.
    fspath: u64,
}
const _: () = assert!(size_of::<InoPathArgs>() == 56);

/// `ioctl(subvol, BTRFS_IOC_GET_SUBVOL_INFO)`: the transaction that created the subvolume
/// (`otransid`): for a snapshot, every inode changed since has a later `transid`.
pub fn get_subvol_info_otransid(subvol: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: an all-zero SubvolInfoArgs is a valid value of this plain-data struct.
    let mut a: SubvolInfoArgs = unsafe { std::mem::zeroed() };
    // SAFETY: `a` is a btrfs_ioctl_get_subvol_info_args (504 bytes) the kernel fills in.
    check(unsafe {
        libc::ioctl(
            subvol.as_raw_fd(),
            IOC_GET_SUBVOL_INFO,
            &mut a as *mut SubvolInfoArgs,
        )
    })?;
    Ok(a.otransid)
}

/// `BTRFS_INODE_ITEM_KEY`.
pub const INODE_ITEM_KEY: u32 = 1;

/// One item found by [`tree_search_v2`].
#[derive(Debug, Clone)]
pub struct SearchItem {
    /// Key objectid (the inode number for inode items).
    pub objectid: u64,
    /// The item's bytes.
    pub data: Vec<u8>,
}

/// `ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2)` over the tree of the subvolume holding `fd`: every
/// item with `min_type <= type <= max_type` in leaves written after transaction
/// `min_transid - 1`, from `min_objectid` on. Loops until the tree is exhausted.
pub fn tree_search_v2(
    fd: BorrowedFd<'_>,
    min_objectid: u64,
    min_type: u32,
    max_type: u32,
    min_transid: u64,
) -> io::Result<Vec<SearchItem>> {
    const BUF: usize = 64 * 1024;
    // struct btrfs_ioctl_search_args_v2: key and buf_size (words 0..14), then the buffer
    let mut args = vec![0u64; (size_of::<SearchArgsV2>() + BUF) / 8];
    let (mut obj, mut typ, mut off) = (min_objectid, 0u32, 0u64);
    let mut out = Vec::new();
    loop {
        let head = SearchArgsV2 {
            key: [
                0,        // tree_id: the fd's subvolume
                obj,      // min_objectid
                u64::MAX, // max_objectid
                off,      // min_offset
                u64::MAX, // max_offset
                min_transid,
                u64::MAX,                                     // max_transid
                u64::from(typ) | (u64::from(u32::MAX) << 32), // min_type, max_type
                4096,                                         // nr_items, unused
                0,                                            // unused1..unused4
                0,
                0,
                0,
            ],
            buf_size: BUF as u64,
        };
        args[..13].copy_from_slice(&head.key);
        args[13] = head.buf_size;
        // SAFETY: `args` is a btrfs_ioctl_search_args_v2 with buf_size set to the BUF bytes
        // that follow it in the same allocation; the kernel writes at most that many.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), IOC_TREE_SEARCH_V2, args.as_mut_ptr()) })?;
        let nr = (args[8] & 0xffff_ffff) as usize;
        if nr == 0 {
            return Ok(out);
        }
        let bytes: Vec<u8> = args[14..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut pos = 0;
        let mut last = (0u64, 0u32, 0u64);
        for _ in 0..nr {
            let h = &bytes[pos..pos + 32];
            let word = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().unwrap_or([0; 8]));
            let objectid = word(8);
            let offset = word(16);
            let item_type = u32::from_ne_bytes(h[24..28].try_into().unwrap_or([0; 4]));
            let len = u32::from_ne_bytes(h[28..32].try_into().unwrap_or([0; 4])) as usize;
            pos += 32;
            if (min_type..=max_type).contains(&item_type) {
                out.push(SearchItem {
                    objectid,
                    data: bytes[pos..pos + len].to_vec(),
                });
            }
            pos += len;
            last = (objectid, item_type, offset);
        }
        // continue right after the last key
        (obj, typ, off) = match last {
            (o, t, u64::MAX) if t == u32::from(u8::MAX) => (o + 1, 0, 0),
            (o, t, u64::MAX) => (o, t + 1, 0),
            (o, t, x) => (o, t, x + 1),
        };
        if obj == u64::MAX {
            return Ok(out);
        }
    }
}

/// `ioctl(fd, BTRFS_IOC_INO_PATHS, {inum})`: every path of inode `inum`, relative to the root
/// of the subvolume holding `fd`. The kernel fills at most 4 KiB of paths, and counts the
/// ones that did not fit (a path longer than that, or many hard links): then
/// `ENAMETOOLONG`, never a silently shorter list.
pub fn ino_paths(fd: BorrowedFd<'_>, inum: u64) -> io::Result<Vec<Vec<u8>>> {
    const SIZE: usize = 64 * 1024;
    // struct btrfs_data_container: bytes_left, bytes_missing, elem_cnt, elem_missed (u32),
    // then val[] (u64 offsets from &val[0] to NUL-terminated paths)
    let mut buf = vec![0u64; SIZE / 8];
    let mut args = InoPathArgs {
        inum,
        size: SIZE as u64,
        reserved: [0; 4],
        fspath: buf.as_mut_ptr() as u64,
    };
    // SAFETY: `args` is a btrfs_ioctl_ino_path_args whose fspath points to SIZE writable
    // bytes (`buf`), which outlive the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), IOC_INO_PATHS, &mut args as *mut InoPathArgs) })?;
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let elem_cnt = u32::from_ne_bytes(bytes[8..12].try_into().unwrap_or([0; 4])) as usize;
    let elem_missed = u32::from_ne_bytes(bytes[12..16].try_into().unwrap_or([0; 4]));
    if elem_missed > 0 {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let vals = 16;
    let mut out = Vec::with_capacity(elem_cnt);
    for i in 0..elem_cnt {
        let at = vals + i * 8;
        let off = u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8])) as usize;
        let start = vals + off;
        if start >= bytes.len() {
            break;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| b == 0)
            .map_or(bytes.len(), |e| start + e);
        out.push(bytes[start..end].to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(IOC_SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(IOC_SNAP_DESTROY, 0x5000_940f);
        assert_eq!(IOC_SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(IOC_SUBVOL_GETFLAGS, 0x8008_9419);
        assert_eq!(IOC_SUBVOL_SETFLAGS, 0x4008_941a);
        assert_eq!(IOC_QUOTA_CTL, 0xc010_9428);
        assert_eq!(IOC_QGROUP_LIMIT, 0x8030_942b);
        assert_eq!(IOC_INO_LOOKUP, 0xd000_9412);
        assert_eq!(IOC_FS_INFO, 0x8400_941f);
        assert_eq!(IOC_GET_SUBVOL_INFO, 0x81f8_943c);
        assert_eq!(IOC_TREE_SEARCH_V2, 0xc070_9411);
        assert_eq!(IOC_INO_PATHS, 0xc038_9423);
    }
}
