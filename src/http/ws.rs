//! `/graphql/ws`: graphql-transport-ws. Credentials come in `connection_init`
//! (`{"Authorization": "Bearer …"}`); bad ones close the socket with 4403.

use std::net::SocketAddr;

use async_graphql::{Data, http::ALL_WEBSOCKET_PROTOCOLS};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::{
    Extension,
    extract::{ConnectInfo, State, WebSocketUpgrade},
    response::Response,
};

use super::{AppState, RequestId, graphql::request_context};
use crate::{auth::authenticate_bearer, error::Error, graphql::loaders};

pub async fn handler(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let schema = state.schema.clone();
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let authorization = payload
                        .get("Authorization")
                        .or_else(|| payload.get("authorization"))
                        .and_then(|v| v.as_str())
                        .map(str::to_owned);
                    let principal = authenticate_bearer(
                        &state.db,
                        &state.tokens,
                        authorization.as_deref(),
                    )
                    .await
                    .map_err(|e| match e {
                        Error::Unauthenticated => Error::Unauthenticated,
                        other => {
                            tracing::error!(error = ?other, "websocket authentication failed");
                            Error::internal(anyhow::anyhow!("authentication failed"))
                        }
                    })?;
                    let context = request_context(&state, principal, request_id, peer);
                    let mut data = Data::default();
                    loaders::attach(&mut data, context.db.as_ref());
                    data.insert(context);
                    Ok(data)
                })
                .serve()
        })
}
