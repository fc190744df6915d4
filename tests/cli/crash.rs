//! `kill -9` while 32 clients write: every write acknowledged with a 2xx
//! is there after the restart, and the database opens every time. Trials
//! run one after another on one data directory (a file killed many times
//! over), each killed at another point. `make test` runs a few; `make
//! crash-test` runs 20 (`NOTESD_CRASH_TRIALS`) and prints the figures.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Server, access_token};

const WRITERS: usize = 32;

/// What one writer was told, and the one request left without an answer.
#[derive(Default)]
struct Ledger {
    /// Notes whose create was acknowledged (and not their delete), with
    /// the last acknowledged version and title.
    live: HashMap<String, (u64, String)>,
    /// Notes whose delete was acknowledged.
    deleted: Vec<String>,
    /// The note the unanswered request was about, if any: it may or may
    /// not have landed.
    in_doubt: Option<String>,
    acknowledged: usize,
}

/// Creates, edits (with `If-Match`) and deletes its own notes until a
/// request fails (the server is gone).
async fn write(
    client: reqwest::Client,
    base: String,
    token: String,
    writer: usize,
    landed: Arc<AtomicUsize>,
) -> Ledger {
    let mut ledger = Ledger::default();
    let mut mine: Vec<String> = Vec::new();
    for i in 0.. {
        let notes = format!("{base}/api/v1/notes");
        let (request, target) = match (i % 4, mine.last(), mine.first()) {
            (2, Some(id), _) => {
                let (version, _) = &ledger.live[id];
                let title = format!("w{writer} edit {i}");
                let req = client
                    .patch(format!("{notes}/{id}"))
                    .header("If-Match", format!("\"{version}\""))
                    .json(&json!({ "title": title }));
                (req, Some(id.clone()))
            }
            (3, _, Some(id)) if mine.len() > 1 => (client.delete(format!("{notes}/{id}")), Some(id.clone())),
            _ => (
                client
                    .post(&notes)
                    .json(&json!({ "title": format!("w{writer} n{i}"), "tags": ["crash"] })),
                None,
            ),
        };
        ledger.in_doubt.clone_from(&target);
        let answer = match request.bearer_auth(&token).send().await {
            Ok(resp) if resp.status().is_success() => resp,
            // Shed or limited: nothing was written; go on.
            Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => continue,
            _ => return ledger,
        };
        let status = answer.status().as_u16();
        let body: Option<Value> = if status == 204 {
            None
        } else {
            answer.json().await.ok()
        };
        match (target, body) {
            (Some(id), None) => {
                ledger.live.remove(&id);
                mine.retain(|m| *m != id);
                ledger.deleted.push(id);
            }
            (_, Some(note)) => {
                let (Some(id), Some(version), Some(title)) = (
                    note["id"].as_str(),
                    note["version"].as_u64(),
                    note["title"].as_str(),
                ) else {
                    return ledger;
                };
                if !mine.iter().any(|m| m == id) {
                    mine.push(id.to_owned());
                }
                ledger.live.insert(id.to_owned(), (version, title.to_owned()));
            }
            // The body was cut off by the kill: the write is in doubt.
            (None, None) => return ledger,
        }
        ledger.in_doubt = None;
        ledger.acknowledged += 1;
        landed.fetch_add(1, Ordering::SeqCst);
    }
    ledger
}

/// Checks every acknowledged write against the restarted server; returns
/// the problems found.
async fn verify(client: &reqwest::Client, base: &str, token: &str, ledgers: &[Ledger]) -> Vec<String> {
    let mut lost = Vec::new();
    for ledger in ledgers {
        let doubt = ledger.in_doubt.as_deref();
        for (id, (version, title)) in &ledger.live {
            let resp = client
                .get(format!("{base}/api/v1/notes/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            if Some(id.as_str()) == doubt {
                continue; // an edit or delete of it may have landed unanswered
            }
            if resp.status() != 200 {
                lost.push(format!("note {id}: {}", resp.status()));
                continue;
            }
            let note: Value = resp.json().await.unwrap();
            if note["version"].as_u64() != Some(*version) || note["title"].as_str() != Some(title) {
                lost.push(format!(
                    "note {id}: {note} instead of version {version} {title:?}"
                ));
            }
        }
        for id in &ledger.deleted {
            let status = client
                .get(format!("{base}/api/v1/notes/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status();
            if status != 404 {
                lost.push(format!("deleted note {id} is back: {status}"));
            }
        }
    }
    lost
}

#[test]
fn kill_9_during_concurrent_writes_loses_no_acknowledged_write() {
    let trials: usize = std::env::var("NOTESD_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    // The writers' requests: one the kill leaves without an answer fails
    // (and is in doubt) instead of waiting for ever. Generous, for a
    // loaded CI machine.
    let writing_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut token = None;
    let mut previous: Vec<Ledger> = Vec::new();
    let mut total = 0;
    for trial in 0..=trials {
        let started = Instant::now();
        let mut server =
            Server::start_with(dir.path(), &["--listen", "127.0.0.1:0", "--rate-limit", "0"], &[]);
        let base = format!("http://{}", server.address());
        let opened_ms = started.elapsed().as_millis();
        // An access token from before a kill still verifies (the keys are
        // on disk), so the argon2 login runs once.
        let token = token
            .get_or_insert_with(|| rt.block_on(access_token(&client, &base.replace("http://", ""), "signup")))
            .clone();
        let lost = rt.block_on(verify(&client, &base, &token, &previous));
        assert!(
            lost.is_empty(),
            "trial {trial}: {} acknowledged writes lost: {lost:?}",
            lost.len()
        );
        if trial == trials {
            break;
        }
        // Killed after a different number of acknowledged writes each
        // time, and 0 to 4 ms later, so the kill falls anywhere in a
        // batch's apply, fsync and answers.
        let kill_after = 40 + (trial * 97) % 400;
        let kill_delay = Duration::from_millis((trial as u64 * 7) % 5);
        let landed = Arc::new(AtomicUsize::new(0));
        let writing = Instant::now();
        let ledgers = rt.block_on(async {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    tokio::spawn(write(
                        writing_client.clone(),
                        base.clone(),
                        token.clone(),
                        w,
                        landed.clone(),
                    ))
                })
                .collect();
            while landed.load(Ordering::SeqCst) < kill_after {
                assert!(
                    writing.elapsed() < Duration::from_secs(60),
                    "writes stopped landing"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(kill_delay).await;
            server.child.kill().unwrap();
            let mut ledgers = Vec::new();
            for w in writers {
                let ledger = tokio::time::timeout(Duration::from_secs(90), w).await;
                ledgers.push(
                    ledger
                        .expect("a writer stopped within a minute of the kill")
                        .unwrap(),
                );
            }
            ledgers
        });
        let _ = server.child.wait();
        let acknowledged: usize = ledgers.iter().map(|l| l.acknowledged).sum();
        let rate = u32::try_from(acknowledged).map_or(f64::NAN, f64::from) / writing.elapsed().as_secs_f64();
        eprintln!(
            "crash trial {trial}: opened in {opened_ms} ms, then {acknowledged} writes acknowledged ({rate:.0}/s) before kill -9"
        );
        assert!(
            acknowledged >= kill_after,
            "writes were acknowledged before the kill"
        );
        total += acknowledged;
        previous = ledgers;
    }
    eprintln!(
        "crash test: {trials} kills, {total} acknowledged writes, none lost; the database opened every time"
    );
}
