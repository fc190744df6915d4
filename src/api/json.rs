//! Notes as JSON, written by hand into one buffer. A page of 50 notes spent
//! a seventh of its server time in serde_json escaping strings one byte at
//! a time; here text is copied 32 bytes at a time whenever a block holds
//! nothing to escape (almost always), and the buffer is sized for the page
//! up front. The bytes are serde_json's, escapes included: the tests hold
//! the two to each other, and the documents to the schema poem-openapi
//! derives from [`super::notes::Note`].

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::NoteId;
use crate::storage::{NoteList, NoteRecord, NoteView};

/// A time the document cannot hold (RFC 3339 has four-digit years).
#[derive(Debug, thiserror::Error)]
#[error("a note's time cannot be written as RFC 3339: {0}")]
pub struct Unwritable(#[from] time::error::Format);

/// Bytes of a note's JSON beyond its text (id, dates, version, names,
/// punctuation and the comma before it), at most: 204 with nanosecond
/// dates and a 20-digit version. A tag adds its text and 3.
pub const NOTE_FIXED: usize = 204;

/// One note, as `GET /api/v1/notes/{id}` answers it.
pub fn note(note: &NoteRecord) -> Result<Vec<u8>, Unwritable> {
    let fields = Fields {
        id: note.id,
        title: &note.title,
        content: &note.content,
        tags: note.tags.iter().map(String::as_str),
        created_at: note.created_at,
        updated_at: note.updated_at,
        version: note.version,
    };
    let mut out = Vec::with_capacity(fields.plain_weight());
    fields.write(&mut out)?;
    Ok(out)
}

/// A page of notes and the cursor to the next one, as `GET /api/v1/notes`
/// answers it.
pub fn page(notes: &NoteList, next: Option<NoteId>) -> Result<Vec<u8>, Unwritable> {
    let text: usize = notes.iter().map(|n| Fields::of(&n).plain_weight()).sum();
    let mut out = Vec::with_capacity(text + 80);
    out.extend_from_slice(b"{\"items\":[");
    notes_into(&mut out, notes, true)?;
    out.push(b']');
    if let Some(next) = next {
        out.extend_from_slice(b",\"next_cursor\":\"");
        out.extend_from_slice(
            next.0
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        out.push(b'"');
    }
    out.push(b'}');
    Ok(out)
}

/// Appends `notes` to an array being written, a comma before each but the
/// array's `first`.
pub fn notes_into(out: &mut Vec<u8>, notes: &NoteList, first: bool) -> Result<(), Unwritable> {
    for (i, n) in notes.iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        Fields::of(&n).write(out)?;
    }
    Ok(())
}

/// A note's members, from a record or from a page.
struct Fields<'a, Tags> {
    id: NoteId,
    title: &'a str,
    content: &'a str,
    tags: Tags,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    version: u64,
}

impl<'a> Fields<'a, ()> {
    fn of(note: &NoteView<'a>) -> Fields<'a, impl Iterator<Item = &'a str> + Clone + use<'a>> {
        Fields {
            id: note.id,
            title: note.title,
            content: note.content,
            tags: note.tags(),
            created_at: note.created_at,
            updated_at: note.updated_at,
            version: note.version,
        }
    }
}

impl<'a, Tags: Iterator<Item = &'a str> + Clone> Fields<'a, Tags> {
    /// The note's size as JSON when no character needs an escape: the
    /// buffer's first size, grown only by escapes.
    fn plain_weight(&self) -> usize {
        NOTE_FIXED
            + self.title.len()
            + self.content.len()
            + self.tags.clone().map(|t| t.len() + 3).sum::<usize>()
    }

    fn write(self, out: &mut Vec<u8>) -> Result<(), Unwritable> {
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(
            self.id
                .0
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"title\":");
        string(out, self.title);
        out.extend_from_slice(b",\"content\":");
        string(out, self.content);
        out.extend_from_slice(b",\"tags\":[");
        for (i, tag) in self.tags.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, tag);
        }
        out.extend_from_slice(b"],\"created_at\":\"");
        rfc3339(out, self.created_at)?;
        out.extend_from_slice(b"\",\"updated_at\":\"");
        rfc3339(out, self.updated_at)?;
        out.extend_from_slice(b"\",\"version\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.version).as_bytes());
        out.push(b'}');
        Ok(())
    }
}

/// "00" to "99".
const TWO_DIGITS: [[u8; 2]; 100] = {
    let (mut table, mut digits, mut i) = ([[0; 2]; 100], *b"00", 0);
    while i < 100 {
        table[i] = digits;
        digits[1] += 1;
        if digits[1] > b'9' {
            digits = [digits[0] + 1, b'0'];
        }
        i += 1;
    }
    table
};

