//! The redb backend through the [`Storage`] operations.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use time::OffsetDateTime;

use super::*;
use crate::domain::Role;
use crate::storage::{NoteList, Weigh};

fn open(dir: &tempfile::TempDir) -> RedbStorage {
    RedbStorage::open(&dir.path().join("db"), Options::default()).unwrap()
}

/// The password hash of the test accounts.
const STUB: &str = "$argon2id$stub";

fn user(email: &str) -> UserRecord {
    UserRecord {
        id: UserId::generate(),
        email: email.into(),
        password_hash: STUB.into(),
        role: Role::User,
        disabled: false,
        created_at: OffsetDateTime::now_utc(),
    }
}

fn session(user: UserId, revoked: bool) -> SessionRecord {
    let now = OffsetDateTime::now_utc();
    SessionRecord {
        id: SessionId::generate(),
        user_id: user,
        refresh_hash: [7; 32],
        previous_hashes: vec![[1; 32]],
        created_at: now,
        last_refreshed_at: now,
        revoked_at: revoked.then_some(now),
        client: Some("192.0.2.0/24".to_owned()),
        user_agent: Some("test agent".to_owned()),
        second_factor: false,
    }
}

/// An event for writes whose audit record the test does not look at.
fn ev() -> crate::audit::AuditEvent {
    crate::audit::AuditEvent::new(crate::audit::AuditKind::Logout, OffsetDateTime::now_utc())
}

fn note(title: &str, tags: &[&str]) -> NoteRecord {
    let now = OffsetDateTime::now_utc();
    NoteRecord {
        id: NoteId::generate(),
        title: title.into(),
        content: String::new(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

/// A stored account with no session; its id.
async fn account(store: &RedbStorage) -> UserId {
    let owner = user(&format!("{}@example.com", UserId::generate()));
    let id = owner.id;
    let created = store
        .create_account(owner, None, Vec::new(), None, Vec::new())
        .await
        .unwrap();
    assert_eq!(created, Created::Created);
    id
}

#[tokio::test]
async fn a_note_is_not_created_for_an_account_that_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let gone = UserId::generate();
    assert_eq!(
        store
            .create_note(gone, note("orphan", &[]), Quota::UNLIMITED)
            .await
            .unwrap(),
        Conditional::NotFound
    );
    assert_eq!(store.usage(gone).await.unwrap(), (0, 0), "nothing charged");
}

fn query(limit: usize) -> NoteQuery {
    NoteQuery::first(limit)
}

#[tokio::test]
async fn notes_are_scoped_to_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (alice, bob) = (account(&store).await, UserId::generate());
    let n = note("alice's", &["x"]);
    store
        .create_note(alice, n.clone(), Quota::UNLIMITED)
        .await
        .unwrap();
    assert!(store.note(bob, n.id).await.unwrap().is_none());
    assert!(store.list_notes(bob, query(10)).await.unwrap().0.is_empty());
    let update = NoteUpdate {
        title: Some("stolen".into()),
        content: None,
        tags: None,
        expected_version: None,
        now: OffsetDateTime::now_utc(),
    };
    assert_eq!(
        store
            .update_note(bob, n.id, update, Quota::UNLIMITED)
            .await
            .unwrap(),
        Conditional::NotFound
    );
    assert_eq!(
        store.delete_note(bob, n.id, None).await.unwrap(),
        Conditional::NotFound
    );
    assert_eq!(store.note(alice, n.id).await.unwrap().unwrap().title, "alice's");
}

/// How many of the owner's notes carry each tag.
async fn tagged(store: &RedbStorage, owner: UserId, tags: &[&str]) -> Vec<usize> {
    let mut counts = Vec::new();
    for tag in tags {
        let q = NoteQuery {
            tag: Some((*tag).into()),
            ..query(10)
        };
        counts.push(store.list_notes(owner, q).await.unwrap().0.len());
    }
    counts
}

#[tokio::test]
async fn tag_index_follows_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let owner = account(&store).await;
    let n = note("t", &["a", "b"]);
    store
        .create_note(owner, n.clone(), Quota::UNLIMITED)
        .await
        .unwrap();
    assert_eq!(tagged(&store, owner, &["a", "b", "c"]).await, [1, 1, 0]);
    let update = NoteUpdate {
        title: None,
        content: None,
        tags: Some(vec!["b".into(), "c".into()]),
        expected_version: Some(vec![1]),
        now: OffsetDateTime::now_utc(),
    };
    assert!(matches!(
        store
            .update_note(owner, n.id, update, Quota::UNLIMITED)
            .await
            .unwrap(),
        Conditional::Done(_)
    ));
    assert_eq!(tagged(&store, owner, &["a", "b", "c"]).await, [0, 1, 1]);
    assert_eq!(
        store.delete_note(owner, n.id, Some(vec![1])).await.unwrap(),
        Conditional::VersionMismatch
    );
    assert_eq!(
        store.delete_note(owner, n.id, Some(vec![3, 2])).await.unwrap(),
        Conditional::Done(())
    );
    assert_eq!(tagged(&store, owner, &["b", "c"]).await, [0, 0]);
}

