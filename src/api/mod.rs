//! The HTTP API, one module per resource; this root joins them into one
//! OpenAPI service and holds what they share. Operations reach the shared
//! [`AppState`] through poem's `Data`, so the service (and the OpenAPI
//! document) can be built without a running server.

pub mod admin;
pub mod auth;
pub mod export;
pub mod json;
pub mod me;
pub mod mfa;
pub mod notes;
pub mod ops;
pub mod payload;
pub mod security;
pub mod text;

pub use text::Text;

use poem_openapi::{OpenApiService, Tags};

use crate::auth::Auth;
use crate::storage::Db;

/// What every operation can reach.
pub struct AppState {
    pub auth: Auth,
    pub db: Db,
    pub notes: notes::NotesConfig,
    /// Who the client of a request is (for the login backoff).
    pub clients: crate::client::ClientResolver,
    /// Where the database, the key ring and the control socket live.
    pub data_dir: std::path::PathBuf,
    /// The master key file that seals the key ring.
    pub master_key_file: std::path::PathBuf,
    /// Where scheduled backups go, if anywhere.
    pub backup_dir: Option<std::path::PathBuf>,
    /// How the scheduled backups went, for the metrics.
    pub backups: std::sync::Arc<crate::metrics::BackupStats>,
    /// Held by a backup and by a master key rotation, so that no backup
    /// copies a key ring the rotation is replacing.
    pub maintenance: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The data directory's lock (see [`crate::fsutil::lock_dir`]).
    pub dir_lock: std::fs::File,
}

#[derive(Tags)]
pub enum ApiTags {
    /// Accounts, sessions and tokens.
    Auth,
    /// The caller's own account.
    Me,
    /// The caller's notes.
    Notes,
    /// Health and readiness probes.
    Operations,
    /// Accounts, invites and the audit log, for admins.
    Admin,
}

pub type Apis = (
    auth::AuthApi,
    me::MeApi,
    mfa::MfaApi,
    notes::NotesApi,
    admin::AdminApi,
    ops::OpsApi,
);

/// The OpenAPI service for all operations.
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            auth::AuthApi,
            me::MeApi,
            mfa::MfaApi,
            notes::NotesApi,
            admin::AdminApi,
            ops::OpsApi,
        ),
        "notesd",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "A secure notes API in one executable.\n\nSign up or log in under **Auth**, press *Authorize* and paste the \
         `access_token`. Access tokens are PASETO v4.public and are read only \
         from the `Authorization: Bearer` header. Errors are \
         `application/problem+json` (RFC 9457).",
    )
    .license(poem_openapi::LicenseObject::new("MIT"))
}

