//! The C calls: libzfs_core (datasets, snapshots, clones), libzfs (properties, iteration)
//! and libnvpair (the name/value lists both take), from OpenZFS 2.1 as Debian packages it
//! (`libzfslinux-dev`, contrib).
//!
//! Declared by hand, not generated: the dozen functions used here have kept their signatures
//! since OpenZFS 0.8, and property and pool-property numbers are looked up by name at run time
//! (`zfs_name_to_prop`), never compiled in, because their enum values move between releases.
//!
//! libzfs_core calls are thread-safe (one ioctl each on a shared `/dev/zfs` descriptor) and
//! return an errno. A libzfs handle is not thread-safe: [`LibZfs`] is `Send` but not `Sync`,
//! and the driver keeps it behind a mutex.
//!
//! References: `libzfs_core.h`, `libzfs.h`, `sys/nvpair.h` in `/usr/include/libzfs`;
//! OpenZFS `lib/libzfs_core/libzfs_core.c`.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::ptr;

#[repr(C)]
struct nvlist_t {
    _opaque: [u8; 0],
}
#[repr(C)]
struct libzfs_handle_t {
    _opaque: [u8; 0],
}
#[repr(C)]
struct zfs_handle_t {
    _opaque: [u8; 0],
}
#[repr(C)]
struct zpool_handle_t {
    _opaque: [u8; 0],
}

/// `boolean_t` is a C enum (`B_FALSE`, `B_TRUE`).
type BooleanT = c_int;
const B_FALSE: BooleanT = 0;
const B_TRUE: BooleanT = 1;
/// `LZC_DATSET_TYPE_ZFS` (a filesystem, as opposed to a volume).
const LZC_DATSET_TYPE_ZFS: c_int = 2;
/// `ZFS_TYPE_FILESYSTEM` of `zfs_type_t`.
const ZFS_TYPE_FILESYSTEM: c_int = 1;
/// `ZPROP_INVAL`: what the name-to-property lookups return for an unknown name.
const ZPROP_INVAL: c_int = -1;

type ZfsIterF = unsafe extern "C" fn(*mut zfs_handle_t, *mut c_void) -> c_int;

#[link(name = "nvpair")]
extern "C" {
    fn fnvlist_alloc() -> *mut nvlist_t;
    fn fnvlist_free(nvl: *mut nvlist_t);
    fn fnvlist_add_boolean(nvl: *mut nvlist_t, name: *const c_char);
    fn fnvlist_add_string(nvl: *mut nvlist_t, name: *const c_char, val: *const c_char);
    fn fnvlist_add_uint64(nvl: *mut nvlist_t, name: *const c_char, val: u64);
    fn fnvlist_add_boolean_value(nvl: *mut nvlist_t, name: *const c_char, val: BooleanT);
    fn nvlist_lookup_nvlist(
        nvl: *mut nvlist_t,
        name: *const c_char,
        val: *mut *mut nvlist_t,
    ) -> c_int;
    fn nvlist_lookup_string(
        nvl: *mut nvlist_t,
        name: *const c_char,
        val: *mut *mut c_char,
    ) -> c_int;
}

#[link(name = "zfs_core")]
extern "C" {
    fn libzfs_core_init() -> c_int;
    fn lzc_create(
        fsname: *const c_char,
        kind: c_int,
        props: *mut nvlist_t,
        wkeydata: *mut u8,
        wkeylen: u32,
    ) -> c_int;
    fn lzc_clone(fsname: *const c_char, origin: *const c_char, props: *mut nvlist_t) -> c_int;
    fn lzc_snapshot(
        snaps: *mut nvlist_t,
        props: *mut nvlist_t,
        errlist: *mut *mut nvlist_t,
    ) -> c_int;
    fn lzc_destroy(fsname: *const c_char) -> c_int;
    fn lzc_destroy_snaps(
        snaps: *mut nvlist_t,
        defer: BooleanT,
        errlist: *mut *mut nvlist_t,
    ) -> c_int;
    fn lzc_exists(dataset: *const c_char) -> BooleanT;
    fn lzc_sync(pool: *const c_char, innvl: *mut nvlist_t, outnvl: *mut *mut nvlist_t) -> c_int;
    fn lzc_channel_program(
        pool: *const c_char,
        program: *const c_char,
        instrlimit: u64,
        memlimit: u64,
        argnvl: *mut nvlist_t,
        outnvl: *mut *mut nvlist_t,
    ) -> c_int;
}

