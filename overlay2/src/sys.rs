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

/// Makes the calling thread act on files as `uid`:`gid` (setfsuid(2), setfsgid(2)) and keep
/// every capability it had (setfsuid takes the file capabilities out of the effective set;
/// they are put back from the permitted set). overlayfs records its mounter's credentials at
/// mount and does its own work in the upper directory with them: through an idmapped upper
/// directory they must be ids the map holds. Only for a thread spawned for one mount.
pub fn act_on_files_as(uid: u32, gid: u32) -> std::io::Result<()> {
    let caps = rustix::thread::capabilities(None)?;
    // SAFETY: plain system calls on this thread's credentials; no memory is involved.
    let (now_uid, now_gid) = unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
        // an invalid id changes nothing and returns the current one
        (libc::setfsuid(u32::MAX), libc::setfsgid(u32::MAX))
    };
    if (now_uid as u32, now_gid as u32) != (uid, gid) {
        return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    }
    rustix::thread::set_capabilities(None, caps)?;
    Ok(())
}
