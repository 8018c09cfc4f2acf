//! Maps every error once, at the edge, to a message and a stable `extensions.code`.
//!
//! Resolvers use `?` on [`crate::error::Error`]; async-graphql keeps it as the error's
//! source, and the edge extension reads it back. Errors async-graphql raises itself
//! (syntax, validation, argument coercion, limits) are the caller's: BAD_USER_INPUT.
//! Anything else is INTERNAL, logged here with its detail and sent without it.

use std::sync::Arc;

use async_graphql::{Response, ServerError, Value};

use crate::error::{Error, ErrorCode};

/// Every error of a response (each response of a subscription too), mapped by
/// [`map_error`]; the [`edge`](super::edge) extension calls it last.
pub fn map_response(response: &mut Response) {
    for error in &mut response.errors {
        map_error(error);
    }
}

/// Sets `extensions.code` (and friends) on one error, scrubbing internal detail.
pub fn map_error(error: &mut ServerError) {
    // DataLoader errors arrive wrapped in an Arc (loaders need a cloneable error).
    let app_error = error
        .source::<Error>()
        .or_else(|| error.source::<Arc<Error>>().map(|e| e.as_ref()));
    let (code, extra): (ErrorCode, Vec<(&str, Value)>) = match app_error {
        Some(app) => {
            let extra = match app {
                Error::Internal(detail) => {
                    tracing::error!(error = ?detail, path = ?error.path, "internal error");
                    vec![]
                }
                Error::BadUserInput {
                    field: Some(field), ..
                } => vec![("field", Value::from(*field))],
                Error::Conflict {
                    reason: Some(reason),
                    ..
                } => vec![("reason", Value::from(*reason))],
                Error::InvalidState { state, .. } => vec![
                    ("reason", Value::from("INVALID_STATE")),
                    ("state", Value::from(*state)),
                ],
                Error::RateLimited { retry_after_secs } => {
                    vec![("retryAfter", Value::from(*retry_after_secs))]
                }
                _ => vec![],
            };
            (app.code(), extra)
        }
        None if error.source.is_some() => {
            // An error type that was not ours leaked through `?`: never show it.
            tracing::error!(message = %error.message, path = ?error.path, "unmapped internal error");
            (ErrorCode::Internal, vec![])
        }
        None => match error.extensions.as_ref().and_then(|e| e.get("code")) {
            Some(Value::String(_)) => return,
            _ => (ErrorCode::BadUserInput, vec![]),
        },
    };
    if code == ErrorCode::Internal {
        error.message = "internal error".to_owned();
    }
    let extensions = error.extensions.get_or_insert_with(Default::default);
    for (key, value) in extra {
        extensions.set(key, value);
    }
    metrics::counter!("graphql_errors_total", "code" => code.as_str()).increment(1);
    extensions.set("code", code.as_str());
}