/// The OpenAPI document as JSON, as `notesd openapi` prints it and
/// `/openapi.json` serves it.
pub fn spec_json() -> String {
    let spec = service().spec();
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&spec) else {
        return spec;
    };
    close_request_schemas(&mut doc);
    name_headers_as_sent(&mut doc);
    // What the parsers in `domain` enforce and poem-openapi has no
    // attribute for (a `pattern` validator would compile its regex on every
    // request): a title is not all white space.
    let schemas = &mut doc["components"]["schemas"];
    for name in ["NoteInput", "NotePatch"] {
        if let Some(title) = schemas[name]["properties"]["title"].as_object_mut() {
            title.insert("pattern".to_owned(), title_pattern().into());
        }
    }
    if let Some(email) = schemas["SignupRequest"]["properties"]["email"].as_object_mut() {
        email.insert("format".to_owned(), "idn-email".into());
    }
    // The lists' queries, as their handlers check them: a cursor is an id
    // in its canonical form or an audit sequence number, a tag a tag, a
    // time an RFC 3339 date-time, a kind one of the event kinds.
    let lists = [
        ("/api/v1/notes", text::CANONICAL_ID_PATTERN),
        ("/api/v1/me/sessions", text::CANONICAL_ID_PATTERN),
        ("/api/v1/me/events", SEQ_PATTERN),
        ("/api/v1/admin/audit", SEQ_PATTERN),
    ];
    for (path, cursor) in lists {
        let Some(parameters) = doc["paths"][path]["get"]["parameters"].as_array_mut() else {
            continue;
        };
        for parameter in parameters {
            let (key, value): (&str, serde_json::Value) = match parameter["name"].as_str() {
                Some("cursor") => ("pattern", cursor.into()),
                Some("tag") => ("pattern", text::TAG_PATTERN.into()),
                Some("since" | "until") => ("format", "date-time".into()),
                Some("kind") => (
                    "enum",
                    crate::audit::AuditKind::ALL.iter().map(|k| k.as_str()).collect(),
                ),
                _ => continue,
            };
            if let Some(schema) = parameter["schema"].as_object_mut() {
                schema.insert(key.to_owned(), value);
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or(spec)
}

/// An audit cursor: a sequence number, 1 or more (19 digits at most, so
/// every match is a `u64`).
const SEQ_PATTERN: &str = "^[1-9][0-9]{0,18}$";

/// Unicode White_Space, as ranges: what `char::is_whitespace`, and so
/// `Title::parse`'s trim, sees (a unit test compares every code point).
const WHITE_SPACE: [(char, char); 10] = [
    ('\u{9}', '\u{d}'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// A title's pattern: one character that is not white space, with every
/// code point spelt `\uXXXX` so that every regex dialect (ECMA-262,
/// Python, Rust) reads the class alike.
pub fn title_pattern() -> String {
    let escape = |c: char| format!("\\u{:04x}", u32::from(c));
    let ranges: String = WHITE_SPACE
        .iter()
        .map(|&(from, to)| {
            if from == to {
                escape(from)
            } else {
                format!("{}-{}", escape(from), escape(to))
            }
        })
        .collect();
    format!("[^{ranges}]")
}

/// poem-openapi writes response header names in upper case (`ETAG`);
/// header names are case-insensitive, but generators and readers show them
/// as written: use the names as RFC 9110 spells them.
fn name_headers_as_sent(doc: &mut serde_json::Value) {
    const NAMES: [(&str, &str); 3] = [
        ("ETAG", "ETag"),
        ("LOCATION", "Location"),
        ("RETRY-AFTER", "Retry-After"),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(|p| p.as_object_mut())
        .flat_map(|p| p.values_mut())
    {
        let Some(responses) = operation.get_mut("responses").and_then(|r| r.as_object_mut()) else {
            continue;
        };
        let all_headers = responses
            .values_mut()
            .filter_map(|r| r.get_mut("headers").and_then(|h| h.as_object_mut()));
        for headers in all_headers {
            for (upper, name) in NAMES {
                if let Some(header) = headers.remove(upper) {
                    headers.insert(name.to_owned(), header);
                }
            }
        }
    }
}

/// Every request body type refuses members it does not define
/// (`deny_unknown_fields`), which poem-openapi does not write into the
/// schema: say it there, as `additionalProperties: false`.
fn close_request_schemas(doc: &mut serde_json::Value) {
    let mut names = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for operation in paths
            .values()
            .filter_map(|p| p.as_object())
            .flat_map(|p| p.values())
        {
            if let Some(content) = operation["requestBody"]["content"].as_object() {
                for media in content.values() {
                    if let Some(name) = media["schema"]["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    {
                        names.push(name.to_owned());
                    }
                }
            }
        }
    }
    for name in names {
        if let Some(schema) = doc["components"]["schemas"][&name].as_object_mut() {
            schema.insert("additionalProperties".to_owned(), serde_json::Value::Bool(false));
        }
    }
}

/// The methods each documented path answers, for the `Allow` header a 405
/// must carry (RFC 9110 §15.5.6). Built from the same operations as the
/// OpenAPI document, so the two cannot disagree.
pub struct AllowedMethods {
    /// Each path template's segments (`None` for a parameter) with the
    /// header value for it.
    routes: Vec<(Vec<Option<String>>, poem::http::HeaderValue)>,
}

impl AllowedMethods {
    pub fn from_operations() -> Self {
        use poem::http::Method;
        let mut routes = Vec::new();
        for api in <Apis as poem_openapi::OpenApi>::meta() {
            for path in api.paths {
                let mut methods: Vec<Method> = path.operations.iter().map(|op| op.method.clone()).collect();
                // poem answers HEAD wherever it answers GET.
                if methods.contains(&Method::GET) {
                    methods.push(Method::HEAD);
                }
                let value = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
                let segments = path
                    .path
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                    .collect();
                if let Ok(value) = poem::http::HeaderValue::from_str(&value) {
                    routes.push((segments, value));
                }
            }
        }
        Self { routes }
    }

    /// The `Allow` value for a request path, if a documented path matches.
    pub fn for_path(&self, path: &str) -> Option<&poem::http::HeaderValue> {
        self.routes.iter().find_map(|(template, value)| {
            let mut parts = path.split('/');
            let matches = template.iter().all(|segment| {
                parts
                    .next()
                    .is_some_and(|part| segment.as_ref().is_none_or(|s| s == part))
            }) && parts.next().is_none();
            matches.then_some(value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_pattern_is_exactly_what_trim_removes() {
        let listed = |c: char| WHITE_SPACE.iter().any(|&(from, to)| (from..=to).contains(&c));
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            assert_eq!(c.is_whitespace(), listed(c), "U+{:04X}", u32::from(c));
        }
        assert!(title_pattern().starts_with(r"[^\u0009-\u000d\u0020\u0085"));
    }

    #[test]
    fn allow_lists_the_documented_methods_of_the_matching_path() {
        let allowed = AllowedMethods::from_operations();
        let value = |path| {
            allowed
                .for_path(path)
                .map(|v| v.to_str().unwrap_or_default().to_owned())
        };
        assert_eq!(value("/api/v1/notes").as_deref(), Some("POST, GET, HEAD"));
        assert_eq!(
            value("/api/v1/notes/0190d9a1-1111-7000-8000-000000000000").as_deref(),
            Some("GET, PUT, PATCH, DELETE, HEAD")
        );
        assert_eq!(value("/healthz").as_deref(), Some("GET, HEAD"));
        assert_eq!(value("/api/v1/notes/a/b"), None);
        assert_eq!(value("/api/v1/nope"), None);
    }
}
