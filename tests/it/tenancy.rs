//! The tenant-scoped access layer: another tenant's row is invisible (NOT_FOUND,
//! exactly like a missing one), inserts are stamped, and the database itself refuses
//! a child row that points into another tenant.

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr,
};
use sequestra::{
    auth::Role,
    db::TenantDb,
    entity::{audit_log, user, user_role},
    error::Error,
    ids::{self, Kind, TenantId},
};
use serde_json::json;

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(
    foreign_ids_answer_not_found_like_missing_ones,
    scoped_layer_filters_every_statement,
    database_refuses_cross_tenant_children,
    audit_log_is_append_only,
    users_connection_pages_within_the_tenant,
);

async fn foreign_ids_answer_not_found_like_missing_ones(app: TestApp) {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let admin = acme.token(Role::Admin);
    let query = "query($id: ID!) { node(id: $id) { id ... on User { email } } }";

    let own = ids::encode(Kind::User, acme.user(Role::Sender).id);
    let r = app.gql(Some(admin), query, json!({ "id": own })).await;
    assert_eq!(r.ok()["node"]["email"], "sender@acme.test");

    let foreign = ids::encode(Kind::User, globex.user(Role::Sender).id);
    let missing = ids::encode(Kind::User, uuid::Uuid::now_v7());
    let foreign_tenant = ids::encode(Kind::Tenant, globex.id);
    let malformed = "usr_not-an-id".to_owned();
    let mut answers = Vec::new();
    for id in [&foreign, &missing, &foreign_tenant, &malformed] {
        let r = app.gql(Some(admin), query, json!({ "id": id })).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.code(), Some("NOT_FOUND"), "{id}: {}", r.body);
        assert_eq!(r.data()["node"], serde_json::Value::Null);
        answers.push(r.body.to_string());
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "identical answers: {answers:?}"
    );

    // Own tenant resolves; a sender cannot read another user of its own tenant.
    let own_tenant = ids::encode(Kind::Tenant, acme.id);
    let r = app
        .gql(
            Some(admin),
            "query($id: ID!) { node(id: $id) { ... on Tenant { slug } } }",
            json!({ "id": own_tenant }),
        )
        .await;
    assert_eq!(r.ok()["node"]["slug"], "acme");
    let r = app
        .gql(
            Some(acme.token(Role::Sender)),
            query,
            json!({ "id": ids::encode(Kind::User, acme.user(Role::Admin).id) }),
        )
        .await;
    assert_eq!(r.code(), Some("NOT_FOUND"));
}

async fn scoped_layer_filters_every_statement(app: TestApp) {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let as_globex = TenantDb::new(app.db.clone(), TenantId::from_uuid(globex.id));
    let acme_user = acme.user(Role::Sender).id;

    assert!(matches!(
        as_globex.get::<user::Entity>(acme_user).await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        as_globex.list::<user::Entity>(|q| q).await.unwrap().len(),
        4
    );
    assert_eq!(as_globex.count::<user::Entity>(|q| q).await.unwrap(), 4);

    let changed = as_globex
        .update_where::<user::Entity>(|q| {
            q.col_expr(user::Column::IsActive, Expr::value(false))
                .filter(user::Column::Id.eq(acme_user))
        })
        .await
        .unwrap();
    assert_eq!(changed, 0, "an update cannot reach another tenant");
    let deleted = as_globex
        .delete_where::<user_role::Entity>(|q| q.filter(user_role::Column::UserId.eq(acme_user)))
        .await
        .unwrap();
    assert_eq!(deleted, 0, "a delete cannot reach another tenant");
    let still = user::Entity::find_by_id(acme_user)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(still.is_active);

    // An insert is stamped with the handle's tenant, whatever the model said.
    let now = Utc::now();
    let inserted = as_globex
        .insert(user::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            tenant_id: Set(acme.id),
            email: Set("stamped@globex.test".into()),
            password_hash: Set("x".into()),
            is_active: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
            email_verified_at: Set(None),
        })
        .await
        .unwrap();
    assert_eq!(inserted.tenant_id, globex.id);
}

async fn database_refuses_cross_tenant_children(app: TestApp) {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    // A role row claiming globex for an acme user: the composite foreign key refuses it.
    let result = user_role::Entity::insert(user_role::ActiveModel {
        tenant_id: Set(globex.id),
        user_id: Set(acme.user(Role::Sender).id),
        role: Set(Role::Admin),
        created_at: Set(Utc::now()),
    })
    .exec(&app.db)
    .await;
    assert!(
        result.is_err(),
        "composite (tenant_id, user_id) foreign key must refuse"
    );
}

async fn audit_log_is_append_only(app: TestApp) {
    let acme = app.tenant("acme").await;
    let rows = audit_log::Entity::find()
        .filter(audit_log::Column::TenantId.eq(acme.id))
        .filter(audit_log::Column::Action.eq("user.created"))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "one user.created row per user");
    assert!(
        rows.iter()
            .all(|r| r.actor_type == "SYSTEM" && r.subject_type.as_deref() == Some("user"))
    );
    let update = app
        .db
        .execute_unprepared("UPDATE audit_log SET action = 'tampered'")
        .await;
    assert!(update.is_err(), "UPDATE on audit_log must fail");
    let delete = app.db.execute_unprepared("DELETE FROM audit_log").await;
    assert!(delete.is_err(), "DELETE on audit_log must fail");
}

async fn users_connection_pages_within_the_tenant(app: TestApp) {
    let acme = app.tenant("acme").await;
    let _globex = app.tenant("globex").await;
    for i in 0..3 {
        app.add_user(&acme, &format!("extra{i}@acme.test"), &[Role::Sender])
            .await;
    }
    let admin = acme.token(Role::Admin);
    let page = "query($first: Int, $after: String, $last: Int, $before: String) {
        users(first: $first, after: $after, last: $last, before: $before) {
            edges { cursor node { email roles } }
            pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        } }";

    let mut emails = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let r = app
            .gql(Some(admin), page, json!({ "first": 3, "after": after }))
            .await;
        let users = &r.ok()["users"];
        for edge in users["edges"].as_array().unwrap() {
            emails.push(edge["node"]["email"].as_str().unwrap().to_owned());
            assert!(!edge["node"]["roles"].as_array().unwrap().is_empty());
        }
        if !users["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = users["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        emails.len(),
        7,
        "4 role users + 3 extra, none from globex: {emails:?}"
    );
    assert!(emails.iter().all(|e| e.ends_with("@acme.test")));

    // Backwards: the last two, in the same (oldest-first) order.
    let r = app.gql(Some(admin), page, json!({ "last": 2 })).await;
    let users = &r.ok()["users"];
    let last: Vec<&str> = users["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["email"].as_str().unwrap())
        .collect();
    assert_eq!(last, vec![emails[5].as_str(), emails[6].as_str()]);
    assert_eq!(users["pageInfo"]["hasPreviousPage"], true);

    for (vars, why) in [
        (json!({ "first": 2, "last": 2 }), "first and last together"),
        (json!({ "first": 101 }), "above the page limit"),
        (json!({ "first": -1 }), "negative"),
        (
            json!({ "first": 2, "after": "bm90LWEtY3Vyc29y" }),
            "foreign cursor",
        ),
    ] {
        let r = app.gql(Some(admin), page, vars).await;
        assert_eq!(r.code(), Some("BAD_USER_INPUT"), "{why}: {}", r.body);
    }
}
