//! The one mapping from errors to the wire: a stable [`ErrorCode`] with its gRPC code and HTTP
//! status. Each crate's `thiserror` enum converts into [`PaError`] once; `PaError` becomes a
//! `tonic::Status` carrying the code in metadata, and comes back out of one on the other side.

pub use pa_proto::v1::ErrorCode;
use prost::Message;
use tonic::metadata::MetadataValue;

const CODE_HEADER: &str = "x-pa-error-code";
const DETAIL_HEADER: &str = "x-pa-error-bin";

/// The longest error message that goes on the wire (bytes). A message travels in gRPC
/// headers (`grpc-message` and the detail), which a peer refuses past its header limit (16 KiB
/// for tonic): a message that repeats a 100k-character input would otherwise reset the whole
/// HTTP/2 connection (every call on it fails) instead of answering the caller's mistake.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// `message` cut to at most [`MAX_MESSAGE_BYTES`] (on a character boundary, marked with `…`).
pub fn bounded(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.into();
    }
    let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end]).into()
}

pub trait ErrorCodeExt {
    fn grpc_code(self) -> tonic::Code;
    fn http_status(self) -> u16;
    /// The stable lower-case name used in problem+json `code` and in gRPC metadata.
    fn slug(self) -> &'static str;
    fn from_slug(slug: &str) -> Option<ErrorCode>;
}

impl ErrorCodeExt for ErrorCode {
    fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorCode::BadRequest => Code::InvalidArgument,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::Forbidden | ErrorCode::PolicyDenied => Code::PermissionDenied,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::Conflict => Code::AlreadyExists,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::TooManyRequests => Code::ResourceExhausted,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::Timeout => Code::DeadlineExceeded,
            ErrorCode::Cancelled => Code::Cancelled,
            ErrorCode::Unimplemented => Code::Unimplemented,
            ErrorCode::Internal | ErrorCode::Unspecified => Code::Internal,
        }
    }

    fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden | ErrorCode::PolicyDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::FailedPrecondition => 409,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Cancelled => 499,
            ErrorCode::Unimplemented => 501,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal | ErrorCode::Unspecified => 500,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            ErrorCode::Unspecified | ErrorCode::Internal => "internal",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::PolicyDenied => "policy_denied",
        }
    }

    fn from_slug(slug: &str) -> Option<ErrorCode> {
        ALL_CODES
            .iter()
            .copied()
            .find(|c| c.slug() == slug && *c != ErrorCode::Unspecified)
    }
}

const ALL_CODES: &[ErrorCode] = &[
    ErrorCode::Internal,
    ErrorCode::BadRequest,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::Conflict,
    ErrorCode::FailedPrecondition,
    ErrorCode::TooManyRequests,
    ErrorCode::Unavailable,
    ErrorCode::Timeout,
    ErrorCode::Cancelled,
    ErrorCode::Unimplemented,
    ErrorCode::PolicyDenied,
];

/// A typed error that crosses service boundaries intact.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.slug())]
pub struct PaError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: u64,
}

impl PaError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: 0,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unimplemented, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// An internal failure: the cause is logged here, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the service logs")
    }

    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = ms;
        self
    }

    /// Reads the typed error back out of a status from another service. A status that did not
    /// come from a Personal Agent service maps by its gRPC code.
    pub fn from_status(status: &tonic::Status) -> Self {
        use std::error::Error as _;
        if let Some(detail) = status
            .metadata()
            .get_bin(DETAIL_HEADER)
            .and_then(|v| v.to_bytes().ok())
            .and_then(|b| pa_proto::v1::ErrorDetail::decode(b.as_ref()).ok())
        {
            let code = ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Internal);
            return Self {
                code,
                message: detail.message,
                retry_after_ms: detail.retry_after_ms,
            };
        }
        let code = match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::BadRequest,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::Forbidden,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists | tonic::Code::Aborted => ErrorCode::Conflict,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::ResourceExhausted => ErrorCode::TooManyRequests,
            tonic::Code::Unavailable => ErrorCode::Unavailable,
            tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
            tonic::Code::Cancelled => ErrorCode::Cancelled,
            tonic::Code::Unimplemented => ErrorCode::Unimplemented,
            // No service's answer (those carry the detail header) but a local failure of the
            // connection — tonic reports a broken HTTP/2 stream as INTERNAL or UNKNOWN with the
            // h2/hyper/io error as its source: the peer died mid-call, a retryable outage.
            tonic::Code::Internal | tonic::Code::Unknown if status.source().is_some() => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        };
        Self::new(code, status.message())
    }
}

impl From<PaError> for tonic::Status {
    fn from(err: PaError) -> Self {
        let message = bounded(&err.message).into_owned();
        let mut status = tonic::Status::new(err.code.grpc_code(), message.clone());
        let detail = pa_proto::v1::ErrorDetail {
            code: err.code as i32,
            message,
            retry_after_ms: err.retry_after_ms,
        };
        let md = status.metadata_mut();
        md.insert(CODE_HEADER, MetadataValue::from_static(err.code.slug()));
        md.insert_bin(
            DETAIL_HEADER,
            MetadataValue::from_bytes(&detail.encode_to_vec()),
        );
        status
    }
}

impl From<tonic::Status> for PaError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

/// Postgres' refusals of a value itself (SQLSTATE class 22, data exception: a NUL or an
/// invalid character in `text`, a value too long for its column, a number out of range, a
/// malformed literal): the caller's input was wrong, so 400 and not 500. The value is never
/// repeated.
fn input_refused_by_postgres(err: &sqlx::Error) -> Option<&'static str> {
    let code = err.as_database_error()?.code()?;
    Some(match code.as_ref() {
        "22021" | "22P05" => "text must be valid UTF-8 without NUL characters",
        "22001" => "a value is too long",
        "22003" => "a number is out of range",
        c if c.starts_with("22") => "a value is not valid here",
        _ => return None,
    })
}