#[tokio::test]
async fn a_search_stops_at_its_scan_budget_and_can_continue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let owner = UserId::generate();
    let batch: Vec<NoteRecord> = (0..25).map(|i| note(&format!("n{i}"), &[])).collect();
    store.import_notes(owner, batch.clone()).await.unwrap();
    let mut q = NoteQuery {
        q: Some("n".into()),
        scan_limit: 10,
        ..query(100)
    };
    let mut seen = 0;
    let mut rounds = 0;
    loop {
        let (items, next) = store.list_notes(owner, q.clone()).await.unwrap();
        assert!(items.len() <= 10, "never reads past the budget");
        seen += items.len();
        rounds += 1;
        match next {
            Some(cursor) => q.after = Some(cursor),
            None => break,
        }
    }
    assert_eq!((seen, rounds), (25, 3));
}

#[tokio::test]
async fn a_page_ends_at_its_byte_budget_and_a_search_at_its_scan_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let owner = UserId::generate();
    let batch: Vec<NoteRecord> = (0..10)
        .map(|i| NoteRecord {
            content: "é".repeat(1000),
            ..note(&format!("n{i}"), &[])
        })
        .collect();
    store.import_notes(owner, batch.clone()).await.unwrap();
    let weighed = NoteQuery {
        max_bytes: 3000,
        weigh: Weigh {
            exact: |n| n.content.len(),
            bound: |n| n.content.len(),
        },
        ..query(100)
    };
    let (items, next) = store.list_notes(owner, weighed.clone()).await.unwrap();
    assert_eq!(items.len(), 1, "each note weighs 2000 bytes");
    assert_eq!(
        next,
        items.get(0).map(|n| n.id),
        "continues after the last note sent"
    );
    let tiny = NoteQuery {
        max_bytes: 10,
        ..weighed
    };
    assert_eq!(
        store.list_notes(owner, tiny.clone()).await.unwrap().0.len(),
        1,
        "one note always fits"
    );

    let search = NoteQuery {
        q: Some("zzz".into()),
        scan_bytes: 5000,
        ..query(100)
    };
    let (items, next) = store.list_notes(owner, search.clone()).await.unwrap();
    assert!(items.is_empty());
    assert!(next.is_some(), "stopped after three notes' worth of text");
    let cancelled = NoteQuery {
        q: Some("n".into()),
        cancelled: Some(Arc::new(AtomicBool::new(true))),
        ..query(100)
    };
    assert!(
        store
            .list_notes(owner, cancelled.clone())
            .await
            .unwrap()
            .0
            .is_empty(),
        "a cancelled search reads nothing"
    );
}

#[tokio::test]
async fn weighing_by_bounds_first_ends_a_page_where_exact_weights_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let owner = UserId::generate();
    let batch: Vec<NoteRecord> = (0..10)
        .map(|i| NoteRecord {
            content: "x".repeat(100 + i),
            ..note(&format!("n{i}"), &[])
        })
        .collect();
    store.import_notes(owner, batch).await.unwrap();
    for max_bytes in [50, 100, 250, 330, 700, 1000, 1044, 1045, 1046, 5000] {
        let exact = NoteQuery {
            max_bytes,
            weigh: Weigh {
                exact: |n| n.content.len(),
                bound: |n| n.content.len(),
            },
            ..query(100)
        };
        let loose = NoteQuery {
            weigh: Weigh {
                exact: |n| n.content.len(),
                bound: |n| n.content.len() * 7,
            },
            ..exact.clone()
        };
        let page = |(items, next): (NoteList, Option<NoteId>)| {
            (items.iter().map(|n| n.id).collect::<Vec<_>>(), next)
        };
        let (want, got) = (
            page(store.list_notes(owner, exact).await.unwrap()),
            page(store.list_notes(owner, loose).await.unwrap()),
        );
        assert_eq!(got, want, "a budget of {max_bytes} bytes");
    }
}

