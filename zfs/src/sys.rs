//! The C calls: libzfs_core (datasets, snapshots, clones), libzfs (properties, iteration)
//! and libnvpair (the name/value lists both take), from OpenZFS 2.x as Debian packages it
//! (`zfsutils-linux` brings the libraries, contrib).
//!
//! Loaded at run time with `dlopen` ([`Lib::load`]), never linked: building the workspace
//! needs no ZFS package, and a host without ZFS gets an `Unsupported` error naming the
//! library it lacks instead of a link failure. The libraries stay loaded for the life of the
//! process, so every function pointer taken from them stays valid.
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
//! OpenZFS `lib/libzfs_core/libzfs_core.c`; dlopen(3).

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::ptr;
use std::sync::OnceLock;

use libloading::Library;

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

/// The shared objects, each by the names it is tried under: the development symlink first,
/// then the sonames OpenZFS 2.0 to 2.2 ship (Debian 12: `libnvpair3linux`,
/// `libzfs4linux`).
const NVPAIR: &[&str] = &["libnvpair.so", "libnvpair.so.3"];
const ZFS_CORE: &[&str] = &["libzfs_core.so", "libzfs_core.so.3"];
const ZFS: &[&str] = &["libzfs.so", "libzfs.so.4", "libzfs.so.6", "libzfs.so.5"];

/// Why the libraries could not be loaded: the library (every name tried) or the symbol, and
/// dlopen's or dlsym's message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load {what}: {message}")]
pub struct LoadError {
    /// The library's names, or `symbol NAME in LIBRARY`.
    pub what: String,
    /// What dlopen(3) or dlsym(3) said.
    pub message: String,
}

