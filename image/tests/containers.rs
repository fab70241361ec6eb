//! Containers on real drivers (vfs, overlay2, btrfs; devmapper and zfs in the VM): create,
//! sizes as `docker ps -s` shows them, removal with the image's layers, `commit` as a new
//! image, and what an interrupted create or remove leaves. Needs root (as the drivers do); scratch roots are under /var/tmp.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

#[path = "support/image_builder.rs"]
mod image_builder;

use std::path::Path;

use redb::ReadableTable;

use graphdriver_api::{DriverError, GraphDriver, LayerId};
use graphdriver_conformance::tree_snapshot::{Compare, Snapshot};
use graphdriver_image::{
    Compression, ContainerRecord, ContainerState, ImageError, ImageStore, DB_FILE,
};
use image_builder::*;

const HOW: Compare = Compare {
    dir_mtimes: false,
    root: false,
    mtimes: true,
};

fn image_layers(top_data: u8) -> Vec<Layer> {
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i % 251) as u8 ^ top_data)
        .collect();
    vec![
        Layer::new(
            &[
                Entry::Dir("etc", 0o755),
                Entry::File("etc/os-release", 0o644, b"NAME=base\n".to_vec()),
                Entry::File("etc/motd", 0o644, b"hello\n".to_vec()),
                Entry::Dir("usr", 0o755),
                Entry::Dir("usr/bin", 0o755),
                Entry::File("usr/bin/tool", 0o755, b"#!/bin/sh\necho tool\n".to_vec()),
                Entry::Symlink("usr/bin/alias", "tool"),
            ],
            Compression::Gzip,
        ),
        Layer::new(
            &[
                Entry::Dir("opt", 0o755),
                Entry::File("opt/data", 0o644, data),
            ],
            Compression::Zstd,
        ),
    ]
}

/// A store on `drv` under `dir` with image `app:1` imported.
fn store_with_app(drv: &str, dir: &Path) -> (std::sync::Arc<dyn GraphDriver>, ImageStore) {
    let mut oci = OciLayout::new(&dir.join("layout"));
    oci.image(Some("app:1"), &image_layers(0));
    let layout = oci.finish();
    let (driver, store) = open_store(drv, dir).unwrap();
    store.import(&layout).unwrap();
    (driver, store)
}

fn lid(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn snapshot(driver: &dyn GraphDriver, id: &LayerId) -> Snapshot {
    let m = Mounted::new(driver, id);
    Snapshot::capture(&m.path).unwrap()
}

/// Writes into a mounted container: a new 1 MB file, a changed file, a removed file.
/// Returns the regular-file bytes the container now holds itself.
fn write_changes(root: &Path) -> u64 {
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 256) as u8).collect();
    std::fs::create_dir_all(root.join("var/lib/app")).unwrap();
    std::fs::write(root.join("var/lib/app/state"), &big).unwrap();
    std::fs::write(root.join("etc/os-release"), b"NAME=changed\n").unwrap();
    std::fs::remove_file(root.join("etc/motd")).unwrap();
    (big.len() + b"NAME=changed\n".len()) as u64
}

