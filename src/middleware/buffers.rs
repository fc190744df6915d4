//! Memory held for request and response bodies, bounded per connection,
//! per client and for the whole server.
//!
//! - A request body to the API is counted before it is read: its declared
//!   length, or the body limit when none is declared (chunked, HTTP/2).
//! - An answer from the API is counted once it exists, at its exact size,
//!   and stays counted until it has been handed to the connection, so a
//!   client that does not read keeps its bytes counted until the
//!   connection layer closes it. Before that, an answer is only ever being
//!   built by a handler that does not wait between reading the notes and
//!   serialising them, so at most one per worker thread is in the making.
//!   The documentation is served from shared bytes and costs nothing per
//!   answer.
//!
//! There is no waiting for room: a request that finds none gets 503 with
//! `Retry-After` at once. Waiting could deadlock (a body behind its own
//! HTTP/2 connection's other uploads) or hold memory the budgets do not see
//! (an answer built and waiting to be counted).
//!
//! The bound this gives: bodies held in memory never exceed
//! `--max-buffered-bytes` for the server, `--client-buffer-bytes` for one
//! client, nor `--connection-buffer-bytes` for one connection, whatever the
//! number of HTTP/2 streams; what is in the making adds at most one page
//! per worker thread and per scanning thread.

use std::sync::Arc;

use poem::Request;
use poem::http::header;
use tokio::sync::Semaphore;

use crate::middleware::limits::takes_body;
use crate::server::{BufferPermit, Connection};
use crate::settings::Settings;

/// A budget has no room for a body now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

pub struct Buffers {
    server: Arc<Semaphore>,
    /// The most one body may hold: what every budget can hold.
    ceiling: usize,
    max_body: usize,
}

impl Buffers {
    pub fn new(settings: &Settings) -> Self {
        let server = settings.max_buffered_bytes.min(Semaphore::MAX_PERMITS);
        Self {
            server: Arc::new(Semaphore::new(server)),
            ceiling: server
                .min(settings.connection_buffer_bytes)
                .min(settings.client_buffer_bytes),
            max_body: settings.max_body_bytes,
        }
    }

    /// Counts the body `req` may bring before it is read. `Ok(None)`: it
    /// brings none.
    pub fn reserve_body(
        &self,
        connection: &Connection,
        req: &Request,
    ) -> Result<Option<BufferPermit>, NoRoom> {
        if !takes_body(req) {
            return Ok(None);
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let bytes = declared
            .map_or(self.max_body, |n| n.min(self.max_body))
            .min(self.ceiling);
        if bytes == 0 {
            return Ok(None);
        }
        BufferPermit::try_acquire(connection, &self.server, bytes)
            .map(Some)
            .ok_or(NoRoom)
    }

    /// Counts an answer of `bytes` until it is handed over.
    pub fn hold_answer(&self, connection: &Connection, bytes: usize) -> Result<Option<BufferPermit>, NoRoom> {
        if bytes == 0 {
            return Ok(None);
        }
        BufferPermit::try_acquire(connection, &self.server, bytes.min(self.ceiling))
            .map(Some)
            .ok_or(NoRoom)
    }

    /// Bytes free in the server's budget (for tests and logs).
    pub fn available(&self) -> usize {
        self.server.available_permits()
    }
}
