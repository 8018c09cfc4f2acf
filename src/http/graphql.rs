//! GraphQL over HTTP (POST, and GET for queries), following the GraphQL-over-HTTP
//! spec: `application/graphql-response+json` when the client accepts it (with 4xx
//! for requests that could not be executed), `application/json` otherwise (200).

use std::{collections::HashMap, net::SocketAddr};

use async_graphql::{
    Variables,
    parser::{parse_query, types::OperationType},
};
use axum::{
    Extension,
    body::Bytes,
    extract::{ConnectInfo, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value as Json, json};

use super::{AppState, RequestId};
use crate::{
    audit::Origin,
    auth::{Principal, authenticate_bearer},
    error::{Error, ErrorCode},
    graphql::{context::RequestContext, loaders, persisted},
};

/// The media type of a response, picked from the request's `Accept`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Media {
    GraphqlResponse,
    Json,
}

impl Media {
    fn content_type(self) -> &'static str {
        match self {
            Media::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            Media::Json => "application/json; charset=utf-8",
        }
    }
}

/// Picks the first acceptable media type in the client's order of preference;
/// no `Accept` at all means `application/json` (GraphQL-over-HTTP, legacy clients).
fn negotiate(headers: &HeaderMap) -> Option<Media> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Some(Media::Json);
    };
    let accept = accept.to_str().ok()?;
    let mut ranges: Vec<(f32, usize, Media)> = Vec::new();
    for (index, part) in accept.split(',').enumerate() {
        let mut params = part.split(';').map(str::trim);
        let range = params.next().unwrap_or_default().to_ascii_lowercase();
        let mut quality = 1.0_f32;
        let mut charset_ok = true;
        for param in params {
            if let Some(q) = param.strip_prefix("q=") {
                quality = q.parse().unwrap_or(0.0);
            } else if let Some(cs) = param.strip_prefix("charset=") {
                charset_ok = cs.eq_ignore_ascii_case("utf-8");
            }
        }
        if quality <= 0.0 || !charset_ok {
            continue;
        }
        let media = match range.as_str() {
            "application/graphql-response+json" => Media::GraphqlResponse,
            // Wildcards get the type every client understands.
            "application/json" | "application/*" | "*/*" => Media::Json,
            _ => continue,
        };
        ranges.push((quality, index, media));
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges.first().map(|r| r.2)
}

/// A response for a request that never reached execution.
fn request_error(media: Media, status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body =
        json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    response
}

fn not_acceptable() -> Response {
    (
        StatusCode::NOT_ACCEPTABLE,
        "accept application/graphql-response+json or application/json",
    )
        .into_response()
}

/// The GraphQL-over-HTTP request parameters, type-checked. `query` may be absent when
/// `extensions.persistedQuery` names the document by its hash.
struct Params {
    query: Option<String>,
    variables: Option<Json>,
    operation_name: Option<String>,
    extensions: Option<Json>,
}

/// The parameters with their document found: what runs.
struct Resolved {
    query: String,
    variables: Option<Json>,
    operation_name: Option<String>,
}

impl Params {
    /// Finds the document (sent, or named by a persisted hash) or answers why not.
    async fn resolve(self, state: &AppState, media: Media) -> Result<Resolved, Response> {
        match state
            .persisted
            .document(self.query, self.extensions.as_ref())
            .await
        {
            Ok(query) => Ok(Resolved {
                query,
                variables: self.variables,
                operation_name: self.operation_name,
            }),
            Err(refused) => Err(persisted_refusal(media, &refused)),
        }
    }
}

/// A request whose document cannot run (persisted operations).
fn persisted_refusal(media: Media, refused: &persisted::Refused) -> Response {
    if let persisted::Refused::Internal(err) = refused {
        tracing::error!(error = ?err, "cannot read the persisted operations");
    }
    let status = match refused {
        // Apollo's clients send the document again after PersistedQueryNotFound, but
        // give up on persisted queries for good after a 400: the hash miss is the
        // protocol's normal first step, so it is a 200 whatever the media type.
        persisted::Refused::NotFound => StatusCode::OK,
        persisted::Refused::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ if media == Media::GraphqlResponse => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    request_error(media, status, refused.code(), refused.message())
}

impl Resolved {
    fn into_request(self) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(self.query);
        if let Some(variables) = self.variables {
            request = request.variables(Variables::from_json(variables));
        }
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        request
    }
}

