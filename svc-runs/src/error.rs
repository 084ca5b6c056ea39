use pa_kit::{ErrorCode, PaError};

#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("chat {0} not found")]
    ChatNotFound(String),
    #[error("run {0} not found")]
    RunNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("svc-runs is shutting down; retry on another instance")]
    ShuttingDown,
    #[error("{0}")]
    Unsupported(String),
    /// A per-run limit (sub-agent depth, what is left of a parent's budget).
    #[error("{0}")]
    UsageLimit(String),
    #[error("stored run is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Upstream(#[from] PaError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<RunsError> for PaError {
    fn from(err: RunsError) -> Self {
        match err {
            RunsError::ChatNotFound(_) | RunsError::RunNotFound(_) => {
                PaError::not_found(err.to_string())
            }
            RunsError::Invalid(_) => PaError::bad_request(err.to_string()),
            RunsError::Conflict(_) => PaError::conflict(err.to_string()),
            RunsError::ShuttingDown => {
                PaError::unavailable(err.to_string()).with_retry_after_ms(1000)
            }
            RunsError::Unsupported(_) => PaError::new(ErrorCode::Unimplemented, err.to_string()),
            RunsError::UsageLimit(_) => PaError::new(ErrorCode::TooManyRequests, err.to_string()),
            RunsError::Corrupt(e) => PaError::internal(e),
            RunsError::Upstream(e) => e,
            RunsError::Db(e) => e.into(),
        }
    }
}

impl From<RunsError> for tonic::Status {
    fn from(err: RunsError) -> Self {
        PaError::from(err).into()
    }
}
