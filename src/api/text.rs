//! A strict JSON string for request bodies. poem-openapi's `String` also
//! accepts numbers and booleans (turning `5` into `"5"`); a client that
//! sends the wrong type has a bug we should report, naming the field.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

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

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(s.to_owned())
    }
}

/// Parses one field of a request object and, on failure, says which field
/// and why, in words of our own. poem-openapi's derived parser reports a bad
/// field without its name (and with its value); our error mapping looks for
/// ``field `name` `` in the message.
pub fn parse_field<T: ParseFromJSON>(value: Option<Value>, field: &str) -> ParseResult<T> {
    let missing = matches!(value, None | Some(Value::Null));
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