fn open_library(names: &[&str]) -> Result<Library, LoadError> {
    let mut last = String::new();
    for name in names {
        // SAFETY: loading runs the library's initialisers; OpenZFS's libraries have no
        // initialiser with preconditions (libzfs_init and libzfs_core_init are explicit).
        match unsafe { Library::new(name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => last = e.to_string(),
        }
    }
    Err(LoadError {
        what: names.join(" or "),
        message: last,
    })
}

/// The three libraries, loaded.
struct Libs {
    nvpair: Library,
    zfs_core: Library,
    zfs: Library,
}

/// Declares the function table [`Api`] and its loader from one list: each entry names the
/// library it comes from and its C signature.
macro_rules! api {
    ($( $lib:ident $name:ident ( $($arg:ty),* ) $(-> $ret:ty)? ; )*) => {
        /// Every C function used, resolved once from the loaded libraries.
        struct Api {
            $( $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
            _libs: Libs,
        }

        impl Api {
            fn load() -> Result<Api, LoadError> {
                let libs = Libs {
                    nvpair: open_library(NVPAIR)?,
                    zfs_core: open_library(ZFS_CORE)?,
                    zfs: open_library(ZFS)?,
                };
                $(
                    // SAFETY: the symbol's type is its C declaration in the OpenZFS headers
                    // named in the module's doc; the library stays loaded with the table
                    // (`_libs`), and the table lives in a static for the process's life.
                    let $name = *unsafe {
                        libs.$lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                    }
                    .map_err(|e| LoadError {
                        what: format!("symbol {} in {}", stringify!($name), stringify!($lib)),
                        message: e.to_string(),
                    })?;
                )*
                Ok(Api { $( $name, )* _libs: libs })
            }
        }
    };
}

api! {
    nvpair fnvlist_alloc() -> *mut nvlist_t;
    nvpair fnvlist_free(*mut nvlist_t);
    nvpair fnvlist_add_boolean(*mut nvlist_t, *const c_char);
    nvpair fnvlist_add_string(*mut nvlist_t, *const c_char, *const c_char);
    nvpair fnvlist_add_uint64(*mut nvlist_t, *const c_char, u64);
    nvpair fnvlist_add_boolean_value(*mut nvlist_t, *const c_char, BooleanT);
    nvpair nvlist_lookup_nvlist(*mut nvlist_t, *const c_char, *mut *mut nvlist_t) -> c_int;
    nvpair nvlist_lookup_string(*mut nvlist_t, *const c_char, *mut *mut c_char) -> c_int;
    zfs_core libzfs_core_init() -> c_int;
    zfs_core lzc_create(*const c_char, c_int, *mut nvlist_t, *mut u8, u32) -> c_int;
    zfs_core lzc_clone(*const c_char, *const c_char, *mut nvlist_t) -> c_int;
    zfs_core lzc_snapshot(*mut nvlist_t, *mut nvlist_t, *mut *mut nvlist_t) -> c_int;
    zfs_core lzc_destroy(*const c_char) -> c_int;
    zfs_core lzc_destroy_snaps(*mut nvlist_t, BooleanT, *mut *mut nvlist_t) -> c_int;
    zfs_core lzc_exists(*const c_char) -> BooleanT;
    zfs_core lzc_sync(*const c_char, *mut nvlist_t, *mut *mut nvlist_t) -> c_int;
    zfs_core lzc_channel_program(
        *const c_char, *const c_char, u64, u64, *mut nvlist_t, *mut *mut nvlist_t
    ) -> c_int;
    zfs libzfs_init() -> *mut libzfs_handle_t;
    zfs libzfs_fini(*mut libzfs_handle_t);
    zfs libzfs_error_description(*mut libzfs_handle_t) -> *const c_char;
    zfs zfs_open(*mut libzfs_handle_t, *const c_char, c_int) -> *mut zfs_handle_t;
    zfs zfs_close(*mut zfs_handle_t);
    zfs zfs_get_name(*const zfs_handle_t) -> *const c_char;
    zfs zfs_name_to_prop(*const c_char) -> c_int;
    zfs zfs_prop_get_int(*mut zfs_handle_t, c_int) -> u64;
    zfs zfs_prop_get(
        *mut zfs_handle_t, c_int, *mut c_char, usize, *mut c_int, *mut c_char, usize, BooleanT
    ) -> c_int;
    zfs zfs_prop_set(*mut zfs_handle_t, *const c_char, *const c_char) -> c_int;
    zfs zfs_get_user_props(*mut zfs_handle_t) -> *mut nvlist_t;
    zfs zfs_iter_filesystems(*mut zfs_handle_t, ZfsIterF, *mut c_void) -> c_int;
    zfs zpool_name_to_prop(*const c_char) -> c_int;
    zfs zpool_open(*mut libzfs_handle_t, *const c_char) -> *mut zpool_handle_t;
    zfs zpool_close(*mut zpool_handle_t);
    zfs zpool_get_prop_int(*mut zpool_handle_t, c_int, *mut c_int) -> u64;
}

/// The loaded libraries: a token every call here goes through, so nothing can call into
/// them before they are loaded.
#[derive(Clone, Copy)]
pub struct Lib(&'static Api);

impl std::fmt::Debug for Lib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lib")
    }
}

static API: OnceLock<Result<Api, LoadError>> = OnceLock::new();

impl Lib {
    /// `dlopen()` of libnvpair, libzfs_core and libzfs, once per process (a failure is
    /// remembered too: the same process would fail the same way again).
    pub fn load() -> Result<Lib, LoadError> {
        match API.get_or_init(Api::load) {
            Ok(api) => Ok(Lib(api)),
            Err(e) => Err(e.clone()),
        }
    }
}

/// `ZCP_DEFAULT_INSTRLIMIT` and `ZCP_DEFAULT_MEMLIMIT` (`sys/fs/zfs.h`): what `zfs program`
/// allows by default.
const ZCP_INSTRLIMIT: u64 = 10 * 1000 * 1000;
const ZCP_MEMLIMIT: u64 = 10 * 1024 * 1024;

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
pub struct NvList {
    lib: Lib,
    nvl: *mut nvlist_t,
}

impl std::fmt::Debug for NvList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NvList")
    }
}

impl NvList {
    /// `fnvlist_alloc()`: an empty list (aborts only when out of memory, like `Vec`).
    pub fn new(lib: Lib) -> NvList {
        // SAFETY: no arguments; fnvlist_alloc returns a valid list or aborts.
        let nvl = unsafe { (lib.0.fnvlist_alloc)() };
        NvList { lib, nvl }
    }