/// Appends `at` as RFC 3339, as `time` writes it (`2026-12-02T13:21:05.5Z`:
/// the fraction without trailing zeros, none when zero). A UTC time of a
/// four-digit year, which every stored time is, is written here in one
/// step; `time` spent a list page's 3 % writing it piece by piece. Any
/// other goes to `time`, which refuses what RFC 3339 cannot hold.
fn rfc3339(out: &mut Vec<u8>, at: OffsetDateTime) -> Result<(), Unwritable> {
    let (year, month, day) = at.to_calendar_date();
    let (Ok(year @ 0..=9999), true) = (u16::try_from(year), at.offset().is_utc()) else {
        at.format_into(out, &Rfc3339)?;
        return Ok(());
    };
    let (hour, minute, second, nanos) = at.to_hms_nano();
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    let mut two = |pos: usize, n: u32| text[pos..pos + 2].copy_from_slice(&TWO_DIGITS[n as usize % 100]);
    two(0, u32::from(year) / 100);
    two(2, u32::from(year));
    two(5, u8::from(month).into());
    two(8, day.into());
    two(11, hour.into());
    two(14, minute.into());
    two(17, second.into());
    two(20, nanos / 10_000_000);
    two(22, nanos / 100_000);
    two(24, nanos / 1_000);
    two(26, nanos / 10);
    text[28] = TWO_DIGITS[nanos as usize % 10][1];
    let end = if nanos == 0 {
        19
    } else {
        // The fraction's trailing zeros are left out (it has a non-zero digit).
        let mut end = 29;
        while text[end - 1] == b'0' {
            end -= 1;
        }
        end
    };
    out.extend_from_slice(&text[..end]);
    out.push(b'Z');
    Ok(())
}

/// Appends `s` as a JSON string, quoted and escaped as serde_json escapes:
/// `\"`, `\\`, the short control escapes, `\u00xx` for other control
/// characters, everything else as it is.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let (blocks, rest) = s.as_bytes().as_chunks::<32>();
    for block in blocks {
        copy_escaped(out, block);
    }
    copy_escaped(out, rest);
    out.push(b'"');
}

