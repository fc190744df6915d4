//! `JsonBody<T>`: a JSON response whose bytes are already written (see
//! [`super::json`]) or are written as the client reads them (a
//! `poem::Body` stream, so a large document never sits whole in memory).
//! Its schema is `T`'s, so the document still describes what is sent;
//! poem-openapi's `Json<T>` would first build a `serde_json::Value` tree
//! (an allocation per member and a copy of every string).

use poem::http::{HeaderValue, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;

pub struct JsonBody<T> {
    body: poem::Body,
    schema: std::marker::PhantomData<fn() -> T>,
}

impl<T> JsonBody<T> {
    /// A document of schema `T`: its bytes, or a stream of them.
    pub fn new(body: impl Into<poem::Body>) -> Self {
        Self {
            body: body.into(),
            schema: std::marker::PhantomData,
        }
    }
}

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

impl<T: Send> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        let mut resp = Response::builder().body(self.body);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        resp
    }
}
