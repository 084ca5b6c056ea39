//! Errors over HTTP: `application/problem+json` (RFC 9457) with the stable `code` of
//! errors.proto. Never a stack trace: internal errors say only that they happened.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pa_kit::PaError;
use pa_kit::error::ErrorCodeExt;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError(pub PaError);

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let title = status.canonical_reason().unwrap_or("Error");
        let body = Problem {
            kind: format!("https://personal-agent.dev/problems/{}", code.slug()),
            title,
            status: status.as_u16(),
            detail: &pa_kit::error::bounded(&self.0.message),
            code: code.slug(),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.0.retry_after_ms > 0 {
            let secs = self.0.retry_after_ms.div_ceil(1000);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<PaError> for ApiError {
    fn from(err: PaError) -> Self {
        Self(err)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self(PaError::from_status(&status))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a JSON body with Content-Type: application/json".to_string()
            }
            other => format!("invalid JSON body: {}", other.body_text()),
        };
        Self(PaError::bad_request(message))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self(PaError::bad_request(format!(
            "invalid query: {}",
            rejection.body_text()
        )))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self(PaError::bad_request(format!(
            "invalid path: {}",
            rejection.body_text()
        )))
    }
}

pub async fn not_found() -> ApiError {
    ApiError(PaError::not_found(
        "no such endpoint; see GET /v1 for the API",
    ))
}

/// A problem+json response for a status no [`pa_kit::ErrorCode`] stands for (405, 413, 415 …);
/// `code` is one of the gateway's HTTP-only codes listed in [`http_code`].
pub fn response(status: StatusCode, code: &'static str, detail: &str) -> Response {
    let body = Problem {
        kind: format!("https://personal-agent.dev/problems/{code}"),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        code,
    };
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The stable `code` of an HTTP status that reached the client without one (axum's own
/// rejections, 404 of unknown routes, 405, 413 …).
pub fn http_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 | 504 => "timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        426 => "upgrade_required",
        429 => "too_many_requests",
        501 => "unimplemented",
        502 | 503 => "unavailable",
        400..=499 => "bad_request",
        _ => "internal",
    }
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"))
}

/// The methods a path of the route table answers, for a 405's `Allow` when axum set none.
fn allowed_methods(path: &str) -> Option<String> {
    let matches = |template: &str| {
        let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len()
            && t.iter()
                .zip(&p)
                .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
    };
    let mut methods: Vec<String> = crate::routes()
        .into_iter()
        .filter(|(_, template)| matches(template))
        .map(|(method, _)| method.to_string())
        .collect();
    if methods.is_empty() {
        return None;
    }
    if methods.iter().any(|m| m == "GET") {
        methods.push("HEAD".into());
    }
    Some(methods.join(","))
}

/// The outermost layer: every error response leaves as problem+json with a stable `code`,
/// whoever produced it (a handler, an extractor's rejection, the router's 404/405, a body
/// limit); headers such as `Allow` and `Retry-After` are kept. A 5xx never shows what axum or a
/// library said.
pub async fn ensure_problem(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let answer = next.run(request).await;
    let status = answer.status();
    // /readyz's 503 is its documented JSON (which backend or store is down), for probes.
    if !(status.is_client_error() || status.is_server_error())
        || is_problem(&answer)
        || (path == "/readyz" && status == StatusCode::SERVICE_UNAVAILABLE)
    {
        return answer;
    }
    let (parts, body) = answer.into_parts();
    let said = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().chars().take(300).collect::<String>())
        .filter(|t| !t.is_empty() && !t.starts_with('{') && !t.starts_with('<'));
    let detail = match (status.as_u16(), said) {
        (500.., _) => "the server could not answer; see the gateway's logs".to_string(),
        (405, _) => "method not allowed on this endpoint; see the Allow header".to_string(),
        (404, _) => "no such endpoint; see GET /v1 for the API".to_string(),
        (_, Some(text)) => text,
        (_, None) => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut problem = response(status, http_code(status), &detail);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if status == StatusCode::METHOD_NOT_ALLOWED
        && !problem.headers().contains_key(header::ALLOW)
        && let Some(allow) = allowed_methods(&path).and_then(|a| HeaderValue::from_str(&a).ok())
    {
        problem.headers_mut().insert(header::ALLOW, allow);
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_without_a_code_get_a_stable_one() {
        assert_eq!(
            http_code(StatusCode::METHOD_NOT_ALLOWED),
            "method_not_allowed"
        );
        assert_eq!(
            http_code(StatusCode::PAYLOAD_TOO_LARGE),
            "payload_too_large"
        );
        assert_eq!(http_code(StatusCode::UNPROCESSABLE_ENTITY), "bad_request");
        assert_eq!(http_code(StatusCode::BAD_GATEWAY), "unavailable");
        assert_eq!(http_code(StatusCode::INTERNAL_SERVER_ERROR), "internal");
    }

    #[test]
    fn allow_lists_the_methods_of_the_route_table() {
        let allow = allowed_methods("/v1/chats/abc").expect("a known path");
        for method in ["GET", "PATCH", "DELETE", "HEAD"] {
            assert!(allow.split(',').any(|m| m == method), "{allow}");
        }
        assert!(!allow.split(',').any(|m| m == "POST"), "{allow}");
        assert_eq!(allowed_methods("/v1/nothing/here"), None);
    }
}