#[tokio::test]
async fn quotas_hold_on_insert_and_growth_and_deletes_give_room_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let owner = account(&store).await;
    let quota = Quota { notes: 2, bytes: 10 };
    let a = note("aaaa", &[]);
    assert_eq!(
        store.create_note(owner, a.clone(), quota).await.unwrap(),
        Conditional::Done(())
    );
    assert_eq!(
        store.create_note(owner, note("bbbb", &[]), quota).await.unwrap(),
        Conditional::Done(())
    );
    assert_eq!(
        store.create_note(owner, note("c", &[]), quota).await.unwrap(),
        Conditional::OverQuota,
        "a third note"
    );
    let grow = NoteUpdate {
        title: None,
        content: Some("123".into()),
        tags: None,
        expected_version: None,
        now: OffsetDateTime::now_utc(),
    };
    assert_eq!(
        store.update_note(owner, a.id, grow, quota).await.unwrap(),
        Conditional::OverQuota,
        "11 bytes"
    );
    assert_eq!(
        store.note(owner, a.id).await.unwrap().unwrap().version,
        1,
        "unchanged"
    );
    assert_eq!(store.usage(owner).await.unwrap(), (2, 8));
    assert_eq!(
        store.delete_note(owner, a.id, None).await.unwrap(),
        Conditional::Done(())
    );
    assert_eq!(store.usage(owner).await.unwrap(), (1, 4));
    assert_eq!(
        store.create_note(owner, note("c", &[]), quota).await.unwrap(),
        Conditional::Done(())
    );
}

#[tokio::test]
async fn an_email_has_one_account_even_under_concurrent_signups() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let mut racing = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        racing.push(tokio::spawn(async move {
            let user = user("a@x.io");
            let first = session(user.id, false);
            store
                .create_account(user, Some(first), Vec::new(), None, Vec::new())
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for r in racing {
        won += usize::from(r.await.unwrap() == Created::Created);
    }
    assert_eq!(won, 1);
    let counts = store.record_counts().await.unwrap();
    assert_eq!(
        (counts.users, counts.sessions),
        (1, 1),
        "the losers wrote nothing"
    );
    assert_eq!(
        store.user_by_email("a@x.io").await.unwrap().unwrap().email,
        "a@x.io"
    );
}

#[tokio::test]
async fn a_session_is_replaced_only_from_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = session(account(&store).await, false);
    store
        .create_session(first.clone(), Vec::new(), STUB.into(), ev())
        .await
        .unwrap();
    let read = store.session(first.id).await.unwrap().unwrap();
    assert_eq!(read, first);
    let rotated = SessionRecord {
        refresh_hash: [9; 32],
        ..read.clone()
    };
    assert!(
        store
            .replace_session(read.clone(), rotated.clone(), None)
            .await
            .unwrap()
    );
    let stale = SessionRecord {
        refresh_hash: [8; 32],
        ..read
    };
    assert!(
        !store.replace_session(first.clone(), stale, None).await.unwrap(),
        "a second writer from the same read loses"
    );
    assert_eq!(store.session(first.id).await.unwrap().unwrap(), rotated);
    let now = OffsetDateTime::now_utc();
    let owner = first.user_id;
    assert!(
        !store
            .revoke_session(UserId::generate(), first.id, now, ev())
            .await
            .unwrap(),
        "another account cannot end it"
    );
    assert!(store.revoke_session(owner, first.id, now, ev()).await.unwrap());
    assert!(
        !store.revoke_session(owner, first.id, now, ev()).await.unwrap(),
        "once"
    );
    assert_eq!(store.sessions_revoked_since(now).await.unwrap(), vec![first.id]);
    assert!(
        !store
            .revoke_session(owner, SessionId::generate(), now, ev())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_users_live_sessions_are_listed_newest_first_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (owner, other) = (account(&store).await, account(&store).await);
    let mut live = Vec::new();
    for i in 0..5 {
        let s = session(owner, i == 2);
        store
            .create_session(s.clone(), Vec::new(), STUB.into(), ev())
            .await
            .unwrap();
        if i != 2 {
            live.push(s.id);
        }
    }
    store
        .create_session(session(other, false), Vec::new(), STUB.into(), ev())
        .await
        .unwrap();
    live.reverse();
    let now = OffsetDateTime::now_utc();
    let cutoffs = SessionCutoffs {
        revoked_before: now,
        refreshed_before: now - time::Duration::days(1),
        created_before: now - time::Duration::days(1),
    };
    let (first, next) = store.sessions_of(owner, None, 3, cutoffs).await.unwrap();
    assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), live[..3]);
    assert_eq!(first[0].client.as_deref(), Some("192.0.2.0/24"));
    let (rest, end) = store.sessions_of(owner, next, 3, cutoffs).await.unwrap();
    assert_eq!(rest.iter().map(|s| s.id).collect::<Vec<_>>(), live[3..]);
    assert_eq!(end, None);
    let idle = SessionCutoffs {
        refreshed_before: now + time::Duration::days(1),
        ..cutoffs
    };
    let (none, _) = store.sessions_of(owner, None, 10, idle).await.unwrap();
    assert!(none.is_empty(), "expired sessions are not listed");
}

