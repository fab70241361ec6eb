//! Filesystem utilities the store, the archive and the backends share: every walk by
//! directory fd (no path is re-resolved, no symlink followed), with bounded stack and open
//! files whatever the depth.

pub mod atomic_file;
mod backing_fs;
pub mod chunks;
pub mod copy;
pub mod dir_cursor;
pub mod layer_mount;
pub mod mountinfo;
pub mod quota;
pub mod tree;

pub use backing_fs::BackingFs;
