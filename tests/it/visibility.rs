//! The role-aware schema: what each caller sees in introspection, that hidden fields
//! are still refused, and a walk over every root field proving each one is guarded.

use std::collections::HashMap;

use sequestra::{
    audit::Origin,
    auth::{Credential, Principal, Role, Scope, UserPrincipal},
    graphql::context::RequestContext,
    ids::TenantId,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(introspection_differs_per_role, every_root_field_is_guarded);

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
    assert_eq!(m, ["signIn", "refreshSession", "verifyMfa"]);

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

/// Fields any caller may use: the sign-in family and the clock.
const PUBLIC: [&str; 4] = ["signIn", "refreshSession", "verifyMfa", "serverTime"];
/// Fields a signed-in user whom the tenant still requires to enrol in MFA may use.
const ENROLMENT: [&str; 4] = ["enrollMfa", "activateMfa", "signOut", "mfaEnabled"];

/// A caller who sees every field (all roles, every scope) but whom the tenant still
/// requires to enrol in MFA: every guard that checks the user refuses with
/// MFA_REQUIRED. A root field that answers anything else ran without a guard.
fn restricted_everything() -> RequestContext {
    RequestContext::new(
        Principal::User(UserPrincipal {
            tenant_id: TenantId::from_uuid(Uuid::now_v7()),
            user_id: Uuid::now_v7(),
            credential: Credential::Session(Uuid::now_v7()),
            roles: Role::ALL.to_vec(),
            scopes: Scope::ALL.into_iter().collect(),
            mfa_verified_at: None,
            mfa_enrolment_required: true,
            expires_at: None,
        }),
        None,
        Origin::default(),
        None,
    )
}

const TYPES: &str = r#"{ __schema { queryType { name } mutationType { name } subscriptionType { name }
  types { name kind enumValues { name } inputFields { name type { ...T } }
    fields { name args { name type { ...T } } type { ...T } } } } }
  fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }"#;

fn named(t: &Value) -> &Value {
    if t["ofType"].is_object() {
        named(&t["ofType"])
    } else {
        t
    }
}

/// A syntactically valid value for an argument of type `t`.
fn placeholder(t: &Value, types: &HashMap<String, Value>) -> String {
    match t["kind"].as_str().unwrap() {
        "NON_NULL" => placeholder(&t["ofType"], types),
        "LIST" => format!("[{}]", placeholder(&t["ofType"], types)),
        "ENUM" => types[t["name"].as_str().unwrap()]["enumValues"][0]["name"]
            .as_str()
            .unwrap()
            .to_owned(),
        "INPUT_OBJECT" => {
            let def = &types[t["name"].as_str().unwrap()];
            let fields: Vec<String> = def["inputFields"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["type"]["kind"] == "NON_NULL")
                .map(|f| {
                    format!(
                        "{}: {}",
                        f["name"].as_str().unwrap(),
                        placeholder(&f["type"], types)
                    )
                })
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        _ => match t["name"].as_str().unwrap() {
            "Int" => "1".into(),
            "Float" => "1.0".into(),
            "Boolean" => "true".into(),
            "ID" => "\"usr_00000000000000000000000000000000\"".into(),
            "DateTime" => "\"2030-01-01T00:00:00Z\"".into(),
            "Decimal" => "\"1.00\"".into(),
            _ => "\"placeholder-value-0\"".into(),
        },
    }
}

async fn every_root_field_is_guarded(app: TestApp) {
    let ctx = restricted_everything();
    let intro = app
        .schema
        .execute(async_graphql::Request::new(TYPES).data(ctx.clone()))
        .await;
    assert!(intro.errors.is_empty(), "{:?}", intro.errors);
    let data = serde_json::to_value(&intro.data).unwrap();
    let types: HashMap<String, Value> = data["__schema"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
        .collect();

    let mut walked = 0;
    for (root, keyword) in [
        ("queryType", "query"),
        ("mutationType", "mutation"),
        ("subscriptionType", "subscription"),
    ] {
        let root_type = &types[data["__schema"][root]["name"].as_str().unwrap()];
        for field in root_type["fields"].as_array().unwrap() {
            let name = field["name"].as_str().unwrap();
            if PUBLIC.contains(&name) || ENROLMENT.contains(&name) {
                continue;
            }
            let args: Vec<String> = field["args"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["type"]["kind"] == "NON_NULL")
                .map(|a| {
                    format!(
                        "{}: {}",
                        a["name"].as_str().unwrap(),
                        placeholder(&a["type"], &types)
                    )
                })
                .collect();
            let args = if args.is_empty() {
                String::new()
            } else {
                format!("({})", args.join(", "))
            };
            let selection =
                match types[named(&field["type"])["name"].as_str().unwrap()]["kind"].as_str() {
                    Some("OBJECT" | "INTERFACE" | "UNION") => " { __typename }",
                    _ => "",
                };
            let document = format!("{keyword} {{ {name}{args}{selection} }}");
            let request = async_graphql::Request::new(&document).data(ctx.clone());
            let response = if keyword == "subscription" {
                // A subscription's first response: the refusal, before any event.
                use futures_util::StreamExt;
                app.schema
                    .execute_stream(request)
                    .next()
                    .await
                    .expect("a first response")
            } else {
                app.schema.execute(request).await
            };
            let code = response
                .errors
                .first()
                .and_then(|e| e.extensions.as_ref())
                .and_then(|x| x.get("code").cloned());
            assert_eq!(
                code,
                Some(async_graphql::Value::from("MFA_REQUIRED")),
                "`{document}` must be refused by a guard: {:?}",
                response.errors
            );
            walked += 1;
        }
    }
    assert!(walked >= 15, "the walk reached only {walked} fields");
}
