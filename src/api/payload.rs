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
        match serde_json::to_vec(&self.0) {
            Ok(body) => {
                let mut resp = Response::builder().body(body);
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
                resp
            }
            Err(e) => crate::error::problem_response(&crate::error::Error::internal(e).to_problem()),
        }
    }
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
