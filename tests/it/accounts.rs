//! User administration, password changes and the audit log through HTTP.

use sequestra::{
    auth::Role,
    ids::{self, Kind},
};
use serde_json::json;

use crate::harness::TestApp;
use crate::mfa::enrol;
use crate::on_both_backends;

on_both_backends!(
    admins_create_users_with_one_time_passwords,
    role_changes_need_step_up_and_keep_an_admin,
    deactivation_ends_every_session,
    password_change_checks_policy_and_ends_other_sessions,
    audit_log_pages_for_auditors_only,
    platform_admins_create_tenants_and_read_none,
);

async fn admins_create_users_with_one_time_passwords(app: TestApp) {
    let acme = app.tenant("acme").await;
    let create = "mutation($e: String!, $r: [Role!]!) { createUser(input: { email: $e, roles: $r }) { user { id email roles } oneTimePassword } }";
    // Creating a user grants roles: a step-up first.
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            create,
            json!({ "e": "early@acme.test", "r": ["SENDER"] }),
        )
        .await;
    assert_eq!(r.code(), Some("MFA_REQUIRED"), "{}", r.body);
    enrol(&app, acme.token(Role::Admin)).await;
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            create,
            json!({ "e": "New.Hire@Acme.test", "r": ["SENDER", "BENEFICIARY"] }),
        )
        .await;
    let created = r.ok()["createUser"].clone();
    assert_eq!(created["user"]["email"], "new.hire@acme.test");
    assert_eq!(created["user"]["roles"], json!(["BENEFICIARY", "SENDER"]));
    let otp = created["oneTimePassword"].as_str().unwrap();
    assert!(otp.len() >= 24);
    let token = app.sign_in("acme", "new.hire@acme.test", otp).await;
    assert_eq!(
        app.gql(Some(&token), "{ viewer { email } }", json!({}))
            .await
            .status,
        200
    );

    let again = app
        .gql(
            Some(acme.token(Role::Admin)),
            create,
            json!({ "e": "new.hire@acme.test", "r": ["SENDER"] }),
        )
        .await;
    assert_eq!(again.code(), Some("CONFLICT"));
    let r = app
        .gql(
            Some(acme.token(Role::Sender)),
            create,
            json!({ "e": "x@acme.test", "r": ["ADMIN"] }),
        )
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"));
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            create,
            json!({ "e": "not-an-email", "r": ["SENDER"] }),
        )
        .await;
    assert_eq!(r.code(), Some("BAD_USER_INPUT"));
    assert_eq!(r.body["errors"][0]["extensions"]["field"], "email");
}

async fn role_changes_need_step_up_and_keep_an_admin(app: TestApp) {
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    let admin = acme.token(Role::Admin).to_owned();
    let set = "mutation($u: ID!, $r: [Role!]!) { setUserRoles(input: { userId: $u, roles: $r }) { user { roles } } }";
    let sender = ids::encode(Kind::User, acme.user(Role::Sender).id);

    let r = app
        .gql(Some(&admin), set, json!({ "u": sender, "r": ["SUPPORT"] }))
        .await;
    assert_eq!(r.code(), Some("MFA_REQUIRED"));
    enrol(&app, &admin).await;
    let r = app
        .gql(Some(&admin), set, json!({ "u": sender, "r": ["SUPPORT"] }))
        .await;
    assert_eq!(r.ok()["setUserRoles"]["user"]["roles"], json!(["SUPPORT"]));
    // The change is effective at once: the sender's token now reads as SUPPORT.
    let r = app
        .gql(
            Some(acme.token(Role::Sender)),
            "{ viewer { roles } }",
            json!({}),
        )
        .await;
    assert_eq!(r.ok()["viewer"]["roles"], json!(["SUPPORT"]));

    let me = ids::encode(Kind::User, acme.user(Role::Admin).id);
    let r = app
        .gql(Some(&admin), set, json!({ "u": me, "r": ["SUPPORT"] }))
        .await;
    assert_eq!(r.body["errors"][0]["extensions"]["reason"], "LAST_ADMIN");

    let foreign = ids::encode(Kind::User, globex.user(Role::Sender).id);
    let r = app
        .gql(Some(&admin), set, json!({ "u": foreign, "r": ["ADMIN"] }))
        .await;
    assert_eq!(r.code(), Some("NOT_FOUND"));
}

