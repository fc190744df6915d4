//! Notes, keyed by (owner id, note id): every read and write names its owner,
//! so one user's request cannot reach another user's note by construction.
//! The tag index is kept in step with the notes in the same transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{ReadableDatabase, ReadableTable, Table};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    Result, Store, decode, encode, get_record,
    tables::{OWNER_NOTE_TO_RECORD, OWNER_TAG_NOTE_TO_UNIT, OWNER_TO_USAGE},
};
use crate::domain::{NoteId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteRecord {
    pub id: u128,
    pub title: String,
    pub content: String,
    pub tags: Vec<String>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub updated_at: OffsetDateTime,
    /// Starts at 1, grows by one on every change; the ETag.
    pub version: u64,
}

impl NoteRecord {
    pub fn note_id(&self) -> NoteId {
        NoteId::from_u128(self.id)
    }

    /// Bytes of text the note holds, as the byte quota counts them.
    pub fn text_bytes(&self) -> u64 {
        let tags: usize = self.tags.iter().map(String::len).sum();
        (self.title.len() + self.content.len() + tags) as u64
    }
}

/// What one account may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub notes: u64,
    pub bytes: u64,
}

impl Quota {
    pub const UNLIMITED: Quota = Quota {
        notes: u64::MAX,
        bytes: u64::MAX,
    };
}

/// A change to a note, applied only if the version still matches.
pub struct NoteUpdate {
    pub title: Option<String>,
    pub content: Option<String>,
    pub tags: Option<Vec<String>>,
    /// `Some(vs)`: refuse unless the stored version is one of `vs`
    /// (`If-Match`).
    pub expected_version: Option<Vec<u64>>,
    pub now: OffsetDateTime,
}

/// What a conditional write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Conditional<T> {
    Done(T),
    NotFound,
    VersionMismatch,
    /// The write would take the owner past its quota; nothing changed.
    OverQuota,
}

/// One page of a listing, newest first.
pub struct NoteQuery {
    pub limit: usize,
    /// The page ends before the note that would take the summed
    /// `weigh(note)` past this (a page always has at least one note).
    pub max_bytes: usize,
    /// What one note costs on the page (the caller's serialised size).
    pub weigh: fn(&NoteRecord) -> usize,
    /// Continue after this note (exclusive), as returned in `next_cursor`.
    pub after: Option<NoteId>,
    pub tag: Option<String>,
    /// Lower-cased substring to look for in title and content.
    pub q: Option<String>,
    /// With `q`: read at most this many notes, then return what matched so
    /// far with a cursor to continue (a search's cost stays bounded).
    pub scan_limit: usize,
    /// With `q`: also stop once this many bytes of text have been read.
    pub scan_bytes: usize,
    /// Set when the request went away: a search stops at the next note.
    pub cancelled: Option<Arc<AtomicBool>>,
}

type NotesTable<'t> = Table<'t, (u128, u128), &'static [u8]>;
type UsageTable<'t> = Table<'t, u128, (u64, u64)>;

