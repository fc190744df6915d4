//! What sealing costs one request, measured alone (wrk figures on a shared
//! VM swing by more than it): opening the body of the note `make bench`
//! reads (a title, 216 bytes of content, one tag), as a GET by id does, and
//! sealing one, as a create does, with the account's keys cached.
//! Usage: `seal_cost [ROUNDS]`; prints nanoseconds per operation.

use std::hint::black_box;
use std::time::Instant;

use notesd::seal::{Field, Sealer};

#[allow(clippy::cast_precision_loss)] // nanoseconds over a few seconds fit an f64
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u32 = std::env::args().nth(1).map_or(Ok(1_000_000), |r| r.parse())?;
    let sealer = Sealer::new(&[7; 32]);
    // The body as the store lays it out (postcard: lengths and bytes).
    let content = "Some text of a typical short note, a few lines long. ".repeat(4);
    let mut body = Vec::new();
    for field in ["bench note".as_bytes(), content.as_bytes()] {
        body.push(u8::try_from(field.len().min(127))?);
        body.extend_from_slice(field);
    }
    body.extend_from_slice(&[1, 5]);
    body.extend_from_slice(b"bench");
    let (owner, note) = (0x0123_u128, 0x4567_u128);
    let stored = sealer.seal(Field::NoteBody, owner, note, &body)?;

    let started = Instant::now();
    for _ in 0..rounds {
        black_box(sealer.open(Field::NoteBody, black_box(owner), note, black_box(&stored))?);
    }
    let open_ns = started.elapsed().as_nanos() as f64 / f64::from(rounds);
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(sealer.seal(Field::NoteBody, black_box(owner), note, black_box(&body))?);
    }
    let seal_ns = started.elapsed().as_nanos() as f64 / f64::from(rounds);
    let started = Instant::now();
    for i in 0..rounds {
        black_box(sealer.tag_index(black_box(owner), if i % 2 == 0 { "bench" } else { "home" }));
    }
    let tag_ns = started.elapsed().as_nanos() as f64 / f64::from(rounds);
    println!(
        "sealing, per operation ({} bytes of body): open {open_ns:.0} ns (GET by id), seal {seal_ns:.0} ns (create), tag index {tag_ns:.0} ns",
        body.len()
    );
    Ok(())
}
