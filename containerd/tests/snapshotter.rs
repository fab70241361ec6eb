//! The snapshot model on a real driver (vfs on a scratch directory; root needed for owners),
//! and the gRPC service end to end over a unix socket. containerd's own test suite and real
//! containerd runs are in scripts/containerd-tests.sh.

#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use graphdriver_api::{CreateOpts, GraphDriver, LayerId, MountOpts};
use graphdriver_containerd::api::containerd::services::snapshots::v1 as pb;
use graphdriver_containerd::{Kind, SnapshotError, Snapshotter, LAYER_PREFIX};

fn driver(root: &Path) -> Box<dyn GraphDriver> {
    Box::new(graphdriver_vfs::open(root, &Default::default()).unwrap())
}

fn open(dir: &Path) -> Snapshotter {
    Snapshotter::open(driver(&dir.join("root")), &dir.join("meta")).unwrap()
}

fn scratch() -> tempfile::TempDir {
    std::fs::create_dir_all("/var/tmp/graphdriver-test").unwrap();
    tempfile::tempdir_in("/var/tmp/graphdriver-test").unwrap()
}

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn an_active_snapshot_committed_becomes_a_parent_without_copying() {
    let dir = scratch();
    let s = open(dir.path());
    let m = s.prepare(Kind::Active, "k1", None, no_labels()).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, "bind");
    assert_eq!(m[0].options, ["rbind", "rw"]);
    std::fs::write(m[0].source.join("hello"), b"world").unwrap();
    let layer = s.driver().list().unwrap();
    s.commit("base", "k1", BTreeMap::from([("a".into(), "1".into())]))
        .unwrap();
    // the same layer, now under the committed name
    assert_eq!(s.driver().list().unwrap(), layer);
    assert!(matches!(s.stat("k1"), Err(SnapshotError::NotFound(_))));
    let info = s.stat("base").unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.labels["a"], "1");
    assert_eq!(s.usage("base").unwrap().size, 5);

    let v = s
        .prepare(Kind::View, "v", Some("base"), no_labels())
        .unwrap();
    assert_eq!(v[0].options, ["rbind", "ro"]);
    assert_eq!(std::fs::read(v[0].source.join("hello")).unwrap(), b"world");
    assert_eq!(s.stat("v").unwrap().parent.as_deref(), Some("base"));
}

