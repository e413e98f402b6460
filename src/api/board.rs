//! The board as `GET /tasks` without parameters serves it — every unfinished task and the
//! last finished ones, the first page — serialized (and compressed) once per change of a
//! task and shared by every reader, with an `ETag` that chat traffic does not move.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

/// One serialized board.
pub(crate) struct Board {
    /// Changes when a task does: `"<epoch>-<seq of the last task event>"`.
    pub(crate) etag: String,
    json: Bytes,
    gzip: OnceLock<Bytes>,
}

impl Board {
    /// The board as JSON (a `TaskList`).
    pub(crate) fn json(&self) -> Bytes {
        self.json.clone()
    }

    /// The same, gzip-compressed.
    pub(crate) fn gzip(&self) -> Bytes {
        self.gzip.get_or_init(|| gzip(&self.json)).clone()
    }
}

/// The last board served, kept until a task changes.
#[derive(Default)]
pub(crate) struct BoardCache(Mutex<Option<Arc<Board>>>);

impl BoardCache {
    /// The board with this `etag`: the cached one, or `make()` (then cached).
    pub(crate) fn get_or_make<E>(
        &self,
        etag: String,
        make: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Arc<Board>, E> {
        let lock = || self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(board) = lock().as_ref().filter(|b| b.etag == etag) {
            return Ok(Arc::clone(board));
        }
        // Made outside the lock: readers of a cached board never wait for a new one.
        let board = Arc::new(Board { etag, json: make()?, gzip: OnceLock::new() });
        *lock() = Some(Arc::clone(&board));
        Ok(board)
    }
}

fn gzip(bytes: &[u8]) -> Bytes {
    use std::io::Write;
    // Fast level: a 1,000-task board shrinks about tenfold in a couple of milliseconds.
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 8), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}
