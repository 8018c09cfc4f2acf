//! The role-aware schema: what each caller sees in introspection, that hidden fields
//! are still refused, and the per-role SDL of the command line. Every root field's
//! guard is proven by the generated matrix in `access.rs`.

use sequestra::auth::Role;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(introspection_differs_per_role);

const ROOTS: &str = "{ __schema { queryType { fields { name } } mutationType { fields { name } } subscriptionType { fields { name } } } }";

fn field_names(v: &Value) -> Vec<String> {
    v["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn roots(app: &TestApp, token: Option<&str>) -> (Vec<String>, Vec<String>) {
    let r = app.gql(token, ROOTS, json!({})).await;
    let s = &r.ok()["__schema"];
    (
        field_names(&s["queryType"]),
        field_names(&s["mutationType"]),
    )
}

async fn introspection_differs_per_role(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (q, m) = roots(&app, None).await;
    assert_eq!(q, ["serverTime"]);
    assert_eq!(
        m,
        [
            "signIn",
            "requestPasswordReset",
            "resetPassword",
            "verifyEmail",
            "confirmEmailChange",
            "refreshSession",
            "verifyMfa"
        ]
    );

    let (q, m) = roots(&app, Some(acme.token(Role::Sender))).await;
    for hidden in ["users", "auditLog", "apiKeys", "mfaRequiredRoles"] {
        assert!(
            !q.contains(&hidden.to_owned()),
            "sender must not see {hidden}"
        );
    }
    for hidden in [
        "createUser",
        "setUserRoles",
        "createApiKey",
        "setMfaRequiredRoles",
    ] {
        assert!(
            !m.contains(&hidden.to_owned()),
            "sender must not see {hidden}"
        );
    }
    assert!(q.contains(&"viewer".to_owned()) && m.contains(&"signOut".to_owned()));

    let (q, m) = roots(&app, Some(acme.token(Role::Support))).await;
    assert!(q.contains(&"users".to_owned()) && q.contains(&"auditLog".to_owned()));
    assert!(!q.contains(&"apiKeys".to_owned()) && !m.contains(&"createUser".to_owned()));

    let (q, m) = roots(&app, Some(acme.token(Role::Admin))).await;
    for shown in ["users", "auditLog", "apiKeys"] {
        assert!(q.contains(&shown.to_owned()), "admin sees {shown}");
    }
    for shown in [
        "createUser",
        "setUserRoles",
        "createApiKey",
        "deactivateUser",
    ] {
        assert!(m.contains(&shown.to_owned()), "admin sees {shown}");
    }

    // Hidden is not allowed: calling it anyway is refused, with no data.
    let r = app
        .gql(
            Some(acme.token(Role::Sender)),
            "{ users(first: 1) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert!(
        r.code().is_some() && r.body.get("data").is_none_or(Value::is_null),
        "{}",
        r.body
    );
    let r = app.gql(None, "{ viewer { id } }", json!({})).await;
    assert!(
        r.code().is_some() && r.body.get("data").is_none_or(Value::is_null),
        "{}",
        r.body
    );

    // The command line prints the same per-role view.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sequestra"))
        .args(["schema", "--role", "SENDER"])
        .output()
        .unwrap();
    let sdl = String::from_utf8(out.stdout).unwrap();
    assert!(
        sdl.contains("viewer: User!") && !sdl.contains("auditLog"),
        "{sdl}"
    );
}
