//! Memory held for request and response bodies, bounded per connection,
//! per client and for the whole server.
//!
//! Before a request is handled it reserves what its bodies may need: its
//! request body (the declared length, or the body limit when none is
//! declared) and, on the notes routes, its answer (a full list page or
//! note). Other answers (problems, tokens, probes, the documentation served
//! from shared bytes) are small or cost nothing per request and reserve
//! nothing. A request with a body takes its room at once or gets 503: it
//! must not wait, because bodies of other requests on its own HTTP/2
//! connection may be what fills the room, and they cannot drain while it
//! waits. A request without a body (a read) waits up to `--write-timeout`
//! for room, then gets 503. Once the answer exists the reservation shrinks
//! to the answer's size, and that part stays held until the answer has
//! been handed to the connection, so a client that does not read keeps its
//! bytes counted until the connection layer closes it.
//!
//! The bound this gives: bodies in memory never exceed
//! `--max-buffered-bytes` for the server, `--client-buffer-bytes` for one
//! client, nor `--connection-buffer-bytes` for one connection, whatever the
//! number of HTTP/2 streams.

use std::sync::Arc;
use std::time::Duration;

use poem::Request;
use poem::http::header;
use tokio::sync::Semaphore;

use crate::domain::{CONTENT_MAX, TAG_MAX, TAGS_MAX, TITLE_MAX};
use crate::middleware::limits::takes_body;
use crate::server::{BufferPermit, Connection};
use crate::settings::Settings;

/// Room for the fixed part of an answer around a note or page.
const ENVELOPE: usize = 16 * 1024;

/// The largest JSON a single note can take: every character of its title
/// and content escaped six-fold (`\u0001`), its tags quoted, and the
/// fixed members.
pub const NOTE_JSON_MAX: usize = 6 * (CONTENT_MAX + TITLE_MAX) + TAGS_MAX * (TAG_MAX + 3) + 512;

pub struct Buffers {
    server: Arc<Semaphore>,
    /// The most one request may reserve: what both budgets can hold.
    ceiling: usize,
    max_body: usize,
    notes_answer: usize,
    wait: Duration,
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
            notes_answer: settings.max_page_bytes.max(NOTE_JSON_MAX) + ENVELOPE,
            wait: settings.write_timeout,
        }
    }

    /// What `req` may need held, before it is handled: (its body, its
    /// answer).
    pub fn reservation(&self, req: &Request) -> (usize, usize) {
        let body = if takes_body(req) {
            req.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .map_or(self.max_body, |declared| declared.min(self.max_body))
        } else {
            0
        };
        let answer = if req.uri().path().starts_with("/api/v1/notes") {
            self.notes_answer
        } else {
            0
        };
        (body, answer)
    }

    /// Holds what `req` needs of its connection's, its client's and the
    /// server's budgets. `Ok(None)`: it needs nothing; `Err(())`: no room
    /// (503).
    pub async fn reserve(&self, connection: &Connection, req: &Request) -> Result<Option<BufferPermit>, ()> {
        let (body, answer) = self.reservation(req);
        let bytes = (body + answer).min(self.ceiling);
        if bytes == 0 {
            return Ok(None);
        }
        // Almost always there is room: no timer for that case.
        if let Some(permit) = BufferPermit::try_acquire(connection, &self.server, bytes) {
            return Ok(Some(permit));
        }
        if body > 0 {
            return Err(());
        }
        let acquire = BufferPermit::acquire(connection, &self.server, bytes);
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Some(permit)) => Ok(Some(permit)),
            _ => Err(()),
        }
    }

    /// Bytes free in the server's budget (for tests and logs).
    pub fn available(&self) -> usize {
        self.server.available_permits()
    }
}
