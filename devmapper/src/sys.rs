//! The kernel calls of this backend, made directly: device-mapper ioctls on
//! `/dev/mapper/control` (no libdevmapper, no `dmsetup` process, no udev), loop device setup,
//! and the online grow ioctls of ext4 and xfs. Each function is named after its ioctl.
//!
//! References: `include/uapi/linux/dm-ioctl.h`, `include/uapi/linux/loop.h`,
//! `Documentation/admin-guide/device-mapper/thin-provisioning.rst`, ext4(5), xfsctl(3).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::ioctl::opcode::{read_write, write};

/// `DM_NAME_LEN`: a device name's buffer, the NUL included.
pub const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;

/// `struct dm_ioctl`, the header of every device-mapper ioctl (312 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DmIoctl {
    pub version: [u32; 3],
    pub data_size: u32,
    pub data_start: u32,
    pub target_count: u32,
    pub open_count: i32,
    pub flags: u32,
    pub event_nr: u32,
    pub padding: u32,
    pub dev: u64,
    pub name: [u8; DM_NAME_LEN],
    pub uuid: [u8; DM_UUID_LEN],
    pub data: [u8; 7],
}

/// `sizeof(struct dm_ioctl)`.
pub const DM_IOCTL_SIZE: usize = std::mem::size_of::<DmIoctl>();
const _: () = assert!(DM_IOCTL_SIZE == 312);

/// `struct dm_target_spec` (40 bytes), followed by the target's parameters.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DmTargetSpec {
    pub sector_start: u64,
    pub length: u64,
    pub status: i32,
    pub next: u32,
    pub target_type: [u8; 16],
}

/// `sizeof(struct dm_target_spec)`.
pub const DM_TARGET_SPEC_SIZE: usize = std::mem::size_of::<DmTargetSpec>();
const _: () = assert!(DM_TARGET_SPEC_SIZE == 40);

/// `DM_SUSPEND_FLAG`: suspend (with `DM_DEV_SUSPEND`), or the device is suspended.
pub const DM_SUSPEND_FLAG: u32 = 1 << 1;
/// `DM_ACTIVE_PRESENT_FLAG`: the device has a live table.
pub const DM_ACTIVE_PRESENT_FLAG: u32 = 1 << 5;
/// `DM_BUFFER_FULL_FLAG`: the answer did not fit; call again with a bigger buffer.
pub const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;
/// `DM_NOFLUSH_FLAG`: for a status, do not commit the pool's metadata first.
pub const DM_NOFLUSH_FLAG: u32 = 1 << 11;
/// `DM_DEFERRED_REMOVE`: remove the device when its last opener closes it.
pub const DM_DEFERRED_REMOVE: u32 = 1 << 17;

/// The device-mapper ioctl commands used here (`enum { DM_VERSION_CMD = 0, ... }`).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub enum DmCmd {
    /// `DM_VERSION`
    Version = 0,
    /// `DM_LIST_DEVICES`
    ListDevices = 2,
    /// `DM_DEV_CREATE`
    DevCreate = 3,
    /// `DM_DEV_REMOVE`
    DevRemove = 4,
    /// `DM_DEV_RENAME`
    DevRename = 5,
    /// `DM_DEV_SUSPEND` (also resumes)
    DevSuspend = 6,
    /// `DM_DEV_STATUS`
    DevStatus = 7,
    /// `DM_TABLE_LOAD`
    TableLoad = 9,
    /// `DM_TABLE_STATUS`
    TableStatus = 12,
    /// `DM_TARGET_MSG`
    TargetMsg = 14,
}

/// `DM_IOCTL`, the group of every device-mapper ioctl.
const DM_IOCTL: u8 = 0xfd;

/// `_IOWR(DM_IOCTL, cmd, struct dm_ioctl)`.
const fn dm_request(cmd: DmCmd) -> libc::c_ulong {
    read_write::<DmIoctl>(DM_IOCTL, cmd as u8) as _
}