    /// `fnvlist_add_boolean()`: a name without a value (how snapshot lists are spelled).
    pub fn add_boolean(&mut self, name: &str) -> io::Result<()> {
        let n = cstring(name)?;
        // SAFETY: self.nvl is a live list; n is NUL-terminated and copied by the callee.
        unsafe { (self.lib.0.fnvlist_add_boolean)(self.nvl, n.as_ptr()) };
        Ok(())
    }

    /// `fnvlist_add_string()`.
    pub fn add_string(&mut self, name: &str, value: &str) -> io::Result<()> {
        let (n, v) = (cstring(name)?, cstring(value)?);
        // SAFETY: as for add_boolean; both strings are copied.
        unsafe { (self.lib.0.fnvlist_add_string)(self.nvl, n.as_ptr(), v.as_ptr()) };
        Ok(())
    }

    /// `fnvlist_add_uint64()`.
    pub fn add_u64(&mut self, name: &str, value: u64) -> io::Result<()> {
        let n = cstring(name)?;
        // SAFETY: as for add_boolean.
        unsafe { (self.lib.0.fnvlist_add_uint64)(self.nvl, n.as_ptr(), value) };
        Ok(())
    }

    /// `fnvlist_add_boolean_value()`.
    fn add_bool_value(&mut self, name: &CStr, value: bool) {
        let v = if value { B_TRUE } else { B_FALSE };
        // SAFETY: as for add_boolean.
        unsafe { (self.lib.0.fnvlist_add_boolean_value)(self.nvl, name.as_ptr(), v) };
    }
}

impl Drop for NvList {
    fn drop(&mut self) {
        // SAFETY: self.nvl came from fnvlist_alloc and is freed once, here.
        unsafe { (self.lib.0.fnvlist_free)(self.nvl) }
    }
}

impl Lib {
    /// Frees a list a libzfs_core call returned (an error list or an output list).
    fn free_returned(self, nvl: *mut nvlist_t) {
        if !nvl.is_null() {
            // SAFETY: libzfs_core allocated it for us to free, once.
            unsafe { (self.0.fnvlist_free)(nvl) }
        }
    }

    /// `libzfs_core_init()`: opens `/dev/zfs` (reference-counted; never closed, like the
    /// `zfs` command). Fails with the errno of the open, `ENOENT` when the module is not
    /// loaded.
    pub fn core_init(self) -> io::Result<()> {
        // SAFETY: no arguments; safe to call any number of times.
        errno(unsafe { (self.0.libzfs_core_init)() })
    }

    /// `lzc_create()`: a new filesystem `name` with `props` set from the start.
    pub fn lzc_create_fs(self, name: &str, props: &NvList) -> io::Result<()> {
        let n = cstring(name)?;
        // SAFETY: n and props live across the call; no wrapping key (not encrypted).
        errno(unsafe {
            (self.0.lzc_create)(
                n.as_ptr(),
                LZC_DATSET_TYPE_ZFS,
                props.nvl,
                ptr::null_mut(),
                0,
            )
        })
    }

    /// `lzc_clone()`: filesystem `name`, a clone of snapshot `origin`, with `props`.
    pub fn lzc_clone_fs(self, name: &str, origin: &str, props: &NvList) -> io::Result<()> {
        let (n, o) = (cstring(name)?, cstring(origin)?);
        // SAFETY: all pointers live across the call.
        errno(unsafe { (self.0.lzc_clone)(n.as_ptr(), o.as_ptr(), props.nvl) })
    }

    /// `lzc_snapshot()` of one snapshot `fs@snap` (atomic, in one transaction group).
    pub fn lzc_snapshot_one(self, snapshot: &str) -> io::Result<()> {
        let mut snaps = NvList::new(self);
        snaps.add_boolean(snapshot)?;
        let mut errlist: *mut nvlist_t = ptr::null_mut();
        // SAFETY: snaps lives across the call; props may be NULL; errlist is ours to free.
        let rc = unsafe { (self.0.lzc_snapshot)(snaps.nvl, ptr::null_mut(), &mut errlist) };
        self.free_returned(errlist);
        errno(rc)
    }