#[tokio::test]
async fn dead_sessions_are_purged_in_batches_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..600u32 {
        store
            .create_session(
                session(account(&store).await, i % 2 == 0),
                Vec::new(),
                STUB.into(),
                ev(),
            )
            .await
            .unwrap();
    }
    let now = OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let long_ago = now - time::Duration::days(365);
    let revoked_only = SessionCutoffs {
        revoked_before: now,
        refreshed_before: long_ago,
        created_before: long_ago,
    };
    assert_eq!(store.purge_sessions(revoked_only).await.unwrap(), 300);
    assert_eq!(store.purge_sessions(revoked_only).await.unwrap(), 0);
    let idle = SessionCutoffs {
        refreshed_before: now,
        ..revoked_only
    };
    assert_eq!(store.purge_sessions(idle).await.unwrap(), 300);
    assert_eq!(store.session_count().await.unwrap(), 0);
}

#[tokio::test]
async fn stale_counters_are_purged_in_batches_and_the_ghost_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let now = OffsetDateTime::now_utc();
    let record = |age_days: i64| BackoffRecord {
        failures: 3,
        last_failure: now - time::Duration::days(age_days),
        until: now,
    };
    let account = CounterOf::Account;
    for i in 0..600 {
        store
            .record_failure(format!("old{i:04}@x.org"), record(2), account, Vec::new())
            .await
            .unwrap();
    }
    store
        .record_failure("fresh@x.org".into(), record(0), account, Vec::new())
        .await
        .unwrap();
    let ghost = CounterOf::Ghost { cap: 2 };
    assert!(
        store
            .record_failure("g1@x.org".into(), record(2), ghost, Vec::new())
            .await
            .unwrap()
    );
    assert!(
        store
            .record_failure("g2@x.org".into(), record(0), ghost, Vec::new())
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_failure("g3@x.org".into(), record(0), ghost, Vec::new())
            .await
            .unwrap(),
        "past the cap"
    );
    assert!(
        store
            .record_failure("g2@x.org".into(), record(0), ghost, Vec::new())
            .await
            .unwrap(),
        "an existing one is updated"
    );
    assert_eq!(
        store.purge_counters(now - time::Duration::days(1)).await.unwrap(),
        601
    );
    assert!(
        store
            .login_counter("fresh@x.org", account)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .login_counter("old0001@x.org", account)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.login_counter("g2@x.org", ghost).await.unwrap().is_some());
    assert!(
        store
            .record_failure("g3@x.org".into(), record(0), ghost, Vec::new())
            .await
            .unwrap(),
        "room again"
    );
    store.clear_failures("fresh@x.org".into()).await.unwrap();
    assert!(
        store
            .login_counter("fresh@x.org", account)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn known_clients_are_bounded_and_keep_the_proven_and_the_recent() {
    use crate::storage::{ADDRESSES_MAX, DEVICES_MAX, KnownKind};
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let user = account(&store).await;
    let start = OffsetDateTime::now_utc();
    let seen = |kind, i: u8, proven| KnownClient {
        kind,
        id: [i; 32],
        last_seen: start + time::Duration::seconds(i64::from(i)),
        proven,
    };
    // The owner's phone came back with its token once...
    store
        .create_session(
            session(user, false),
            vec![seen(KnownKind::Device, 0, true)],
            STUB.into(),
            ev(),
        )
        .await
        .unwrap();
    // ... then a script logs in 60 times without one, from 20 addresses.
    for i in 1..=60u8 {
        let clients = vec![
            seen(KnownKind::Device, i, false),
            seen(KnownKind::Address, 100 + i % 20, false),
        ];
        store
            .create_session(session(user, false), clients, STUB.into(), ev())
            .await
            .unwrap();
    }
    let known = store.known_clients(user).await.unwrap();
    let devices: Vec<_> = known.iter().filter(|k| k.kind == KnownKind::Device).collect();
    assert_eq!(
        (devices.len(), known.len() - devices.len()),
        (DEVICES_MAX, ADDRESSES_MAX)
    );
    assert!(devices.iter().any(|k| k.id == [0; 32]), "the proven phone stays");
    assert!(devices.iter().any(|k| k.id == [60; 32]), "the newest stays");
    assert!(
        !devices.iter().any(|k| k.id == [1; 32]),
        "the oldest unproven goes"
    );
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let owner = user("ａlice@example.com");
    let sealer = Sealer::new(&[3; 32]);
    let options = || Options {
        sealer: Arc::new(Sealer::new(&[3; 32])),
        ..Options::default()
    };
    {
        // As a version 1 file had it, in plain: notes but no usage rows,
        // emails only lower-cased.
        let store = RedbStorage::open(&path, options()).unwrap();
        let txn = store.db().begin_write().unwrap();
        txn.delete_table(tables::SEAL_CHECK).unwrap();
        let row = rows::UserRowV3 {
            id: owner.id.as_u128(),
            email: owner.email.clone(),
            password_hash: owner.password_hash.clone(),
            role: owner.role,
            disabled: false,
            created_at: owner.created_at,
        };
        txn.open_table(tables::USER_TO_RECORD)
            .unwrap()
            .insert(
                owner.id.as_u128(),
                rows::encode(&tables::USER_TO_RECORD, &row).unwrap().as_slice(),
            )
            .unwrap();
        txn.open_table(tables::EMAIL_TO_USER)
            .unwrap()
            .insert(owner.email.as_str(), owner.id.as_u128())
            .unwrap();
        let note = note("abc", &["f"]);
        let row = rows::NoteRowV3 {
            id: note.id.as_u128(),
            title: note.title.clone(),
            content: note.content.clone(),
            tags: note.tags.clone(),
            created_at: note.created_at,
            updated_at: note.updated_at,
            version: note.version,
        };
        txn.open_table(tables::OWNER_NOTE_TO_RECORD)
            .unwrap()
            .insert(
                (owner.id.as_u128(), note.id.as_u128()),
                rows::encode(&tables::OWNER_NOTE_TO_RECORD, &row)
                    .unwrap()
                    .as_slice(),
            )
            .unwrap();
        txn.open_table(tables::OWNER_TAG_NOTE_TO_UNIT)
            .unwrap()
            .insert((owner.id.as_u128(), "f", note.id.as_u128()), ())
            .unwrap();
        txn.commit().unwrap();
        migrations::set_version(&store.db(), 1).unwrap();
    }
    let store = RedbStorage::open(&path, options()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.usage(owner.id).await.unwrap(), (1, 4));
    let found = store
        .user_by_email("alice@example.com")
        .await
        .unwrap()
        .expect("re-keyed");
    assert_eq!((found.id, found.email.as_str()), (owner.id, "alice@example.com"));
    let tagged = NoteQuery {
        tag: Some("f".into()),
        ..NoteQuery::first(10)
    };
    assert_eq!(store.list_notes(owner.id, tagged).await.unwrap().0.len(), 1);
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        !bytes.windows(7).any(|w| w == b"example"),
        "no plain email is left"
    );
    let _ = sealer;
}

