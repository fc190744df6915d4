//! Black-box tests of the HTTP API against the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod accounts;
mod admin;
mod at_rest;
mod attack_auth;
mod attack_connections;
mod attack_input;
mod attack_memory;
mod attack_protocol;
mod auth;
mod backoff;
mod errors;
mod events;
mod export;
mod headers;
mod helpers;
mod limits;
mod metrics;
mod notes;
mod ops;
mod raw;
mod restart;
mod sessions;
mod tls;
mod tokens;
mod upgrade;
