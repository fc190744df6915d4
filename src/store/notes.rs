//! Notes, keyed by (owner id, note id): every read and write names its owner,
//! so one user's request cannot reach another user's note by construction.
//! The tag index is kept in step with the notes in the same transaction.

use redb::{ReadableDatabase, Table};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    Result, Store, decode, encode, get_record,
    tables::{OWNER_NOTE_TO_RECORD, OWNER_TAG_NOTE_TO_UNIT},
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
}

/// One page of a listing, newest first.
pub struct NoteQuery {
    pub limit: usize,
    /// Continue after this note (exclusive), as returned in `next_cursor`.
    pub after: Option<NoteId>,
    pub tag: Option<String>,
    /// Lower-cased substring to look for in title and content.
    pub q: Option<String>,
    /// With `q`: read at most this many notes, then return what matched so
    /// far with a cursor to continue (a search's cost stays bounded).
    pub scan_limit: usize,
}

type NotesTable<'t> = Table<'t, (u128, u128), &'static [u8]>;
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
    pub fn insert_note(&self, owner: UserId, note: &NoteRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
            let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
            put_note(&mut notes, &mut tags, owner.as_u128(), note, &[])?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Inserts many notes in one transaction (bulk import, benchmarks).
    pub fn insert_notes(&self, owner: UserId, batch: &[NoteRecord]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
            let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
            for note in batch {
                put_note(&mut notes, &mut tags, owner.as_u128(), note, &[])?;
            }
        }
        txn.commit()?;
        Ok(())
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
                    put_note(&mut notes, &mut tags, key.0, &note, &old_tags)?;
                    Conditional::Done(note)
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
/// or fewer when a search's scan budget runs out first.
struct Page<'q> {
    query: &'q NoteQuery,
    items: Vec<NoteRecord>,
    scanned: usize,
    last_scanned: Option<NoteId>,
    budget_spent: bool,
}

impl<'q> Page<'q> {
    fn new(query: &'q NoteQuery) -> Self {
        Self {
            query,
            items: Vec::with_capacity(query.limit + 1),
            scanned: 0,
            last_scanned: None,
            budget_spent: false,
        }
    }

    /// Takes the next note in order; `true` when the page is complete.
    fn offer(&mut self, note: NoteRecord) -> bool {
        self.scanned += 1;
        self.last_scanned = Some(note.note_id());
        let matches = match &self.query.q {
            Some(q) => note.title.to_lowercase().contains(q) || note.content.to_lowercase().contains(q),
            None => true,
        };
        if matches {
            self.items.push(note);
            if self.items.len() > self.query.limit {
                return true;
            }
        }
        if self.query.q.is_some() && self.scanned >= self.query.scan_limit {
            self.budget_spent = true;
            return true;
        }
        false
    }

    fn finish(mut self) -> (Vec<NoteRecord>, Option<NoteId>) {
        if self.items.len() > self.query.limit {
            self.items.truncate(self.query.limit);
            let next = self.items.last().map(NoteRecord::note_id);
            (self.items, next)
        } else if self.budget_spent {
            (self.items, self.last_scanned)
        } else {
            (self.items, None)
        }
    }
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
            after: None,
            tag: None,
            q: None,
            scan_limit: 1000,
        }
    }

    #[test]
    fn notes_are_scoped_to_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let n = note("alice's", &["x"]);
        store.insert_note(alice, &n).unwrap();
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
            store.update_note(bob, n.note_id(), update).unwrap(),
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
        store.insert_note(owner, &n).unwrap();
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
            store.update_note(owner, n.note_id(), update).unwrap(),
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
}