#[tokio::test]
async fn a_value_moved_to_another_row_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(&dir.path().join("db"), Options::default()).unwrap();
    let owner = user("a@example.com");
    let other = user("b@example.com");
    for who in [&owner, &other] {
        store
            .create_account(who.clone(), None, Vec::new(), None, Vec::new())
            .await
            .unwrap();
    }
    let (first, second) = (note("first", &[]), note("second", &[]));
    store
        .import_notes(owner.id, vec![first.clone(), second.clone()])
        .await
        .unwrap();
    store
        .import_notes(other.id, vec![note("theirs", &[])])
        .await
        .unwrap();
    // Copy the first note's stored value over the second's, and to the
    // other owner under the same note id.
    let txn = store.db().begin_write().unwrap();
    {
        let mut notes = txn.open_table(tables::OWNER_NOTE_TO_RECORD).unwrap();
        let value = notes
            .get((owner.id.as_u128(), first.id.as_u128()))
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        notes
            .insert((owner.id.as_u128(), second.id.as_u128()), value.as_slice())
            .unwrap();
        notes
            .insert((other.id.as_u128(), first.id.as_u128()), value.as_slice())
            .unwrap();
        // And an account's sealed email and hash onto another account.
        let mut users = txn.open_table(tables::USER_TO_RECORD).unwrap();
        let mut row: rows::UserRow = rows::decode(
            &tables::USER_TO_RECORD,
            users.get(owner.id.as_u128()).unwrap().unwrap().value(),
        )
        .unwrap();
        row.id = other.id.as_u128();
        users
            .insert(
                other.id.as_u128(),
                rows::encode(&tables::USER_TO_RECORD, &row).unwrap().as_slice(),
            )
            .unwrap();
    }
    txn.commit().unwrap();
    assert!(
        store.note(owner.id, first.id).await.unwrap().is_some(),
        "the original opens"
    );
    for (who, id) in [(owner.id, second.id), (other.id, first.id)] {
        let read = store.note(who, id).await;
        assert!(
            matches!(read, Err(StorageError::Corrupt { .. })),
            "a moved value does not open: {read:?}"
        );
    }
    assert!(matches!(
        store.user(other.id).await,
        Err(StorageError::Corrupt { .. })
    ));
    assert!(store.user(owner.id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_key_ring_that_is_not_the_databases_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(RedbStorage::open(&path, Options::default()).unwrap());
    let other = Options {
        sealer: Arc::new(Sealer::new(&[9; 32])),
        ..Options::default()
    };
    assert!(matches!(
        RedbStorage::open(&path, other),
        Err(StorageError::WrongKey)
    ));
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = RedbStorage::open(&path, Options::default()).unwrap();
        migrations::set_version(&store.db(), SCHEMA_VERSION + 1).unwrap();
    }
    let err = RedbStorage::open(&path, Options::default())
        .err()
        .expect("must refuse");
    assert!(matches!(err, StorageError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1));
    assert!(err.to_string().contains("upgrade notesd"));
    let db = redb::Database::open(&path).unwrap();
    assert_eq!(
        migrations::version(&db.begin_read().unwrap()).unwrap(),
        SCHEMA_VERSION + 1
    );
}

