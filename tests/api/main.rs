//! Black-box tests of the HTTP API against the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod backoff;
mod errors;
mod headers;
mod helpers;
mod limits;
mod notes;
mod ops;
mod restart;
mod tls;
mod tokens;
