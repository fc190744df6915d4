//! Notes, keyed by (owner id, note id): every read and write names its owner,
//! so one user's request cannot reach another user's note by construction.
//! The tag index and the owner's usage are kept in step with the notes in
//! the same transaction.

use std::sync::atomic::Ordering;

use redb::{ReadTransaction, ReadableTable, Table, WriteTransaction};

use super::rows::{NoteRow, NoteRowV3, NoteRowView, decode, decode_borrowed};
use super::tables::{OWNER_NOTE_TO_RECORD, OWNER_TAG_NOTE_TO_UNIT, OWNER_TO_USAGE, USER_TO_RECORD};
use crate::domain::{NoteId, UserId};
use crate::seal::{Opener, Sealer};
use crate::storage::{Conditional, NoteList, NotePage, NoteQuery, NoteRecord, NoteUpdate, Quota, Result};

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
pub fn count_usage(txn: &WriteTransaction) -> Result<usize> {
    let notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
    let mut usage = txn.open_table(OWNER_TO_USAGE)?;
    let mut totals: std::collections::BTreeMap<u128, (u64, u64)> = std::collections::BTreeMap::new();
    for entry in notes.iter()? {
        let (key, value) = entry?;
        let note: NoteRecord = decode::<NoteRowV3>(&OWNER_NOTE_TO_RECORD, value.value())?.into();
        let total = totals.entry(key.value().0).or_default();
        total.0 += 1;
        total.1 += note.text_bytes();
    }
    let owners = totals.len();
    for (owner, total) in totals {
        usage.insert(owner, total)?;
    }
    Ok(owners)
}
type TagsTable<'t> = Table<'t, (u128, &'static str, u128), ()>;

fn put_note(
    notes: &mut NotesTable<'_>,
    tags: &mut TagsTable<'_>,
    owner: u128,
    note: &NoteRecord,
    old_tags: &[String],
    sealer: &Sealer,
) -> Result<()> {
    let id = note.id.as_u128();
    let bytes = NoteRow::seal(note, owner, sealer)?;
    notes.insert((owner, id), bytes.as_slice())?;
    for tag in old_tags.iter().filter(|t| !note.tags.contains(t)) {
        tags.remove((owner, sealer.tag_index(owner, tag).as_str(), id))?;
    }
    for tag in note.tags.iter().filter(|t| !old_tags.contains(t)) {
        tags.insert((owner, sealer.tag_index(owner, tag).as_str(), id), ())?;
    }
    Ok(())
}

/// A new note, sealed and its tags indexed before it reaches the writer,
/// so the one writer thread spends no time on cryptography for it.
pub struct Prepared {
    id: u128,
    row: Vec<u8>,
    blind_tags: Vec<String>,
    text_bytes: u64,
}

impl Prepared {
    pub fn new(owner: u128, note: &NoteRecord, sealer: &Sealer) -> Result<Self> {
        Ok(Self {
            id: note.id.as_u128(),
            row: NoteRow::seal(note, owner, sealer)?,
            blind_tags: note.tags.iter().map(|t| sealer.tag_index(owner, t)).collect(),
            text_bytes: note.text_bytes(),
        })
    }

    fn put(&self, notes: &mut NotesTable<'_>, tags: &mut TagsTable<'_>, owner: u128) -> Result<()> {
        notes.insert((owner, self.id), self.row.as_slice())?;
        for tag in &self.blind_tags {
            tags.insert((owner, tag.as_str(), self.id), ())?;
        }
        Ok(())
    }
}

/// Reads and opens one of the opener's owner's notes, decrypting into
/// `plain`.
fn read_note(
    notes: &impl ReadableTable<(u128, u128), &'static [u8]>,
    owner: &Opener,
    id: u128,
    plain: &mut Vec<u8>,
) -> Result<Option<NoteRecord>> {
    match notes.get((owner.owner(), id))? {
        Some(guard) => decode_borrowed::<NoteRowView<'_>>(&OWNER_NOTE_TO_RECORD, guard.value())?
            .open(id, owner, plain)
            .map(Some),
        None => Ok(None),
    }
}

/// `If-Match` semantics: no condition, or the version is one of those listed.
fn version_matches(expected: Option<&[u64]>, version: u64) -> bool {
    expected.is_none_or(|versions| versions.contains(&version))
}

/// Stores a new note if the owner's account exists and its quota has room
/// for it.
pub fn create(
    txn: &WriteTransaction,
    owner: UserId,
    note: &Prepared,
    quota: &Quota,
) -> Result<Conditional<()>> {
    // Deleted while the request ran: its notes went with it, and so must
    // this one.
    if txn.open_table(USER_TO_RECORD)?.get(owner.as_u128())?.is_none() {
        return Ok(Conditional::NotFound);
    }
    let mut usage = txn.open_table(OWNER_TO_USAGE)?;
    if !charge(&mut usage, owner.as_u128(), 1, signed(note.text_bytes), quota)? {
        return Ok(Conditional::OverQuota);
    }
    let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
    let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
    note.put(&mut notes, &mut tags, owner.as_u128())?;
    Ok(Conditional::Done(()))
}

/// Stores many notes, counted in the owner's usage but held to no quota.
pub fn import(txn: &WriteTransaction, owner: UserId, batch: &[Prepared]) -> Result<()> {
    let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
    let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
    let mut usage = txn.open_table(OWNER_TO_USAGE)?;
    let bytes: u64 = batch.iter().map(|n| n.text_bytes).sum();
    charge(
        &mut usage,
        owner.as_u128(),
        signed(batch.len() as u64),
        signed(bytes),
        &Quota::UNLIMITED,
    )?;
    for note in batch {
        note.put(&mut notes, &mut tags, owner.as_u128())?;
    }
    Ok(())
}

pub fn usage(txn: &ReadTransaction, owner: UserId) -> Result<(u64, u64)> {
    let usage = txn.open_table(OWNER_TO_USAGE)?;
    Ok(usage.get(owner.as_u128())?.map_or((0, 0), |v| v.value()))
}

pub fn get(txn: &ReadTransaction, owner: UserId, id: NoteId, sealer: &Sealer) -> Result<Option<NoteRecord>> {
    let notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
    read_note(
        &notes,
        &sealer.opener(owner.as_u128()),
        id.as_u128(),
        &mut Vec::new(),
    )
}

/// Applies `update` to the owner's note if it exists and, when asked, only
/// if its version still matches.
pub fn update(
    txn: &WriteTransaction,
    owner: UserId,
    id: NoteId,
    update: &NoteUpdate,
    quota: &Quota,
    sealer: &Sealer,
) -> Result<Conditional<NoteRecord>> {
    let key = (owner.as_u128(), id.as_u128());
    let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
    let Some(mut note) = read_note(&notes, &sealer.opener(key.0), key.1, &mut Vec::new())? else {
        return Ok(Conditional::NotFound);
    };
    if !version_matches(update.expected_version.as_deref(), note.version) {
        return Ok(Conditional::VersionMismatch);
    }
    let old_tags = note.tags.clone();
    let old_bytes = note.text_bytes();
    if let Some(title) = &update.title {
        title.clone_into(&mut note.title);
    }
    if let Some(content) = &update.content {
        content.clone_into(&mut note.content);
    }
    if let Some(new_tags) = &update.tags {
        new_tags.clone_into(&mut note.tags);
    }
    note.version += 1;
    note.updated_at = update.now;
    let grown = signed(note.text_bytes()) - signed(old_bytes);
    let mut usage = txn.open_table(OWNER_TO_USAGE)?;
    if !charge(&mut usage, key.0, 0, grown, quota)? {
        return Ok(Conditional::OverQuota);
    }
    let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
    put_note(&mut notes, &mut tags, key.0, &note, &old_tags, sealer)?;
    Ok(Conditional::Done(note))
}

pub fn delete(
    txn: &WriteTransaction,
    owner: UserId,
    id: NoteId,
    expected_version: Option<&[u64]>,
    sealer: &Sealer,
) -> Result<Conditional<()>> {
    let key = (owner.as_u128(), id.as_u128());
    let mut notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
    let Some(note) = read_note(&notes, &sealer.opener(key.0), key.1, &mut Vec::new())? else {
        return Ok(Conditional::NotFound);
    };
    if !version_matches(expected_version, note.version) {
        return Ok(Conditional::VersionMismatch);
    }
    notes.remove(key)?;
    let mut tags = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
    for tag in &note.tags {
        tags.remove((key.0, sealer.tag_index(key.0, tag).as_str(), key.1))?;
    }
    let mut usage = txn.open_table(OWNER_TO_USAGE)?;
    charge(
        &mut usage,
        key.0,
        -1,
        -signed(note.text_bytes()),
        &Quota::UNLIMITED,
    )?;
    Ok(Conditional::Done(()))
}

/// One page of the owner's notes, newest first, and the cursor for the
/// next page if there is one. Without `q` the cost follows the page size,
/// not the collection: the scan starts at the cursor and stops after
/// `limit + 1` matches (the tag filter walks its own index).
pub fn list(txn: &ReadTransaction, owner: UserId, query: &NoteQuery, sealer: &Sealer) -> Result<NotePage> {
    let owner = owner.as_u128();
    let upper = query.after.map_or(u128::MAX, NoteId::as_u128);
    let inclusive = query.after.is_none();
    let notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
    let mut page = Page::new(query);
    let opener = sealer.opener(owner);
    let mut plain = Vec::new();

    if let Some(tag) = &query.tag {
        let index = txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
        let blind = sealer.tag_index(owner, tag);
        let range = if inclusive {
            index.range((owner, blind.as_str(), 0)..=(owner, blind.as_str(), upper))?
        } else {
            index.range((owner, blind.as_str(), 0)..(owner, blind.as_str(), upper))?
        };
        for entry in range.rev() {
            let (key, _) = entry?;
            let (_, _, note_id) = key.value();
            let Some(row) = notes.get((owner, note_id))? else {
                continue;
            };
            decode_borrowed::<NoteRowView<'_>>(&OWNER_NOTE_TO_RECORD, row.value())?.open_into(
                note_id,
                &opener,
                &mut plain,
                &mut page.items,
            )?;
            // The opened tags confirm the index (two tags could share a
            // blind index, if only in theory).
            if !page.items.last().is_some_and(|n| n.tags().any(|t| t == tag)) {
                page.items.pop();
                continue;
            }
            if page.offer() {
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
            let (key, value) = entry?;
            decode_borrowed::<NoteRowView<'_>>(&OWNER_NOTE_TO_RECORD, value.value())?.open_into(
                key.value().1,
                &opener,
                &mut plain,
                &mut page.items,
            )?;
            if page.offer() {
                break;
            }
        }
    }
    Ok(page.finish())
}

