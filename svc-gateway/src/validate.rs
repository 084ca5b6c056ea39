//! The gateway's one validation layer for input, run before routing reaches any handler (so
//! before any call to a service): the path (every segment valid UTF-8 without control
//! characters and at most [`pa_kit::validate::MAX_ID_BYTES`] bytes, so an id is never
//! forwarded, stored or echoed into a gRPC header when it is hostile), the query (bounded, valid
//! UTF-8, no NUL) and JSON bodies (no NUL in any string). Refusals are 400 problem+json; a body
//! over the limit is 413. Field-level rules (lengths, counts, ranges) stay with the handlers and
//! are documented in the OpenAPI document.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pa_kit::PaError;
use pa_kit::validate::MAX_ID_BYTES;

use crate::problem::{self, ApiError};

/// The longest query string taken (bytes, as sent).
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// The largest JSON body (axum's default body limit); file uploads have their own.
pub const MAX_JSON_BODY_BYTES: usize = 2 * 1024 * 1024;

/// `%XX` decoding (a `%` not followed by two hex digits stays as it is); `+` is a space in a
/// query.
fn percent_decode(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Every segment of the path: valid UTF-8, no control characters, at most `MAX_ID_BYTES`.
pub fn check_path(path: &str) -> Result<(), PaError> {
    for segment in path.split('/') {
        let decoded = percent_decode(segment, false);
        let text = std::str::from_utf8(&decoded)
            .map_err(|_| PaError::bad_request("the path is not valid UTF-8"))?;
        if text.len() > MAX_ID_BYTES {
            return Err(PaError::bad_request(format!(
                "a path segment (an id) is longer than {MAX_ID_BYTES} bytes"
            )));
        }
        if text.chars().any(char::is_control) {
            return Err(PaError::bad_request(
                "the path must not contain control characters",
            ));
        }
    }
    Ok(())
}

/// The query: at most `MAX_QUERY_BYTES`, every name and value valid UTF-8 without NUL.
pub fn check_query(query: &str) -> Result<(), PaError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(PaError::bad_request(format!(
            "the query is longer than {MAX_QUERY_BYTES} bytes"
        )));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = String::from_utf8(percent_decode(name, true))
            .ok()
            .filter(|n| n.len() <= 64 && !n.chars().any(char::is_control));
        let what = match &name {
            Some(n) => format!("query parameter {n:?}"),
            None => "a query parameter's name".to_string(),
        };
        if name.is_none() {
            return Err(PaError::bad_request(format!(
                "{what} must be valid UTF-8 text of at most 64 bytes"
            )));
        }
        let value = percent_decode(value, true);
        let value = std::str::from_utf8(&value)
            .map_err(|_| PaError::bad_request(format!("{what} is not valid UTF-8")))?;
        pa_kit::validate::text(&what, value)?;
    }
    Ok(())
}

/// Whether a request's body is a raw file (the handler checks it), not JSON.
fn is_upload(path: &str) -> bool {
    path.starts_with("/v1/chats/") && path.ends_with("/files")
}

fn too_large() -> Response {
    problem::response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("the body is larger than {MAX_JSON_BODY_BYTES} bytes"),
    )
}

async fn check(request: Request) -> Result<Request, Response> {
    let bad = |e: PaError| ApiError(e).into_response();
    check_path(request.uri().path()).map_err(bad)?;
    if let Some(query) = request.uri().query() {
        check_query(query).map_err(bad)?;
    }
    let has_body = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    );
    if !has_body || is_upload(request.uri().path()) {
        return Ok(request);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_JSON_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_JSON_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
            while let Some(e) = source {
                if e.to_string().contains("length limit") {
                    return Err(too_large());
                }
                source = e.source();
            }
            return Err(bad(PaError::bad_request("cannot read the request body")));
        }
    };
    // Every JSON body, whatever its Content-Type says (some endpoints take an optional body):
    // what does not parse is the handler's to refuse.
    if !bytes.is_empty()
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        pa_kit::validate::json(&value).map_err(bad)?;
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The middleware: refuses bad input before routing reaches a handler.
pub async fn layer(request: Request, next: Next) -> Response {
    match check(request).await {
        Ok(request) => next.run(request).await,
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_hostile_ids_are_refused() {
        assert!(check_path("/v1/chats/0f8e2b7a-5c1d-4c7e-9a0b-1b2c3d4e5f60/messages").is_ok());
        assert!(check_path("/v1/admin/models/openai%3Agpt-4o").is_ok());
        assert!(check_path("/v1/chats/caf%C3%A9").is_ok());
        assert!(check_path("/v1/chats/100%").is_ok());
        assert!(check_path(&format!("/v1/chats/{}", "a".repeat(8000))).is_err());
        assert!(check_path("/v1/chats/a%00b").is_err());
        assert!(check_path("/v1/chats/a%0Ab").is_err());
        assert!(check_path("/v1/chats/%FF%FE").is_err());
    }

    #[test]
    fn queries_are_bounded_text() {
        assert!(check_query("limit=10&cursor=abc").is_ok());
        assert!(check_query("q=hello+world&x=%E2%82%AC").is_ok());
        assert!(check_query("filename=a%00.txt").is_err());
        assert!(check_query("q=%FF").is_err());
        assert!(check_query(&format!("q={}", "a".repeat(MAX_QUERY_BYTES))).is_err());
        assert!(check_query(&format!("{}=1", "n".repeat(100))).is_err());
    }

    #[test]
    fn percent_decoding_keeps_stray_percents() {
        assert_eq!(percent_decode("a%20b%", false), b"a b%");
        assert_eq!(percent_decode("%4", false), b"%4");
        assert_eq!(percent_decode("a+b", true), b"a b");
        assert_eq!(percent_decode("a+b", false), b"a+b");
    }
}