#[test]
fn container_sizes_are_its_own_bytes_and_its_image_plus_them() {
    for drv in &drivers() {
        let dir = scratch("container-size");
        let (driver, store) = store_with_app(drv, dir.path());
        let image = store.get("app:1").unwrap();
        let top = image.top_layer().unwrap().unwrap();

        let web = store.create_container("app:1", "web").unwrap();
        assert_eq!(web.state, ContainerState::Created);
        assert_eq!(web.image_id, image.config);
        assert_eq!(driver.parent(&lid("web")).unwrap(), Some(top.clone()));
        let fresh = store.container_size("web").unwrap();
        assert_eq!((fresh.size, fresh.virtual_size), (0, image.size()), "{drv}");
        // Its view is its image's until it writes.
        let diff =
            snapshot(driver.as_ref(), &lid("web")).diff(&snapshot(driver.as_ref(), &top), HOW);
        assert!(diff.is_empty(), "{drv}:\n{}", diff.join("\n"));

        let written = {
            let m = Mounted::new(driver.as_ref(), &lid("web"));
            write_changes(&m.path)
        };
        let s = store.container_size("web").unwrap();
        assert_eq!(s.size, written, "{drv}: own size");
        assert_eq!(
            s.virtual_size,
            image.size() + written,
            "{drv}: virtual size"
        );

        store.create_container("app:1", "db").unwrap();
        assert_eq!(store.container_size("db").unwrap().size, 0, "{drv}");
        let listed: Vec<String> = store
            .containers()
            .unwrap()
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(listed, ["db", "web"], "{drv}");
        let refs = store.layer_references().unwrap();
        assert_eq!(
            refs[&image.layers[1].chain_id], 3,
            "{drv}: the image and two containers"
        );
        assert!(matches!(
            store.create_container("app:1", "web"),
            Err(ImageError::ContainerExists(_))
        ));
        assert!(matches!(
            store.create_container("nope:1", "x"),
            Err(ImageError::NotFound(_))
        ));
        assert!(matches!(
            store.create_container("app:1", &"0a".repeat(32)),
            Err(ImageError::InvalidContainerName { .. })
        ));

        // The image cannot go while containers use it.
        match store.remove("app:1") {
            Err(ImageError::InUse { containers, .. }) => assert_eq!(containers, ["db", "web"]),
            other => panic!("{drv}: removing a used image gave {other:?}"),
        }
        assert_eq!(store.list().unwrap().len(), 1);

        // A mounted container is refused and stays.
        {
            let _m = Mounted::new(driver.as_ref(), &lid("web"));
            let err = store.remove_container("web").unwrap_err();
            assert!(
                matches!(
                    err,
                    ImageError::Driver {
                        source: DriverError::Busy { .. },
                        ..
                    }
                ),
                "{drv}: {err:?}"
            );
            assert_eq!(
                store.container("web").unwrap().state,
                ContainerState::Created
            );
        }
        let gone = store.remove_container("web").unwrap();
        assert!(
            gone.removed.is_empty(),
            "{drv}: the image still names its layers"
        );
        assert!(!driver.exists(&lid("web")));
        assert!(matches!(
            store.container_size("web"),
            Err(ImageError::ContainerNotFound(_))
        ));
        store.remove_container("db").unwrap();
        store.remove("app:1").unwrap();
        assert!(
            layers(driver.as_ref()).is_empty(),
            "{drv}: {:?}",
            layers(driver.as_ref())
        );
    }
}

#[test]
fn commit_makes_an_image_of_the_container_that_saves_and_imports_elsewhere() {
    for drv in &drivers() {
        let dir = scratch("container-commit");
        let (driver, store) = store_with_app(drv, dir.path());
        let base = store.get("app:1").unwrap();
        store.create_container("app:1", "web").unwrap();
        let written = {
            let m = Mounted::new(driver.as_ref(), &lid("web"));
            write_changes(&m.path)
        };
        let want = snapshot(driver.as_ref(), &lid("web"));

        let committed = store.commit_container("web", "app:2").unwrap();
        assert_eq!(committed.layers.len(), 3, "{drv}");
        assert_eq!(
            committed.layers[..2],
            base.layers[..],
            "{drv}: shares its image's layers"
        );
        assert_eq!(
            committed.layers[2].size, written,
            "{drv}: the new layer's size"
        );
        assert_ne!(committed.config, base.config);
        let top = committed.top_layer().unwrap().unwrap();
        let diff = snapshot(driver.as_ref(), &top).diff(&want, HOW);
        assert!(
            diff.is_empty(),
            "{drv}: committed image vs container:\n{}",
            diff.join("\n")
        );
        // The container stays, and history shows the new layer first.
        assert!(store.container("web").is_ok());
        assert_eq!(store.history("app:2").unwrap()[0].size, written);

        // Saved and imported into a fresh root: the same tree, with the same image id.
        let out = dir.path().join("app2.tar");
        let saved = store.save("app:2", &out, Compression::Gzip).unwrap();
        let (d2, other) = open_store(drv, &dir.path().join("elsewhere")).unwrap();
        let recs = other.import(&out).unwrap();
        assert_eq!(recs[0].layers.len(), 3);
        assert_eq!(recs[0].config, saved.config);
        let diff = snapshot(d2.as_ref(), &recs[0].top_layer().unwrap().unwrap()).diff(&want, HOW);
        assert!(
            diff.is_empty(),
            "{drv}: imported commit:\n{}",
            diff.join("\n")
        );

        // Its layers outlive the container and the image it came from.
        store.remove_container("web").unwrap();
        let removed = store.remove("app:1").unwrap();
        assert!(
            removed.removed.is_empty(),
            "{drv}: app:2 uses every layer of app:1"
        );
        let diff = snapshot(driver.as_ref(), &top).diff(&want, HOW);
        assert!(diff.is_empty(), "{drv}:\n{}", diff.join("\n"));
        store.remove("app:2").unwrap();
        assert!(layers(driver.as_ref()).is_empty(), "{drv}");
    }
}

