//! The contract every graphdriver backend keeps: the [`GraphDriver`] trait, its errors
//! ([`DriverError`]), layer ids ([`LayerId`]) and the values that cross the trait. This crate
//! is what a runtime reads and links against; a backend is built from `graphdriver-kit` (the
//! layer store, the OCI layer archive, filesystem utilities) and opened by its own crate.
//!
//! # The model
//!
//! A **layer** is a filesystem tree with an id ([`LayerId`]) and at most one parent. A layer
//! without a parent starts empty (its root `0755 root:root`); a layer with a parent starts as
//! a copy-on-write view of it, its root taking the parent's root mode and owner. Image layers
//! are filled once with [`GraphDriver::apply_diff`]; container layers are written through the
//! path [`GraphDriver::get`] returns. A layer's **changes** are what differs from its parent,
//! and its **diff** is those changes as an OCI layer tar.
//!
//! # Lifecycle
//!
//! `create` → (`apply_diff` | `get` … write … `put`)* → `diff` / `changes` → `remove`.
//! A layer with children is frozen: `apply_diff` and `remove` refuse it, and `get` exposes it
//! read-only.
//!
//! # Invariants, and the conformance case that checks each
//!
//! | invariant | case |
//! |---|---|
//! | ids are validated before anything is created | `lifecycle::invalid_ids_are_rejected` |
//! | a failed `create` creates nothing | `lifecycle::missing_parent_is_rejected`, `lifecycle::duplicate_id_is_rejected` |
//! | a new empty layer has a bare `0755 0:0` root | `lifecycle::empty_layer_has_bare_root` |
//! | a child sees exactly its parent's tree, special modes and owners included | `content::special_modes_seen_through_child`, `content::chain_of_128_layers` |
//! | a layer with children cannot be removed | `lifecycle::remove_with_children_fails` |
//! | a mounted layer cannot be removed | `lifecycle::remove_mounted_fails` |
//! | mount counts nest and survive the process | `lifecycle::mount_counts_nest`, `concurrency::processes_mount_and_unmount_one_layer` |
//! | `diff` then `apply_diff` reproduces the tree; the applied size equals `diff_size` | `diff::diff_then_apply_round_trips` |
//! | export is deterministic | `diff::export_is_deterministic` |
//! | changes follow `docker diff` | `diff::changes_report_ancestors_once`, `diff::deleted_directory_is_one_change` |
//! | apply never writes outside the layer and is all or nothing | `bad_input::*` |
//! | a crash part-way is repaired at the next open | `bad_input::kill_during_apply_leaves_layer_unchanged`, `lifecycle::crash_during_create_is_rolled_back` |
//! | every backend applies an image the same way: an opaque layer root hides nothing, a whited-out or opaque directory hides what was below it on every path through it, an implied parent follows a layer symlink inside the root | `bad_input::opaque_layer_root_hides_nothing`, `bad_input::whited_out_parent_hides_what_was_below_it`, `bad_input::implied_parent_follows_lower_symlink_inside_layer` |
//! | NUL in a name and names reserved for staging are refused, naming the entry | `bad_input::nul_in_names_is_rejected`, `bad_input::whiteouts_of_staging_names_are_rejected` |
//! | tree walks take bounded stack and open files whatever the depth; overlay2's merge is linear in depth | `bad_input::ten_thousand_deep_tree_applies_diffs_and_removes`, `bad_input::deep_path_over_a_parent_applies_in_linear_time` |
//! | an idmapped mount ([`MountOpts::id_map`]) shows a layer owned by the map's ids, stores what is written through it unmapped, shares image layers between maps without a copy, and shows one map per layer at a time | `idmap::a_mapped_container_owns_and_writes_its_image`, `idmap::two_maps_share_one_image_layer_without_a_copy`, `idmap::a_layer_shows_one_map_at_a_time` |
//! | one bad layer never makes the store unusable: what cannot be settled at open is quarantined for that layer alone and reported by `status` | `bad_input::unfinishable_journal_entry_quarantines_one_layer` |
//!
//! # Pieces
//!
//! - [`GraphDriver`]: the trait, usable as `Box<dyn GraphDriver>`.
//! - [`DriverError`]: every way an operation fails, typed; [`Result`].
//! - [`LayerId`]: a validated layer id.
//! - [`CreateOpts`], [`MountOpts`] (with an [`idmap::IdMap`]), [`Change`], [`LayerInfo`],
//!   [`MountSpec`], [`Status`], [`FsckReport`]: what goes in and comes out.

mod driver;
mod error;
mod fsck;
pub mod idmap;
mod layer_id;

pub use driver::{
    Change, ChangeKind, CreateOpts, GraphDriver, LayerInfo, MountOpts, MountSpec, Status,
};
pub use error::{DriverError, IoContext, Result};
pub use fsck::{Finding, FindingKind, FsckReport};
pub use layer_id::{LayerId, MAX_LAYER_ID_LEN};
