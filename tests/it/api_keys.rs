//! API keys through HTTP and WebSocket.

use futures_util::{SinkExt, StreamExt};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sequestra::auth::Role;
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::harness::TestApp;
use crate::mfa::enrol;
use crate::on_both_backends;

on_both_backends!(
    keys_need_step_up_and_never_exceed_their_creator,
    revoked_and_expired_keys_are_refused,
    keys_work_on_the_websocket,
);

const CREATE: &str = "mutation($n: String!, $s: [Scope!]!, $e: DateTime) {
    createApiKey(input: { name: $n, scopes: $s, expiresAt: $e }) { key apiKey { id prefix scopes lastUsedAt } } }";

/// An admin of `slug` with MFA activated (so with a fresh step-up) and its token.
async fn stepped_up_admin(app: &TestApp, slug: &str) -> (crate::harness::TestTenant, String) {
    let tenant = app.tenant(slug).await;
    let token = tenant.token(Role::Admin).to_owned();
    enrol(app, &token).await;
    (tenant, token)
}

async fn keys_need_step_up_and_never_exceed_their_creator(app: TestApp) {
    let plain = app.tenant("plain").await;
    let r = app
        .gql(
            Some(plain.token(Role::Admin)),
            CREATE,
            json!({ "n": "ci", "s": ["USERS_READ"] }),
        )
        .await;
    assert_eq!(r.code(), Some("MFA_REQUIRED"), "key creation needs step-up");
    let r = app
        .gql(
            Some(plain.token(Role::Sender)),
            CREATE,
            json!({ "n": "ci", "s": ["ESCROW_READ"] }),
        )
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"), "needs keys:admin");

    let (acme, admin) = stepped_up_admin(&app, "acme").await;
    let r = app
        .gql(
            Some(&admin),
            CREATE,
            json!({ "n": "escalate", "s": ["PAYMENTS_EXECUTE"] }),
        )
        .await;
    assert_eq!(r.code(), Some("CONFLICT"));
    assert_eq!(
        r.body["errors"][0]["extensions"]["reason"],
        "SCOPE_ESCALATION"
    );

    let r = app
        .gql(
            Some(&admin),
            CREATE,
            json!({ "n": "reporting", "s": ["USERS_READ"] }),
        )
        .await;
    let created = r.ok()["createApiKey"].clone();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sq_live_") && key.len() == 8 + 64, "{key}");
    assert!(key.starts_with(created["apiKey"]["prefix"].as_str().unwrap()));
    assert_eq!(created["apiKey"]["scopes"], json!(["USERS_READ"]));

    // The key reads users as its creator, and can do nothing its scopes do not allow.
    let r = app
        .gql(
            Some(&key),
            "{ users(first: 10) { edges { node { email } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r.ok()["users"]["edges"].as_array().unwrap().len(), 4);
    let r = app
        .gql(
            Some(&key),
            CREATE,
            json!({ "n": "child", "s": ["USERS_READ"] }),
        )
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"));
    let r = app
        .gql(
            Some(&key),
            "{ apiKeys(first: 5) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"));

    // Listed without the key; used recently.
    let r = app
        .gql(
            Some(&admin),
            "{ apiKeys(first: 5) { edges { node { id name prefix lastUsedAt } } } }",
            json!({}),
        )
        .await;
    let listed = r.ok()["apiKeys"]["edges"][0]["node"].clone();
    assert_eq!(listed["name"], "reporting");
    assert!(listed["lastUsedAt"].is_string());
    assert!(
        !r.body.to_string().contains(&key[8..]),
        "the key is never shown again"
    );

    // Another tenant's admin cannot see or revoke it.
    let (_globex, globex_admin) = stepped_up_admin(&app, "globex").await;
    let id = created["apiKey"]["id"].clone();
    let r = app
        .gql(
            Some(&globex_admin),
            "mutation($id: ID!) { revokeApiKey(input: { id: $id }) { apiKey { id } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(r.code(), Some("NOT_FOUND"));
    let r = app
        .gql(
            Some(&globex_admin),
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(r.code(), Some("NOT_FOUND"));
    let _ = acme;
}

async fn revoked_and_expired_keys_are_refused(app: TestApp) {
    let (_acme, admin) = stepped_up_admin(&app, "acme").await;
    let r = app
        .gql(
            Some(&admin),
            CREATE,
            json!({ "n": "old", "s": ["USERS_READ"], "e": "2000-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(r.code(), Some("BAD_USER_INPUT"));

    let make = |name: &'static str| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let r = app
                .gql(
                    Some(&admin),
                    CREATE,
                    json!({ "n": name, "s": ["USERS_READ"] }),
                )
                .await;
            let c = r.ok()["createApiKey"].clone();
            (
                c["key"].as_str().unwrap().to_owned(),
                c["apiKey"]["id"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (revoked_key, revoked_id) = make("to-revoke").await;
    let (expiring_key, expiring_id) = make("to-expire").await;
    assert_eq!(
        app.gql(Some(&revoked_key), "{ viewer { id } }", json!({}))
            .await
            .status,
        200
    );

    let r = app
        .gql(
            Some(&admin),
            "mutation($id: ID!) { revokeApiKey(input: { id: $id }) { apiKey { revokedAt } } }",
            json!({ "id": revoked_id }),
        )
        .await;
    assert!(r.ok()["revokeApiKey"]["apiKey"]["revokedAt"].is_string());
    assert_eq!(
        app.gql(Some(&revoked_key), "{ viewer { id } }", json!({}))
            .await
            .status,
        401
    );

    // Expire the other one in the database, as time would.
    let uuid = sequestra::ids::decode_as(sequestra::ids::Kind::ApiKey, &expiring_id).unwrap();
    let backend = app.db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1"
        }
        _ => "UPDATE api_keys SET expires_at = '2000-01-01T00:00:00+00:00' WHERE id = $1",
    };
    app.db
        .execute(Statement::from_sql_and_values(backend, sql, [uuid.into()]))
        .await
        .unwrap();
    assert_eq!(
        app.gql(Some(&expiring_key), "{ viewer { id } }", json!({}))
            .await
            .status,
        401
    );
    assert_eq!(
        app.gql(Some("sq_live_forged"), "{ viewer { id } }", json!({}))
            .await
            .status,
        401
    );
}

async fn keys_work_on_the_websocket(app: TestApp) {
    let (_acme, admin) = stepped_up_admin(&app, "acme").await;
    let r = app
        .gql(
            Some(&admin),
            CREATE,
            json!({ "n": "ws", "s": ["USERS_READ"] }),
        )
        .await;
    let key = r.ok()["createApiKey"]["key"].as_str().unwrap().to_owned();
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    let ack = tokio::time::timeout(std::time::Duration::from_secs(5), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
}
