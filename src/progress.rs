//! Progress of a long command (a backup, a restore, the sealing migration
//! at start): a bar on a terminal, a log line every few seconds
//! otherwise, and a summary at the end with counts and time.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a log line reports progress when there is no bar.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the bar is redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(100);

pub struct Progress {
    what: &'static str,
    total: u64,
    started: Instant,
    last: Instant,
    bar: bool,
}

impl Progress {
    /// `what` of `total` units; a bar if `interactive` and stderr is a
    /// terminal.
    pub fn new(what: &'static str, total: u64, interactive: bool) -> Self {
        let now = Instant::now();
        Self {
            what,
            total,
            started: now,
            last: now,
            bar: interactive && std::io::stderr().is_terminal(),
        }
    }

    /// `done` units so far.
    pub fn at(&mut self, done: u64) {
        let done = done.min(self.total);
        let now = Instant::now();
        if self.bar {
            if now.duration_since(self.last) >= DRAW_EVERY || done == self.total {
                self.last = now;
                let width = 30u64;
                let filled = (done * width).checked_div(self.total).unwrap_or(width);
                let filled = usize::try_from(filled).unwrap_or(0);
                let empty = usize::try_from(width).unwrap_or(0).saturating_sub(filled);
                eprint!(
                    "\r{} [{}{}] {done}/{}",
                    self.what,
                    "#".repeat(filled),
                    " ".repeat(empty),
                    self.total
                );
                let _ = std::io::stderr().flush();
            }
        } else if now.duration_since(self.last) >= LOG_EVERY {
            self.last = now;
            tracing::info!(what = self.what, done, total = self.total, "in progress");
        }
    }

    /// Ends the bar, and returns the time taken.
    pub fn finish(self) -> Duration {
        if self.bar {
            eprintln!();
        }
        self.started.elapsed()
    }
}
