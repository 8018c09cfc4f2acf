//! The idempotency layer on both real databases: replay, reuse with another input,
//! concurrent duplicates, failures that do not consume the key.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use sequestra::{
    audit::{self, Actor, Origin},
    auth::Role,
    db::{TenantDb, TenantTxn},
    entity::audit_log,
    error::{Error, Result},
    idempotency,
    ids::TenantId,
    kinds::AuditAction,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(
    same_key_replays_and_other_input_conflicts,
    concurrent_duplicates_have_one_effect,
    failed_work_does_not_consume_the_key,
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    id: Uuid,
    amount: String,
}

#[derive(Serialize)]
struct Input<'a> {
    amount: &'a str,
}

/// The effect's audit rows: an action of the closed set, on a subject only this test
/// writes.
const EFFECT: AuditAction = AuditAction::PaymentCreated;
const SUBJECT: &str = "receipt";

/// The effect under test: one audit row per real execution.
async fn effect(txn: &TenantTxn, amount: String) -> Result<Receipt> {
    let id = Uuid::now_v7();
    audit::record(
        txn,
        audit::Entry {
            actor: Actor::System,
            action: EFFECT,
            subject: Some((SUBJECT, id)),
            details: serde_json::json!({ "amount": amount }),
            origin: &Origin::default(),
        },
    )
    .await?;
    Ok(Receipt { id, amount })
}

async fn fund(db: &TenantDb, principal: Uuid, key: &str, amount: &str) -> Result<Receipt> {
    let owned = amount.to_owned();
    idempotency::run(
        db,
        principal,
        "test.fund",
        key,
        &Input { amount },
        move |txn| Box::pin(effect(txn, owned)),
    )
    .await
}

async fn effects(app: &TestApp, tenant: Uuid) -> u64 {
    audit_log::Entity::find()
        .filter(audit_log::Column::TenantId.eq(tenant))
        .filter(audit_log::Column::Action.eq(EFFECT.as_str()))
        .filter(audit_log::Column::SubjectType.eq(SUBJECT))
        .count(&app.db)
        .await
        .unwrap()
}

async fn same_key_replays_and_other_input_conflicts(app: TestApp) {
    let acme = app.tenant("acme").await;
    let db = TenantDb::new(app.db.clone(), TenantId::from_uuid(acme.id));
    let me = acme.user(Role::Sender).id;

    let first = fund(&db, me, "k-1", "10.00").await.unwrap();
    let again = fund(&db, me, "k-1", "10.00").await.unwrap();
    assert_eq!(first, again, "the first result, again");
    assert_eq!(effects(&app, acme.id).await, 1);

    let reused = fund(&db, me, "k-1", "99.00").await;
    assert!(
        matches!(
            reused,
            Err(Error::Conflict {
                reason: Some("IDEMPOTENCY_KEY_REUSED"),
                ..
            })
        ),
        "{reused:?}"
    );

    // Keys are per principal (and per tenant): another user's k-1 is its own.
    let other = fund(&db, acme.user(Role::Admin).id, "k-1", "10.00")
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(effects(&app, acme.id).await, 2);

    // A fresh pool on the same database (as after a restart) replays too.
    let reopened = TenantDb::new(app.reconnect().await, TenantId::from_uuid(acme.id));
    assert_eq!(fund(&reopened, me, "k-1", "10.00").await.unwrap(), first);
    assert!(matches!(
        fund(&db, me, "", "1").await,
        Err(Error::BadUserInput { .. })
    ));
}

async fn concurrent_duplicates_have_one_effect(app: TestApp) {
    let acme = app.tenant("acme").await;
    let db = TenantDb::new(app.db.clone(), TenantId::from_uuid(acme.id));
    let me = acme.user(Role::Sender).id;
    let mut racers = Vec::new();
    for _ in 0..20 {
        let db = db.clone();
        racers.push(tokio::spawn(
            async move { fund(&db, me, "race", "5.00").await },
        ));
    }
    let mut receipts = Vec::new();
    for racer in racers {
        receipts.push(
            racer
                .await
                .unwrap()
                .expect("every duplicate gets the result"),
        );
    }
    assert!(
        receipts.windows(2).all(|w| w[0] == w[1]),
        "one result for all"
    );
    assert_eq!(effects(&app, acme.id).await, 1, "exactly one effect");
}

async fn failed_work_does_not_consume_the_key(app: TestApp) {
    let acme = app.tenant("acme").await;
    let db = TenantDb::new(app.db.clone(), TenantId::from_uuid(acme.id));
    let me = acme.user(Role::Sender).id;
    let failed: Result<Receipt> = idempotency::run(
        &db,
        me,
        "test.fund",
        "k-fail",
        &Input { amount: "1" },
        |txn| {
            Box::pin(async move {
                effect(txn, "1".into()).await?;
                Err(Error::conflict("INSUFFICIENT", "refused after writing"))
            })
        },
    )
    .await;
    assert!(failed.is_err());
    assert_eq!(
        effects(&app, acme.id).await,
        0,
        "the failed attempt left nothing behind"
    );
    let retried = fund(&db, me, "k-fail", "1").await.unwrap();
    assert_eq!(retried.amount, "1");
    assert_eq!(effects(&app, acme.id).await, 1);
}
