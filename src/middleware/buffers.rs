//! Memory held for request and response bodies, bounded per connection and
//! for the whole server.
//!
//! Before a request is handled it reserves what its bodies may need: its
//! request body (the declared length, or the body limit when none is
//! declared) and its answer (a full list page or note for the notes
//! routes, a small problem or token document otherwise). It waits while its
//! connection or the server has no room, and gets 503 after
//! `--write-timeout`. Once the answer exists the reservation shrinks to the
//! answer's size, and that part stays held until the answer has been handed
//! to the connection, so a client that does not read keeps its bytes
//! counted until the connection layer closes it.
//!
//! The bound this gives: bodies in memory never exceed
//! `--max-buffered-bytes` for the server, nor `--connection-buffer-bytes`
//! for one connection, whatever the number of HTTP/2 streams.

use std::sync::Arc;
use std::time::Duration;

use poem::Request;
use poem::http::{Method, header};
use tokio::sync::Semaphore;

use crate::domain::{CONTENT_MAX, TAG_MAX, TAGS_MAX, TITLE_MAX};
use crate::server::{BufferPermit, Connection};
use crate::settings::Settings;

/// Reservation for an answer that is not a note or a page of notes.
const SMALL_ANSWER: usize = 16 * 1024;

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
            ceiling: server.min(settings.connection_buffer_bytes),
            max_body: settings.max_body_bytes,
            notes_answer: settings.max_page_bytes.max(NOTE_JSON_MAX) + SMALL_ANSWER,
            wait: settings.write_timeout,
        }
    }

    /// What `req` may need held, before it is handled.
    pub fn reservation(&self, req: &Request) -> usize {
        let body = if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
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
            SMALL_ANSWER
        };
        (body + answer).min(self.ceiling)
    }

    /// Holds `bytes` of `connection`'s and the server's budgets; `None` when
    /// no room came within the wait.
    pub async fn reserve(&self, connection: &Connection, bytes: usize) -> Option<BufferPermit> {
        // Almost always there is room: no timer for that case.
        if let Some(permit) = BufferPermit::try_acquire(&connection.buffer, &self.server, bytes) {
            return Some(permit);
        }
        let acquire = BufferPermit::acquire(&connection.buffer, &self.server, bytes);
        tokio::time::timeout(self.wait, acquire).await.ok().flatten()
    }

    /// Bytes free in the server's budget (for tests and logs).
    pub fn available(&self) -> usize {
        self.server.available_permits()
    }
}
