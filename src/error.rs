//! The errors a client can see, and the one place they become RFC 9457
//! `application/problem+json`.
//!
//! Handlers return [`Error`]; each operation's error enum (declared with
//! [`problem_responses!`]) lists only the statuses that operation can answer,
//! so the OpenAPI document tells the truth. Internal failures keep their
//! source for the log and show the client a generic title.

use std::fmt;

use poem::http::StatusCode;
use poem_openapi::Object;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct FieldError {
    /// The field, as named in the request body or query.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Problem {
    /// A URI identifying the kind of problem.
    #[oai(rename = "type")]
    pub kind: String,
    /// A short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// For validation failures (400): each invalid field. Absent from
    /// every other problem.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldError>>,
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        Error::Validation(vec![FieldError::new("title", "must be at most 200 characters")]).to_problem()
    }
}

/// Every outcome a client can see other than success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request body or a parameter breaks the API's rules.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The request could not be read (malformed JSON, wrong type). The detail
    /// has already been made safe to show.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No credentials, or credentials that do not hold: the same answer for
    /// every cause, so it tells an attacker nothing.
    #[error("unauthorized")]
    Unauthorized,
    /// The caller is authenticated but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// The signup policy does not let this request create an account
    /// (closed, or no usable invite); the detail says which.
    #[error("signup refused")]
    SignupRefused(&'static str),
    /// The write would take the account past a quota (notes or bytes).
    #[error("quota exceeded")]
    QuotaExceeded,
    /// Nothing here for this caller; also the answer for another user's note.
    #[error("not found")]
    NotFound,
    /// The request conflicts with current state.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// `If-Match` named a version that is no longer current.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The body has a media type this operation does not read.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// Over a rate limit, or an account backing off after failed logins;
    /// try again after `retry_after` seconds.
    #[error("too many requests")]
    TooManyRequests { retry_after: u32 },
    /// The server is saturated (e.g. the password-hashing queue is full);
    /// try again after `retry_after` seconds.
    #[error("service unavailable")]
    Unavailable { retry_after: u32 },
    /// Any other client error reported by the HTTP layer, with its status.
    #[error("{status}: {detail}")]
    Http { status: StatusCode, detail: String },
    /// A failure on our side. The source goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(source.into())
    }

    /// Seconds for a `Retry-After` header, when the client should wait.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Error::Unavailable { retry_after } | Error::TooManyRequests { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Validation(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden | Error::QuotaExceeded | Error::SignupRefused(_) => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Http { status, .. } => *status,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem document for this error. Internal errors are logged here,
    /// once, with their source.
    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let (slug, title, detail, errors) = match self {
            Error::Validation(errors) => (
                "validation",
                "Invalid request",
                "One or more fields are invalid.".to_owned(),
                Some(errors.clone()),
            ),
            Error::BadRequest(detail) => ("bad-request", "Bad request", detail.clone(), None),
            Error::Unauthorized => (
                "unauthorized",
                "Unauthorized",
                "Missing, invalid or expired credentials.".to_owned(),
                None,
            ),
            Error::Forbidden => (
                "forbidden",
                "Forbidden",
                "You are not allowed to do this.".to_owned(),
                None,
            ),
            Error::SignupRefused(detail) => ("signup-refused", "Signup refused", (*detail).to_owned(), None),
            Error::QuotaExceeded => (
                "quota-exceeded",
                "Quota exceeded",
                "This would take the account past its quota of notes or bytes; delete or shorten notes first."
                    .to_owned(),
                None,
            ),
            Error::NotFound => (
                "not-found",
                "Not found",
                "The resource does not exist.".to_owned(),
                None,
            ),
            Error::Conflict(detail) => ("conflict", "Conflict", (*detail).to_owned(), None),
            Error::PreconditionFailed => (
                "precondition-failed",
                "Precondition failed",
                "The resource has changed since the version named in If-Match.".to_owned(),
                None,
            ),
            Error::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                "Send the body as application/json.".to_owned(),
                None,
            ),
            Error::TooManyRequests { .. } => (
                "too-many-requests",
                "Too many requests",
                "Slow down; retry after the time in Retry-After.".to_owned(),
                None,
            ),
            Error::Unavailable { .. } => (
                "unavailable",
                "Service unavailable",
                "The server is busy; retry after the time in Retry-After.".to_owned(),
                None,
            ),
            Error::Http { detail, .. } => (
                "http",
                status.canonical_reason().unwrap_or("Error"),
                detail.clone(),
                None,
            ),
            Error::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                (
                    "internal",
                    "Internal server error",
                    "The server could not complete the request.".to_owned(),
                    None,
                )
            }
        };
        Problem {
            kind: format!("urn:notesd:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }

    /// Turns an error raised by poem or poem-openapi while reading a request
    /// (parsing, content type, authentication) into ours. Their messages can
    /// quote the offending input, so only a sanitised form is kept.
    pub fn from_poem(err: &poem::Error) -> Self {
        let status = err.status();
        match status {
            StatusCode::UNAUTHORIZED => Error::Unauthorized,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::UnsupportedMediaType,
            StatusCode::BAD_REQUEST => Error::from_parse_message(&err.to_string()),
            StatusCode::NOT_FOUND => Error::NotFound,
            s if s.is_client_error() => Error::Http {
                status: s,
                detail: s.canonical_reason().unwrap_or("Client error").to_owned(),
            },
            _ => Error::internal(err.to_string()),
        }
    }

    /// poem-openapi describes a bad body or parameter in one line of text,
    /// e.g. ``parse request payload error: failed to parse "NoteInput":
    /// field `title` verification failed. maxLength(200)``. We keep the field
    /// name and a generic reason: the raw text may quote values (a password
    /// sent with the wrong type must not come back in the response).
    fn from_parse_message(message: &str) -> Self {
        // poem-openapi names path parameters by position (`param0`); our
        // only path parameter is a resource's `id`.
        let name = between(message, "parameter `", "`")
            .or_else(|| between(message, "path `", "`").map(|_| "id"))
            .or_else(|| between(message, "field `", "`"));
        let Some(name) = name else {
            return if message.contains("payload") {
                Error::BadRequest("The body is not valid JSON of the expected shape.".to_owned())
            } else {
                Error::BadRequest("The request could not be read.".to_owned())
            };
        };
        // A member the object does not define is named by its key, which
        // the client wrote: report the body instead, never the key.
        if message.contains("unknown field") {
            return Error::Validation(vec![FieldError::new(
                "body",
                "has a member this object does not define",
            )]);
        }
        // Names come from our schema; anything else is not repeated.
        let is_ours = name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit());
        if !is_ours {
            return Error::BadRequest("The request could not be read.".to_owned());
        }
        let reason = if message.contains("verification failed. ") {
            let rule = message.split("verification failed. ").nth(1).unwrap_or_default();
            // A schema rule such as `maxLength(200)`: ours, safe to echo.
            format!("must satisfy {}", rule.trim())
        } else if message.contains("is required") {
            "is required".to_owned()
        } else if message.contains("must not be null") {
            "must not be null; leave the member out instead".to_owned()
        } else {
            "has the wrong type or format".to_owned()
        };
        Error::Validation(vec![FieldError::new(name, reason)])
    }
}

