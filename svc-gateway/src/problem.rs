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
            detail: &self.0.message,
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
        "no such endpoint; see GET / for the API",
    ))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError(PaError::new(
        pa_kit::ErrorCode::BadRequest,
        "method not allowed on this endpoint",
    ))
}