/// Applies a change of `notes` notes and `bytes` bytes to the owner's usage
/// if it stays within `quota` (a change that shrinks usage always does).
fn charge(usage: &mut UsageTable<'_>, owner: u128, notes: i64, bytes: i64, quota: &Quota) -> Result<bool> {
    let (held_notes, held_bytes) = usage.get(owner)?.map_or((0, 0), |v| v.value());
    let notes_after = held_notes.saturating_add_signed(notes);
    let bytes_after = held_bytes.saturating_add_signed(bytes);
    if (notes > 0 && notes_after > quota.notes) || (bytes > 0 && bytes_after > quota.bytes) {
        return Ok(false);
    }
    if notes_after == 0 && bytes_after == 0 {
        usage.remove(owner)?;
    } else {
        usage.insert(owner, (notes_after, bytes_after))?;
    }
    Ok(true)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Schema 1 → 2: counts every owner's notes and bytes.
pub(super) fn count_usage(txn: &redb::WriteTransaction) -> Result<()> {
    let notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
    let mut usage = txn.open_table(OWNER_TO_USAGE)?;
    let mut totals: std::collections::BTreeMap<u128, (u64, u64)> = std::collections::BTreeMap::new();
    for entry in notes.iter()? {
        let (key, value) = entry?;
        let note: NoteRecord = decode("notes", value.value())?;
        let total = totals.entry(key.value().0).or_default();
        total.0 += 1;
        total.1 += note.text_bytes();
    }
    for (owner, total) in totals {
        usage.insert(owner, total)?;
    }
    Ok(())
}
type TagsTable<'t> = Table<'t, (u128, &'static str, u128), ()>;

fn put_note(
    notes: &mut NotesTable<'_>,
    tags: &mut TagsTable<'_>,
    owner: u128,
    note: &NoteRecord,
    old_tags: &[String],
) -> Result<()> {
    let bytes = encode("notes", note)?;
    notes.insert((owner, note.id), bytes.as_slice())?;
    for tag in old_tags.iter().filter(|t| !note.tags.contains(t)) {
        tags.remove((owner, tag.as_str(), note.id))?;
    }
    for tag in note.tags.iter().filter(|t| !old_tags.contains(t)) {
        tags.insert((owner, tag.as_str(), note.id), ())?;
    }
    Ok(())
}

/// `If-Match` semantics: no condition, or the version is one of those listed.
fn version_matches(expected: Option<&[u64]>, version: u64) -> bool {
    expected.is_none_or(|versions| versions.contains(&version))
}

/// Commits a conditional write that happened; abandons one that did not.
fn finish<T>(txn: redb::WriteTransaction, outcome: Conditional<T>) -> Result<Conditional<T>> {
    if matches!(outcome, Conditional::Done(_)) {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(outcome)
}

impl Store {
    /// Stores a new note if the owner's quota has room for it.
    pub fn insert_note(&self, owner: UserId, note: &NoteRecord, quota: &Quota) -> Result<Conditional<()>> {
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut usage = txn.open_table(OWNER_TO_USAGE)?;
            if charge(&mut usage, owner.as_u128(), 1, signed(note.text_bytes()), quota)? {
                let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
                let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
                put_note(&mut notes, &mut tags, owner.as_u128(), note, &[])?;
                Conditional::Done(())
            } else {
                Conditional::OverQuota
            }
        };
        finish(txn, outcome)
    }

    /// Inserts many notes in one transaction (bulk import, benchmarks),
    /// counted in the owner's usage but not held to a quota.
    pub fn insert_notes(&self, owner: UserId, batch: &[NoteRecord]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
            let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
            let mut usage = txn.open_table(OWNER_TO_USAGE)?;
            let bytes: u64 = batch.iter().map(NoteRecord::text_bytes).sum();
            charge(
                &mut usage,
                owner.as_u128(),
                signed(batch.len() as u64),
                signed(bytes),
                &Quota::UNLIMITED,
            )?;
            for note in batch {
                put_note(&mut notes, &mut tags, owner.as_u128(), note, &[])?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Notes and bytes of text the owner holds.
    pub fn usage(&self, owner: UserId) -> Result<(u64, u64)> {
        let txn = self.db.begin_read()?;
        let usage = txn.open_table(OWNER_TO_USAGE)?;
        Ok(usage.get(owner.as_u128())?.map_or((0, 0), |v| v.value()))
    }

    pub fn note(&self, owner: UserId, id: NoteId) -> Result<Option<NoteRecord>> {
        let txn = self.db.begin_read()?;
        let notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
        get_record(&notes, "notes", (owner.as_u128(), id.as_u128()))
    }

    /// Applies `update` to the owner's note if it exists and, when asked,
    /// only if its version still matches.
    pub fn update_note(
        &self,
        owner: UserId,
        id: NoteId,
        update: NoteUpdate,
        quota: &Quota,
    ) -> Result<Conditional<NoteRecord>> {
        let key = (owner.as_u128(), id.as_u128());
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
            let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
            let current: Option<NoteRecord> = get_record(&notes, "notes", key)?;
            match current {
                None => Conditional::NotFound,
                Some(note) if !version_matches(update.expected_version.as_deref(), note.version) => {
                    Conditional::VersionMismatch
                }
                Some(mut note) => {
                    let old_tags = note.tags.clone();
                    let old_bytes = note.text_bytes();
                    if let Some(title) = update.title {
                        note.title = title;
                    }
                    if let Some(content) = update.content {
                        note.content = content;
                    }
                    if let Some(new_tags) = update.tags {
                        note.tags = new_tags;
                    }
                    note.version += 1;
                    note.updated_at = update.now;
                    let grown = signed(note.text_bytes()) - signed(old_bytes);
                    let mut usage = txn.open_table(OWNER_TO_USAGE)?;
                    if charge(&mut usage, key.0, 0, grown, quota)? {
                        put_note(&mut notes, &mut tags, key.0, &note, &old_tags)?;
                        Conditional::Done(note)
                    } else {
                        Conditional::OverQuota
                    }
                }
            }
        };
        finish(txn, outcome)
    }

    pub fn delete_note(
        &self,
        owner: UserId,
        id: NoteId,
        expected_version: Option<Vec<u64>>,
    ) -> Result<Conditional<()>> {
        let key = (owner.as_u128(), id.as_u128());
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
            let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
            let current: Option<NoteRecord> = get_record(&notes, "notes", key)?;
            match current {
                None => Conditional::NotFound,
                Some(note) if !version_matches(expected_version.as_deref(), note.version) => {
                    Conditional::VersionMismatch
                }
                Some(note) => {
                    notes.remove(key)?;
                    for tag in &note.tags {
                        tags.remove((key.0, tag.as_str(), key.1))?;
                    }
                    let mut usage = txn.open_table(OWNER_TO_USAGE)?;
                    charge(
                        &mut usage,
                        key.0,
                        -1,
                        -signed(note.text_bytes()),
                        &Quota::UNLIMITED,
                    )?;
                    Conditional::Done(())
                }
            }
        };
        finish(txn, outcome)
    }

    /// One page of the owner's notes, newest first, and the cursor for the
    /// next page if there is one. Without `q` the cost follows the page size,
    /// not the collection: the scan starts at the cursor and stops after
    /// `limit + 1` matches (the tag filter walks its own index).
    pub fn list_notes(&self, owner: UserId, query: &NoteQuery) -> Result<(Vec<NoteRecord>, Option<NoteId>)> {
        let owner = owner.as_u128();
        let upper = query.after.map_or(u128::MAX, NoteId::as_u128);
        let inclusive = query.after.is_none();
        let txn = self.db.begin_read()?;
        let notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
        let mut page = Page::new(query);

        if let Some(tag) = &query.tag {
            let index = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
            let range = if inclusive {
                index.range((owner, tag.as_str(), 0)..=(owner, tag.as_str(), upper))?
            } else {
                index.range((owner, tag.as_str(), 0)..(owner, tag.as_str(), upper))?
            };
            for entry in range.rev() {
                let (key, _) = entry?;
                let (_, _, note_id) = key.value();
                if let Some(note) = get_record::<_, NoteRecord>(&notes, "notes", (owner, note_id))?
                    && page.offer(note)
                {
                    break;
                }
            }
        } else {
            let range = if inclusive {
                notes.range((owner, 0)..=(owner, upper))?
            } else {
                notes.range((owner, 0)..(owner, upper))?
            };
            for entry in range.rev() {
                let (_, value) = entry?;
                if page.offer(decode("notes", value.value())?) {
                    break;
                }
            }
        }
        Ok(page.finish())
    }
}

/// Collects one page: `limit` matches plus one to know whether more exist,
/// or fewer when the page's byte budget or a search's scan budget runs out
/// first.
struct Page<'q> {
    query: &'q NoteQuery,
    items: Vec<NoteRecord>,
    bytes: usize,
    scanned: usize,
    scanned_bytes: usize,
    last_scanned: Option<NoteId>,
    /// The search budget ran out: continue after the last note read.
    budget_spent: bool,
    /// The byte budget is full: continue after the last note taken.
    full: bool,
    /// Reused for the lower-cased text of each note searched.
    folded: String,
}

impl<'q> Page<'q> {
    fn new(query: &'q NoteQuery) -> Self {
        Self {
            query,
            items: Vec::with_capacity(query.limit.min(128) + 1),
            bytes: 0,
            scanned: 0,
            scanned_bytes: 0,
            last_scanned: None,
            budget_spent: false,
            full: false,
            folded: String::new(),
        }
    }

    /// Takes the next note in order; `true` when the page is complete.
    fn offer(&mut self, note: NoteRecord) -> bool {
        if let Some(q) = &self.query.q {
            if self
                .query
                .cancelled
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                self.budget_spent = true;
                return true;
            }
            self.scanned += 1;
            self.scanned_bytes += note.title.len() + note.content.len();
            self.last_scanned = Some(note.note_id());
            let matches = contains_folded(&note.title, q, &mut self.folded)
                || contains_folded(&note.content, q, &mut self.folded);
            if matches && self.take(note) {
                return true;
            }
            if self.scanned >= self.query.scan_limit || self.scanned_bytes >= self.query.scan_bytes {
                self.budget_spent = true;
                return true;
            }
            return false;
        }
        self.take(note)
    }

    /// Adds a match; `true` when the page is complete.
    fn take(&mut self, note: NoteRecord) -> bool {
        let weight = (self.query.weigh)(&note);
        if !self.items.is_empty() && self.bytes + weight > self.query.max_bytes {
            self.full = true;
            return true;
        }
        self.bytes += weight;
        self.items.push(note);
        self.items.len() > self.query.limit
    }

    fn finish(mut self) -> (Vec<NoteRecord>, Option<NoteId>) {
        if self.items.len() > self.query.limit {
            self.items.truncate(self.query.limit);
            let next = self.items.last().map(NoteRecord::note_id);
            (self.items, next)
        } else if self.full {
            let next = self.items.last().map(NoteRecord::note_id);
            (self.items, next)
        } else if self.budget_spent {
            (self.items, self.last_scanned)
        } else {
            (self.items, None)
        }
    }
}