/// Copies `bytes` whole when none needs an escape (checked with no branch
/// per byte, which the compiler turns into vector instructions), else byte
/// by byte. Escapes are ASCII, so a block may split a character safely.
#[inline]
fn copy_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.iter().fold(0u8, |any, &b| any | needs_escape(b)) == 0 {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..0x20 => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 1 when `b` needs an escape, else 0: a number, so that a block's test
/// has no branch.
#[inline]
fn needs_escape(b: u8) -> u8 {
    u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\')
}

/// Bytes `s` takes as a JSON string body (without the quotes), as
/// [`string`] writes it: 2 for `\"`, `\\` and the short control escapes, 6
/// for other control characters (`\u0001`). Counted 32 bytes at a time with
/// no branch: about five times as fast as a `match` per byte.
pub fn escaped_len(s: &str) -> usize {
    let (blocks, rest) = s.as_bytes().as_chunks::<32>();
    // At most 5 a byte: a block's sum fits in a `u8`.
    let in_blocks: usize = blocks
        .iter()
        .map(|block| usize::from(block.iter().fold(0u8, |sum, &b| sum + escape_extra(b))))
        .sum();
    let in_rest: usize = rest.iter().map(|&b| usize::from(escape_extra(b))).sum();
    s.len() + in_blocks + in_rest
}

/// Bytes the escape of `b` adds: 1 for `\"`, `\\` and the short control
/// escapes, 5 for other control characters.
#[inline]
fn escape_extra(b: u8) -> u8 {
    let quote = u8::from(b == b'"' || b == b'\\');
    let control = u8::from(b < 0x20);
    let short = u8::from(b == b'\n' || b == b'\r' || b == b'\t' || b == 0x08 || b == 0x0c);
    quote + control * 5 - short * 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem_openapi::types::ToJSON;
    use time::OffsetDateTime;

    fn texts() -> Vec<String> {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        vec![
            String::new(),
            "plain".into(),
            "a \"quoted\" \\ line\nand\ttabs\r\u{8}\u{c}".into(),
            every_ascii.clone(),
            every_ascii.repeat(3),
            "\u{1}\u{1f}\u{7f} é ☃ 🦀 \u{2028}".into(),
            "\u{1}".repeat(100),
            "\"\n".repeat(100),
            // A character across each block boundary.
            "é".repeat(40),
            format!("{}\"{}", "x".repeat(31), "é".repeat(20)),
            "Some text of a typical short note, a few lines long. ".repeat(4),
        ]
    }

    #[test]
    fn strings_are_written_and_counted_as_serde_json_writes_them() {
        for text in texts() {
            let want = serde_json::to_string(&text).unwrap();
            let mut ours = Vec::new();
            string(&mut ours, &text);
            assert_eq!(String::from_utf8(ours).unwrap(), want);
            assert_eq!(escaped_len(&text), want.len() - 2, "{want}");
        }
    }

    /// Each character that needs an escape (and some that do not), at
    /// every place in and around the 32-byte blocks.
    #[test]
    fn an_escape_is_written_wherever_it_falls_in_a_block() {
        for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", "\u{7f}", "é", "🦀", " "] {
            for at in 0..100 {
                let text = format!("{}{special}{}", "a".repeat(at), "b".repeat(100 - at));
                let mut ours = Vec::new();
                string(&mut ours, &text);
                let want = serde_json::to_string(&text).unwrap();
                assert_eq!(String::from_utf8(ours).unwrap(), want);
                assert_eq!(escaped_len(&text), want.len() - 2);
            }
        }
    }

    fn record(title: &str, content: &str, tags: &[&str], at: OffsetDateTime, version: u64) -> NoteRecord {
        NoteRecord::sample(title, content, tags, at, version)
    }

    fn listed(notes: &[NoteRecord]) -> NoteList {
        let mut list = NoteList::default();
        for n in notes {
            list.push(n);
        }
        list
    }

    fn records() -> Vec<NoteRecord> {
        let texts = texts();
        let far = time::macros::datetime!(9999-12-31 23:59:59.876_543_210 UTC);
        vec![
            record("Groceries", "oat milk", &["home"], OffsetDateTime::UNIX_EPOCH, 1),
            record(&texts[2], &texts[3], &[], OffsetDateTime::now_utc(), u64::MAX),
            record(&texts[5], &texts[10], &["a", "b-c", "d_9"], far, 42),
        ]
    }

    /// Each note's document is the one poem-openapi writes from [`Note`]
    /// (its schema's source), member for member.
    #[test]
    fn notes_and_pages_are_what_the_schema_describes() {
        use super::super::notes::{Note, NotePage};
        let to_api = |n: &NoteRecord| Note {
            id: n.id.0,
            title: n.title.clone(),
            content: n.content.clone(),
            tags: n.tags.clone(),
            created_at: n.created_at,
            updated_at: n.updated_at,
            version: n.version,
        };
        for n in records() {
            let ours: serde_json::Value = serde_json::from_slice(&note(&n).unwrap()).unwrap();
            assert_eq!(Some(ours), to_api(&n).to_json());
        }
        let notes = records();
        let list = listed(&notes);
        for next in [None, Some(notes[2].id)] {
            let want = NotePage {
                items: notes.iter().map(to_api).collect(),
                next_cursor: next.map(|id| id.to_string()),
            };
            let ours: serde_json::Value = serde_json::from_slice(&page(&list, next).unwrap()).unwrap();
            assert_eq!(Some(ours), want.to_json());
        }
        assert_eq!(page(&NoteList::default(), None).unwrap(), b"{\"items\":[]}");
    }

    #[test]
    fn a_page_is_written_without_growing_its_buffer_when_nothing_is_escaped() {
        let notes: Vec<NoteRecord> = (0..50)
            .map(|i| {
                let far = time::macros::datetime!(9999-12-31 23:59:59.876_543_210 UTC);
                record(&format!("Note {i}"), &texts()[10], &["t1", "t2"], far, u64::MAX)
            })
            .collect();
        let list = listed(&notes);
        let first = list.iter().map(|n| Fields::of(&n).plain_weight()).sum::<usize>() + 80;
        let written = page(&list, Some(notes[49].id)).unwrap();
        assert!(written.len() <= first, "{} > {first}", written.len());
        assert!(
            first - written.len() < first / 100,
            "sized to the page, not above it"
        );
    }

    #[test]
    fn times_are_written_as_time_writes_them() {
        use time::macros::{datetime, offset};
        let mut times = vec![
            datetime!(0000-01-01 0:00 UTC),
            datetime!(9999-12-31 23:59:59.999_999_999 UTC),
            datetime!(2024-02-29 12:00:00.5 UTC),
            datetime!(2026-12-02 13:21:05.000_000_001 UTC),
            datetime!(2026-12-02 13:21:05.100 UTC),
            // Not UTC, or before year 0: as `time` does (an error for the latter).
            datetime!(2026-12-02 13:21:05.25 +05:30),
            datetime!(2026-12-02 13:21:05 UTC).to_offset(offset!(-08:00)),
            datetime!(-0001-12-31 23:59:59 UTC),
        ];
        // Every fraction length, and times spread over the four-digit years.
        let mut nanos = 1u32;
        while nanos < 1_000_000_000 {
            times.push(
                datetime!(2026-01-31 23:59:59 UTC)
                    .replace_nanosecond(nanos)
                    .unwrap(),
            );
            nanos *= 10;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let seconds = i64::try_from(state >> 16).unwrap() % 253_402_300_800 - 62_167_219_200;
            let nanos = i128::from(state % 3) * i128::from(state % 1_000_000_000);
            times.push(
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(seconds) * 1_000_000_000 + nanos)
                    .unwrap(),
            );
        }
        for at in times {
            let mut ours = Vec::new();
            match (rfc3339(&mut ours, at), at.format(&Rfc3339)) {
                (Ok(()), Ok(want)) => assert_eq!(String::from_utf8(ours).unwrap(), want),
                (Err(_), Err(_)) => {}
                (ours, want) => panic!("{at}: {ours:?} against {want:?}"),
            }
        }
    }

    #[test]
    fn a_time_rfc3339_cannot_hold_is_an_error_not_a_document() {
        let n = record("t", "c", &[], time::macros::datetime!(-0001-01-01 0:00 UTC), 1);
        assert!(note(&n).is_err());
        assert!(page(&listed(std::slice::from_ref(&n)), None).is_err());
    }
}