    /// `lzc_destroy()`: destroys a filesystem (which must have no snapshots and not be
    /// mounted) or a snapshot (which must have no clones).
    pub fn lzc_destroy_one(self, name: &str) -> io::Result<()> {
        let n = cstring(name)?;
        // SAFETY: n lives across the call.
        errno(unsafe { (self.0.lzc_destroy)(n.as_ptr()) })
    }

    /// `lzc_destroy_snaps()` of one snapshot, with `defer`: a snapshot that still has clones
    /// is then destroyed by ZFS when its last clone goes.
    pub fn lzc_destroy_snap_deferred(self, snapshot: &str) -> io::Result<()> {
        let mut snaps = NvList::new(self);
        snaps.add_boolean(snapshot)?;
        let mut errlist: *mut nvlist_t = ptr::null_mut();
        // SAFETY: snaps lives across the call; errlist is ours to free.
        let rc = unsafe { (self.0.lzc_destroy_snaps)(snaps.nvl, B_TRUE, &mut errlist) };
        self.free_returned(errlist);
        errno(rc)
    }

    /// `lzc_exists()`.
    pub fn lzc_exists_ds(self, name: &str) -> bool {
        let Ok(n) = cstring(name) else {
            return false;
        };
        // SAFETY: n lives across the call.
        unsafe { (self.0.lzc_exists)(n.as_ptr()) != B_FALSE }
    }

    /// `lzc_sync()`: waits until the pool's open transaction group is written, so space
    /// accounting (`used`, `referenced`) includes every write made before the call.
    pub fn lzc_sync_pool(self, pool: &str) -> io::Result<()> {
        let p = cstring(pool)?;
        // the ioctl requires "force" (ZFS_ERR_IOC_ARG_REQUIRED without it); false: no new
        // transaction group is forced when nothing is dirty
        let mut inl = NvList::new(self);
        inl.add_bool_value(c"force", false);
        // SAFETY: p and inl live across the call; no output list is asked for.
        errno(unsafe { (self.0.lzc_sync)(p.as_ptr(), inl.nvl, ptr::null_mut()) })
    }