/// Whether `text`, lower-cased, contains `needle` (already lower-case).
/// `buffer` is reused from note to note so a search allocates once.
fn contains_folded(text: &str, needle: &str, buffer: &mut String) -> bool {
    buffer.clear();
    if text.is_ascii() {
        buffer.push_str(text);
        buffer.make_ascii_lowercase();
    } else {
        buffer.extend(text.chars().flat_map(char::to_lowercase));
    }
    buffer.contains(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(title: &str, tags: &[&str]) -> NoteRecord {
        let now = OffsetDateTime::now_utc();
        NoteRecord {
            id: NoteId::generate().as_u128(),
            title: title.into(),
            content: String::new(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    fn query(limit: usize) -> NoteQuery {
        NoteQuery {
            limit,
            max_bytes: usize::MAX,
            weigh: |_| 1,
            after: None,
            tag: None,
            q: None,
            scan_limit: 1000,
            scan_bytes: usize::MAX,
            cancelled: None,
        }
    }

    #[test]
    fn notes_are_scoped_to_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let n = note("alice's", &["x"]);
        store.insert_note(alice, &n, &Quota::UNLIMITED).unwrap();
        assert!(store.note(bob, n.note_id()).unwrap().is_none());
        assert!(store.list_notes(bob, &query(10)).unwrap().0.is_empty());
        let update = NoteUpdate {
            title: Some("stolen".into()),
            content: None,
            tags: None,
            expected_version: None,
            now: OffsetDateTime::now_utc(),
        };
        assert_eq!(
            store
                .update_note(bob, n.note_id(), update, &Quota::UNLIMITED)
                .unwrap(),
            Conditional::NotFound
        );
        assert_eq!(
            store.delete_note(bob, n.note_id(), None).unwrap(),
            Conditional::NotFound
        );
        assert_eq!(store.note(alice, n.note_id()).unwrap().unwrap().title, "alice's");
    }

    #[test]
    fn tag_index_follows_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let owner = UserId::generate();
        let n = note("t", &["a", "b"]);
        store.insert_note(owner, &n, &Quota::UNLIMITED).unwrap();
        let by_tag = |tag: &str| {
            let q = NoteQuery {
                tag: Some(tag.into()),
                ..query(10)
            };
            store.list_notes(owner, &q).unwrap().0.len()
        };
        assert_eq!((by_tag("a"), by_tag("b"), by_tag("c")), (1, 1, 0));
        let update = NoteUpdate {
            title: None,
            content: None,
            tags: Some(vec!["b".into(), "c".into()]),
            expected_version: Some(vec![1]),
            now: OffsetDateTime::now_utc(),
        };
        assert!(matches!(
            store
                .update_note(owner, n.note_id(), update, &Quota::UNLIMITED)
                .unwrap(),
            Conditional::Done(_)
        ));
        assert_eq!((by_tag("a"), by_tag("b"), by_tag("c")), (0, 1, 1));
        assert_eq!(
            store.delete_note(owner, n.note_id(), Some(vec![1])).unwrap(),
            Conditional::VersionMismatch
        );
        assert_eq!(
            store.delete_note(owner, n.note_id(), Some(vec![3, 2])).unwrap(),
            Conditional::Done(())
        );
        assert_eq!((by_tag("b"), by_tag("c")), (0, 0));
    }

    #[test]
    fn a_search_stops_at_its_scan_budget_and_can_continue() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let owner = UserId::generate();
        let batch: Vec<NoteRecord> = (0..25).map(|i| note(&format!("n{i}"), &[])).collect();
        store.insert_notes(owner, &batch).unwrap();
        let mut q = NoteQuery {
            q: Some("n".into()),
            scan_limit: 10,
            ..query(100)
        };
        let mut seen = 0;
        let mut rounds = 0;
        loop {
            let (items, next) = store.list_notes(owner, &q).unwrap();
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

    #[test]
    fn a_page_ends_at_its_byte_budget_and_a_search_at_its_scan_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let owner = UserId::generate();
        let batch: Vec<NoteRecord> = (0..10)
            .map(|i| NoteRecord {
                content: "é".repeat(1000),
                ..note(&format!("n{i}"), &[])
            })
            .collect();
        store.insert_notes(owner, &batch).unwrap();
        let weighed = NoteQuery {
            max_bytes: 3000,
            weigh: |n| n.content.len(),
            ..query(100)
        };
        let (items, next) = store.list_notes(owner, &weighed).unwrap();
        assert_eq!(items.len(), 1, "each note weighs 2000 bytes");
        assert_eq!(
            next,
            Some(items[0].note_id()),
            "continues after the last note sent"
        );
        let tiny = NoteQuery {
            max_bytes: 10,
            ..weighed
        };
        assert_eq!(
            store.list_notes(owner, &tiny).unwrap().0.len(),
            1,
            "one note always fits"
        );

        let search = NoteQuery {
            q: Some("zzz".into()),
            scan_bytes: 5000,
            ..query(100)
        };
        let (items, next) = store.list_notes(owner, &search).unwrap();
        assert!(items.is_empty());
        assert!(next.is_some(), "stopped after three notes' worth of text");
        let cancelled = NoteQuery {
            q: Some("n".into()),
            cancelled: Some(Arc::new(AtomicBool::new(true))),
            ..query(100)
        };
        assert!(
            store.list_notes(owner, &cancelled).unwrap().0.is_empty(),
            "a cancelled search reads nothing"
        );
    }

    #[test]
    fn quotas_hold_on_insert_and_growth_and_deletes_give_room_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let owner = UserId::generate();
        let quota = Quota { notes: 2, bytes: 10 };
        let a = note("aaaa", &[]);
        assert_eq!(
            store.insert_note(owner, &a, &quota).unwrap(),
            Conditional::Done(())
        );
        assert_eq!(
            store.insert_note(owner, &note("bbbb", &[]), &quota).unwrap(),
            Conditional::Done(())
        );
        assert_eq!(
            store.insert_note(owner, &note("c", &[]), &quota).unwrap(),
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
            store.update_note(owner, a.note_id(), grow, &quota).unwrap(),
            Conditional::OverQuota,
            "11 bytes"
        );
        assert_eq!(
            store.note(owner, a.note_id()).unwrap().unwrap().version,
            1,
            "unchanged"
        );
        assert_eq!(store.usage(owner).unwrap(), (2, 8));
        assert_eq!(
            store.delete_note(owner, a.note_id(), None).unwrap(),
            Conditional::Done(())
        );
        assert_eq!(store.usage(owner).unwrap(), (1, 4));
        assert_eq!(
            store.insert_note(owner, &note("c", &[]), &quota).unwrap(),
            Conditional::Done(())
        );
    }

    #[test]
    fn search_ignores_case_in_any_script() {
        let mut buffer = String::new();
        assert!(contains_folded("Grüße AUS Köln", "köln", &mut buffer));
        assert!(contains_folded("PLAIN ascii", "ascii", &mut buffer));
        assert!(!contains_folded("nothing", "zzz", &mut buffer));
    }
}