#[test]
fn a_replaced_image_keeps_its_layers_until_its_last_container_goes() {
    for drv in &drivers() {
        let dir = scratch("container-replaced");
        let (driver, store) = store_with_app(drv, dir.path());
        let old = store.get("app:1").unwrap();
        let old_top = old.top_layer().unwrap().unwrap();
        store.create_container("app:1", "web").unwrap();

        let mut oci = OciLayout::new(&dir.path().join("layout2"));
        oci.image(Some("app:1"), &image_layers(1));
        store.import(&oci.finish()).unwrap();
        assert_ne!(store.get("app:1").unwrap().config, old.config);
        assert!(
            driver.exists(&old_top),
            "{drv}: the container still stands on it"
        );
        assert_eq!(
            store.container_size("web").unwrap().virtual_size,
            old.size(),
            "{drv}"
        );
        // The new image of that name has no containers, so it can go; the old top stays.
        store.remove("app:1").unwrap();
        assert!(driver.exists(&old_top), "{drv}");

        let gone = store.remove_container("web").unwrap();
        let mut want = vec![old_top.clone(), old.layers[0].layer_id().unwrap()];
        want.sort();
        let mut got = gone.removed.clone();
        got.sort();
        assert_eq!(got, want, "{drv}");
        assert!(layers(driver.as_ref()).is_empty(), "{drv}");
    }
}

/// Rewrites a container's record as a crash would have left it.
fn plant_state(store_dir: &Path, name: &str, state: ContainerState) {
    const CONTAINERS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("containers");
    let db = redb::Database::create(store_dir.join(DB_FILE)).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(CONTAINERS).unwrap();
        let mut rec: ContainerRecord =
            serde_json::from_slice(t.get(name).unwrap().unwrap().value()).unwrap();
        rec.state = state;
        t.insert(name, serde_json::to_vec(&rec).unwrap().as_slice())
            .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn open_finishes_interrupted_creates_and_removes() {
    for drv in &drivers() {
        let dir = scratch("container-crash");
        let store_dir = dir.path().join(format!("{drv}-images"));
        let (driver, store) = store_with_app(drv, dir.path());
        let image_layers = layers(driver.as_ref());
        for name in ["creating", "removing", "removed", "kept"] {
            store.create_container("app:1", name).unwrap();
        }
        drop(store);
        // A create that stopped after making its layer, a remove that stopped before removing
        // the layer, and one that stopped after.
        plant_state(&store_dir, "creating", ContainerState::Creating);
        plant_state(&store_dir, "removing", ContainerState::Removing);
        plant_state(&store_dir, "removed", ContainerState::Removing);
        driver.remove(&lid("removed")).unwrap();

        let store = ImageStore::open(&store_dir, driver.clone()).unwrap();
        let left: Vec<String> = store
            .containers()
            .unwrap()
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(left, ["kept"], "{drv}");
        let mut want = image_layers.clone();
        want.push("kept".to_owned());
        want.sort();
        assert_eq!(layers(driver.as_ref()), want, "{drv}");

        // A mounted layer keeps its interrupted record until it can be removed.
        store.create_container("app:1", "busy").unwrap();
        drop(store);
        plant_state(&store_dir, "busy", ContainerState::Removing);
        let m = Mounted::new(driver.as_ref(), &lid("busy"));
        let store = ImageStore::open(&store_dir, driver.clone()).unwrap();
        assert_eq!(store.containers().unwrap().len(), 2, "{drv}");
        assert!(matches!(
            store.container_size("busy"),
            Err(ImageError::ContainerNotFound(_))
        ));
        drop(store);
        drop(m);
        let store = ImageStore::open(&store_dir, driver.clone()).unwrap();
        assert_eq!(store.containers().unwrap().len(), 1, "{drv}");
        assert!(!driver.exists(&lid("busy")));
    }
}