    /// `lzc_channel_program()`: runs the Lua `program` on `pool` in syncing context (as one
    /// transaction group: no other administrative operation runs meanwhile), with `args` as
    /// the program's argument table. Returns the string the program returned (`None` for
    /// any other kind of return value).
    pub fn channel_program(
        self,
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
            (self.0.lzc_channel_program)(
                p.as_ptr(),
                prog.as_ptr(),
                ZCP_INSTRLIMIT,
                ZCP_MEMLIMIT,
                args.nvl,
                &mut out,
            )
        };
        let text = |key: &CStr| -> Option<String> {
            if out.is_null() {
                return None;
            }
            let mut v: *mut c_char = ptr::null_mut();
            // SAFETY: out is a live list; v points into it until it is freed below.
            if unsafe { (self.0.nvlist_lookup_string)(out, key.as_ptr(), &mut v) } != 0
                || v.is_null()
            {
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
        self.free_returned(out);
        result
    }

    /// `zfs_name_to_prop()`: the number of dataset property `name`.
    pub fn dataset_prop(self, name: &str) -> Option<Prop> {
        let n = cstring(name).ok()?;
        // SAFETY: n lives across the call; the property table is static data of libzfs,
        // initialised by libzfs_init (the driver makes a LibZfs before asking).
        let p = unsafe { (self.0.zfs_name_to_prop)(n.as_ptr()) };
        (p != ZPROP_INVAL).then_some(Prop(p))
    }

    /// `zpool_name_to_prop()`: the number of pool property `name`.
    pub fn pool_prop(self, name: &str) -> Option<Prop> {
        let n = cstring(name).ok()?;
        // SAFETY: as for dataset_prop.
        let p = unsafe { (self.0.zpool_name_to_prop)(n.as_ptr()) };
        (p != ZPROP_INVAL).then_some(Prop(p))
    }
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

/// A libzfs handle (`libzfs_init()`), for what libzfs_core lacks: reading and setting
/// properties and listing child datasets.
#[derive(Debug)]
pub struct LibZfs {
    lib: Lib,
    h: *mut libzfs_handle_t,
}

// SAFETY: the handle is plain heap state with no thread affinity; it is only ever used by one
// thread at a time (LibZfs is not Sync and every method takes &mut self).
unsafe impl Send for LibZfs {}

/// A property number (`zfs_prop_t` or `zpool_prop_t`), looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prop(c_int);

impl LibZfs {
    /// `libzfs_init()`.
    pub fn init(lib: Lib) -> io::Result<LibZfs> {
        // SAFETY: no arguments; NULL means failure (errno set).
        let h = unsafe { (lib.0.libzfs_init)() };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(LibZfs { lib, h })
    }

    fn describe(&mut self) -> String {
        // SAFETY: the handle is live; the description is a static or handle-owned string.
        let d = unsafe { (self.lib.0.libzfs_error_description)(self.h) };
        if d.is_null() {
            return "unknown libzfs error".into();
        }
        // SAFETY: non-NULL, NUL-terminated, valid until the next libzfs call on the handle.
        unsafe { CStr::from_ptr(d) }.to_string_lossy().into_owned()
    }

    /// `zfs_open()` of filesystem `name`; the handle holds a snapshot of its properties.
    pub fn open_fs(&mut self, name: &str) -> Result<Dataset<'_>, String> {
        let n = cstring(name).map_err(|e| e.to_string())?;
        // SAFETY: the handle is live, n lives across the call; NULL means failure.
        let z = unsafe { (self.lib.0.zfs_open)(self.h, n.as_ptr(), ZFS_TYPE_FILESYSTEM) };
        if z.is_null() {
            return Err(self.describe());
        }
        Ok(Dataset { lib: self, zhp: z })
    }

    /// `zpool_open()` + `zpool_get_prop_int()`.
    pub fn pool_prop_u64(&mut self, pool: &str, prop: Prop) -> Result<u64, String> {
        let n = cstring(pool).map_err(|e| e.to_string())?;
        // SAFETY: the handle is live, n lives across the call; NULL means failure.
        let z = unsafe { (self.lib.0.zpool_open)(self.h, n.as_ptr()) };
        if z.is_null() {
            return Err(self.describe());
        }
        // SAFETY: z is a live pool handle; src may be NULL.
        let v = unsafe { (self.lib.0.zpool_get_prop_int)(z, prop.0, ptr::null_mut()) };
        // SAFETY: z is closed once, here.
        unsafe { (self.lib.0.zpool_close)(z) };
        Ok(v)
    }
}

impl Drop for LibZfs {
    fn drop(&mut self) {
        // SAFETY: the handle came from libzfs_init; Dataset borrows it, so none is alive.
        unsafe { (self.lib.0.libzfs_fini)(self.h) }
    }
}

/// An open dataset (`zfs_handle_t`), closed on drop.
#[derive(Debug)]
pub struct Dataset<'a> {
    lib: &'a mut LibZfs,
    zhp: *mut zfs_handle_t,
}

