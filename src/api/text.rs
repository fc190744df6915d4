//! A strict JSON string for request bodies. poem-openapi's `String` also
//! accepts numbers and booleans (turning `5` into `"5"`); a client that
//! sends the wrong type has a bug we should report, naming the field.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type};
use serde_json::Value;

use crate::domain::{TAG_MAX, TAGS_MAX};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Text(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A request's tag list: an array of at most [`TAGS_MAX`] strings.
///
/// Its size is checked before anything looks at an element. poem-openapi's
/// own validators ran the per-element `pattern` (compiling the regex for
/// each of them) before `maxItems`: 250 000 tags in a 1 MB body cost 7.7 s
/// of CPU on an async worker before the answer was a 400. The schema still
/// shows every rule; [`crate::domain::Tags`] applies them to the (at most
/// 20) elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList(pub Vec<String>);

impl Type for TagList {
    const IS_REQUIRED: bool = true;
    type RawValueType = Vec<String>;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "array_string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut tag = MetaSchema::new("string");
        tag.min_length = Some(1);
        tag.max_length = Some(TAG_MAX);
        tag.pattern = Some(TAG_PATTERN.to_owned());
        let mut list = MetaSchema::new("array");
        list.items = Some(Box::new(MetaSchemaRef::Inline(Box::new(tag))));
        list.max_items = Some(TAGS_MAX);
        MetaSchemaRef::Inline(Box::new(list))
    }

    fn as_raw_value(&self) -> Option<&Vec<String>> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(self.0.iter())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for TagList {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let Some(Value::Array(items)) = value else {
            return Err(ParseError::custom("field `tags` has the wrong type"));
        };
        if items.len() > TAGS_MAX {
            return Err(ParseError::custom(format!(
                "field `tags` verification failed. maxItems({TAGS_MAX})"
            )));
        }
        items
            .into_iter()
            .map(|item| match item {
                Value::String(tag) => Ok(tag),
                _ => Err(ParseError::custom("field `tags` has the wrong type")),
            })
            .collect::<Result<_, _>>()
            .map(TagList)
    }
}

impl ToJSON for TagList {
    fn to_json(&self) -> Option<Value> {
        Some(Value::Array(self.0.iter().cloned().map(Value::String).collect()))
    }
}

/// `deserialize_with` for an optional tag list: absent is none; `null` is
/// refused, like every `null` (see [`parse_field`]).
pub fn tags_field(value: Option<Value>) -> ParseResult<Option<TagList>> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Err(ParseError::custom("field `tags` must not be null")),
        value => TagList::parse_from_json(value)
            .map(Some)
            .map_err(ParseError::propagate),
    }
}

/// A resource id in a path: a UUID in its one canonical form (lower-case
/// hex, hyphenated, 36 characters). The `uuid` crate also reads
/// `urn:uuid:…`, braces, upper case and 32 digits without dashes; taking
/// those would give one note several names in logs and caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonicalId(pub uuid::Uuid);

/// A canonical id, as a schema pattern.
pub const CANONICAL_ID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// A tag (`domain::Tag`), as a schema pattern.
pub const TAG_PATTERN: &str = "^[a-z0-9_-]{1,32}$";

/// A list's `cursor` that names an id: `None` if absent, a 400 naming
/// `cursor` if it is not an id in its canonical form.
pub fn id_cursor(cursor: Option<&str>) -> Result<Option<uuid::Uuid>, crate::error::Error> {
    cursor
        .map(|c| {
            CanonicalId::parse(c).map(|id| id.0).ok_or_else(|| {
                crate::error::FieldError::new("cursor", "is not a cursor from this API").into()
            })
        })
        .transpose()
}

impl CanonicalId {
    pub fn parse(s: &str) -> Option<Self> {
        let canonical = s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        if canonical {
            uuid::Uuid::parse_str(s).ok().map(Self)
        } else {
            None
        }
    }
}

impl Type for CanonicalId {
    const IS_REQUIRED: bool = true;
    type RawValueType = uuid::Uuid;
    type RawElementValueType = uuid::Uuid;

    fn name() -> Cow<'static, str> {
        "string_uuid".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new_with_format("string", "uuid");
        schema.pattern = Some(CANONICAL_ID_PATTERN.to_owned());
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&uuid::Uuid> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a uuid::Uuid> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromParameter for CanonicalId {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value).ok_or_else(|| ParseError::custom("not a canonical UUID"))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(s.to_owned())
    }
}

/// Parses one field of a request object and, on failure, says which field
/// and why, in words of our own. poem-openapi's derived parser reports a bad
/// field without its name (and with its value); our error mapping looks for
/// ``field `name` `` in the message.
///
/// `null` is never a value: an optional member is left out, not set to
/// `null` (the document declares no member nullable, and a `null` meant as
/// "clear this" must not pass as "keep this").
pub fn parse_field<T: ParseFromJSON>(value: Option<Value>, field: &str) -> ParseResult<T> {
    if matches!(value, Some(Value::Null)) {
        return Err(ParseError::custom(format!("field `{field}` must not be null")));
    }
    let missing = value.is_none();
    T::parse_from_json(value).map_err(|_| {
        if missing {
            ParseError::custom(format!("field `{field}` is required"))
        } else {
            ParseError::custom(format!("field `{field}` has the wrong type"))
        }
    })
}

/// Declares `fn $name(Option<Value>) -> ParseResult<$ty>` for use with
/// `#[oai(deserialize_with = "...")]`, naming `$field` in errors.
#[macro_export]
macro_rules! field_parsers {
    ($($name:ident: $ty:ty => $field:literal;)*) => {$(
        fn $name(
            value: Option<serde_json::Value>,
        ) -> poem_openapi::types::ParseResult<$ty> {
            $crate::api::text::parse_field(value, $field)
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_tag_list_is_refused_before_any_element_is_read() {
        let many = Value::Array(vec![Value::from("not a tag!"); 250_000]);
        let err = tags_field(Some(many)).unwrap_err();
        assert!(err.message().contains("maxItems(20)"), "{}", err.message());
        assert_eq!(tags_field(None).unwrap(), None);
        assert_eq!(
            tags_field(Some(serde_json::json!(["a", "b"]))).unwrap(),
            Some(TagList(vec!["a".into(), "b".into()]))
        );
        assert!(tags_field(Some(serde_json::json!(["a", 1]))).is_err());
    }

    #[test]
    fn ids_have_one_canonical_form() {
        let id = "0190a5c2-7f1e-7abc-8def-0123456789ab";
        assert_eq!(
            CanonicalId::parse(id).map(|c| c.0.to_string()).as_deref(),
            Some(id)
        );
        for other in [
            "urn:uuid:0190a5c2-7f1e-7abc-8def-0123456789ab",
            "0190a5c27f1e7abc8def0123456789ab",
            "0190A5C2-7F1E-7ABC-8DEF-0123456789AB",
            "{0190a5c2-7f1e-7abc-8def-0123456789ab}",
            "0190a5c2-7f1e-7abc-8def-0123456789a",
        ] {
            assert!(CanonicalId::parse(other).is_none(), "{other}");
        }
    }

    #[test]
    fn only_strings_parse() {
        assert_eq!(
            Text::parse_from_json(Some(Value::from("a"))).unwrap(),
            Text("a".into())
        );
        for wrong in [
            Value::from(5),
            Value::from(true),
            Value::Null,
            serde_json::json!(["a"]),
        ] {
            assert!(Text::parse_from_json(Some(wrong.clone())).is_err(), "{wrong}");
        }
        assert!(Text::parse_from_json(None).is_err(), "missing");
    }
}
