//! The one system call without a safe wrapper that overlay2 needs.
#![allow(unsafe_code)]

use rustix::thread::UnshareFlags;

/// `unshare(CLONE_FS)`: gives the calling thread its own working directory, so it can
/// `chdir` for a legacy mount with short relative paths without moving the process's.
/// See unshare(2).
pub fn unshare_fs() -> std::io::Result<()> {
    // SAFETY: CLONE_FS only separates this thread's root, cwd and umask from the other
    // threads'; it touches no memory. It is called only on a thread spawned for one legacy
    // mount, which ends right after, so nothing else ever runs with the separated state.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) }.map_err(Into::into)
}