fn params_from_json(body: Json) -> Result<Params, &'static str> {
    let Json::Object(mut map) = body else {
        return Err("the request body must be a JSON object");
    };
    let extensions = match map.remove("extensions") {
        None | Some(Json::Null) => None,
        Some(e @ Json::Object(_)) => Some(e),
        Some(_) => return Err("`extensions` must be an object or null"),
    };
    let query = match map.remove("query") {
        Some(Json::String(q)) => Some(q),
        None | Some(Json::Null) if has_persisted_query(extensions.as_ref()) => None,
        _ => return Err("`query` must be a string"),
    };
    let variables = match map.remove("variables") {
        None | Some(Json::Null) => None,
        Some(v @ Json::Object(_)) => Some(v),
        Some(_) => return Err("`variables` must be an object or null"),
    };
    let operation_name = match map.remove("operationName") {
        None | Some(Json::Null) => None,
        Some(Json::String(name)) => Some(name),
        Some(_) => return Err("`operationName` must be a string or null"),
    };
    Ok(Params {
        query,
        variables,
        operation_name,
        extensions,
    })
}

fn has_persisted_query(extensions: Option<&Json>) -> bool {
    extensions.is_some_and(|e| e.get("persistedQuery").is_some_and(|p| !p.is_null()))
}

fn params_from_query(mut query: HashMap<String, String>) -> Result<Params, &'static str> {
    let text = query.remove("query");
    let json_param =
        |raw: Option<String>, what: &'static str| -> Result<Option<Json>, &'static str> {
            match raw {
                None => Ok(None),
                Some(raw) => match serde_json::from_str::<Json>(&raw) {
                    Ok(Json::Null) => Ok(None),
                    Ok(v @ Json::Object(_)) => Ok(Some(v)),
                    _ => Err(what),
                },
            }
        };
    let variables = json_param(
        query.remove("variables"),
        "`variables` must be a JSON object",
    )?;
    let extensions = json_param(
        query.remove("extensions"),
        "`extensions` must be a JSON object",
    )?;
    if text.is_none() && !has_persisted_query(extensions.as_ref()) {
        return Err("`query` is required");
    }
    Ok(Params {
        query: text,
        variables,
        operation_name: query.remove("operationName").filter(|n| !n.is_empty()),
        extensions,
    })
}

/// The operation type a GET would run, when the document parses.
fn operation_type(params: &Resolved) -> Option<OperationType> {
    let document = parse_query(&params.query).ok()?;
    let operations: Vec<_> = document.operations.iter().collect();
    let chosen = match &params.operation_name {
        Some(name) => operations
            .iter()
            .find(|(n, _)| n.map(|n| n.as_str()) == Some(name.as_str())),
        None if operations.len() == 1 => operations.first(),
        None => None,
    }?;
    Some(chosen.1.node.ty)
}

pub async fn post_handler(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let json_body = content_type.as_deref().is_some_and(|ct| {
        let mut parts = ct.split(';').map(str::trim);
        parts.next() == Some("application/json")
            && parts.all(|p| !p.starts_with("charset=") || p == "charset=utf-8")
    });
    let multipart = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("multipart/form-data"));
    if multipart {
        // The GraphQL multipart request spec (file uploads). Only mutations take
        // files; a bearer token is still required, so this is no CSRF vector.
        let options = async_graphql::http::MultipartOptions::default()
            .max_file_size(state.services.proof_max_bytes)
            .max_num_files(4);
        let request = async_graphql::http::receive_body(
            content_type,
            futures_util::io::Cursor::new(body.to_vec()),
            options,
        )
        .await;
        return match request {
            Ok(request) => {
                // Uploads run under the same allow-list as every other request (the
                // document is sent in full; a hash alone is not supported here).
                if state.persisted.only()
                    && let Err(refused) = state
                        .persisted
                        .document(Some(request.query.clone()), None)
                        .await
                {
                    return persisted_refusal(media, &refused);
                }
                execute(state, media, request, &headers, request_id, peer).await
            }
            Err(err) => {
                let (status, message) = match err {
                    async_graphql::ParseRequestError::PayloadTooLarge => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "a file is larger than allowed".to_owned(),
                    ),
                    other => (
                        StatusCode::BAD_REQUEST,
                        format!("invalid multipart request: {other}"),
                    ),
                };
                request_error(media, status, ErrorCode::BadUserInput, &message)
            }
        };
    }
    if !json_body {
        return request_error(
            media,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadUserInput,
            "send the request as Content-Type: application/json (or multipart/form-data with files)",
        );
    }
    if body.len() > state.config.http.body_limit_bytes {
        return request_error(
            media,
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BadUserInput,
            "the request body is too large",
        );
    }
    let body: Json = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(_) => {
            return request_error(
                media,
                StatusCode::BAD_REQUEST,
                ErrorCode::BadUserInput,
                "the request body is not valid JSON",
            );
        }
    };
    match params_from_json(body) {
        Ok(params) => match params.resolve(&state, media).await {
            Ok(params) => {
                let request = params.into_request();
                execute(state, media, request, &headers, request_id, peer).await
            }
            Err(refused) => refused,
        },
        Err(message) => request_error(
            media,
            StatusCode::BAD_REQUEST,
            ErrorCode::BadUserInput,
            message,
        ),
    }
}

