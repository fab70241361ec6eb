//! The graphdriver harness: the conformance suite every backend must pass, scratch
//! filesystem fixtures, the test VM, and what `graphctl` is built from.

pub mod bench;
pub mod conformance;
pub mod drivers;
pub mod fixture;
pub mod storm;
pub mod tree_snapshot;
pub mod vm;