#[tokio::test]
async fn a_missing_table_is_created_at_open_even_at_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(RedbStorage::open(&path, Options::default()).unwrap());
    {
        // A version 2 file from before the known-clients table.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(tables::USER_TO_KNOWN_CLIENTS).unwrap());
        txn.commit().unwrap();
    }
    let store = RedbStorage::open(&path, Options::default()).unwrap();
    assert!(store.known_clients(UserId::generate()).await.unwrap().is_empty());
    assert_eq!(store.record_counts().await.unwrap().known_client_lists, 0);
}

#[tokio::test]
async fn ending_other_sessions_keeps_the_callers_and_other_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let (owner, other) = (account(&store).await, account(&store).await);
    let keep = session(owner, false);
    let ended_before = session(owner, true);
    let live: Vec<SessionRecord> = (0..3).map(|_| session(owner, false)).collect();
    let bystander = session(other, false);
    for s in live.iter().chain([&keep, &ended_before, &bystander]) {
        store
            .create_session(s.clone(), Vec::new(), STUB.into(), ev())
            .await
            .unwrap();
    }
    let now = OffsetDateTime::now_utc();
    let mut ended = store
        .end_other_sessions(owner, keep.id, now, ev())
        .await
        .unwrap()
        .unwrap();
    ended.sort();
    let mut expected: Vec<SessionId> = live.iter().map(|s| s.id).collect();
    expected.sort();
    assert_eq!(ended, expected, "only the live ones, not the one already ended");
    for s in &live {
        assert_eq!(store.session(s.id).await.unwrap().unwrap().revoked_at, Some(now));
    }
    assert_eq!(store.session(keep.id).await.unwrap().unwrap().revoked_at, None);
    assert_eq!(
        store.session(bystander.id).await.unwrap().unwrap().revoked_at,
        None
    );
    assert_eq!(
        store.end_other_sessions(owner, keep.id, now, ev()).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(
        store
            .end_other_sessions(owner, live[0].id, now, ev())
            .await
            .unwrap(),
        None,
        "from an ended session: nothing"
    );
    assert_eq!(
        store.end_other_sessions(other, keep.id, now, ev()).await.unwrap(),
        None,
        "with another account's session: nothing"
    );
    assert_eq!(
        store.session(bystander.id).await.unwrap().unwrap().revoked_at,
        None
    );
    assert!(
        store
            .change_password(
                owner,
                "$argon2id$stub".into(),
                "$argon2id$new".into(),
                live[1].id,
                now,
                ev()
            )
            .await
            .unwrap()
            == AccountChange::NotFound,
        "a password change from an ended session changes nothing"
    );
}

fn audit_store(dir: &tempfile::TempDir) -> RedbStorage {
    RedbStorage::open(
        &dir.path().join("audit.redb"),
        Options {
            audit_key: [42; 32],
            ..Options::default()
        },
    )
    .unwrap()
}

async fn store_events(store: &RedbStorage, user: UserId, n: usize, at: OffsetDateTime) {
    use crate::audit::{AuditEvent, AuditKind};
    for i in 0..n {
        let kind = if i % 2 == 0 {
            AuditKind::Login
        } else {
            AuditKind::Refresh
        };
        store
            .append_audit(AuditEvent::new(kind, at).user(user).detail(format!("event {i}")))
            .await
            .unwrap();
    }
}

fn write(store: &RedbStorage, change: impl FnOnce(&redb::WriteTransaction)) {
    let txn = store.db().begin_write().unwrap();
    change(&txn);
    txn.commit().unwrap();
}

#[tokio::test]
async fn the_audit_chain_verifies_and_finds_an_edited_record() {
    use crate::audit::AuditVerdict;
    let dir = tempfile::tempdir().unwrap();
    let store = audit_store(&dir);
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Intact {
            records: 0,
            first: 1,
            last: 0
        }
    );
    store_events(&store, UserId::generate(), 5, OffsetDateTime::now_utc()).await;
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Intact {
            records: 5,
            first: 1,
            last: 5
        }
    );
    write(&store, |txn| audit::tamper(txn, 3, "nothing happened").unwrap());
    assert!(matches!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Broken { seq: 3, .. }
    ));
}