pub async fn get_handler(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let parsed = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map_err(|_| "the query string is malformed")
        .and_then(|q| params_from_query(q.0));
    let params = match parsed {
        Ok(params) => match params.resolve(&state, media).await {
            Ok(params) => params,
            Err(refused) => return refused,
        },
        Err(message) => {
            return request_error(
                media,
                StatusCode::BAD_REQUEST,
                ErrorCode::BadUserInput,
                message,
            );
        }
    };
    if matches!(
        operation_type(&params),
        Some(OperationType::Mutation | OperationType::Subscription)
    ) {
        let mut response = request_error(
            media,
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BadUserInput,
            "only queries may be sent with GET; use POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    execute(
        state,
        media,
        params.into_request(),
        &headers,
        request_id,
        peer,
    )
    .await
}

/// Builds the principal at the edge and runs the request.
async fn execute(
    state: AppState,
    media: Media,
    mut request: async_graphql::Request,
    headers: &HeaderMap,
    request_id: RequestId,
    peer: SocketAddr,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let client = super::client_ip::resolve(peer.ip(), headers, &state.config.http.trusted_proxies);
    let principal = match authenticate_bearer(
        &state.services.db,
        &state.services.tokens,
        authorization,
    )
    .await
    {
        Ok(principal) => principal,
        Err(Error::Unauthenticated) => {
            let mut response = request_error(
                media,
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "invalid or expired credentials",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return response;
        }
        Err(err) => {
            tracing::error!(error = ?err, "authentication failed unexpectedly");
            return request_error(
                media,
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error",
            );
        }
    };
    let mut context = request_context(&state, principal, request_id, client);
    // A query's reads share one transaction (PostgreSQL), ended once it has run.
    let reads = std::sync::Arc::new(crate::db::SharedReads::default());
    context.db = context.db.map(|db| db.with_shared_reads(reads.clone()));
    let fence = loaders::PollFence::default();
    loaders::attach(&mut request.data, context.db.as_ref(), Some(&fence));
    request = request.data(context);

    let response = fence.run(state.schema.execute(request)).await;
    reads.finish().await;
    // A request error (syntax, validation, limits) has no data and no error path.
    let not_executed = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let status = if not_executed && media == Media::GraphqlResponse {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    // Serialized straight from the response, whose objects keep the order the
    // document asked for (a `serde_json::Value` on the way would sort them). A request
    // that never executed has no `data` entry at all.
    let body = if not_executed {
        serde_json::to_vec(&RequestErrors {
            errors: &response.errors,
        })
    } else {
        serde_json::to_vec(&response)
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "cannot serialize a GraphQL response");
            return request_error(
                media,
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error",
            );
        }
    };
    let mut http = (status, body).into_response();
    http.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media.content_type()),
    );
    http.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    http
}

/// The body of a request error: its errors, and no `data` entry.
#[derive(serde::Serialize)]
struct RequestErrors<'a> {
    errors: &'a [async_graphql::ServerError],
}

/// The per-request context: principal, its tenant-scoped handle, origin.
pub(super) fn request_context(
    state: &AppState,
    principal: Principal,
    request_id: RequestId,
    client: std::net::IpAddr,
) -> RequestContext {
    let db = principal
        .tenant()
        .map(|tenant| state.services.tenant_db(tenant));
    RequestContext::new(
        principal,
        db,
        Origin {
            ip: Some(client.to_string()),
            request_id: Some(request_id.0),
        },
        Some(client),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Option<Media> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&headers)
    }

    #[test]
    fn negotiation_follows_preference() {
        assert!(negotiate(&HeaderMap::new()) == Some(Media::Json));
        assert!(accept("application/graphql-response+json") == Some(Media::GraphqlResponse));
        assert!(accept("application/json") == Some(Media::Json));
        assert!(
            accept("application/json, application/graphql-response+json;q=0.9")
                == Some(Media::Json)
        );
        assert!(
            accept("application/json;q=0.5, application/graphql-response+json")
                == Some(Media::GraphqlResponse)
        );
        assert!(accept("*/*") == Some(Media::Json));
        assert!(accept("text/html").is_none());
        assert!(accept("application/json; charset=iso-8859-1").is_none());
    }
}