fn between<'a>(haystack: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = haystack.find(start)? + start.len();
    let len = haystack[from..].find(end)?;
    Some(&haystack[from..from + len])
}

impl From<crate::storage::StorageError> for Error {
    fn from(err: crate::storage::StorageError) -> Self {
        match err {
            // The writer's queue is full: shed the write at once.
            crate::storage::StorageError::Busy => Error::Unavailable { retry_after: 1 },
            crate::storage::StorageError::Unavailable(detail) => {
                // The handle logged the failure once; not once a request.
                tracing::debug!(error = %detail, "storage unavailable");
                Error::Unavailable { retry_after: 5 }
            }
            other => Error::internal(other),
        }
    }
}

impl From<FieldError> for Error {
    fn from(err: FieldError) -> Self {
        Error::Validation(vec![err])
    }
}

/// Wraps a problem in the `application/problem+json` response poem expects
/// from errors raised outside the OpenAPI operations (unknown route, wrong
/// method, ...).
pub fn problem_response(problem: &Problem) -> poem::Response {
    let body = problem_body(problem);
    poem::Response::builder()
        .status(StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/problem+json")
        .body(body)
}

/// The problem document as JSON bytes.
pub fn problem_body(problem: &Problem) -> Vec<u8> {
    serde_json::to_vec(&ProblemJson(problem)).unwrap_or_default()
}

struct ProblemJson<'a>(&'a Problem);

