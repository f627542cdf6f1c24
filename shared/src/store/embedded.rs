//! Dynoxide, the embedded DynamoDB emulator, served in-process on a loopback port. The local
//! stack and the tests talk to it through the same SDK code path as AWS. Only compiled with
//! the `embedded` feature, which no Lambda binary enables.

use std::net::SocketAddr;
use std::path::Path;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct EmbeddedDynamo {
    endpoint: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), String>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("could not open the embedded database: {0}")]
    Database(String),
    #[error("could not bind a loopback port for the embedded database: {0}")]
    Bind(#[from] std::io::Error),
}

impl EmbeddedDynamo {
    /// In memory: gone when the process ends.
    pub async fn start_in_memory() -> Result<Self, EmbeddedError> {
        let db = dynoxide::Database::memory().map_err(|e| EmbeddedError::Database(e.to_string()))?;
        Self::serve(db, "127.0.0.1:0".parse().expect("literal address")).await
    }

    /// Persisted in a SQLite file, so keys and counters survive a restart, and every write
    /// it acknowledged survives the process being killed (`kill -9`).
    ///
    /// The file is in WAL mode with `synchronous = NORMAL`: a commit is in the operating
    /// system's hands when it is acknowledged (what a killed process needs), and the WAL is
    /// synced at checkpoints rather than on every commit (SQLite's default, `FULL`, syncs it
    /// on each one: a power loss could then lose the last commits, never corrupt the file).
    /// `disable_bulk_loading` is Dynoxide's public way to set it; the other settings it writes
    /// are SQLite's defaults.
    pub async fn start_persistent(path: &Path) -> Result<Self, EmbeddedError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db =
            dynoxide::Database::new(&path.to_string_lossy()).map_err(|e| EmbeddedError::Database(e.to_string()))?;
        db.disable_bulk_loading().map_err(|e| EmbeddedError::Database(e.to_string()))?;
        Self::serve(db, "127.0.0.1:0".parse().expect("literal address")).await
    }

    async fn serve(db: dynoxide::Database, addr: SocketAddr) -> Result<Self, EmbeddedError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(dynoxide::server::serve_with_shutdown(listener, db, async move {
            let _ = rx.await;
        }));
        Ok(Self { endpoint, shutdown: Some(tx), server: Some(server) })
    }

    /// `http://127.0.0.1:<port>`, for `TOLLGATE_DYNAMODB_ENDPOINT` or the SDK's endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops accepting connections and waits for requests in flight to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for EmbeddedDynamo {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