impl Dataset<'_> {
    fn api(&self) -> &'static Api {
        self.lib.lib.0
    }

    /// `zfs_prop_get_int()` (numbers and index properties; 0 for an unset one).
    pub fn get_u64(&mut self, prop: Prop) -> u64 {
        // SAFETY: zhp is live.
        unsafe { (self.api().zfs_prop_get_int)(self.zhp, prop.0) }
    }

    /// `zfs_prop_get()` as text (literal: numbers unformatted); `None` when the property
    /// has no value here (an `origin` of a filesystem that is not a clone).
    pub fn get_string(&mut self, prop: Prop) -> Option<String> {
        let mut buf = vec![0 as c_char; 4096];
        // SAFETY: zhp is live; buf is writable for its length; src and statbuf may be NULL.
        let rc = unsafe {
            (self.api().zfs_prop_get)(
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

    /// The value of user property `name` (`module:property`), when it is set.
    pub fn user_prop(&mut self, name: &str) -> Option<String> {
        let name = cstring(name).ok()?;
        // SAFETY: zhp is a dataset handle of self.api()'s libzfs (zfs_open of self.lib),
        // live until this Dataset drops.
        unsafe { user_prop_of(self.api(), self.zhp, &name) }
    }

    /// `zfs_prop_set()`: sets property `name` from its text form (`readonly`, `on`).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let (n, v) = (
            cstring(name).map_err(|e| e.to_string())?,
            cstring(value).map_err(|e| e.to_string())?,
        );
        // SAFETY: zhp is live; n and v live across the call.
        let rc = unsafe { (self.api().zfs_prop_set)(self.zhp, n.as_ptr(), v.as_ptr()) };
        if rc != 0 {
            return Err(self.lib.describe());
        }
        Ok(())
    }

    /// Names of the filesystems directly below this one, with the value of user property
    /// `tag` of each (`zfs_iter_filesystems()`).
    pub fn children_with(&mut self, tag: &str) -> Result<Vec<(String, Option<String>)>, String> {
        struct Acc {
            api: &'static Api,
            tag: CString,
            out: Vec<(String, Option<String>)>,
        }
        unsafe extern "C" fn each(zhp: *mut zfs_handle_t, data: *mut c_void) -> c_int {
            // SAFETY: data is the &mut Acc passed below, alive for the whole iteration.
            let acc = unsafe { &mut *data.cast::<Acc>() };
            // SAFETY: libzfs hands the callback a live handle it must close.
            let name = unsafe { CStr::from_ptr((acc.api.zfs_get_name)(zhp)) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: zhp is a dataset handle of acc.api's libzfs (the library iterating
            // hands it over), live until it is closed below.
            let value = unsafe { user_prop_of(acc.api, zhp, &acc.tag) };
            acc.out.push((name, value));
            // SAFETY: the callback owns zhp and closes it once.
            unsafe { (acc.api.zfs_close)(zhp) };
            0
        }
        let mut acc = Acc {
            api: self.api(),
            tag: cstring(tag).map_err(|e| e.to_string())?,
            out: Vec::new(),
        };
        // SAFETY: zhp is live; `each` matches zfs_iter_f; acc outlives the call.
        let rc = unsafe {
            (self.api().zfs_iter_filesystems)(self.zhp, each, (&mut acc as *mut Acc).cast())
        };
        if rc != 0 {
            return Err(self.lib.describe());
        }
        Ok(acc.out)
    }
}

/// The value of user property `name` of dataset `zhp`, when it is set.
///
/// # Safety
/// `zhp` must be a live dataset handle of `api`'s libzfs.
unsafe fn user_prop_of(api: &Api, zhp: *mut zfs_handle_t, name: &CStr) -> Option<String> {
    // SAFETY: zhp is live (the caller's promise); the list belongs to the handle.
    let props = unsafe { (api.zfs_get_user_props)(zhp) };
    if props.is_null() {
        return None;
    }
    let mut entry: *mut nvlist_t = ptr::null_mut();
    // SAFETY: props is a live list; entry receives a pointer into it.
    if unsafe { (api.nvlist_lookup_nvlist)(props, name.as_ptr(), &mut entry) } != 0 {
        return None;
    }
    let mut value: *mut c_char = ptr::null_mut();
    // SAFETY: entry is a live nested list ({"value": string, "source": string}).
    if unsafe { (api.nvlist_lookup_string)(entry, c"value".as_ptr(), &mut value) } != 0 {
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
        unsafe { (self.api().zfs_close)(self.zhp) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_that_is_not_there_is_named_with_every_name_tried() {
        let Err(err) = open_library(&["libgraphdriver-absent.so", "libgraphdriver-absent.so.9"])
        else {
            panic!("a library that is not there loaded");
        };
        assert_eq!(
            err.what,
            "libgraphdriver-absent.so or libgraphdriver-absent.so.9"
        );
        assert!(
            err.message.contains("libgraphdriver-absent.so.9"),
            "{}",
            err.message
        );
        assert!(err
            .to_string()
            .starts_with("cannot load libgraphdriver-absent.so or"));
    }
}
