//! The one error type. Rules and the data layer return it; the GraphQL edge maps it
//! once (see `graphql::errors`) to a message and a stable `extensions.code`.

use std::fmt;

/// The stable codes clients can rely on (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    Conflict,
    RateLimited,
    MfaRequired,
    /// The document would cost more than the server's limits allow (refused before
    /// it is validated or run).
    QueryTooComplex,
    /// A document named only by its hash that this server does not know (automatic
    /// persisted queries: send it again with its text).
    PersistedQueryNotFound,
    /// `SEQUESTRA_PERSISTED_ONLY`: the document is not a registered operation.
    PersistedQueryNotAllowed,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Conflict => "CONFLICT",
            Self::RateLimited => "RATE_LIMITED",
            Self::MfaRequired => "MFA_REQUIRED",
            Self::QueryTooComplex => "QUERY_TOO_COMPLEX",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::PersistedQueryNotAllowed => "PERSISTED_QUERY_NOT_ALLOWED",
            Self::Internal => "INTERNAL",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication required")]
    Unauthenticated,
    /// A sign-in or refresh that failed, whatever the reason (unknown tenant, unknown
    /// email, wrong password, used token): one answer, so nothing can be told apart.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("not allowed")]
    Forbidden,
    /// A missing row and another tenant's row are the same answer.
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    BadUserInput {
        message: String,
        field: Option<&'static str>,
    },
    #[error("{message}")]
    Conflict {
        message: String,
        reason: Option<&'static str>,
    },
    /// A move the object's state machine does not allow from where it stands.
    #[error("the {object} is {state}: cannot {action}")]
    InvalidState {
        object: &'static str,
        state: &'static str,
        action: &'static str,
    },
    #[error("too many attempts; retry later")]
    RateLimited { retry_after_secs: u64 },
    #[error("a recent MFA verification is required")]
    MfaRequired,
    /// The tenant requires MFA for one of the caller's roles and the caller has none.
    #[error("your role requires MFA: enrol with enrollMfa and activateMfa first")]
    MfaEnrolmentRequired,
    /// A document over the server's cost limits.
    #[error("{0}")]
    TooComplex(String),
    /// Anything unexpected. The detail is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated | Self::InvalidCredentials => ErrorCode::Unauthenticated,
            Self::Forbidden => ErrorCode::Forbidden,
            Self::NotFound => ErrorCode::NotFound,
            Self::BadUserInput { .. } => ErrorCode::BadUserInput,
            Self::Conflict { .. } | Self::InvalidState { .. } => ErrorCode::Conflict,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::MfaRequired | Self::MfaEnrolmentRequired => ErrorCode::MfaRequired,
            Self::TooComplex(_) => ErrorCode::QueryTooComplex,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput {
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_field(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadUserInput {
            message: message.into(),
            field: Some(field),
        }
    }

    pub fn conflict(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            reason: Some(reason),
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(err: sea_orm::DbErr) -> Self {
        if let Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
            return Self::conflict(
                "ALREADY_EXISTS",
                "a record with these values already exists",
            );
        }
        Self::Internal(err.into())
    }
}

impl From<sea_orm::TransactionError<Error>> for Error {
    fn from(err: sea_orm::TransactionError<Error>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(e) => e,
        }
    }
}
