//! The gRPC face of [`Snapshotter`]: `containerd.services.snapshots.v1.Snapshots` over a
//! unix socket, as containerd's proxy plugins call it. Driver calls block, so each request
//! runs on tokio's blocking pool.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::api::containerd::services::snapshots::v1 as pb;
use crate::api::containerd::types as pb_types;
use crate::model::{Info, Kind, Mount, SnapshotError};
use crate::Snapshotter;
use pb::snapshots_server::{Snapshots, SnapshotsServer};

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The socket could not be made.
    #[error("failed to {op} {}", path.display())]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

impl From<SnapshotError> for Status {
    fn from(e: SnapshotError) -> Status {
        use graphdriver_api::DriverError as D;
        // the whole chain: containerd shows only the message
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        match &e {
            SnapshotError::NotFound(_) => Status::not_found(msg),
            SnapshotError::AlreadyExists(_) => Status::already_exists(msg),
            SnapshotError::FailedPrecondition { .. } => Status::failed_precondition(msg),
            SnapshotError::InvalidArgument(_) => Status::invalid_argument(msg),
            SnapshotError::Closed => Status::unavailable(msg),
            SnapshotError::Driver { source, .. } => match source {
                D::NotFound(_) => Status::not_found(msg),
                D::AlreadyExists(_) => Status::already_exists(msg),
                D::HasChildren { .. } | D::Busy { .. } | D::NotMounted(_) => {
                    Status::failed_precondition(msg)
                }
                D::InvalidId { .. } | D::InvalidArchive { .. } => Status::invalid_argument(msg),
                D::Unsupported { .. } => Status::unimplemented(msg),
                _ => Status::internal(msg),
            },
            _ => Status::internal(msg),
        }
    }
}

fn kind_to_pb(k: Kind) -> i32 {
    match k {
        Kind::View => pb::Kind::View as i32,
        Kind::Active => pb::Kind::Active as i32,
        Kind::Committed => pb::Kind::Committed as i32,
    }
}

fn kind_from_pb(k: i32) -> Option<Kind> {
    match pb::Kind::try_from(k).ok()? {
        pb::Kind::View => Some(Kind::View),
        pb::Kind::Active => Some(Kind::Active),
        pb::Kind::Committed => Some(Kind::Committed),
        pb::Kind::Unknown => None,
    }
}

fn info_to_pb(i: Info) -> pb::Info {
    pb::Info {
        name: i.name,
        parent: i.parent.unwrap_or_default(),
        kind: kind_to_pb(i.kind),
        created_at: Some(i.created.into()),
        updated_at: Some(i.updated.into()),
        labels: i.labels.into_iter().collect(),
    }
}