/// The buffer of one device-mapper ioctl: a [`DmIoctl`] header, then the data area. Its
/// header's `data_size` is always the buffer's length (what the kernel reads and writes), so
/// [`dm_ioctl`] is sound whatever else the header holds: the kernel checks the rest.
#[derive(Debug)]
pub struct DmBuffer {
    /// 8-byte aligned, as `struct dm_ioctl` and the structs after it want.
    words: Vec<u64>,
}

impl DmBuffer {
    /// A zeroed header with `version` 4.0.0, `data_start` just after the header and
    /// `data_size` the buffer's length, then at least `capacity` bytes of zeroed data.
    pub fn new(capacity: usize) -> DmBuffer {
        let size = (DM_IOCTL_SIZE + capacity).div_ceil(8) * 8;
        let mut buf = DmBuffer {
            words: vec![0u64; size / 8],
        };
        let mut hdr = buf.header();
        hdr.version = [4, 0, 0];
        hdr.data_start = DM_IOCTL_SIZE as u32;
        buf.set_header(&hdr);
        buf
    }

    /// The whole buffer.
    pub fn bytes(&self) -> &[u8] {
        as_bytes(&self.words)
    }

    /// The header.
    pub fn header(&self) -> DmIoctl {
        read_struct(&self.bytes()[..DM_IOCTL_SIZE])
    }

    /// Writes `h` as the header, with `data_size` set to the buffer's length whatever `h`
    /// says (capped at `u32::MAX`: never more than the buffer).
    pub fn set_header(&mut self, h: &DmIoctl) {
        let mut h = *h;
        h.data_size = self.len_u32();
        write_struct(&mut as_bytes_mut(&mut self.words)[..DM_IOCTL_SIZE], &h);
    }

    /// The data area (after the header).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut as_bytes_mut(&mut self.words)[DM_IOCTL_SIZE..]
    }

    fn len_u32(&self) -> u32 {
        u32::try_from(std::mem::size_of_val(self.words.as_slice())).unwrap_or(u32::MAX)
    }
}

