//! `fsck`: the store checked against itself and its backend, for an operator who finds a store
//! in a bad state and for a runtime at start.
//!
//! Opening a store already settles what a crash left (journal records, data no record names,
//! mount counts a reboot voided); [`LayerStore::fsck`] reports what that open did (the first
//! call after opening), then looks
//! for damage no crash of this library leaves but a hand, a bug or a disk can: records whose
//! data is gone, graph edges that disagree with the records, mounts leaked inside a layer,
//! mount counts of layers that do not exist or that disagree with the kernel. With `repair` it fixes what can be fixed
//! without guessing, and says what it did; what cannot (a record whose data is gone) is
//! quarantined, so the layer fails with a clear error and `remove` clears it.

use std::collections::BTreeSet;

use super::{Backend, LayerStore};
use crate::fs::atomic_file::remove_optional;
use crate::mountinfo::MountTable;
use crate::{Finding, FindingKind, FsckReport, GraphDriver, IoContext, LayerId, Result};

impl<B: Backend> LayerStore<B> {
    /// Checks the store (see the module docs) and, with `repair`, repairs what it can. Takes
    /// the store lock, so creates and removes wait; mounts and applies of other processes go
    /// on, and a layer whose lock is held is checked as it is.
    pub fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let _lock = self.lock()?;
        // what opening settled, reported once
        let mut out: Vec<Finding> = self
            .opened
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        let layers = self.list()?;
        let known: BTreeSet<&LayerId> = layers.iter().collect();

        for q in self.quarantine.list()? {
            out.push(Finding::new(
                FindingKind::Quarantined,
                Some(&q.id),
                format!("{} (remove clears it)", q.reason),
            ));
        }
        let quarantined = |id: &LayerId| -> Result<bool> { Ok(self.quarantine.get(id)?.is_some()) };

        // records: readable, with a parent that exists and has the edge
        for id in &layers {
            let rec = match self.record(id) {
                Ok(Some(r)) => r,
                Ok(None) => continue, // removed meanwhile
                Err(e) => {
                    if !quarantined(id)? {
                        out.push(Finding::new(
                            FindingKind::UnreadableRecord,
                            Some(id),
                            super::quarantine::describe(&e),
                        ));
                    }
                    continue;
                }
            };
            let Some(parent) = rec.parent else { continue };
            if !known.contains(&parent) {
                if quarantined(id)? {
                    continue;
                }
                let f = Finding::new(
                    FindingKind::MissingParent,
                    Some(id),
                    format!("its parent {parent} has no record"),
                );
                out.push(if repair {
                    self.quarantine.add(id, f.detail.clone(), None)?;
                    f.repaired("quarantined")
                } else {
                    f
                });
            } else if !self.edge_path(&parent, id).exists() {
                let f = Finding::new(
                    FindingKind::MissingEdge,
                    Some(id),
                    format!("no graph edge from its parent {parent}"),
                );
                out.push(if repair {
                    self.add_edge(&parent, id)?;
                    f.repaired("edge added")
                } else {
                    f
                });
            }
        }

        // data: every record's, when the backend can list what it holds (orphans were
        // deleted at open, with the store lock held as now)
        if self.backend.tracks_stored_ids() {
            let stored: BTreeSet<LayerId> = self.backend.stored_ids()?.into_iter().collect();
            for id in layers.iter().filter(|id| !stored.contains(*id)) {
                if quarantined(id)? {
                    continue;
                }
                let f = Finding::new(
                    FindingKind::MissingData,
                    Some(id),
                    format!("the {} backend holds no data for it", self.backend.name()),
                );
                out.push(if repair {
                    self.quarantine
                        .add(id, "its data is missing".to_owned(), None)?;
                    f.repaired("quarantined")
                } else {
                    f
                });
            }
        }

        // graph edges: children/<parent>/<child> exactly when child's record names parent
        let children = self.meta.join("children");
        for ent in std::fs::read_dir(&children).ctx("read directory", &children)? {
            let ent = ent.ctx("read directory", &children)?;
            let dir = ent.path();
            let parent = ent.file_name().to_string_lossy().into_owned();
            let Ok(edges) = std::fs::read_dir(&dir) else {
                continue;
            };
            for edge in edges {
                let edge = edge.ctx("read directory", &dir)?;
                let child = edge.file_name().to_string_lossy().into_owned();
                let agrees = LayerId::new(&child)
                    .ok()
                    .and_then(|c| self.record(&c).ok().flatten())
                    .and_then(|r| r.parent)
                    .is_some_and(|p| p.as_str() == parent);
                if agrees {
                    continue;
                }
                let f = Finding::new(
                    FindingKind::DanglingEdge,
                    LayerId::new(&parent).ok().as_ref(),
                    format!("graph edge {parent} -> {child}, but {child} is not its child"),
                );
                out.push(if repair {
                    remove_optional(&edge.path())?;
                    f.repaired("edge removed")
                } else {
                    f
                });
            }
            if repair {
                let _ = std::fs::remove_dir(&dir); // only when empty
            }
        }

        // mounts inside a layer's tree, deepest first: nothing of ours is mounted there
        let table = MountTable::read()?;
        for id in &layers {
            let point = self.backend.mount_point(id);
            let mut inside: Vec<&std::path::Path> =
                table.below(&point).filter(|m| *m != point).collect();
            inside.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
            for m in inside {
                let f = Finding::new(
                    FindingKind::LeakedMount,
                    Some(id),
                    format!("{} is mounted inside it", m.display()),
                );
                out.push(if repair {
                    rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH)
                        .map_err(|e| crate::DriverError::io("unmount", m, e))?;
                    f.repaired("detached")
                } else {
                    f
                });
            }
        }

        // mount counts: of existing layers, readable, and agreeing with the kernel
        let counts = self.meta.join("mounts");
        for ent in std::fs::read_dir(&counts).ctx("read directory", &counts)? {
            let ent = ent.ctx("read directory", &counts)?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let id = LayerId::new(&name).ok().filter(|id| known.contains(id));
            let problem = match &id {
                None => Some(format!("a mount count for {name}, which has no record")),
                Some(id) => match self.mount_count(id) {
                    Ok(_) => None,
                    Err(e) => Some(super::quarantine::describe(&e)),
                },
            };
            if let Some(detail) = problem {
                let f = Finding::new(FindingKind::StrayMountCount, id.as_ref(), detail);
                out.push(if repair {
                    remove_optional(&ent.path())?;
                    f.repaired("count removed")
                } else {
                    f
                });
            }
        }
        for id in &layers {
            // a layer whose lock is held is being mounted or unmounted: its count and the
            // kernel may disagree for a moment
            let lock = self.meta.join("locks").join(format!("{id}.lock"));
            let Some(_layer) = super::FileLock::try_exclusive(&lock)? else {
                continue;
            };
            let Ok(count) = self.mount_count(id) else {
                continue;
            };
            let mounted = self.backend.is_mounted(id, &MountTable::read()?);
            if (count > 0) == mounted {
                continue;
            }
            let detail = if mounted {
                "mounted, but its mount count is 0".to_owned()
            } else {
                format!("its mount count is {count}, but it is not mounted")
            };
            let f = Finding::new(FindingKind::MountCountMismatch, Some(id), detail);
            out.push(if !repair {
                f
            } else if mounted {
                self.release_mounts(id)?;
                f.repaired("unmounted")
            } else {
                self.reset_mount_count(id)?;
                f.repaired("count reset")
            });
        }

        Ok(FsckReport {
            layers: layers.len(),
            findings: out,
        })
    }
}