fn info_from_pb(i: pb::Info) -> Info {
    let time = |t: Option<prost_types::Timestamp>| {
        t.and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    Info {
        name: i.name,
        parent: Some(i.parent).filter(|p| !p.is_empty()),
        kind: kind_from_pb(i.kind).unwrap_or(Kind::Committed),
        created: time(i.created_at),
        updated: time(i.updated_at),
        labels: i.labels.into_iter().collect(),
    }
}

fn mounts_to_pb(m: Vec<Mount>) -> Vec<pb_types::Mount> {
    m.into_iter()
        .map(|m| pb_types::Mount {
            r#type: m.kind,
            source: m.source.to_string_lossy().into_owned(),
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn labels(l: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    l.into_iter().collect()
}

fn parent(p: String) -> Option<String> {
    Some(p).filter(|p| !p.is_empty())
}

/// The service: a [`Snapshotter`] behind containerd's gRPC API.
#[derive(Debug, Clone)]
pub struct Service {
    snapshotter: Arc<Snapshotter>,
}

impl Service {
    /// The service on `snapshotter`.
    pub fn new(snapshotter: Arc<Snapshotter>) -> Service {
        Service { snapshotter }
    }

    /// Runs `f` on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Snapshotter) -> crate::model::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let s = Arc::clone(&self.snapshotter);
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| Status::internal(format!("snapshot operation panicked: {e}")))?
            .map_err(Status::from)
    }

    /// Prepare or View: a new snapshot of `kind` on `parent`, and the mounts that show it.
    async fn prepare_kind(
        &self,
        kind: Kind,
        key: String,
        parent_key: String,
        with_labels: std::collections::HashMap<String, String>,
    ) -> Result<Vec<pb_types::Mount>, Status> {
        let m = self
            .run(move |s| {
                s.prepare(
                    kind,
                    &key,
                    parent(parent_key).as_deref(),
                    labels(with_labels),
                )
            })
            .await?;
        Ok(mounts_to_pb(m))
    }
}

type ListStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ListSnapshotsResponse, Status>> + Send>>;

/// How long a stopping service waits for requests in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes in flight each way between a connection and the server.
const RELAY_BUFFER: usize = 256 << 10;

/// Infos per `List` message (containerd's own service sends 100).
const LIST_BATCH: usize = 100;

#[tonic::async_trait]
impl Snapshots for Service {
    async fn prepare(
        &self,
        r: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let r = r.into_inner();
        let mounts = self
            .prepare_kind(Kind::Active, r.key, r.parent, r.labels)
            .await?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        r: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let r = r.into_inner();
        let mounts = self
            .prepare_kind(Kind::View, r.key, r.parent, r.labels)
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        r: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let key = r.into_inner().key;
        let m = self.run(move |s| s.mounts(&key)).await?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts_to_pb(m),
        }))
    }

    async fn commit(&self, r: Request<pb::CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = r.into_inner();
        self.run(move |s| s.commit(&r.name, &r.key, labels(r.labels)))
            .await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, r: Request<pb::RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let key = r.into_inner().key;
        self.run(move |s| s.remove(&key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        r: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let key = r.into_inner().key;
        let info = self.run(move |s| s.stat(&key)).await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = r.into_inner();
        let info = r
            .info
            .map(info_from_pb)
            .ok_or_else(|| Status::invalid_argument("update without an info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = self.run(move |s| s.update(&info, &paths)).await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        r: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<ListStream>, Status> {
        let filters = r.into_inner().filters;
        let infos = self.run(move |s| s.list(&filters)).await?;
        let mut batches = Vec::new();
        let mut infos = infos.into_iter().map(info_to_pb).peekable();
        while infos.peek().is_some() {
            batches.push(Ok(pb::ListSnapshotsResponse {
                info: infos.by_ref().take(LIST_BATCH).collect(),
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        r: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let key = r.into_inner().key;
        let u = self.run(move |s| s.usage(&key)).await?;
        Ok(Response::new(pb::UsageResponse {
            size: i64::try_from(u.size).unwrap_or(i64::MAX),
            inodes: i64::try_from(u.inodes).unwrap_or(i64::MAX),
        }))
    }

    async fn cleanup(&self, _r: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        self.run(|s| s.cleanup()).await?;
        Ok(Response::new(()))
    }
}

/// Serves `snapshotter` on the unix socket `socket` until `shutdown` completes, then stops
/// taking requests, lets the running ones finish and removes the socket. A stale socket
/// (from a service that was killed) is replaced; any other file there is an error.
pub async fn serve(
    snapshotter: Arc<Snapshotter>,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    use std::os::unix::fs::FileTypeExt;
    let sock = |op, source| ServeError::Socket {
        op,
        path: socket.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(socket).map_err(|e| sock("remove the stale socket", e))?
        }
        Ok(_) => {
            return Err(sock(
                "serve on",
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is there",
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock("inspect", e)),
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| sock("create the directory of", e))?;
    }
    let listener = UnixListener::bind(socket).map_err(|e| sock("listen on", e))?;
    // every connection through the authority relay (see `authority`)
    let incoming = UnixListenerStream::new(listener).map(|conn| {
        let (server_end, relay_end) = tokio::io::duplex(RELAY_BUFFER);
        tokio::spawn(crate::authority::relay(conn?, relay_end));
        Ok::<_, std::io::Error>(server_end)
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(Service::new(snapshotter)))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            // stop taking connections and let requests in flight finish; containerd keeps
            // its connection open for good, so waiting for connections to close would never
            // end: past the grace period the service stops anyway (every operation is crash
            // safe)
            let _ = stop.send(());
            tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.unwrap_or(Ok(()))
        }
    };
    // best effort: a socket left behind is replaced by the next start
    let _ = std::fs::remove_file(socket);
    Ok(served?)
}
