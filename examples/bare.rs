//! The benchmark's ceiling: a bare poem server answering one route, built
//! with the same poem and tokio as notesd. `make bench` runs it beside
//! notesd. Usage: `bare ADDR`.

use poem::{Route, Server, get, handler, listener::TcpListener};

#[handler]
fn hello() -> &'static str {
    "hello"
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(Server::new(TcpListener::bind(addr)).run(Route::new().at("/hello", get(hello))))
}