async fn deactivation_ends_every_session(app: TestApp) {
    let acme = app.tenant("acme").await;
    let target = acme.user(Role::Beneficiary).clone();
    let second = app.sign_in("acme", &target.email, &target.password).await;
    let deactivate = |token: String| {
        let app = &app;
        let target = ids::encode(Kind::User, target.id);
        async move {
            app.gql(
                Some(&token),
                "mutation($u: ID!) { deactivateUser(input: { userId: $u }) { user { isActive } } }",
                json!({ "u": target }),
            )
            .await
        }
    };
    // Deactivation takes access away: a step-up first.
    let r = deactivate(acme.token(Role::Admin).to_owned()).await;
    assert_eq!(r.code(), Some("MFA_REQUIRED"), "{}", r.body);
    enrol(&app, acme.token(Role::Admin)).await;
    let r = deactivate(acme.token(Role::Admin).to_owned()).await;
    assert_eq!(r.ok()["deactivateUser"]["user"]["isActive"], false);
    for token in [&target.token, &second] {
        assert_eq!(
            app.gql(Some(token), "{ viewer { id } }", json!({}))
                .await
                .status,
            401
        );
    }
    let r = app
        .gql(None, "mutation($e: String!, $p: String!) { signIn(input: { tenant: \"acme\", email: $e, password: $p }) { accessToken } }", json!({ "e": target.email, "p": target.password }))
        .await;
    assert_eq!(r.code(), Some("UNAUTHENTICATED"));
    let me = ids::encode(Kind::User, acme.user(Role::Admin).id);
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            "mutation($u: ID!) { deactivateUser(input: { userId: $u }) { user { id } } }",
            json!({ "u": me }),
        )
        .await;
    assert_eq!(r.code(), Some("CONFLICT"));
}

async fn password_change_checks_policy_and_ends_other_sessions(app: TestApp) {
    let acme = app.tenant("acme").await;
    let me = acme.user(Role::Sender).clone();
    let other = app.sign_in("acme", &me.email, &me.password).await;
    let change = "mutation($c: String!, $n: String!) { changePassword(input: { currentPassword: $c, newPassword: $n }) { user { id } } }";
    let r = app
        .gql(
            Some(&me.token),
            change,
            json!({ "c": "wrong current one", "n": "vivid-otter-carries-lamp" }),
        )
        .await;
    assert_eq!(r.code(), Some("UNAUTHENTICATED"));
    for weak in ["short", "password1234", "qwertyuiopasdf"] {
        let r = app
            .gql(
                Some(&me.token),
                change,
                json!({ "c": me.password, "n": weak }),
            )
            .await;
        assert_eq!(r.code(), Some("BAD_USER_INPUT"), "{weak}");
        assert_eq!(r.body["errors"][0]["extensions"]["field"], "password");
    }
    let r = app
        .gql(
            Some(&me.token),
            change,
            json!({ "c": me.password, "n": "vivid-otter-carries-lamp" }),
        )
        .await;
    assert!(r.ok()["changePassword"]["user"]["id"].is_string());
    assert_eq!(
        app.gql(Some(&other), "{ viewer { id } }", json!({}))
            .await
            .status,
        401
    );
    assert_eq!(
        app.gql(Some(&me.token), "{ viewer { id } }", json!({}))
            .await
            .status,
        200
    );
    app.sign_in("acme", &me.email, "vivid-otter-carries-lamp")
        .await;
}

