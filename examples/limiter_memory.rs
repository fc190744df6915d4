//! How much memory the per-IP rate limiters hold under an attack from many
//! addresses, and what the sweep gives back. Usage: `limiter_memory [N]`.

use std::net::{IpAddr, Ipv4Addr};

use notesd::middleware::rate_limit::{Limiters, RateLimitConfig};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[allow(clippy::cast_precision_loss)] // kibibytes of RSS fit an f64 exactly
fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let limiters = Limiters::new(&RateLimitConfig {
        per_minute: 600,
        auth_per_minute: 10,
        trusted_proxies: vec![],
        keys: notesd::client::ClientKeys::default(),
    });
    let before = rss_kib();
    for i in 0..n {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        // One login attempt each: both the general and the strict limiter.
        let _ = limiters.check(limiters.key(ip), "/api/v1/auth/login");
    }
    let after = rss_kib();
    println!(
        "{n} addresses: {} entries, +{:.1} MiB ({:.0} bytes per address)",
        limiters.tracked(),
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / f64::from(n)
    );
    limiters.sweep();
    println!(
        "sweep at once: {} entries (general-quota entries already recovered go)",
        limiters.tracked()
    );
    // governor forgets a key one emission interval after its state is back
    // to fresh: 2 × 6 s for one request at 10/min.
    std::thread::sleep(std::time::Duration::from_secs(13));
    limiters.sweep();
    println!(
        "sweep 13 s later: {} entries, RSS {:.1} MiB",
        limiters.tracked(),
        rss_kib() as f64 / 1024.0
    );
}