/// `ZCP_DEFAULT_INSTRLIMIT` and `ZCP_DEFAULT_MEMLIMIT` (`sys/fs/zfs.h`): what `zfs program`
/// allows by default.
const ZCP_INSTRLIMIT: u64 = 10 * 1000 * 1000;
const ZCP_MEMLIMIT: u64 = 10 * 1024 * 1024;

#[link(name = "zfs")]
extern "C" {
    fn libzfs_init() -> *mut libzfs_handle_t;
    fn libzfs_fini(h: *mut libzfs_handle_t);
    fn libzfs_error_description(h: *mut libzfs_handle_t) -> *const c_char;
    fn zfs_open(h: *mut libzfs_handle_t, name: *const c_char, types: c_int) -> *mut zfs_handle_t;
    fn zfs_close(zhp: *mut zfs_handle_t);
    fn zfs_get_name(zhp: *const zfs_handle_t) -> *const c_char;
    fn zfs_name_to_prop(name: *const c_char) -> c_int;
    fn zfs_prop_get_int(zhp: *mut zfs_handle_t, prop: c_int) -> u64;
    fn zfs_prop_get(
        zhp: *mut zfs_handle_t,
        prop: c_int,
        buf: *mut c_char,
        len: usize,
        src: *mut c_int,
        statbuf: *mut c_char,
        statlen: usize,
        literal: BooleanT,
    ) -> c_int;
    fn zfs_prop_set(zhp: *mut zfs_handle_t, name: *const c_char, value: *const c_char) -> c_int;
    fn zfs_get_user_props(zhp: *mut zfs_handle_t) -> *mut nvlist_t;
    fn zfs_iter_filesystems(zhp: *mut zfs_handle_t, f: ZfsIterF, data: *mut c_void) -> c_int;
    fn zpool_name_to_prop(name: *const c_char) -> c_int;
    fn zpool_open(h: *mut libzfs_handle_t, name: *const c_char) -> *mut zpool_handle_t;
    fn zpool_close(zhp: *mut zpool_handle_t);
    fn zpool_get_prop_int(zhp: *mut zpool_handle_t, prop: c_int, src: *mut c_int) -> u64;
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn errno(rc: c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// An owned name/value list (`nvlist_t`), freed on drop.
#[derive(Debug)]
pub struct NvList(*mut nvlist_t);

impl NvList {
    /// `fnvlist_alloc()`: an empty list (aborts only when out of memory, like `Vec`).
    pub fn new() -> NvList {
        // SAFETY: no arguments; fnvlist_alloc returns a valid list or aborts.
        NvList(unsafe { fnvlist_alloc() })
    }

    /// `fnvlist_add_boolean()`: a name without a value (how snapshot lists are spelled).
    pub fn add_boolean(&mut self, name: &str) -> io::Result<()> {
        let n = cstring(name)?;
        // SAFETY: self.0 is a live list; n is NUL-terminated and copied by the callee.
        unsafe { fnvlist_add_boolean(self.0, n.as_ptr()) };
        Ok(())
    }

    /// `fnvlist_add_string()`.
    pub fn add_string(&mut self, name: &str, value: &str) -> io::Result<()> {
        let (n, v) = (cstring(name)?, cstring(value)?);
        // SAFETY: as for add_boolean; both strings are copied.
        unsafe { fnvlist_add_string(self.0, n.as_ptr(), v.as_ptr()) };
        Ok(())
    }

    /// `fnvlist_add_uint64()`.
    pub fn add_u64(&mut self, name: &str, value: u64) -> io::Result<()> {
        let n = cstring(name)?;
        // SAFETY: as for add_boolean.
        unsafe { fnvlist_add_uint64(self.0, n.as_ptr(), value) };
        Ok(())
    }
}

impl Default for NvList {
    fn default() -> Self {
        NvList::new()
    }
}

impl Drop for NvList {
    fn drop(&mut self) {
        // SAFETY: self.0 came from fnvlist_alloc and is freed once, here.
        unsafe { fnvlist_free(self.0) }
    }
}

/// Frees an error list a libzfs_core call may return.
fn free_errlist(errlist: *mut nvlist_t) {
    if !errlist.is_null() {
        // SAFETY: libzfs_core allocated it for us to free.
        unsafe { fnvlist_free(errlist) }
    }
}

/// `libzfs_core_init()`: opens `/dev/zfs` (reference-counted; never closed, like the
/// `zfs` command). Fails with the errno of the open, `ENOENT` when the module is not loaded.
pub fn core_init() -> io::Result<()> {
    // SAFETY: no arguments; safe to call any number of times.
    errno(unsafe { libzfs_core_init() })
}

/// `lzc_create()`: a new filesystem `name` with `props` set from the start.
pub fn lzc_create_fs(name: &str, props: &NvList) -> io::Result<()> {
    let n = cstring(name)?;
    // SAFETY: n and props live across the call; no wrapping key (not encrypted).
    errno(unsafe { lzc_create(n.as_ptr(), LZC_DATSET_TYPE_ZFS, props.0, ptr::null_mut(), 0) })
}

/// `lzc_clone()`: filesystem `name`, a clone of snapshot `origin`, with `props`.
pub fn lzc_clone_fs(name: &str, origin: &str, props: &NvList) -> io::Result<()> {
    let (n, o) = (cstring(name)?, cstring(origin)?);
    // SAFETY: all pointers live across the call.
    errno(unsafe { lzc_clone(n.as_ptr(), o.as_ptr(), props.0) })
}

/// `lzc_snapshot()` of one snapshot `fs@snap` (atomic, in one transaction group).
pub fn lzc_snapshot_one(snapshot: &str) -> io::Result<()> {
    let mut snaps = NvList::new();
    snaps.add_boolean(snapshot)?;
    let mut errlist: *mut nvlist_t = ptr::null_mut();
    // SAFETY: snaps lives across the call; props may be NULL; errlist is ours to free.
    let rc = unsafe { lzc_snapshot(snaps.0, ptr::null_mut(), &mut errlist) };
    free_errlist(errlist);
    errno(rc)
}

/// `lzc_destroy()`: destroys a filesystem (which must have no snapshots and not be mounted)
/// or a snapshot (which must have no clones).
pub fn lzc_destroy_one(name: &str) -> io::Result<()> {
    let n = cstring(name)?;
    // SAFETY: n lives across the call.
    errno(unsafe { lzc_destroy(n.as_ptr()) })
}

/// `lzc_destroy_snaps()` of one snapshot, with `defer`: a snapshot that still has clones is
/// then destroyed by ZFS when its last clone goes.
pub fn lzc_destroy_snap_deferred(snapshot: &str) -> io::Result<()> {
    let mut snaps = NvList::new();
    snaps.add_boolean(snapshot)?;
    let mut errlist: *mut nvlist_t = ptr::null_mut();
    // SAFETY: snaps lives across the call; errlist is ours to free.
    let rc = unsafe { lzc_destroy_snaps(snaps.0, B_TRUE, &mut errlist) };
    free_errlist(errlist);
    errno(rc)
}

/// `lzc_exists()`.
pub fn lzc_exists_ds(name: &str) -> bool {
    let Ok(n) = cstring(name) else {
        return false;
    };
    // SAFETY: n lives across the call.
    unsafe { lzc_exists(n.as_ptr()) != B_FALSE }
}

/// `lzc_sync()`: waits until the pool's open transaction group is written, so space
/// accounting (`used`, `referenced`) includes every write made before the call.
pub fn lzc_sync_pool(pool: &str) -> io::Result<()> {
    let p = cstring(pool)?;
    // the ioctl requires "force" (ZFS_ERR_IOC_ARG_REQUIRED without it); false: no new
    // transaction group is forced when nothing is dirty
    let inl = NvList::new();
    // SAFETY: inl is a live list; the name is a NUL-terminated literal, copied.
    unsafe { fnvlist_add_boolean_value(inl.0, c"force".as_ptr(), B_FALSE) };
    // SAFETY: p and inl live across the call; no output list is asked for.
    errno(unsafe { lzc_sync(p.as_ptr(), inl.0, ptr::null_mut()) })
}

/// A channel program that failed: the errno, and Lua's message when the program itself
/// raised an error (`ECHRNG`) or ran out of its limits.
#[derive(Debug)]
pub struct ProgramFailure {
    /// The errno `lzc_channel_program()` returned.
    pub errno: io::Error,
    /// The `error` entry of its output, when there is one.
    pub message: Option<String>,
}

/// `lzc_channel_program()`: runs the Lua `program` on `pool` in syncing context (as one
/// transaction group: no other administrative operation runs meanwhile), with `args` as
/// the program's argument table. Returns the string the program returned (`None` for any
/// other kind of return value).
pub fn channel_program(
    pool: &str,
    program: &str,
    args: &NvList,
) -> Result<Option<String>, ProgramFailure> {
    let bad = |errno: io::Error| ProgramFailure {
        errno,
        message: None,
    };
    let (p, prog) = (cstring(pool).map_err(bad)?, cstring(program).map_err(bad)?);
    let mut out: *mut nvlist_t = ptr::null_mut();
    // SAFETY: p, prog and args live across the call; out is ours to free.
    let rc = unsafe {
        lzc_channel_program(
            p.as_ptr(),
            prog.as_ptr(),
            ZCP_INSTRLIMIT,
            ZCP_MEMLIMIT,
            args.0,
            &mut out,
        )
    };
    let text = |key: &CStr| -> Option<String> {
        if out.is_null() {
            return None;
        }
        let mut v: *mut c_char = ptr::null_mut();
        // SAFETY: out is a live list; v points into it until it is freed below.
        if unsafe { nvlist_lookup_string(out, key.as_ptr(), &mut v) } != 0 || v.is_null() {
            return None;
        }
        // SAFETY: a NUL-terminated string owned by out, copied here.
        Some(unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
    };
    let result = match rc {
        0 => Ok(text(c"return")),
        e => Err(ProgramFailure {
            errno: io::Error::from_raw_os_error(e),
            message: text(c"error"),
        }),
    };
    free_errlist(out);
    result
}

/// A libzfs handle (`libzfs_init()`), for what libzfs_core lacks: reading and setting
/// properties and listing child datasets.
#[derive(Debug)]
pub struct LibZfs(*mut libzfs_handle_t);

// SAFETY: the handle is plain heap state with no thread affinity; it is only ever used by one
// thread at a time (LibZfs is not Sync and every method takes &mut self).
unsafe impl Send for LibZfs {}

/// A property number (`zfs_prop_t` or `zpool_prop_t`), looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prop(c_int);

impl LibZfs {
    /// `libzfs_init()`.
    pub fn init() -> io::Result<LibZfs> {
        // SAFETY: no arguments; NULL means failure (errno set).
        let h = unsafe { libzfs_init() };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(LibZfs(h))
    }

    fn describe(&mut self) -> String {
        // SAFETY: the handle is live; the description is a static or handle-owned string.
        let d = unsafe { libzfs_error_description(self.0) };
        if d.is_null() {
            return "unknown libzfs error".into();
        }
        // SAFETY: non-NULL, NUL-terminated, valid until the next libzfs call on the handle.
        unsafe { CStr::from_ptr(d) }.to_string_lossy().into_owned()
    }

    /// `zfs_name_to_prop()`: the number of dataset property `name`.
    pub fn dataset_prop(name: &str) -> Option<Prop> {
        let n = cstring(name).ok()?;
        // SAFETY: n lives across the call; the property table is initialised by libzfs_init
        // (a LibZfs exists whenever the driver asks).
        let p = unsafe { zfs_name_to_prop(n.as_ptr()) };
        (p != ZPROP_INVAL).then_some(Prop(p))
    }

    /// `zpool_name_to_prop()`: the number of pool property `name`.
    pub fn pool_prop(name: &str) -> Option<Prop> {
        let n = cstring(name).ok()?;
        // SAFETY: as for dataset_prop.
        let p = unsafe { zpool_name_to_prop(n.as_ptr()) };
        (p != ZPROP_INVAL).then_some(Prop(p))
    }

    /// `zfs_open()` of filesystem `name`; the handle holds a snapshot of its properties.
    pub fn open_fs(&mut self, name: &str) -> Result<Dataset<'_>, String> {
        let n = cstring(name).map_err(|e| e.to_string())?;
        // SAFETY: the handle is live, n lives across the call; NULL means failure.
        let z = unsafe { zfs_open(self.0, n.as_ptr(), ZFS_TYPE_FILESYSTEM) };
        if z.is_null() {
            return Err(self.describe());
        }
        Ok(Dataset { lib: self, zhp: z })
    }

    /// `zpool_open()` + `zpool_get_prop_int()`.
    pub fn pool_prop_u64(&mut self, pool: &str, prop: Prop) -> Result<u64, String> {
        let n = cstring(pool).map_err(|e| e.to_string())?;
        // SAFETY: the handle is live, n lives across the call; NULL means failure.
        let z = unsafe { zpool_open(self.0, n.as_ptr()) };
        if z.is_null() {
            return Err(self.describe());
        }
        // SAFETY: z is a live pool handle; src may be NULL.
        let v = unsafe { zpool_get_prop_int(z, prop.0, ptr::null_mut()) };
        // SAFETY: z is closed once, here.
        unsafe { zpool_close(z) };
        Ok(v)
    }
}

impl Drop for LibZfs {
    fn drop(&mut self) {
        // SAFETY: the handle came from libzfs_init; Dataset borrows it, so none is alive.
        unsafe { libzfs_fini(self.0) }
    }
}

/// An open dataset (`zfs_handle_t`), closed on drop.
#[derive(Debug)]
pub struct Dataset<'a> {
    lib: &'a mut LibZfs,
    zhp: *mut zfs_handle_t,
}

impl Dataset<'_> {
    /// `zfs_prop_get_int()` (numbers and index properties; 0 for an unset one).
    pub fn get_u64(&mut self, prop: Prop) -> u64 {
        // SAFETY: zhp is live.
        unsafe { zfs_prop_get_int(self.zhp, prop.0) }
    }

    /// `zfs_prop_get()` as text (literal: numbers unformatted); `None` when the property
    /// has no value here (an `origin` of a filesystem that is not a clone).
    pub fn get_string(&mut self, prop: Prop) -> Option<String> {
        let mut buf = vec![0 as c_char; 4096];
        // SAFETY: zhp is live; buf is writable for its length; src and statbuf may be NULL.
        let rc = unsafe {
            zfs_prop_get(
                self.zhp,
                prop.0,
                buf.as_mut_ptr(),
                buf.len(),
                ptr::null_mut(),
                ptr::null_mut(),
                0,
                B_TRUE,
            )
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: zfs_prop_get wrote a NUL-terminated string into buf.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Some(s.to_string_lossy().into_owned())
    }

    /// `zfs_prop_set()`: sets property `name` from its text form (`readonly`, `on`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let (n, v) = (
            cstring(name).map_err(|e| e.to_string())?,
            cstring(value).map_err(|e| e.to_string())?,
        );
        // SAFETY: zhp is live; n and v live across the call.
        let rc = unsafe { zfs_prop_set(self.zhp, n.as_ptr(), v.as_ptr()) };
        if rc != 0 {
            return Err(self.lib.describe());
        }
        Ok(())
    }

    /// Names of the filesystems directly below this one, with the value of user property
    /// `tag` of each (`zfs_iter_filesystems()`).
    pub fn children_with(&mut self, tag: &str) -> Result<Vec<(String, Option<String>)>, String> {
        struct Acc<'t> {
            tag: &'t str,
            out: Vec<(String, Option<String>)>,
        }
        unsafe extern "C" fn each(zhp: *mut zfs_handle_t, data: *mut c_void) -> c_int {
            // SAFETY: data is the &mut Acc passed below, alive for the whole iteration.
            let acc = unsafe { &mut *data.cast::<Acc<'_>>() };
            // SAFETY: libzfs hands the callback a live handle it must close.
            let name = unsafe { CStr::from_ptr(zfs_get_name(zhp)) }
                .to_string_lossy()
                .into_owned();
            let value = user_prop_of(zhp, acc.tag);
            acc.out.push((name, value));
            // SAFETY: the callback owns zhp and closes it once.
            unsafe { zfs_close(zhp) };
            0
        }
        let mut acc = Acc {
            tag,
            out: Vec::new(),
        };
        // SAFETY: zhp is live; `each` matches zfs_iter_f; acc outlives the call.
        let rc = unsafe {
            zfs_iter_filesystems(self.zhp, each, (&mut acc as *mut Acc<'_>).cast::<c_void>())
        };
        if rc != 0 {
            return Err(self.lib.describe());
        }
        Ok(acc.out)
    }
}

fn user_prop_of(zhp: *mut zfs_handle_t, name: &str) -> Option<String> {
    let n = cstring(name).ok()?;
    // SAFETY: zhp is live; the list belongs to the handle (not freed here).
    let props = unsafe { zfs_get_user_props(zhp) };
    if props.is_null() {
        return None;
    }
    let mut entry: *mut nvlist_t = ptr::null_mut();
    // SAFETY: props is a live list; entry receives a pointer into it.
    if unsafe { nvlist_lookup_nvlist(props, n.as_ptr(), &mut entry) } != 0 {
        return None;
    }
    let mut value: *mut c_char = ptr::null_mut();
    // SAFETY: entry is a live nested list ({"value": string, "source": string}).
    if unsafe { nvlist_lookup_string(entry, c"value".as_ptr(), &mut value) } != 0 {
        return None;
    }
    // SAFETY: nvlist strings are NUL-terminated and live as long as the list.
    Some(
        unsafe { CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned(),
    )
}

impl Drop for Dataset<'_> {
    fn drop(&mut self) {
        // SAFETY: zhp came from zfs_open and is closed once, here.
        unsafe { zfs_close(self.zhp) }
    }
}