async fn audit_log_pages_for_auditors_only(app: TestApp) {
    let acme = app.tenant("acme").await;
    let _globex = app.tenant("globex").await;
    let q = "query($a: AuditAction) { auditLog(action: $a, first: 50) { edges { node { action actorType actorId actor { userId email } subjectType ip requestId createdAt } } pageInfo { hasNextPage } } }";
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            q,
            json!({ "a": "USER_CREATED" }),
        )
        .await;
    let edges = r.ok()["auditLog"]["edges"].as_array().unwrap().clone();
    assert_eq!(edges.len(), 4, "acme's four users, none of globex's");
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            q,
            json!({ "a": "AUTH_SIGN_IN_SUCCEEDED" }),
        )
        .await;
    let sign_ins = r.ok()["auditLog"]["edges"].as_array().unwrap().clone();
    assert_eq!(sign_ins.len(), 4);
    // Each sign-in names its user as the actor: the object and the deprecated id agree.
    for row in &sign_ins {
        let row = &row["node"];
        assert_eq!(row["actorType"], "USER", "{row}");
        assert_eq!(row["actor"]["userId"], row["actorId"], "{row}");
        let email = row["actor"]["email"].as_str().unwrap();
        assert!(acme.users.values().any(|u| u.email == email), "{row}");
    }
    let r = app.gql(Some(acme.token(Role::Sender)), q, json!({})).await;
    assert_eq!(r.code(), Some("FORBIDDEN"));

    // Requests carry their id and address into the rows they write.
    let bad = "mutation { signIn(input: { tenant: \"acme\", email: \"admin@acme.test\", password: \"nope nope nope\" }) { accessToken } }";
    app.http
        .post(app.url("/graphql"))
        .header("x-request-id", "audit-trace-0001")
        .json(&json!({ "query": bad }))
        .send()
        .await
        .unwrap();
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            q,
            json!({ "a": "AUTH_SIGN_IN_FAILED" }),
        )
        .await;
    let row = r.ok()["auditLog"]["edges"][0]["node"].clone();
    assert_eq!(row["requestId"], "audit-trace-0001");
    assert_eq!(row["ip"], "127.0.0.1");
}

async fn platform_admins_create_tenants_and_read_none(app: TestApp) {
    use sequestra::{
        accounts::rules::{self, BootstrapBy},
        audit::{Actor, Origin},
        domain::{Email, Slug},
    };
    let acme = app.tenant("acme").await;
    let (_platform, _root_user, root) = app.platform().await;
    let again = rules::bootstrap(
        &app.db,
        &Slug::parse("platform2").unwrap(),
        "P2",
        &Email::parse("x@p.test").unwrap(),
        true,
        BootstrapBy {
            actor: Actor::System,
            origin: Origin::default(),
        },
    )
    .await;
    assert!(matches!(
        again,
        Err(sequestra::error::Error::Conflict {
            reason: Some("PLATFORM_EXISTS"),
            ..
        })
    ));

    let create = "mutation($s: String!, $e: String!) { createTenant(input: { slug: $s, name: \"Initech\", adminEmail: $e }) { tenant { slug } adminEmail oneTimePassword } }";
    let r = app
        .gql(
            Some(&root),
            create,
            json!({ "s": "early", "e": "boss@early.test" }),
        )
        .await;
    assert_eq!(
        r.code(),
        Some("MFA_REQUIRED"),
        "a new tenant's admin is a grant"
    );
    enrol(&app, &root).await;
    let r = app
        .gql(
            Some(&root),
            create,
            json!({ "s": "initech", "e": "boss@initech.test" }),
        )
        .await;
    let made = r.ok()["createTenant"].clone();
    assert_eq!(made["tenant"]["slug"], "initech");
    let boss = app
        .sign_in(
            "initech",
            "boss@initech.test",
            made["oneTimePassword"].as_str().unwrap(),
        )
        .await;
    let r = app
        .gql(
            Some(&boss),
            "{ viewer { roles tenant { slug } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r.ok()["viewer"],
        json!({ "roles": ["ADMIN"], "tenant": { "slug": "initech" } })
    );

    // The platform admin reads only the platform tenant: no other tenant's users.
    let r = app
        .gql(
            Some(&root),
            "{ users(first: 10) { edges { node { email } } } }",
            json!({}),
        )
        .await;
    assert_eq!(r.ok()["users"]["edges"].as_array().unwrap().len(), 1);
    let foreign = ids::encode(Kind::User, acme.user(Role::Sender).id);
    let r = app
        .gql(
            Some(&root),
            "query($id: ID!) { node(id: $id) { id } }",
            json!({ "id": foreign }),
        )
        .await;
    assert_eq!(r.code(), Some("NOT_FOUND"));

    // A tenant admin cannot create tenants (and does not even see the mutation).
    let r = app
        .gql(
            Some(acme.token(Role::Admin)),
            create,
            json!({ "s": "evil", "e": "x@evil.test" }),
        )
        .await;
    assert!(
        r.code().is_some() && r.body.get("data").is_none_or(serde_json::Value::is_null),
        "{}",
        r.body
    );
    let r = app
        .gql(
            Some(&root),
            create,
            json!({ "s": "initech", "e": "again@initech.test" }),
        )
        .await;
    assert_eq!(r.code(), Some("CONFLICT"));
}