/// `ioctl(control, DM_*, buf)`: the kernel reads `buf`'s header and data and writes its
/// answer into the same buffer. See `<linux/dm-ioctl.h>`.
pub fn dm_ioctl(control: BorrowedFd<'_>, cmd: DmCmd, buf: &mut DmBuffer) -> io::Result<()> {
    // An earlier answer may have left a smaller data_size: the call gets the whole buffer.
    let hdr = buf.header();
    buf.set_header(&hdr);
    // SAFETY: buf.words is a live, 8-byte aligned allocation that begins with a struct
    // dm_ioctl whose data_size is at most the allocation's length (set_header, just above),
    // so the kernel reads and writes only inside it; it is borrowed exclusively for the call.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), dm_request(cmd), buf.words.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// The loop ioctls are plain numbers in `<linux/loop.h>`, not `_IO*` encodings.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;

/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: the number of a free loop device.
pub fn loop_ctl_get_free(control: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the number.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u32)
}

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// `LO_FLAGS_AUTOCLEAR`: the loop device detaches itself when its last user closes it.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `ioctl(loop, LOOP_CONFIGURE, &config)` (Linux 5.8): attaches `file` to the loop device
/// with `flags`, in one step.
pub fn loop_configure(
    loop_dev: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    flags: u32,
) -> io::Result<()> {
    let config = LoopConfig {
        fd: file.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: config is a valid struct loop_config the kernel only reads.
    let r = unsafe {
        libc::ioctl(
            loop_dev.as_raw_fd(),
            LOOP_CONFIGURE,
            &config as *const LoopConfig,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `EXT4_IOC_RESIZE_FS`: `_IOW('f', 16, __u64)`.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = write::<u64>(b'f', 16) as _;

/// `ioctl(dir, EXT4_IOC_RESIZE_FS, &blocks)`: grows a mounted ext4 to `blocks` blocks.
pub fn ext4_ioc_resize_fs(dir: BorrowedFd<'_>, blocks: u64) -> io::Result<()> {
    // SAFETY: the kernel reads one u64 from a valid pointer.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks as *const u64) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct xfs_growfs_data`.
#[repr(C)]
struct XfsGrowfsData {
    newblocks: u64,
    imaxpct: u32,
}
const _: () = assert!(std::mem::size_of::<XfsGrowfsData>() == 16);

/// `XFS_IOC_FSGROWFSDATA`: `_IOW('X', 110, struct xfs_growfs_data)`.
const XFS_IOC_FSGROWFSDATA: libc::c_ulong = write::<XfsGrowfsData>(b'X', 110) as _;

/// `ioctl(dir, XFS_IOC_FSGROWFSDATA, &args)`: grows a mounted xfs to `blocks` blocks,
/// keeping `imaxpct`.
pub fn xfs_ioc_fsgrowfsdata(dir: BorrowedFd<'_>, blocks: u64, imaxpct: u32) -> io::Result<()> {
    let args = XfsGrowfsData {
        newblocks: blocks,
        imaxpct,
    };
    // SAFETY: the kernel reads a valid struct xfs_growfs_data.
    let r = unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            XFS_IOC_FSGROWFSDATA,
            &args as *const XfsGrowfsData,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The bytes of `words` (any bit pattern is a valid `u8`).
fn as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u8 has no alignment or validity requirement, and the length covers exactly
    // the words' memory, borrowed for as long as `words`.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), std::mem::size_of_val(words)) }
}

/// The bytes of `words`, writable.
fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: as for as_bytes, and the borrow is exclusive; any bytes written make valid u64s.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

/// Reads a plain C struct (integers and byte arrays only) from the front of `bytes`.
pub fn read_struct<T: Plain>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>(), "short buffer");
    // SAFETY: the length is checked, read_unaligned has no alignment requirement, and the
    // structs read here (DmIoctl, DmTargetSpec) are valid for any bit pattern.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Writes a plain C struct to the front of `bytes`.
pub fn write_struct<T: Plain>(bytes: &mut [u8], v: &T) {
    assert!(bytes.len() >= std::mem::size_of::<T>(), "short buffer");
    // SAFETY: the length is checked and write_unaligned has no alignment requirement.
    unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<T>(), *v) }
}

/// C structs made of integers and byte arrays only: every bit pattern is a valid value, so
/// [`read_struct`] may read them from any bytes. Implemented here only.
pub trait Plain: Copy + private::Sealed {}
impl Plain for DmIoctl {}
impl Plain for DmTargetSpec {}
mod private {
    pub trait Sealed {}
    impl Sealed for super::DmIoctl {}
    impl Sealed for super::DmTargetSpec {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(dm_request(DmCmd::Version), 0xc138_fd00);
        assert_eq!(dm_request(DmCmd::TableLoad), 0xc138_fd09);
        assert_eq!(dm_request(DmCmd::TableStatus), 0xc138_fd0c);
        assert_eq!(dm_request(DmCmd::TargetMsg), 0xc138_fd0e);
        assert_eq!(EXT4_IOC_RESIZE_FS, 0x4008_6610);
        assert_eq!(XFS_IOC_FSGROWFSDATA, 0x4010_586e);
    }

    #[test]
    fn a_dm_buffer_header_never_claims_more_than_the_buffer() {
        let mut buf = DmBuffer::new(10);
        let len = buf.bytes().len();
        assert_eq!(len, 328, "the header and 10 bytes, in whole words");
        let mut h = buf.header();
        assert_eq!(h.data_size as usize, len);
        assert_eq!(h.data_start as usize, DM_IOCTL_SIZE);
        assert_eq!(h.version, [4, 0, 0]);
        h.data_size = 1 << 20;
        h.flags = DM_NOFLUSH_FLAG;
        buf.set_header(&h);
        let h = buf.header();
        assert_eq!(h.data_size as usize, len);
        assert_eq!(h.flags, DM_NOFLUSH_FLAG, "the rest of the header is kept");
        assert_eq!(buf.data_mut().len(), len - DM_IOCTL_SIZE);
    }
}