#[tokio::test]
async fn removed_records_break_the_chain_wherever_they_were() {
    use crate::audit::AuditVerdict;
    use tables::SEQ_TO_AUDIT;
    for (removed, broken_at) in [(vec![3], 3), (vec![5], 5), (vec![4, 5], 4), (vec![1], 1)] {
        let dir = tempfile::tempdir().unwrap();
        let store = audit_store(&dir);
        store_events(&store, UserId::generate(), 5, OffsetDateTime::now_utc()).await;
        write(&store, |txn| {
            let mut records = txn.open_table(SEQ_TO_AUDIT).unwrap();
            for seq in &removed {
                records.remove(*seq).unwrap();
            }
        });
        match store.verify_audit().await.unwrap() {
            AuditVerdict::Broken { seq, .. } => assert_eq!(seq, broken_at, "{removed:?}"),
            intact @ AuditVerdict::Intact { .. } => panic!("{removed:?} removed, yet {intact:?}"),
        }
    }
    // The wrong key: nothing verifies.
    let dir = tempfile::tempdir().unwrap();
    store_events(
        &audit_store(&dir),
        UserId::generate(),
        2,
        OffsetDateTime::now_utc(),
    )
    .await;
    let other_key = RedbStorage::open(
        &dir.path().join("audit.redb"),
        Options {
            audit_key: [7; 32],
            ..Options::default()
        },
    )
    .unwrap();
    assert!(matches!(
        other_key.verify_audit().await.unwrap(),
        AuditVerdict::Broken { seq: 0, .. }
    ));
    // The whole log removed (records, index and both ends) is no empty log.
    let dir = tempfile::tempdir().unwrap();
    let store = audit_store(&dir);
    store_events(&store, UserId::generate(), 3, OffsetDateTime::now_utc()).await;
    for keep_genesis in [true, false] {
        write(&store, |txn| {
            txn.open_table(SEQ_TO_AUDIT)
                .unwrap()
                .retain(|_, _| false)
                .unwrap();
            txn.open_table(tables::USER_SEQ_TO_UNIT)
                .unwrap()
                .retain(|_, ()| false)
                .unwrap();
            txn.open_table(tables::AUDIT_ENDS)
                .unwrap()
                .retain(|name, _| keep_genesis && name == "genesis")
                .unwrap();
        });
        assert!(
            matches!(store.verify_audit().await.unwrap(), AuditVerdict::Broken { .. }),
            "wiped, start mark kept: {keep_genesis}"
        );
    }
    // So is a record taken out of its account's index.
    let dir = tempfile::tempdir().unwrap();
    let store = audit_store(&dir);
    let user = UserId::generate();
    store_events(&store, user, 3, OffsetDateTime::now_utc()).await;
    write(&store, |txn| {
        txn.open_table(tables::USER_SEQ_TO_UNIT)
            .unwrap()
            .remove((user.as_u128(), 2))
            .unwrap();
    });
    assert!(matches!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Broken { seq: 2, .. }
    ));
}

#[tokio::test]
async fn retention_purges_the_oldest_and_the_rest_still_verifies() {
    use crate::audit::AuditVerdict;
    let dir = tempfile::tempdir().unwrap();
    let store = audit_store(&dir);
    let now = OffsetDateTime::now_utc();
    let user = UserId::generate();
    store_events(&store, user, 300, now - time::Duration::days(400)).await;
    store_events(&store, user, 3, now).await;
    let gone = store.purge_audit(now - time::Duration::days(365)).await.unwrap();
    assert_eq!(gone, 300, "in batches of {PURGE_BATCH}");
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Intact {
            records: 3,
            first: 301,
            last: 303
        }
    );
    // Cutting more from the start than the retention did is found.
    write(&store, |txn| {
        txn.open_table(tables::SEQ_TO_AUDIT).unwrap().remove(301).unwrap();
    });
    assert!(matches!(
        store.verify_audit().await.unwrap(),
        AuditVerdict::Broken { seq: 301, .. }
    ));
}

