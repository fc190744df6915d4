//! `JsonBody<T>`: a JSON response serialised straight from `T` with serde.
//! poem-openapi's `Json<T>` first builds a `serde_json::Value` tree (one
//! allocation per field and a copy of every string), which was a
//! measurable share of a note read. The schema still comes from `T`'s
//! `Object` derive, so the spec is unchanged; a unit test checks that both
//! serialisations agree.

use poem::http::{HeaderValue, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;

pub struct JsonBody<T>(pub T);

const JSON: &str = "application/json; charset=utf-8";

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = JSON;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: serde::Serialize + Send> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        // Room for a note up front: grown from serde_json's 128 bytes, a
        // note read reallocated and copied its body twice.
        let mut body = Vec::with_capacity(512);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => {
                let mut resp = Response::builder().body(body);
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
                resp
            }
            Err(e) => crate::error::problem_response(&crate::error::Error::internal(e).to_problem()),
        }
    }
}

/// Serialises a time as RFC 3339, as `time::serde::rfc3339` does, but
/// formatted on the stack: that one allocates a `String` per time, and a
/// page of 50 notes has 100 of them.
pub fn rfc3339<S: serde::Serializer>(time: &time::OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
    // The longest RFC 3339 time `time` writes is 35 bytes.
    let mut buf = [0u8; 64];
    let mut rest = &mut buf[..];
    time.format_into(&mut rest, &time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    // What the writes left of the buffer tells their length.
    let len = 64 - rest.len();
    let text = buf
        .get(..len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| serde::ser::Error::custom("a time longer than its buffer"))?;
    serializer.serialize_str(text)
}

/// A JSON response written as it is produced (a `poem::Body` stream), so a
/// large document never sits whole in memory; the schema is `T`'s.
pub struct StreamedJson<T> {
    body: poem::Body,
    schema: std::marker::PhantomData<fn() -> T>,
}

impl<T> StreamedJson<T> {
    pub fn new(body: poem::Body) -> Self {
        Self {
            body,
            schema: std::marker::PhantomData,
        }
    }
}

impl<T: Type> Payload for StreamedJson<T> {
    const CONTENT_TYPE: &'static str = JSON;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for StreamedJson<T> {
    fn into_response(self) -> Response {
        let mut resp = Response::builder().body(self.body);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        resp
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[derive(serde::Serialize)]
    struct At(#[serde(serialize_with = "super::rfc3339")] OffsetDateTime);

    #[test]
    fn a_time_is_written_as_time_writes_it_and_an_unwritable_one_fails() {
        for at in [
            OffsetDateTime::UNIX_EPOCH,
            OffsetDateTime::now_utc(),
            time::macros::datetime!(9999-12-31 23:59:59.999_999_999 UTC),
            time::macros::datetime!(2026-12-02 07:30:00.5 +05:30),
        ] {
            let want = serde_json::to_string(&at.format(&Rfc3339).unwrap()).unwrap();
            assert_eq!(serde_json::to_string(&At(at)).unwrap(), want);
        }
        let too_early = time::macros::datetime!(-0001-01-01 0:00 UTC);
        assert!(serde_json::to_string(&At(too_early)).is_err());
    }
}
