//! Device-mapper through `/dev/mapper/control`: create, load, suspend, resume, remove,
//! message and status, each one ioctl. Errors keep the device name and the operation.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::error::DevmapperError;
use crate::sys::{self, DmBuffer, DmCmd, DmIoctl, DmTargetSpec, DM_TARGET_SPEC_SIZE};
use crate::target::Table;

/// What `DM_DEV_STATUS` says of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `major:minor` as the kernel encodes it (`huge_encode_dev`).
    pub dev: u64,
    /// How many hold it open.
    pub open_count: i32,
    /// Suspended.
    pub suspended: bool,
    /// Has a live table.
    pub active: bool,
    /// Marked for removal at its last close.
    pub deferred_remove: bool,
}

impl DeviceInfo {
    /// The device's major number.
    pub fn major(&self) -> u32 {
        ((self.dev >> 8) & 0xfff) as u32
    }

    /// The device's minor number.
    pub fn minor(&self) -> u32 {
        ((self.dev & 0xff) | ((self.dev >> 12) & 0xfff00)) as u32
    }

    /// `major:minor`, as tables name devices.
    pub fn major_minor(&self) -> String {
        format!("{}:{}", self.major(), self.minor())
    }
}

/// The control device.
#[derive(Debug)]
pub struct Dm {
    control: OwnedFd,
}

type Result<T> = std::result::Result<T, DevmapperError>;

/// A buffer for one ioctl on device `name` with `flags`, and room for `capacity` bytes of
/// data.
fn request(name: &str, flags: u32, capacity: usize) -> Result<DmBuffer> {
    if name.len() >= sys::DM_NAME_LEN {
        return Err(DevmapperError::NameTooLong(name.to_owned()));
    }
    let mut buf = DmBuffer::new(capacity);
    let mut hdr = buf.header();
    hdr.flags = flags;
    hdr.name[..name.len()].copy_from_slice(name.as_bytes());
    buf.set_header(&hdr);
    Ok(buf)
}