#[test]
fn errors_are_the_classes_containerd_expects() {
    let dir = scratch();
    let s = open(dir.path());
    s.prepare(Kind::Active, "a", None, no_labels()).unwrap();
    assert!(matches!(
        s.prepare(Kind::Active, "a", None, no_labels()),
        Err(SnapshotError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.prepare(Kind::Active, "b", Some("missing"), no_labels()),
        Err(SnapshotError::NotFound(_))
    ));
    // only committed snapshots are parents
    assert!(matches!(
        s.prepare(Kind::Active, "b", Some("a"), no_labels()),
        Err(SnapshotError::InvalidArgument(_))
    ));
    s.commit("c", "a", no_labels()).unwrap();
    assert!(matches!(
        s.mounts("c"),
        Err(SnapshotError::FailedPrecondition { .. })
    ));
    assert!(matches!(
        s.commit("d", "c", no_labels()),
        Err(SnapshotError::NotFound(_) | SnapshotError::FailedPrecondition { .. })
    ));
    s.prepare(Kind::Active, "child", Some("c"), no_labels())
        .unwrap();
    assert!(matches!(
        s.remove("c"),
        Err(SnapshotError::FailedPrecondition { .. })
    ));
    s.prepare(Kind::View, "view", Some("c"), no_labels())
        .unwrap();
    assert!(matches!(
        s.commit("e", "view", no_labels()),
        Err(SnapshotError::FailedPrecondition { .. })
    ));
    s.remove("child").unwrap();
    s.remove("view").unwrap();
    s.remove("c").unwrap();
    assert!(s.list(&[]).unwrap().is_empty());
    assert!(s.driver().list().unwrap().is_empty(), "every layer went");
}

#[test]
fn labels_update_by_field_path_and_lists_filter_on_them() {
    let dir = scratch();
    let s = open(dir.path());
    let l = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    s.prepare(Kind::Active, "a", None, l(&[("x", "1"), ("y", "2")]))
        .unwrap();
    let mut info = s.stat("a").unwrap();
    info.labels = l(&[("x", "9"), ("z", "3")]);
    let got = s
        .update(&info, &["labels.x".into(), "labels.y".into()])
        .unwrap();
    assert_eq!(
        got.labels,
        l(&[("x", "9")]),
        "x set, y deleted, z untouched"
    );
    let got = s.update(&info, &[]).unwrap();
    assert_eq!(got.labels, l(&[("x", "9"), ("z", "3")]));
    assert!(matches!(
        s.update(&info, &["parent".into()]),
        Err(SnapshotError::InvalidArgument(_))
    ));
    s.commit("c", "a", l(&[("containerd.io/gc.root", "x")]))
        .unwrap();
    s.prepare(Kind::Active, "b", Some("c"), no_labels())
        .unwrap();
    let names = |f: &[&str]| -> Vec<String> {
        let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
        let mut v: Vec<String> = s.list(&f).unwrap().into_iter().map(|i| i.name).collect();
        v.sort();
        v
    };
    assert_eq!(names(&[]), ["b", "c"]);
    assert_eq!(names(&["kind==committed"]), ["c"]);
    assert_eq!(names(&[r#"labels."containerd.io/gc.root""#]), ["c"]);
    assert_eq!(names(&["parent==c", "name==c"]), ["b", "c"]);
}

#[test]
fn a_layer_no_snapshot_names_is_swept_when_the_service_opens() {
    let dir = scratch();
    let s = open(dir.path());
    s.prepare(Kind::Active, "kept", None, no_labels()).unwrap();
    // what a crash between the layer store and the records can leave: a layer of the
    // service's that no record names, mounted
    let stray = LayerId::new(format!("{LAYER_PREFIX}999")).unwrap();
    s.driver()
        .create(&stray, None, &CreateOpts::default())
        .unwrap();
    s.driver().get(&stray, &MountOpts::default()).unwrap();
    // and a layer that is not the service's, which it must leave alone
    let other = LayerId::new("someone-else").unwrap();
    s.driver()
        .create(&other, None, &CreateOpts::default())
        .unwrap();
    drop(s);
    let s = open(dir.path());
    let mut layers: Vec<String> = s
        .driver()
        .list()
        .unwrap()
        .iter()
        .map(|l| l.to_string())
        .collect();
    layers.sort();
    assert_eq!(
        layers,
        [format!("{LAYER_PREFIX}1"), "someone-else".to_owned()]
    );
    // the surviving active snapshot still mounts
    let m = s.mounts("kept").unwrap();
    assert!(m[0].source.is_dir());
}

/// The gRPC service over a unix socket, called as containerd's proxy calls it.
#[test]
fn the_grpc_service_answers_over_a_unix_socket() {
    use hyper_util::rt::TokioIo;
    use pb::snapshots_client::SnapshotsClient;
    use tonic::transport::Endpoint;

    let dir = scratch();
    let sock = dir.path().join("s.sock");
    // a stale socket from a killed service is replaced
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let s = Arc::new(open(dir.path()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn({
            let (s, sock) = (Arc::clone(&s), sock.clone());
            async move {
                graphdriver_containerd::serve(s, &sock, async {
                    let _ = stopped.await;
                })
                .await
            }
        });
        let path = sock.clone();
        let channel = loop {
            let path = path.clone();
            let c = Endpoint::try_from("http://[::]:0")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await;
            match c {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        let mut c = SnapshotsClient::new(channel);
        let req = |key: &str, parent: &str| pb::PrepareSnapshotRequest {
            snapshotter: "graphdriver".into(),
            key: key.into(),
            parent: parent.into(),
            labels: Default::default(),
        };
        let m = c.prepare(req("k", "")).await.unwrap().into_inner().mounts;
        assert_eq!(m[0].r#type, "bind");
        let err = c.prepare(req("k", "")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        let err = c.prepare(req("k2", "nope")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        c.commit(pb::CommitSnapshotRequest {
            snapshotter: "graphdriver".into(),
            name: "base".into(),
            key: "k".into(),
            labels: Default::default(),
        })
        .await
        .unwrap();
        c.prepare(req("k2", "base")).await.unwrap();
        let err = c
            .remove(pb::RemoveSnapshotRequest {
                snapshotter: "graphdriver".into(),
                key: "base".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        let info = c
            .stat(pb::StatSnapshotRequest {
                snapshotter: "graphdriver".into(),
                key: "k2".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.parent, "base");
        assert_eq!(info.kind, pb::Kind::Active as i32);
        let mut stream = c
            .list(pb::ListSnapshotsRequest {
                snapshotter: "graphdriver".into(),
                filters: vec!["kind==committed".into()],
            })
            .await
            .unwrap()
            .into_inner();
        let mut names = Vec::new();
        while let Some(batch) = stream.message().await.unwrap() {
            names.extend(batch.info.into_iter().map(|i| i.name));
        }
        assert_eq!(names, ["base"]);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    });
    assert!(!sock.exists(), "the socket goes when the service stops");
}

/// Makes the mount containerd would make from one of the service's mounts.
fn mount_as_containerd(m: &graphdriver_containerd::Mount, target: &Path) {
    use rustix::mount::{mount, mount_bind_recursive, MountFlags};
    if m.kind == "bind" {
        mount_bind_recursive(&m.source, target).unwrap();
    } else {
        let data = std::ffi::CString::new(m.options.join(",")).unwrap();
        mount(
            &m.source,
            target,
            m.kind.as_str(),
            MountFlags::empty(),
            data.as_c_str(),
        )
        .unwrap();
    }
}

#[test]
fn on_overlay2_containerd_gets_the_overlay_mount_itself_and_the_service_holds_nothing() {
    let dir = scratch();
    let d = graphdriver_overlay2::open(&dir.path().join("root"), &Default::default()).unwrap();
    let s = Snapshotter::open(Box::new(d), &dir.path().join("meta")).unwrap();
    let target = dir.path().join("rootfs");
    std::fs::create_dir(&target).unwrap();

    // no parent: the layer's own directory, bound
    let m = s.prepare(Kind::Active, "k1", None, no_labels()).unwrap();
    assert_eq!(
        (m[0].kind.as_str(), &m[0].options[..]),
        ("bind", &["rbind".to_owned(), "rw".to_owned()][..])
    );
    mount_as_containerd(&m[0], &target);
    std::fs::write(target.join("base-file"), b"base").unwrap();
    rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty()).unwrap();
    s.commit("base", "k1", no_labels()).unwrap();

    // on a parent: the overlay mount, made by "containerd"; writes land in the layer
    let m = s
        .prepare(Kind::Active, "k2", Some("base"), no_labels())
        .unwrap();
    assert_eq!(m[0].kind, "overlay", "{m:?}");
    assert!(
        m[0].options.iter().any(|o| o.starts_with("upperdir=")),
        "{m:?}"
    );
    assert_eq!(s.mounts("k2").unwrap(), m, "Mounts says what Prepare said");
    mount_as_containerd(&m[0], &target);
    assert_eq!(std::fs::read(target.join("base-file")).unwrap(), b"base");
    std::fs::write(target.join("child-file"), b"child").unwrap();
    rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty()).unwrap();
    // the service mounted nothing
    let layer = LayerId::new(format!("{LAYER_PREFIX}2")).unwrap();
    assert!(matches!(
        s.driver().put(&layer),
        Err(graphdriver_api::DriverError::NotMounted(_))
    ));
    s.commit("child", "k2", no_labels()).unwrap();
    let changes: Vec<String> = s
        .driver()
        .changes(&layer, None)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(changes, ["A /child-file"]);
    // measured at the first Usage, then kept
    assert_eq!(s.usage("child").unwrap().size, 5);
    assert_eq!(s.usage("child").unwrap().inodes, 1);

    // a view is the service's own read-only mount, held until it is removed, and kept for
    // its users when the service stops; a stopped service refuses what touches the driver
    let v = s
        .prepare(Kind::View, "v", Some("child"), no_labels())
        .unwrap();
    assert_eq!(v[0].options, ["rbind", "ro"]);
    assert_eq!(
        s.close().unwrap(),
        1,
        "a view's mount is kept for its users"
    );
    assert!(matches!(s.remove("v"), Err(SnapshotError::Closed)));
    assert!(matches!(s.close(), Err(SnapshotError::Closed)));
    drop(s);
    // the next start takes the view over; with it removed, closing releases the driver
    let d = graphdriver_overlay2::open(&dir.path().join("root"), &Default::default()).unwrap();
    let s = Snapshotter::open(Box::new(d), &dir.path().join("meta")).unwrap();
    assert_eq!(s.mounts("v").unwrap(), v);
    s.remove("v").unwrap();
    assert_eq!(s.close().unwrap(), 0);
}

#[test]
fn the_uid_and_gid_mapping_labels_give_each_container_an_idmapped_mount_of_shared_layers() {
    use graphdriver_api::idmap::IdMap;
    use graphdriver_containerd::{GIDMAP_LABEL, UIDMAP_LABEL};
    use graphdriver_kit::idmap::UserNs;
    use std::os::unix::fs::MetadataExt;
    let dir = scratch();
    let d = graphdriver_overlay2::open(&dir.path().join("root"), &Default::default()).unwrap();
    let s = Snapshotter::open(Box::new(d), &dir.path().join("meta")).unwrap();
    let m = s.prepare(Kind::Active, "k", None, no_labels()).unwrap();
    let target = dir.path().join("rootfs");
    std::fs::create_dir(&target).unwrap();
    mount_as_containerd(&m[0], &target);
    std::fs::write(target.join("etc-file"), b"image").unwrap();
    rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty()).unwrap();
    s.commit("image", "k", no_labels()).unwrap();

    let mapped = |host: u32| {
        BTreeMap::from([
            (UIDMAP_LABEL.to_owned(), format!("0:{host}:65536")),
            (GIDMAP_LABEL.to_owned(), format!("0:{host}:65536")),
        ])
    };
    let mut seen = Vec::new();
    for (key, host) in [("c1", 100_000), ("c2", 200_000)] {
        let m = s
            .prepare(Kind::Active, key, Some("image"), mapped(host))
            .unwrap();
        // the service's idmapped mount, bound by containerd
        assert_eq!(m[0].kind, "bind", "{m:?}");
        assert_eq!(s.mounts(key).unwrap(), m);
        let meta = std::fs::metadata(m[0].source.join("etc-file")).unwrap();
        seen.push((meta.uid(), meta.gid()));
        // the container's root writes (the host's root is no id of the map: EOVERFLOW)
        let ns = UserNs::new(&IdMap::single(0, host, 65536).unwrap()).unwrap();
        let out = ns
            .run_as_root(
                std::process::Command::new("/bin/sh")
                    .args(["-c", &format!("echo {key} > {key}-file")])
                    .current_dir(&m[0].source),
            )
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let meta = std::fs::metadata(m[0].source.join(format!("{key}-file"))).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (host, host));
    }
    assert_eq!(seen, [(100_000, 100_000), (200_000, 200_000)]);
    // stored unmapped: the committed layer holds its file as uid 0
    s.commit("c1-done", "c1", no_labels()).unwrap();
    assert_eq!(s.stat("c1-done").unwrap().parent.as_deref(), Some("image"));
    let layer = LayerId::new(format!("{LAYER_PREFIX}2")).unwrap();
    let root = s.driver().get(&layer, &MountOpts::default()).unwrap();
    let meta = std::fs::metadata(root.join("c1-file")).unwrap();
    s.driver().put(&layer).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    for bad in [
        BTreeMap::from([(UIDMAP_LABEL.to_owned(), "0:100000:65536".to_owned())]),
        BTreeMap::from([
            (UIDMAP_LABEL.to_owned(), "0:100000".to_owned()),
            (GIDMAP_LABEL.to_owned(), "0:100000:65536".to_owned()),
        ]),
    ] {
        assert!(
            matches!(
                s.prepare(Kind::Active, "bad", Some("image"), bad),
                Err(SnapshotError::InvalidArgument(_))
            ),
            "a bad map is refused before anything is made"
        );
    }
    assert!(matches!(s.stat("bad"), Err(SnapshotError::NotFound(_))));
    s.remove("c2").unwrap();
    s.remove("c1-done").unwrap();
}
