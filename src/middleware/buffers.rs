//! Memory held for request and response bodies, bounded per connection,
//! per client and for the whole server.
//!
//! - A request body to the API is counted as it arrives, piece by piece:
//!   a client holds what it has sent, never what it has only announced
//!   (a `Content-Length` of 1 MiB and one byte sent holds one byte).
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

use tokio::sync::Semaphore;

use crate::server::{BufferPermit, Connection};
use crate::settings::Settings;

/// A budget has no room for a body now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

pub struct Buffers {
    server: Arc<Semaphore>,
    /// The most one body may hold: what every budget can hold.
    ceiling: usize,
}

impl Buffers {
    pub fn new(settings: &Settings) -> Self {
        let server = settings
            .connections
            .max_buffered_bytes
            .min(Semaphore::MAX_PERMITS);
        Self {
            server: Arc::new(Semaphore::new(server)),
            ceiling: server
                .min(settings.connections.connection_buffer_bytes)
                .min(settings.connections.client_buffer_bytes),
        }
    }

    /// Counts `bytes` more of a body being read into `permit`. `false`: no
    /// room.
    pub fn count_body(
        &self,
        connection: &Connection,
        permit: &mut Option<BufferPermit>,
        bytes: usize,
    ) -> bool {
        let Some(more) = BufferPermit::try_acquire(connection, &self.server, bytes.min(self.ceiling)) else {
            return false;
        };
        match permit {
            Some(held) => held.merge(more),
            None => *permit = Some(more),
        }
        true
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
}