impl From<sqlx::Error> for PaError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(message) = input_refused_by_postgres(&err) {
            tracing::debug!(%err, "input refused by Postgres");
            return PaError::bad_request(message);
        }
        if crate::db::is_connection_error(&err) {
            return PaError::store_unavailable(Store::Postgres, &err);
        }
        PaError::internal(err)
    }
}

/// A store a service depends on, named in an `unavailable` error's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Postgres,
    Redis,
    Temporal,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Postgres => "Postgres",
            Store::Redis => "Redis",
            Store::Temporal => "Temporal",
        }
    }
}

impl PaError {
    /// `store` cannot be reached (a connection-class error): `unavailable` (503 / UNAVAILABLE)
    /// with a message naming the store and nothing of the cause, which is logged here. A
    /// Postgres connection error also makes the pools drop their older connections.
    pub fn store_unavailable(store: Store, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(store = store.name(), %cause, "store unavailable");
        if store == Store::Postgres {
            crate::db::note_connection_error();
        }
        PaError::unavailable(format!("{} is unavailable; retry shortly", store.name()))
            .with_retry_after_ms(1000)
    }
}

impl From<deadpool_redis::PoolError> for PaError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        PaError::store_unavailable(Store::Redis, &err)
    }
}

impl From<redis::RedisError> for PaError {
    /// Every failure of a Redis command we send is the store's, not the caller's: connection
    /// errors, and replies our own scripts did not expect, alike.
    fn from(err: redis::RedisError) -> Self {
        if crate::redis::is_connection_error(&err) {
            PaError::store_unavailable(Store::Redis, &err)
        } else {
            PaError::internal(err)
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_broken_connection_is_unavailable_but_a_services_internal_error_is_not() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(PaError::from_status(&broken).code, ErrorCode::Unavailable);
        let answered = tonic::Status::internal("the handler failed");
        assert_eq!(PaError::from_status(&answered).code, ErrorCode::Internal);
    }

    use super::*;

    #[test]
    fn typed_error_survives_a_status_round_trip() {
        let err = PaError::not_found("chat c1 not found").with_retry_after_ms(7);
        let status: tonic::Status = err.clone().into();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(PaError::from_status(&status), err);
    }

    #[test]
    fn foreign_status_maps_by_grpc_code() {
        let status = tonic::Status::resource_exhausted("slow down");
        let err = PaError::from_status(&status);
        assert_eq!(err.code, ErrorCode::TooManyRequests);
        assert_eq!(err.code.http_status(), 429);
    }

    #[test]
    fn a_huge_message_stays_within_header_limits() {
        let err = PaError::bad_request(format!("unknown kind: {}", "é".repeat(100_000)));
        let status: tonic::Status = err.into();
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().ends_with('…'));
        let headers = status.metadata().clone().into_headers();
        let size: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        assert!(size < 4 * 1024, "{size} bytes of headers");
        let back = PaError::from_status(&status);
        assert_eq!(back.code, ErrorCode::BadRequest);
        assert!(back.message.starts_with("unknown kind: é"));
        assert_eq!(bounded("short"), "short");
    }

    fn io(kind: std::io::ErrorKind) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::new(kind, "socket detail 10.0.0.7:5432"))
    }

    #[test]
    fn connection_class_store_errors_are_unavailable_and_name_the_store() {
        for err in [
            io(std::io::ErrorKind::ConnectionRefused),
            io(std::io::ErrorKind::ConnectionReset),
            io(std::io::ErrorKind::UnexpectedEof),
            io(std::io::ErrorKind::BrokenPipe),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(crate::db::is_connection_error(&err), "{err}");
            let pa = PaError::from(err);
            assert_eq!(pa.code, ErrorCode::Unavailable);
            assert_eq!(pa.code.slug(), "unavailable");
            assert_eq!(pa.code.http_status(), 503);
            assert_eq!(pa.code.grpc_code(), tonic::Code::Unavailable);
            assert_eq!(pa.message, "Postgres is unavailable; retry shortly");
            assert!(pa.retry_after_ms > 0);
        }
        // Not the connection's fault: a statement's own failure stays internal.
        for err in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
            sqlx::Error::Protocol("odd".into()),
        ] {
            assert!(!crate::db::is_connection_error(&err), "{err}");
            assert_eq!(PaError::from(err).code, ErrorCode::Internal);
        }

        let refused = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "127.0.0.1:6379",
        ));
        assert!(crate::redis::is_connection_error(&refused));
        let pa = PaError::from(refused);
        assert_eq!(
            (pa.code, pa.message.as_str()),
            (
                ErrorCode::Unavailable,
                "Redis is unavailable; retry shortly"
            )
        );
        let script = redis::RedisError::from((redis::ErrorKind::TypeError, "unexpected reply"));
        assert!(!crate::redis::is_connection_error(&script));
        assert_eq!(PaError::from(script).code, ErrorCode::Internal);
        let pool = deadpool_redis::PoolError::Timeout(deadpool_redis::TimeoutType::Create);
        assert_eq!(PaError::from(pool).code, ErrorCode::Unavailable);

        let temporal = PaError::store_unavailable(Store::Temporal, &"transport error");
        assert_eq!(temporal.message, "Temporal is unavailable; retry shortly");
    }

    #[test]
    fn every_code_has_a_unique_slug() {
        for code in ALL_CODES {
            assert_eq!(ErrorCode::from_slug(code.slug()), Some(*code));
        }
    }
}
