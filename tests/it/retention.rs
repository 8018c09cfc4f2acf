//! Retention: the jobs purge operational rows past their periods (webhook events and
//! refused deliveries, expired idempotency keys, ended sessions with their refresh
//! tokens, old credential-failure counters, expired MFA challenges, sent notifications
//! and spent mailed tokens) and keep the rest.

use chrono::{Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    sea_query::Expr,
};
use sequestra::{
    auth::Role,
    entity::{
        auth_failure, idempotency_key, mail_token, mfa_challenge, notification, refresh_token,
        session, webhook_event, webhook_rejection,
    },
};
use serde_json::json;
use uuid::Uuid;

use crate::harness::TestApp;
use crate::on_both_backends_with;

on_both_backends_with!(
    expired_operational_rows_are_purged_and_the_rest_kept,
    &[
        ("SEQUESTRA_JOBS_ENABLED", "true"),
        ("SEQUESTRA_JOBS_INTERVAL_MS", "100"),
        ("SEQUESTRA_RETENTION_INTERVAL_SECS", "1"),
    ]
);

async fn event(app: &TestApp, tenant: Option<Uuid>, days_ago: i64) -> String {
    let id = format!("evt_{}", Uuid::now_v7().simple());
    let at = Utc::now() - Duration::days(days_ago);
    webhook_event::ActiveModel {
        id: Set(id.clone()),
        psp: Set("simulated".into()),
        kind: Set("payout.settled".into()),
        reference: Set("psp_x".into()),
        created_at: Set(at),
        received_at: Set(at),
        outcome: Set("RECEIVED".into()),
        payment_id: Set(None),
        tenant_id: Set(tenant),
        failure_reason: Set(None),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

async fn rejection(app: &TestApp, days_ago: i64) -> Uuid {
    let id = Uuid::now_v7();
    webhook_rejection::ActiveModel {
        id: Set(id),
        ip: Set(None),
        reason: Set("bad signature".into()),
        received_at: Set(Utc::now() - Duration::days(days_ago)),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

async fn challenge(app: &TestApp, tenant: Uuid, user: Uuid, days_ago: i64) -> Uuid {
    let id = Uuid::now_v7();
    let at = Utc::now() - Duration::days(days_ago);
    mfa_challenge::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant),
        user_id: Set(user),
        token_hash: Set(id.simple().to_string()),
        created_at: Set(at),
        expires_at: Set(at + Duration::minutes(5)),
        consumed_at: Set(None),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

/// A notification of `user` written `days_ago`, in `status`.
async fn notice(app: &TestApp, tenant: Uuid, user: Uuid, days_ago: i64, status: &str) -> Uuid {
    let id = Uuid::now_v7();
    let at = Utc::now() - Duration::days(days_ago);
    notification::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant),
        user_id: Set(user),
        kind: Set("PAYMENT_SETTLED".into()),
        to_address: Set(None),
        data: Set("{}".into()),
        status: Set(status.into()),
        attempts: Set(1),
        // A pending one is not due for a long time (so it stays pending).
        next_attempt_at: Set(Utc::now() + Duration::days(1)),
        claimed_until: Set(None),
        sent_at: Set((status == "SENT").then_some(at)),
        last_error: Set(None),
        created_at: Set(at),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

/// A mailed token of `user`, created `days_ago`, used then or not.
async fn token(app: &TestApp, tenant: Uuid, user: Uuid, days_ago: i64, used: bool) -> Uuid {
    let id = Uuid::now_v7();
    let at = Utc::now() - Duration::days(days_ago);
    mail_token::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant),
        user_id: Set(user),
        purpose: Set("PASSWORD_RESET".into()),
        new_email: Set(None),
        token_hash: Set(id.simple().to_string()),
        expires_at: Set(at + Duration::minutes(30)),
        used_at: Set(used.then_some(at)),
        created_at: Set(at),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

async fn expired_operational_rows_are_purged_and_the_rest_kept(app: TestApp) {
    let t = app.tenant("acme").await;
    let long_ago = Utc::now() - Duration::days(400);

    // Idempotency keys: two grants' claims, one expired long ago.
    let shops = crate::spend::catalog(&app, &t).await;
    // (One active mandate per beneficiary and currency: two currencies.)
    for currency in ["EUR", "GBP"] {
        crate::spend::grant(
            &app,
            &t,
            json!({ "total": "10.00", "currency": currency, "allowedMerchantIds": [shops.fresh_mart] }),
        )
        .await
        .ok();
    }
    let keys = idempotency_key::Entity::find().all(&app.db).await.unwrap();
    assert!(keys.len() >= 2, "{keys:?}");
    let expired_key = keys[0].id;
    idempotency_key::Entity::update_many()
        .col_expr(idempotency_key::Column::ExpiresAt, Expr::value(long_ago))
        .filter(idempotency_key::Column::Id.eq(expired_key))
        .exec(&app.db)
        .await
        .unwrap();

    // Sessions: the support user's ended long ago (with its refresh token); the
    // others are current.
    let support = t.user(Role::Support).id;
    let ended = session::Entity::update_many()
        .col_expr(session::Column::ExpiresAt, Expr::value(long_ago))
        .filter(session::Column::UserId.eq(support))
        .exec(&app.db)
        .await
        .unwrap();
    assert!(ended.rows_affected >= 1);
    let ended_sessions: Vec<Uuid> = session::Entity::find()
        .filter(session::Column::UserId.eq(support))
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    let sessions_before = session::Entity::find().count(&app.db).await.unwrap();

    // Credential failures: the sender's counter is old, the admin's is fresh.
    for email in [&t.user(Role::Sender).email, &t.user(Role::Admin).email] {
        let r = app
            .gql(
                None,
                "mutation($e: String!) { signIn(input: { tenant: \"acme\", email: $e, password: \"wrong wrong wrong\" }) { accessToken } }",
                json!({ "e": email }),
            )
            .await;
        assert_eq!(r.code(), Some("UNAUTHENTICATED"), "{}", r.body);
    }
    auth_failure::Entity::update_many()
        .col_expr(auth_failure::Column::WindowStartedAt, Expr::value(long_ago))
        .filter(auth_failure::Column::UserId.eq(t.user(Role::Sender).id))
        .exec(&app.db)
        .await
        .unwrap();

    // Webhook events (a tenant's and an unmatched one) and refused deliveries, and MFA
    // challenges: an old one and a fresh one of each.
    let old_events = [
        event(&app, Some(t.id), 100).await,
        event(&app, None, 100).await,
    ];
    let fresh_event = event(&app, Some(t.id), 1).await;
    let (old_rejection, fresh_rejection) = (rejection(&app, 100).await, rejection(&app, 1).await);
    let sender = t.user(Role::Sender).id;
    let (old_challenge, fresh_challenge) = (
        challenge(&app, t.id, sender, 3).await,
        challenge(&app, t.id, sender, 0).await,
    );

    // Notifications: an old sent one goes, an old one still to send stays, a fresh
    // sent one stays; mailed tokens: an old used one goes, a fresh unused one stays.
    let (old_notice, pending_notice, fresh_notice) = (
        notice(&app, t.id, sender, 100, "SENT").await,
        notice(&app, t.id, sender, 100, "PENDING").await,
        notice(&app, t.id, sender, 1, "SENT").await,
    );
    let (old_token, fresh_token) = (
        token(&app, t.id, sender, 100, true).await,
        token(&app, t.id, sender, 0, false).await,
    );

    // Within a few job ticks, the old rows are gone.
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = webhook_event::Entity::find()
            .filter(webhook_event::Column::Id.is_in(old_events.clone()))
            .count(&app.db)
            .await
            .unwrap()
            + webhook_rejection::Entity::find_by_id(old_rejection)
                .count(&app.db)
                .await
                .unwrap()
            + mfa_challenge::Entity::find_by_id(old_challenge)
                .count(&app.db)
                .await
                .unwrap()
            + idempotency_key::Entity::find_by_id(expired_key)
                .count(&app.db)
                .await
                .unwrap()
            + session::Entity::find()
                .filter(session::Column::Id.is_in(ended_sessions.clone()))
                .count(&app.db)
                .await
                .unwrap()
            + auth_failure::Entity::find()
                .filter(auth_failure::Column::UserId.eq(sender))
                .count(&app.db)
                .await
                .unwrap()
            + notification::Entity::find_by_id(old_notice)
                .count(&app.db)
                .await
                .unwrap()
            + mail_token::Entity::find_by_id(old_token)
                .count(&app.db)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "expired rows left after the purge");
    // Their refresh tokens went with the ended sessions.
    assert_eq!(
        refresh_token::Entity::find()
            .filter(refresh_token::Column::SessionId.is_in(ended_sessions.clone()))
            .count(&app.db)
            .await
            .unwrap(),
        0
    );

    // What is still in use stays.
    assert_eq!(
        session::Entity::find().count(&app.db).await.unwrap(),
        sessions_before - ended_sessions.len() as u64
    );
    assert!(
        webhook_event::Entity::find_by_id(fresh_event)
            .one(&app.db)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        webhook_rejection::Entity::find_by_id(fresh_rejection)
            .one(&app.db)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        mfa_challenge::Entity::find_by_id(fresh_challenge)
            .one(&app.db)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        idempotency_key::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        keys.len() as u64 - 1
    );
    assert_eq!(
        auth_failure::Entity::find()
            .filter(auth_failure::Column::UserId.eq(t.user(Role::Admin).id))
            .count(&app.db)
            .await
            .unwrap(),
        1
    );
    for kept in [pending_notice, fresh_notice] {
        assert!(
            notification::Entity::find_by_id(kept)
                .one(&app.db)
                .await
                .unwrap()
                .is_some()
        );
    }
    assert!(
        mail_token::Entity::find_by_id(fresh_token)
            .one(&app.db)
            .await
            .unwrap()
            .is_some()
    );
    // The other users still work with their sessions.
    let r = app
        .gql(
            Some(t.token(Role::Sender)),
            "{ viewer { email } }",
            json!({}),
        )
        .await;
    assert_eq!(r.ok()["viewer"]["email"], t.user(Role::Sender).email);
}