/// Collects one page: `limit` matches plus one to know whether more exist,
/// or fewer when the page's byte budget or a search's scan budget runs out
/// first. Each note read is added to `items` first, then judged, and
/// removed again if it is not kept.
struct Page<'q> {
    query: &'q NoteQuery,
    items: NoteList,
    bytes: usize,
    scanned: usize,
    scanned_bytes: usize,
    last_scanned: Option<NoteId>,
    /// The search budget ran out: continue after the last note read.
    budget_spent: bool,
    /// The byte budget is full: continue after the last note taken.
    full: bool,
    /// `bytes` sums exact weights, not bounds.
    exact: bool,
    /// Reused for the lower-cased text of each note searched.
    folded: String,
}

/// Text reserved for a page once its first note is read: that note's
/// text times the page's size, up to this.
const PAGE_TEXT_RESERVE: usize = 64 * 1024;

impl<'q> Page<'q> {
    fn new(query: &'q NoteQuery) -> Self {
        Self {
            query,
            items: NoteList::with_capacity(query.limit.min(128) + 1),
            bytes: 0,
            scanned: 0,
            scanned_bytes: 0,
            last_scanned: None,
            budget_spent: false,
            full: false,
            exact: false,
            folded: String::new(),
        }
    }

    /// Judges the note just added, the next in order; `true` when the page
    /// is complete.
    fn offer(&mut self) -> bool {
        let Some(note) = self.items.last() else {
            return false;
        };
        if let Some(q) = &self.query.q {
            if self
                .query
                .cancelled
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                self.items.pop();
                self.budget_spent = true;
                return true;
            }
            self.scanned += 1;
            self.scanned_bytes += note.title.len() + note.content.len();
            self.last_scanned = Some(note.id);
            let matches = contains_folded(note.title, q, &mut self.folded)
                || contains_folded(note.content, q, &mut self.folded);
            if matches {
                if self.take() {
                    return true;
                }
            } else {
                self.items.pop();
            }
            if self.scanned >= self.query.scan_limit || self.scanned_bytes >= self.query.scan_bytes {
                self.budget_spent = true;
                return true;
            }
            return false;
        }
        self.take()
    }

    /// Keeps the note just added if the page has room for it; `true` when
    /// the page is complete.
    /// Each note is weighed by its bound while the bounds fit, exactly
    /// from the first that would not (those taken are then weighed again,
    /// exactly): the same page as exact weights throughout, which cost a
    /// pass over every byte of every note.
    fn take(&mut self) -> bool {
        let weigh = self.query.weigh;
        let Some(note) = self.items.last() else {
            return false;
        };
        let taken = self.items.len() - 1;
        let mut weight = (weigh.bound)(&note);
        if !self.exact && self.bytes.saturating_add(weight) > self.query.max_bytes {
            self.bytes = self.items.iter().take(taken).map(|n| (weigh.exact)(&n)).sum();
            self.exact = true;
        }
        if self.exact {
            weight = (weigh.exact)(&note);
        }
        if taken > 0 && self.bytes + weight > self.query.max_bytes {
            self.items.pop();
            self.full = true;
            return true;
        }
        if taken == 0 && self.query.limit > 1 {
            let text = note.title.len() + note.content.len() + note.tags().map(str::len).sum::<usize>();
            self.items
                .reserve_text(text.saturating_mul(self.query.limit).min(PAGE_TEXT_RESERVE));
        }
        self.bytes += weight;
        self.items.len() > self.query.limit
    }

    fn finish(mut self) -> NotePage {
        if self.items.len() > self.query.limit {
            self.items.truncate(self.query.limit);
            let next = self.items.last().map(|n| n.id);
            (self.items, next)
        } else if self.full {
            let next = self.items.last().map(|n| n.id);
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
    use super::contains_folded;

    #[test]
    fn search_ignores_case_in_any_script() {
        let mut buffer = String::new();
        assert!(contains_folded("Grüße AUS Köln", "köln", &mut buffer));
        assert!(contains_folded("PLAIN ascii", "ascii", &mut buffer));
        assert!(!contains_folded("nothing", "zzz", &mut buffer));
    }
}