impl serde::Serialize for ProblemJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        poem_openapi::types::ToJSON::to_json(self.0)
            .unwrap_or_default()
            .serialize(s)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.title)
    }
}

/// Declares an operation's error responses: each listed status with its doc
/// line, plus a `default` response for anything else (500 included), all as
/// `application/problem+json`. `From<Error>` picks the variant by status.
#[macro_export]
macro_rules! problem_responses {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $status:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, poem_openapi::ApiResponse)]
        #[oai(bad_request_handler = "Self::from_request_error")]
        $vis enum $name {
            $(
                $(#[doc = $doc])*
                #[oai(status = $status, content_type = "application/problem+json")]
                $variant(poem_openapi::payload::Json<$crate::error::Problem>),
            )*
            /// Any other refusal or failure: 405 (with `Allow`) for a method
            /// the path does not answer, 408 past the request deadline, 413
            /// for a body over the limit, 431 for headers over the limit,
            /// 429 with `Retry-After` over a rate limit, 503 with
            /// `Retry-After` when the server is saturated, 500 when it
            /// cannot complete the request (details go to the server log).
            #[oai(content_type = "application/problem+json")]
            Other(
                poem::http::StatusCode,
                poem_openapi::payload::Json<$crate::error::Problem>,
                /// Seconds to wait before retrying (with 429 and 503).
                #[oai(header = "Retry-After")]
                Option<u32>,
            ),
        }

        impl $name {
            fn from_request_error(err: poem::Error) -> Self {
                $crate::error::Error::from_poem(&err).into()
            }
        }

        impl From<$crate::storage::StorageError> for $name {
            fn from(err: $crate::storage::StorageError) -> Self {
                $crate::error::Error::from(err).into()
            }
        }

        impl From<$crate::error::Error> for $name {
            fn from(err: $crate::error::Error) -> Self {
                let problem = err.to_problem();
                match problem.status {
                    $($status => Self::$variant(poem_openapi::payload::Json(problem)),)*
                    _ => Self::Other(err.status(), poem_openapi::payload::Json(problem), err.retry_after()),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use poem::IntoResponse;

    use super::*;

    crate::problem_responses! {
        enum TestError {
            /// Not found.
            NotFound = 404,
        }
    }

    #[test]
    fn declared_statuses_get_their_variant_and_others_keep_their_status() {
        let resp = TestError::from(Error::NotFound).into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");

        let resp = TestError::from(Error::Unavailable { retry_after: 3 }).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()["retry-after"], "3", "503 tells when to retry");

        let resp = TestError::from(Error::internal("disk on fire")).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn internal_errors_show_nothing_of_their_source() {
        let problem = Error::internal("open /secret/path: permission denied").to_problem();
        assert!(!problem.detail.contains("/secret/path"));
        assert_eq!(problem.title, "Internal server error");
    }

    #[test]
    fn parse_messages_keep_the_field_and_drop_the_value() {
        let cases = [
            (
                r#"parse request payload error: failed to parse "Text": field `password` has the wrong type (occurred while parsing "SignupRequest")"#,
                "password",
                "has the wrong type or format",
            ),
            (
                r#"parse request payload error: failed to parse "NoteInput": field `title` verification failed. maxLength(200)"#,
                "title",
                "must satisfy maxLength(200)",
            ),
            (
                "failed to parse path `param0`: invalid uuid",
                "id",
                "has the wrong type or format",
            ),
            (
                "failed to parse parameter `limit`: verification failed. minimum(1, exclusive: false)",
                "limit",
                "must satisfy minimum(1, exclusive: false)",
            ),
            (
                r#"parse request payload error: failed to parse "NoteInput": unknown field `owner`."#,
                "body",
                "has a member this object does not define",
            ),
            // Regression: the key of an unknown member came back in
            // `errors[].field`, so a response could carry a script.
            (
                r#"parse request payload error: failed to parse "NoteInput": unknown field `<script>alert(1)</script>`."#,
                "body",
                "has a member this object does not define",
            ),
        ];
        for (message, field, reason) in cases {
            let Error::Validation(errors) = Error::from_parse_message(message) else {
                panic!("{message} should be a validation error");
            };
            assert_eq!(errors, vec![FieldError::new(field, reason)], "{message}");
        }
        assert!(matches!(
            Error::from_parse_message(r#"parse request payload error: expected value at line 1 column 1 "secret""#),
            Error::BadRequest(detail) if !detail.contains("secret")
        ));
    }
}
