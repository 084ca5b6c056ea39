use pa_kit::PaError;
use pa_kit::crypto::CryptoError;

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("toolset snapshot {0} not found")]
    UnknownSnapshot(String),
    #[error("tool {tool} is not in toolset snapshot {snapshot}")]
    NotInSnapshot { tool: String, snapshot: String },
    #[error("run_id must not be empty")]
    MissingRunId,
    #[error("snapshot_id must be at most 200 characters without spaces")]
    BadSnapshotId,
    #[error("{0}")]
    Invalid(String),
    #[error("integration {0} not found")]
    IntegrationNotFound(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("stored toolset is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("device {0} not found")]
    DeviceNotFound(String),
    #[error("chat {0} not found")]
    ChatNotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("Redis: {0}")]
    Redis(String),
    #[error("{0}")]
    SandboxUnavailable(String),
}

impl From<serde_json::Error> for ToolsError {
    fn from(err: serde_json::Error) -> Self {
        ToolsError::Corrupt(err.to_string())
    }
}

impl From<ToolsError> for PaError {
    fn from(err: ToolsError) -> Self {
        match err {
            ToolsError::UnknownSnapshot(_)
            | ToolsError::NotInSnapshot { .. }
            | ToolsError::IntegrationNotFound(_)
            | ToolsError::DeviceNotFound(_)
            | ToolsError::ChatNotFound(_) => PaError::not_found(err.to_string()),
            ToolsError::Unauthenticated(_) => PaError::unauthenticated(err.to_string()),
            ToolsError::Redis(_) => PaError::new(pa_kit::ErrorCode::Unavailable, err.to_string()),
            // The operator's setup, not the caller's request: 409, never a 5xx.
            ToolsError::SandboxUnavailable(_) => {
                PaError::new(pa_kit::ErrorCode::FailedPrecondition, err.to_string())
            }
            ToolsError::MissingRunId | ToolsError::BadSnapshotId | ToolsError::Invalid(_) => {
                PaError::bad_request(err.to_string())
            }
            ToolsError::Db(e) => e.into(),
            ToolsError::Corrupt(e) => PaError::internal(e),
            ToolsError::Crypto(e) => e.into(),
        }
    }
}

pub fn invalid(message: impl Into<String>) -> ToolsError {
    ToolsError::Invalid(message.into())
}