/// The answer in `buf` after a call: from `data_start` to `data_size`.
fn answer(buf: &DmBuffer) -> &[u8] {
    let h = buf.header();
    let bytes = buf.bytes();
    let end = (h.data_size as usize).min(bytes.len());
    let start = (h.data_start as usize).min(end);
    &bytes[start..end]
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl Dm {
    /// Opens `/dev/mapper/control` (made with `mknod` if udev never did).
    pub fn open() -> Result<Dm> {
        let path = Path::new("/dev/mapper/control");
        let open = || {
            rustix::fs::open(
                path,
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
        };
        let control = match open() {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                // No node (a /dev without devtmpfs or udev): make it, if the kernel has
                // device-mapper at all (a misc device, listed with its minor in /proc/misc).
                let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
                let minor = misc.lines().find_map(|l| {
                    let (minor, name) = l.trim().split_once(' ')?;
                    (name == "device-mapper").then(|| minor.parse::<u32>().ok())?
                });
                let Some(minor) = minor else {
                    return Err(DevmapperError::NoDeviceMapper(
                        std::io::Error::from_raw_os_error(libc::ENOENT),
                    ));
                };
                // best effort: if either fails, the open below fails and says so
                let _ = std::fs::create_dir_all("/dev/mapper");
                let _ = rustix::fs::mknodat(
                    rustix::fs::CWD,
                    path,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(10, minor),
                );
                open().map_err(|e| DevmapperError::NoDeviceMapper(e.into()))?
            }
            Err(e) => return Err(DevmapperError::NoDeviceMapper(e.into())),
        };
        let dm = Dm { control };
        let mut buf = request("", 0, 0)?;
        dm.call(DmCmd::Version, "", &mut buf)?;
        Ok(dm)
    }

    fn call(&self, cmd: DmCmd, name: &str, buf: &mut DmBuffer) -> Result<()> {
        sys::dm_ioctl(self.control.as_fd(), cmd, buf).map_err(|source| DevmapperError::Ioctl {
            op: cmd,
            device: name.to_owned(),
            message: None,
            source,
        })
    }

    /// `DM_DEV_CREATE`: a new device without a table.
    pub fn create(&self, name: &str) -> Result<DeviceInfo> {
        let mut buf = request(name, 0, 0)?;
        self.call(DmCmd::DevCreate, name, &mut buf)?;
        Ok(info_of(&buf.header()))
    }

    /// `DM_TABLE_LOAD` of `table` into the device's inactive slot (live at the next resume).
    pub fn load(&self, name: &str, table: &Table) -> Result<()> {
        let target = table.target.type_name();
        let params = table.target.to_string();
        let mut buf = request(name, 0, DM_TARGET_SPEC_SIZE + params.len() + 1)?;
        let mut hdr = buf.header();
        hdr.target_count = 1;
        buf.set_header(&hdr);
        let mut spec = DmTargetSpec {
            sector_start: 0,
            length: table.length.0,
            status: 0,
            next: 0,
            target_type: [0; 16],
        };
        if target.len() >= spec.target_type.len() {
            return Err(DevmapperError::NameTooLong(target.to_owned()));
        }
        spec.target_type[..target.len()].copy_from_slice(target.as_bytes());
        let data = buf.data_mut();
        sys::write_struct(&mut data[..DM_TARGET_SPEC_SIZE], &spec);
        data[DM_TARGET_SPEC_SIZE..DM_TARGET_SPEC_SIZE + params.len()]
            .copy_from_slice(params.as_bytes());
        self.call(DmCmd::TableLoad, name, &mut buf)
    }

    /// `DM_DEV_SUSPEND`: suspends the device, freezing the filesystem on it first.
    pub fn suspend(&self, name: &str) -> Result<()> {
        let mut buf = request(name, sys::DM_SUSPEND_FLAG, 0)?;
        self.call(DmCmd::DevSuspend, name, &mut buf)
    }

    /// `DM_DEV_SUSPEND` without the suspend flag: resumes the device, making a loaded table
    /// live.
    pub fn resume(&self, name: &str) -> Result<()> {
        let mut buf = request(name, 0, 0)?;
        self.call(DmCmd::DevSuspend, name, &mut buf)
    }

    /// `DM_DEV_REMOVE`; `deferred` asks the kernel to remove it at its last close when it is
    /// open now.
    pub fn remove(&self, name: &str, deferred: bool) -> Result<()> {
        let flags = if deferred { sys::DM_DEFERRED_REMOVE } else { 0 };
        let mut buf = request(name, flags, 0)?;
        self.call(DmCmd::DevRemove, name, &mut buf)
    }

    /// `DM_DEV_RENAME`: device `name` is called `new` from now on (`ENXIO` when there is no
    /// `name`, `EBUSY` when `new` is taken). Atomic: of two renames of one device, one fails.
    pub fn rename(&self, name: &str, new: &str) -> Result<()> {
        if new.len() >= sys::DM_NAME_LEN {
            return Err(DevmapperError::NameTooLong(new.to_owned()));
        }
        let mut buf = request(name, 0, new.len() + 1)?;
        buf.data_mut()[..new.len()].copy_from_slice(new.as_bytes());
        self.call(DmCmd::DevRename, name, &mut buf)
    }

    /// `DM_DEV_STATUS`, or `None` when there is no such device.
    pub fn info(&self, name: &str) -> Result<Option<DeviceInfo>> {
        let mut buf = request(name, 0, 0)?;
        match self.call(DmCmd::DevStatus, name, &mut buf) {
            Ok(()) => Ok(Some(info_of(&buf.header()))),
            Err(e) if e.errno() == Some(libc::ENXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DM_TARGET_MSG` to sector 0 of the device: thin-pool messages (`create_thin`,
    /// `create_snap`, `delete`, `set_transaction_id`) and `@cancel_deferred_remove`.
    pub fn message(&self, name: &str, msg: &str) -> Result<()> {
        let mut buf = request(name, 0, 8 + msg.len() + 1)?;
        // struct dm_target_msg { __u64 sector; char message[]; }: sector 0 is already zero
        buf.data_mut()[8..8 + msg.len()].copy_from_slice(msg.as_bytes());
        self.call(DmCmd::TargetMsg, name, &mut buf)
            .map_err(|e| e.with_message(msg))
    }

    /// `DM_TABLE_STATUS`: the status line of the device's (first) target.
    pub fn status(&self, name: &str) -> Result<String> {
        let mut capacity = 4096;
        loop {
            // no flush: a thin pool would commit its metadata for every status asked
            let mut buf = request(name, sys::DM_NOFLUSH_FLAG, capacity)?;
            self.call(DmCmd::TableStatus, name, &mut buf)?;
            let hdr = buf.header();
            if hdr.flags & sys::DM_BUFFER_FULL_FLAG != 0 {
                capacity *= 4;
                continue;
            }
            if hdr.target_count == 0 {
                return Ok(String::new());
            }
            let data = answer(&buf);
            if data.len() < DM_TARGET_SPEC_SIZE {
                return Ok(String::new());
            }
            return Ok(c_string(&data[DM_TARGET_SPEC_SIZE..]));
        }
    }

    /// `DM_LIST_DEVICES`: every device-mapper device's name.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut capacity = 16384;
        loop {
            let mut buf = request("", 0, capacity)?;
            self.call(DmCmd::ListDevices, "", &mut buf)?;
            if buf.header().flags & sys::DM_BUFFER_FULL_FLAG != 0 {
                capacity *= 4;
                continue;
            }
            let data = answer(&buf);
            let mut out = Vec::new();
            let mut at = 0usize;
            // struct dm_name_list { __u64 dev; __u32 next; char name[]; }, next relative to
            // this entry, 0 for the last; dev 0 means no devices at all
            while at + 12 <= data.len() {
                let dev = u64::from_ne_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
                let next = u32::from_ne_bytes(data[at + 8..at + 12].try_into().unwrap_or([0; 4]));
                if dev == 0 {
                    break;
                }
                out.push(c_string(&data[at + 12..]));
                if next == 0 {
                    break;
                }
                at += next as usize;
            }
            return Ok(out);
        }
    }
}

fn info_of(h: &DmIoctl) -> DeviceInfo {
    DeviceInfo {
        dev: h.dev,
        open_count: h.open_count,
        suspended: h.flags & sys::DM_SUSPEND_FLAG != 0,
        active: h.flags & sys::DM_ACTIVE_PRESENT_FLAG != 0,
        deferred_remove: h.flags & sys::DM_DEFERRED_REMOVE != 0,
    }
}
