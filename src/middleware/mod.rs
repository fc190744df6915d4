//! Request and response handling shared by every route: the request log,
//! the body limit and response headers.

pub mod headers;
pub mod limits;
pub mod trace;