#[tokio::test]
async fn audit_pages_filter_by_user_kind_and_time() {
    use crate::audit::{AuditKind, AuditQuery};
    let dir = tempfile::tempdir().unwrap();
    let store = audit_store(&dir);
    let now = OffsetDateTime::now_utc();
    let (alice, bob) = (UserId::generate(), UserId::generate());
    store_events(&store, alice, 4, now - time::Duration::hours(2)).await;
    store_events(&store, bob, 4, now).await;
    store_events(&store, alice, 2, now).await;
    let query = AuditQuery {
        user: Some(alice),
        kinds: Vec::new(),
        since: None,
        until: None,
        before_seq: None,
        limit: 4,
        scan_limit: 1000,
    };
    let (page, next) = store.audit_events(query.clone()).await.unwrap();
    let seqs: Vec<u64> = page.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [10, 9, 4, 3], "alice's, newest first");
    let (rest, end) = store
        .audit_events(AuditQuery {
            before_seq: next,
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(end, None);
    let (logins, _) = store
        .audit_events(AuditQuery {
            user: None,
            kinds: vec![AuditKind::Login],
            limit: 100,
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(logins.iter().map(|r| r.seq).collect::<Vec<_>>(), [9, 7, 5, 3, 1]);
    let (recent, _) = store
        .audit_events(AuditQuery {
            user: None,
            since: Some(now - time::Duration::hours(1)),
            limit: 100,
            ..query
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 6, "the last hour only");
    assert!(
        recent
            .iter()
            .all(|r| r.event.at >= now - time::Duration::hours(1))
    );
}

#[tokio::test]
async fn a_session_opens_only_on_the_account_as_its_login_checked_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let owner = account(&store).await;
    assert!(
        !store
            .create_session(session(owner, false), Vec::new(), "$argon2id$other".into(), ev())
            .await
            .unwrap(),
        "the password changed since the check"
    );
    store
        .set_disabled(owner, true, OffsetDateTime::now_utc(), ev())
        .await
        .unwrap();
    assert!(
        !store
            .create_session(session(owner, false), Vec::new(), STUB.into(), ev())
            .await
            .unwrap(),
        "disabled since the check"
    );
    store
        .delete_account(owner, None, OffsetDateTime::now_utc(), ev())
        .await
        .unwrap();
    assert!(
        !store
            .create_session(session(owner, false), Vec::new(), STUB.into(), ev())
            .await
            .unwrap(),
        "deleted since the check"
    );
    assert_eq!(store.session_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_second_factor_is_sealed_to_its_account_and_each_proof_is_taken_once() {
    use crate::storage::{MfaChange, MfaOutcome, MfaProof, MfaRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(&dir.path().join("db"), Options::default()).unwrap();
    let (owner, other) = (user("a@example.com"), user("b@example.com"));
    for who in [&owner, &other] {
        store
            .create_account(who.clone(), None, Vec::new(), None, Vec::new())
            .await
            .unwrap();
    }
    let secret = vec![7u8; 20];
    let record = MfaRecord {
        user_id: owner.id,
        secret: secret.clone(),
        confirmed: false,
        last_step: 0,
        recovery: Vec::new(),
        enrolled_at: OffsetDateTime::now_utc(),
    };
    let change = |proof: MfaProof, change: MfaChange| store.change_mfa(owner.id, proof, change, Vec::new());
    let step = |step: u64| MfaProof::Step {
        step,
        secret: secret.clone(),
    };
    let wrong_secret = MfaProof::Step {
        step: 5,
        secret: vec![8; 20],
    };
    let codes = vec![[1u8; 32], [2; 32]];
    let recovery = || MfaProof::Recovery([2; 32]);
    let (enrol, confirm) = (MfaChange::Enrol(record), MfaChange::Confirm(codes));
    for (proof, what, expected, why) in [
        (step(5), MfaChange::Use, MfaOutcome::NoFactor, "none yet"),
        (MfaProof::None, enrol.clone(), MfaOutcome::Done, "enrolled"),
        (step(5), MfaChange::Use, MfaOutcome::NoFactor, "pending"),
        (
            wrong_secret,
            confirm.clone(),
            MfaOutcome::Refused,
            "another secret",
        ),
        (step(5), confirm, MfaOutcome::Done, "confirmed"),
        (MfaProof::None, enrol, MfaOutcome::Conflict, "not replaced"),
        (step(5), MfaChange::Use, MfaOutcome::Refused, "step used"),
        (step(4), MfaChange::Use, MfaOutcome::Refused, "older step"),
        (step(6), MfaChange::Use, MfaOutcome::Done, "next step"),
        (recovery(), MfaChange::Use, MfaOutcome::Done, "recovery code"),
        (
            recovery(),
            MfaChange::Use,
            MfaOutcome::Refused,
            "recovery code once",
        ),
    ] {
        assert_eq!(change(proof, what).await.unwrap(), expected, "{why}");
    }
    let stored = store.mfa(owner.id).await.unwrap().unwrap();
    assert!(stored.confirmed && stored.last_step == 6 && stored.recovery == vec![[1u8; 32]]);

    // The owner's row copied under the other account does not open.
    let txn = store.db().begin_write().unwrap();
    {
        let mut table = txn.open_table(tables::USER_TO_MFA).unwrap();
        let value = table.get(owner.id.as_u128()).unwrap().unwrap().value().to_vec();
        table.insert(other.id.as_u128(), value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
    assert!(matches!(
        store.mfa(other.id).await,
        Err(StorageError::Corrupt { .. })
    ));

    // A backup copies it (and refuses to leave any table out).
    let copy = dir.path().join("copy");
    store.snapshot_into(&copy, &mut |_, _| {}).unwrap();
    let copied = RedbStorage::open(&copy, Options::default()).unwrap();
    assert_eq!(copied.mfa(owner.id).await.unwrap(), Some(stored));
    drop(copied);

    // Deleting the account deletes its factor.
    let at = OffsetDateTime::now_utc();
    let gone = crate::audit::AuditEvent::new(crate::audit::AuditKind::AccountDeleted, at).user(owner.id);
    store.delete_account(owner.id, None, at, gone).await.unwrap();
    assert!(store.mfa(owner.id).await.unwrap().is_none());
}
