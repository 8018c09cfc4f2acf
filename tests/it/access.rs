//! The access matrix, generated from the policy declaration and the schema: every root
//! field (query, mutation and subscription) is called through the real edges (HTTP,
//! and a WebSocket for subscriptions) by every kind of caller — anonymous, each role
//! with and without a step-up, the platform administrator, a user whose MFA enrolment
//! is pending, and an API key holding each single scope — and each answer is checked
//! against what the declaration allows: allowed → never FORBIDDEN or MFA_REQUIRED;
//! refused → the declared code and no audit row written. Each caller's introspection
//! must show exactly the fields the declaration could allow it. A new root field is
//! covered without anyone adding a line here; one without a declaration fails.
//!
//! The expected decision is computed here, from the declaration's data, by a second
//! implementation of the rule (not the guard's own function).

use std::collections::BTreeSet;

use async_graphql::parser::types::{BaseType, Type, TypeKind, TypeSystemDefinition};
use futures_util::SinkExt;
use sea_orm::{EntityTrait, PaginatorTrait};
use sequestra::{
    audit::Origin,
    auth::{Credential, PLATFORM_ADMIN_SCOPES, Role, Scope, UserPrincipal, scopes_of},
    db::TenantDb,
    graphql::access::{FieldPolicy, Need, POLICIES, Root},
    ids::TenantId,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::TestApp;
use crate::mfa::enrol;
use crate::on_both_backends;

on_both_backends!(every_field_answers_every_caller_as_declared);

/// One caller of the matrix.
struct Caller {
    label: String,
    token: Option<String>,
    key: bool,
    roles: Vec<Role>,
    scopes: BTreeSet<Scope>,
    stepped_up: bool,
    enrolling: bool,
}

/// What the declaration says `caller` gets from `policy`: `None` when allowed, else
/// the error code. `assume_step_up` for visibility (a step-up never hides a field).
fn expected(policy: &FieldPolicy, caller: &Caller, assume_step_up: bool) -> Option<&'static str> {
    if policy.need == Need::Public {
        return None;
    }
    if caller.token.is_none() {
        return Some("UNAUTHENTICATED");
    }
    if caller.enrolling && policy.need != Need::Enrolling {
        return Some("MFA_REQUIRED");
    }
    if caller.key && !policy.api_key {
        return Some("FORBIDDEN");
    }
    let scopes = match policy.need {
        Need::All(all) => all.iter().all(|s| caller.scopes.contains(s)),
        Need::Any(any) => any.iter().any(|s| caller.scopes.contains(s)),
        _ => true,
    };
    let roles = policy.roles.is_empty() || caller.roles.iter().any(|r| policy.roles.contains(r));
    if !scopes || !roles {
        return Some("FORBIDDEN");
    }
    if policy.step_up && !(caller.stepped_up || assume_step_up) {
        return Some("MFA_REQUIRED");
    }
    None
}

/// An argument position that takes an id (see `Shape::id_slots`).
pub(crate) struct IdSlot {
    pub root: Root,
    pub field: String,
    /// The argument, and for an input object the field inside it.
    pub path: Vec<String>,
}

/// The schema's shape, from the committed SDL's source: the code.
pub(crate) struct Shape {
    doc: async_graphql::parser::types::ServiceDocument,
}

impl Shape {
    pub(crate) fn load() -> Self {
        let doc = async_graphql::parser::parse_schema(sequestra::graphql::sdl()).expect("SDL");
        Shape { doc }
    }

    fn kind(&self, name: &str) -> Option<&TypeKind> {
        self.doc.definitions.iter().find_map(|d| match d {
            TypeSystemDefinition::Type(t) if t.node.name.node == name => Some(&t.node.kind),
            _ => None,
        })
    }

    fn root_type(&self, root: Root) -> &async_graphql::parser::types::ObjectType {
        match self.kind(root.as_str()) {
            Some(TypeKind::Object(obj)) => obj,
            _ => panic!("no {} root", root.as_str()),
        }
    }

    /// Root fields: (root, name, document that calls it with placeholder arguments).
    pub(crate) fn root_calls(&self) -> Vec<(Root, String, String)> {
        let mut out = Vec::new();
        for root in [Root::Query, Root::Mutation, Root::Subscription] {
            for field in &self.root_type(root).fields {
                let name = field.node.name.node.to_string();
                let document = self.document(root, &name, None);
                out.push((root, name, document));
            }
        }
        out
    }

    /// Every place a root field takes an id: an `ID` argument, or an `ID` field of an
    /// input-object argument (alone or in a list).
    pub(crate) fn id_slots(&self) -> Vec<IdSlot> {
        let mut out = Vec::new();
        for root in [Root::Query, Root::Mutation, Root::Subscription] {
            for field in &self.root_type(root).fields {
                for arg in &field.node.arguments {
                    let ty = &arg.node.ty.node;
                    let name = arg.node.name.node.to_string();
                    if base_name(ty) == "ID" {
                        out.push(IdSlot {
                            root,
                            field: field.node.name.node.to_string(),
                            path: vec![name.clone()],
                        });
                    } else if let Some(TypeKind::InputObject(input)) = self.kind(base_name(ty)) {
                        for f in input
                            .fields
                            .iter()
                            .filter(|f| base_name(&f.node.ty.node) == "ID")
                        {
                            out.push(IdSlot {
                                root,
                                field: field.node.name.node.to_string(),
                                path: vec![name.clone(), f.node.name.node.to_string()],
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// A document calling `root.field` with placeholder arguments, and `id` in `slot`.
    pub(crate) fn document(
        &self,
        root: Root,
        field: &str,
        slot: Option<(&IdSlot, &str)>,
    ) -> String {
        let keyword = match root {
            Root::Query => "query",
            Root::Mutation => "mutation",
            Root::Subscription => "subscription",
        };
        let f = &self
            .root_type(root)
            .fields
            .iter()
            .find(|f| f.node.name.node == field)
            .unwrap_or_else(|| panic!("no field {field}"))
            .node;
        let args: Vec<String> = f
            .arguments
            .iter()
            .filter_map(|a| {
                let name = a.node.name.node.as_str();
                let ty = &a.node.ty.node;
                match slot {
                    Some((slot, id)) if slot.path[0] == name => Some(format!(
                        "{name}: {}",
                        self.value_with(ty, slot.path.get(1).map(String::as_str), id)
                    )),
                    _ if !ty.nullable && a.node.default_value.is_none() => {
                        Some(format!("{name}: {}", self.placeholder(ty)))
                    }
                    _ => None,
                }
            })
            .collect();
        let args = if args.is_empty() {
            String::new()
        } else {
            format!("({})", args.join(", "))
        };
        let selection = match self.kind(base_name(&f.ty.node)) {
            Some(TypeKind::Object(_) | TypeKind::Interface(_) | TypeKind::Union(_)) => {
                " { __typename }"
            }
            _ => "",
        };
        format!("{keyword} {{ {field}{args}{selection} }}")
    }

    /// `id` as a value of `ty` (an ID, a list of them, or an input object whose field
    /// `inner` is the id and whose other required fields are placeholders).
    fn value_with(&self, ty: &Type, inner: Option<&str>, id: &str) -> String {
        let one = |ty: &Type| match inner {
            None => format!("\"{id}\""),
            Some(inner) => match self.kind(base_name(ty)) {
                Some(TypeKind::InputObject(input)) => {
                    let fields: Vec<String> = input
                        .fields
                        .iter()
                        .filter_map(|f| {
                            let name = f.node.name.node.as_str();
                            let fty = &f.node.ty.node;
                            if name == inner {
                                Some(format!("{name}: {}", self.value_with(fty, None, id)))
                            } else if !fty.nullable && f.node.default_value.is_none() {
                                Some(format!("{name}: {}", self.placeholder(fty)))
                            } else {
                                None
                            }
                        })
                        .collect();
                    format!("{{ {} }}", fields.join(", "))
                }
                _ => panic!("{inner} of a non-input type"),
            },
        };
        match &ty.base {
            BaseType::List(inner_ty) => format!("[{}]", one(inner_ty)),
            BaseType::Named(_) => one(ty),
        }
    }

    /// A valid value of type `ty` that names nothing that exists (lists are empty, so
    /// an allowed call cannot, say, require MFA of a whole role).
    fn placeholder(&self, ty: &Type) -> String {
        match &ty.base {
            BaseType::List(_) => "[]".into(),
            BaseType::Named(name) => match name.as_str() {
                "Int" => "1".into(),
                "Float" => "1.0".into(),
                "Boolean" => "false".into(),
                "ID" => "\"usr_0000000000000000000000000\"".into(),
                "DateTime" => "\"2030-01-01T00:00:00Z\"".into(),
                "Decimal" => "\"1.00\"".into(),
                other => match self.kind(other) {
                    Some(TypeKind::Enum(e)) => e.values[0].node.value.node.to_string(),
                    Some(TypeKind::InputObject(input)) => {
                        let fields: Vec<String> = input
                            .fields
                            .iter()
                            .filter(|f| !f.node.ty.node.nullable && f.node.default_value.is_none())
                            .map(|f| {
                                format!(
                                    "{}: {}",
                                    f.node.name.node,
                                    self.placeholder(&f.node.ty.node)
                                )
                            })
                            .collect();
                        format!("{{ {} }}", fields.join(", "))
                    }
                    _ => "\"placeholder-0\"".into(),
                },
            },
        }
    }
}

fn base_name(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(n) => n.as_str(),
        BaseType::List(inner) => base_name(inner),
    }
}

fn policy_of(root: Root, field: &str) -> &'static FieldPolicy {
    POLICIES
        .iter()
        .find(|p| p.root == root && p.field == field)
        .unwrap_or_else(|| panic!("{} `{field}` has no declared policy", root.as_str()))
}

/// Fields that end the caller's own session(s): called last by each caller, in this
/// order.
const ENDING: [&str; 2] = ["revokeOtherSessions", "signOut"];
/// Fields whose allowed answer may be UNAUTHENTICATED: they check a credential given
/// as an argument (a placeholder, so it is wrong).
const CHECKS_A_CREDENTIAL: [&str; 8] = [
    "signIn",
    "refreshSession",
    "verifyMfa",
    "verifyStepUp",
    "changePassword",
    "disableMfa",
    "changeEmail",
    "eraseMyAccount",
];

async fn user_caller(
    app: &TestApp,
    label: &str,
    token: String,
    roles: &[Role],
    platform: bool,
    stepped_up: bool,
) -> Caller {
    if stepped_up {
        enrol(app, &token).await;
    }
    Caller {
        label: label.to_owned(),
        token: Some(token),
        key: false,
        roles: roles.to_vec(),
        scopes: if platform {
            PLATFORM_ADMIN_SCOPES.into_iter().collect()
        } else {
            scopes_of(roles)
        },
        stepped_up,
        enrolling: false,
    }
}

/// A key of `creator` (acting with `roles` in `tenant`) holding `scope` alone.
async fn key_caller(
    app: &TestApp,
    tenant: TenantId,
    creator: uuid::Uuid,
    roles: &[Role],
    creator_scopes: BTreeSet<Scope>,
    scope: Scope,
) -> Caller {
    let principal = UserPrincipal {
        tenant_id: tenant,
        user_id: creator,
        credential: Credential::Session(uuid::Uuid::nil()),
        roles: roles.to_vec(),
        scopes: creator_scopes,
        mfa_verified_at: None,
        mfa_enrolment_required: false,
        expires_at: None,
    };
    let created = sequestra::identity::api_keys::create(
        &TenantDb::new(app.db.clone(), tenant),
        &app.tokens,
        &principal,
        &format!("only {scope}"),
        &[scope],
        None,
        &Origin::default(),
    )
    .await
    .expect("create key");
    Caller {
        label: format!("key[{scope}]"),
        token: Some(secrecy::ExposeSecret::expose_secret(&created.key).to_owned()),
        key: true,
        roles: roles.to_vec(),
        scopes: [scope].into_iter().collect(),
        stepped_up: false,
        enrolling: false,
    }
}

async fn callers(app: &TestApp) -> Vec<Caller> {
    let mut out = vec![Caller {
        label: "anonymous".into(),
        token: None,
        key: false,
        roles: vec![],
        scopes: BTreeSet::new(),
        stepped_up: false,
        enrolling: false,
    }];
    let acme = app.tenant("acme").await;
    for role in Role::ALL {
        out.push(
            user_caller(
                app,
                role.as_str(),
                acme.token(role).to_owned(),
                &[role],
                false,
                false,
            )
            .await,
        );
        let email = format!("{}.stepped@acme.test", role.as_str().to_lowercase());
        let user = app.add_user(&acme, &email, &[role]).await;
        out.push(
            user_caller(
                app,
                &format!("{}+step-up", role.as_str()),
                user.token,
                &[role],
                false,
                true,
            )
            .await,
        );
    }

    // The platform administrator, plain and stepped up.
    let (platform_tenant, platform_root, root_plain) = app.platform().await;
    out.push(
        user_caller(
            app,
            "PLATFORM_ADMIN",
            root_plain,
            &[Role::Admin],
            true,
            false,
        )
        .await,
    );
    // A second platform administrator (a user of its own, so one's session-ending
    // calls do not end the other's), stepped up by enrolling MFA.
    let second_root = app
        .add_user(&platform_tenant, "root2@platform.test", &[Role::Admin])
        .await;
    out.push(
        user_caller(
            app,
            "PLATFORM_ADMIN+step-up",
            second_root.token,
            &[Role::Admin],
            true,
            true,
        )
        .await,
    );

    // An ADMIN of a tenant that requires MFA of admins, not yet enrolled.
    let gated = app.tenant("gated").await;
    let gated_db = TenantDb::new(app.db.clone(), TenantId::from_uuid(gated.id));
    sequestra::identity::mfa::set_required_roles(
        &gated_db,
        gated.user(Role::Admin).id,
        &[Role::Admin],
        &Origin::default(),
    )
    .await
    .expect("require MFA of admins");
    out.push(Caller {
        label: "ADMIN (enrolment pending)".into(),
        token: Some(gated.token(Role::Admin).to_owned()),
        key: false,
        roles: vec![Role::Admin],
        scopes: scopes_of(&[Role::Admin]),
        stepped_up: false,
        enrolling: true,
    });

    // API keys holding one scope each; their creator holds every business role (so no
    // scope is filtered away), or is the platform administrator for tenants:admin.
    let creator = app.add_user(&acme, "keymaker@acme.test", &Role::ALL).await;
    let acme_id = TenantId::from_uuid(acme.id);
    for scope in Scope::ALL {
        let caller = if scope == Scope::TenantsAdmin {
            key_caller(
                app,
                TenantId::from_uuid(platform_tenant.id),
                platform_root.id,
                &[Role::Admin],
                PLATFORM_ADMIN_SCOPES.into_iter().collect(),
                scope,
            )
            .await
        } else {
            key_caller(
                app,
                acme_id,
                creator.id,
                &Role::ALL,
                scopes_of(&Role::ALL),
                scope,
            )
            .await
        };
        out.push(caller);
    }
    out
}

async fn audit_rows(app: &TestApp) -> u64 {
    sequestra::entity::audit_log::Entity::find()
        .count(&app.db)
        .await
        .expect("count audit rows")
}

/// The first message of a subscription over `/graphql/ws`: `Some(code)` for an error,
/// `None` for data or for nothing within a moment (a stream waiting for events).
pub(crate) async fn subscribe(
    app: &TestApp,
    token: Option<&str>,
    document: &str,
) -> Option<String> {
    let mut socket = crate::ws::connect(app).await;
    let payload = match token {
        Some(t) => json!({ "Authorization": format!("Bearer {t}") }),
        None => json!({}),
    };
    let init = json!({ "type": "connection_init", "payload": payload });
    socket.send(Message::text(init.to_string())).await.unwrap();
    assert_eq!(
        crate::ws::next_json(&mut socket).await["type"],
        "connection_ack"
    );
    let sub = json!({ "id": "1", "type": "subscribe", "payload": { "query": document } });
    socket.send(Message::text(sub.to_string())).await.unwrap();
    let first = tokio::time::timeout(
        std::time::Duration::from_millis(800),
        crate::ws::next_json(&mut socket),
    )
    .await;
    let _ = socket.close(None).await;
    match first {
        Ok(msg) if msg["type"] == "error" => Some(
            msg["payload"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("NO_CODE")
                .to_owned(),
        ),
        Ok(msg) => {
            assert_eq!(msg["type"], "next", "{msg}");
            msg["payload"]["errors"][0]["extensions"]["code"]
                .as_str()
                .map(str::to_owned)
        }
        Err(_) => None,
    }
}

const ROOTS: &str = "{ __schema { queryType { fields { name } } mutationType { fields { name } } subscriptionType { fields { name } } } }";

async fn every_field_answers_every_caller_as_declared(app: TestApp) {
    let shape = Shape::load();
    let calls = shape.root_calls();
    for (root, name, _) in &calls {
        policy_of(*root, name);
    }
    let callers = callers(&app).await;
    let mut cells = 0usize;
    let mut failures = Vec::new();

    // Introspection shows each caller exactly what the declaration could allow it.
    for caller in &callers {
        let r = app.gql(caller.token.as_deref(), ROOTS, json!({})).await;
        let schema = &r.ok()["__schema"];
        for (root, key) in [
            (Root::Query, "queryType"),
            (Root::Mutation, "mutationType"),
            (Root::Subscription, "subscriptionType"),
        ] {
            let shown: BTreeSet<String> = schema[key]["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| f["name"].as_str().unwrap().to_owned())
                .collect();
            let declared: BTreeSet<String> = calls
                .iter()
                .filter(|(r, name, _)| {
                    *r == root && expected(policy_of(root, name), caller, true).is_none()
                })
                .map(|(_, name, _)| name.clone())
                .collect();
            if shown != declared {
                failures.push(format!(
                    "{} sees {} fields {:?}, the declaration allows {:?}",
                    caller.label,
                    root.as_str(),
                    shown.symmetric_difference(&declared).collect::<Vec<_>>(),
                    declared
                ));
            }
        }
    }

    // Subscriptions over the WebSocket, every caller at once (before any session is
    // ended below).
    let subscriptions: Vec<&(Root, String, String)> = calls
        .iter()
        .filter(|(r, _, _)| *r == Root::Subscription)
        .collect();
    let mut pending = Vec::new();
    for caller in &callers {
        for (root, name, document) in &subscriptions {
            let want = expected(policy_of(*root, name), caller, false);
            let app = &app;
            pending.push(async move {
                let got = subscribe(app, caller.token.as_deref(), document).await;
                (caller, document, want, got)
            });
        }
    }
    for (caller, document, want, got) in futures_util::future::join_all(pending).await {
        cells += 1;
        match want {
            Some(code) if got.as_deref() != Some(code) => failures.push(format!(
                "{} `{document}` over WebSocket: want {code}, got {got:?}",
                caller.label
            )),
            None if matches!(
                got.as_deref(),
                Some("FORBIDDEN" | "MFA_REQUIRED" | "UNAUTHENTICATED")
            ) =>
            {
                failures.push(format!(
                    "{} `{document}` over WebSocket: allowed by the declaration, got {got:?}",
                    caller.label
                ))
            }
            _ => {}
        }
    }

    // Queries and mutations over HTTP, one caller after another (so an audit row
    // belongs to the call that made it); session-ending fields last for each caller.
    let mut ordered: Vec<&(Root, String, String)> = calls
        .iter()
        .filter(|(r, name, _)| *r != Root::Subscription && !ENDING.contains(&name.as_str()))
        .collect();
    for ending in ENDING {
        ordered.extend(calls.iter().filter(|(_, name, _)| name == ending));
    }
    for caller in &callers {
        for (root, name, document) in &ordered {
            let policy = policy_of(*root, name);
            let want = expected(policy, caller, false);
            let before = if want.is_some() && *root == Root::Mutation {
                Some(audit_rows(&app).await)
            } else {
                None
            };
            let r = app.gql(caller.token.as_deref(), document, json!({})).await;
            cells += 1;
            let got = r.code().map(str::to_owned);
            match want {
                Some(code) => {
                    if got.as_deref() != Some(code)
                        || !r.data().is_null()
                            && r.data().get(name.as_str()).is_some_and(|v| !v.is_null())
                    {
                        failures.push(format!(
                            "{} `{document}`: want {code}, got {}",
                            caller.label, r.body
                        ));
                    }
                    if let Some(before) = before {
                        let after = audit_rows(&app).await;
                        if after != before {
                            failures.push(format!(
                                "{} `{document}` was refused but wrote {} audit rows",
                                caller.label,
                                after - before
                            ));
                        }
                    }
                }
                None => {
                    let refused = matches!(got.as_deref(), Some("FORBIDDEN" | "MFA_REQUIRED"))
                        || (got.as_deref() == Some("UNAUTHENTICATED")
                            && !CHECKS_A_CREDENTIAL.contains(&name.as_str()));
                    if refused {
                        failures.push(format!(
                            "{} `{document}`: allowed by the declaration, got {}",
                            caller.label, r.body
                        ));
                    }
                }
            }
        }
    }

    // Past the test harness's output capture (it also takes `io::stderr()`), so
    // `scripts/test` shows the count on every run.
    let line = format!(
        "access matrix: {cells} (field, caller) cells checked: {} root fields x {} callers, plus {} introspections\n",
        calls.len(),
        callers.len(),
        callers.len()
    );
    crate::harness::report(line.trim_end());
    assert!(
        failures.is_empty(),
        "{} disagreements with the declaration:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The defects the declaration closed, each as a hostile client would try it.
mod defects {
    use sequestra::auth::Role;
    use serde_json::{Value, json};

    use crate::harness::{TestApp, TestTenant};
    use crate::mfa::enrol;
    use crate::on_both_backends;

    on_both_backends!(
        a_read_only_key_cannot_touch_the_catalog,
        keys_cannot_manage_mfa_or_credentials,
        granting_admin_by_any_path_needs_a_step_up,
    );

    /// A key created by a stepped-up ADMIN of `t` with `scopes`.
    async fn key(app: &TestApp, t: &TestTenant, scopes: &[&str]) -> String {
        let admin = t.token(Role::Admin);
        let r = app
            .gql(
                Some(admin),
                "mutation($s: [Scope!]!) { createApiKey(input: { name: \"integration\", scopes: $s }) { key } }",
                json!({ "s": scopes }),
            )
            .await;
        r.ok()["createApiKey"]["key"].as_str().unwrap().to_owned()
    }

    async fn catalog(app: &TestApp, token: &str) -> Value {
        let r = app
            .gql(
                Some(token),
                "{ spendCategories { edges { node { code enabled } } } merchants { edges { node { name certified enabled } } } }",
                json!({}),
            )
            .await;
        r.ok().clone()
    }

    async fn a_read_only_key_cannot_touch_the_catalog(app: TestApp) {
        let acme = app.tenant("acme").await;
        enrol(&app, acme.token(Role::Admin)).await;
        let admin = acme.token(Role::Admin);
        let made = app
            .gql(
                Some(admin),
                "mutation { createSpendCategory(input: { code: \"groceries\", label: \"Groceries\" }) { category { id } } }",
                json!({}),
            )
            .await;
        let category = made.ok()["createSpendCategory"]["category"]["id"].clone();
        let made = app
            .gql(
                Some(admin),
                "mutation($c: ID!) { createMerchant(input: { name: \"Corner shop\", categoryId: $c }) { merchant { id } } }",
                json!({ "c": category }),
            )
            .await;
        let merchant = made.ok()["createMerchant"]["merchant"]["id"].clone();
        let read_only = key(
            &app,
            &acme,
            &["USERS_READ", "AUDIT_READ", "ESCROW_READ", "SPEND_READ"],
        )
        .await;
        let before = catalog(&app, admin).await;
        let audit_before = app.audit_actions(&acme).await.len();
        for (document, variables) in [
            (
                "mutation { createSpendCategory(input: { code: \"fuel\", label: \"Fuel\" }) { category { id } } }",
                json!({}),
            ),
            (
                "mutation($c: ID!) { setSpendCategoryEnabled(input: { id: $c, enabled: false }) { category { id } } }",
                json!({ "c": category }),
            ),
            (
                "mutation($c: ID!) { createMerchant(input: { name: \"Fence\", categoryId: $c, certified: true }) { merchant { id } } }",
                json!({ "c": category }),
            ),
            (
                "mutation($m: ID!) { updateMerchant(input: { id: $m, enabled: false }) { merchant { id } } }",
                json!({ "m": merchant }),
            ),
        ] {
            let r = app.gql(Some(&read_only), document, variables).await;
            assert_eq!(r.code(), Some("FORBIDDEN"), "{document}: {}", r.body);
        }
        assert_eq!(
            catalog(&app, admin).await,
            before,
            "the catalog is unchanged"
        );
        assert_eq!(app.audit_actions(&acme).await.len(), audit_before);
        // The same key reads what its scopes allow, and a key with spend:catalog writes.
        assert_eq!(catalog(&app, &read_only).await, before);
        let keeper = key(&app, &acme, &["SPEND_CATALOG"]).await;
        let r = app
            .gql(
                Some(&keeper),
                "mutation { createSpendCategory(input: { code: \"fuel\", label: \"Fuel\" }) { category { code } } }",
                json!({}),
            )
            .await;
        assert_eq!(r.ok()["createSpendCategory"]["category"]["code"], "FUEL");
    }

    async fn keys_cannot_manage_mfa_or_credentials(app: TestApp) {
        let acme = app.tenant("acme").await;
        enrol(&app, acme.token(Role::Admin)).await;
        let all = key(
            &app,
            &acme,
            &["USERS_READ", "USERS_ADMIN", "KEYS_ADMIN", "AUDIT_READ"],
        )
        .await;
        for document in [
            "mutation { enrollMfa { secret } }",
            "mutation { activateMfa(input: { code: \"123456\" }) { codes } }",
            "mutation { disableMfa(input: { password: \"x\", code: \"123456\" }) { mfaEnabled } }",
            "mutation { regenerateRecoveryCodes { codes } }",
            "mutation { verifyStepUp(input: { code: \"123456\" }) { verifiedAt } }",
            "mutation { changePassword(input: { currentPassword: \"x\", newPassword: \"y\" }) { user { id } } }",
            "mutation { revokeOtherSessions { revoked } }",
            "mutation { signOut { sessionId } }",
            "mutation { createApiKey(input: { name: \"child\", scopes: [USERS_READ] }) { key } }",
        ] {
            let r = app.gql(Some(&all), document, json!({})).await;
            assert_eq!(r.code(), Some("FORBIDDEN"), "{document}: {}", r.body);
        }
        // The creator's MFA is untouched: still enabled, no new enrolment started.
        let r = app
            .gql(Some(acme.token(Role::Admin)), "{ mfaEnabled }", json!({}))
            .await;
        assert_eq!(r.ok()["mfaEnabled"], true);
    }

    /// users:admin key → createUser(ADMIN) → sign in → enrol → createApiKey was an
    /// escalation path. Every grant of a role needs a step-up now, which a key never
    /// has; a signed-in admin needs one too.
    async fn granting_admin_by_any_path_needs_a_step_up(app: TestApp) {
        let acme = app.tenant("acme").await;
        let create = "mutation($e: String!, $r: [Role!]!) { createUser(input: { email: $e, roles: $r }) { oneTimePassword } }";
        let plain_admin = acme.token(Role::Admin).to_owned();
        let r = app
            .gql(
                Some(&plain_admin),
                create,
                json!({ "e": "mallory@acme.test", "r": ["ADMIN"] }),
            )
            .await;
        assert_eq!(r.code(), Some("MFA_REQUIRED"), "{}", r.body);
        enrol(&app, acme.token(Role::Admin)).await;
        let users_admin = key(&app, &acme, &["USERS_ADMIN", "USERS_READ"]).await;
        for roles in [json!(["ADMIN"]), json!(["SENDER"])] {
            let r = app
                .gql(
                    Some(&users_admin),
                    create,
                    json!({ "e": "mallory@acme.test", "r": roles }),
                )
                .await;
            assert_eq!(r.code(), Some("FORBIDDEN"), "{}", r.body);
        }
        let me = sequestra::ids::encode(sequestra::ids::Kind::User, acme.user(Role::Sender).id);
        for document in [
            "mutation($u: ID!) { setUserRoles(input: { userId: $u, roles: [ADMIN] }) { user { id } } }",
            "mutation($u: ID!) { deactivateUser(input: { userId: $u }) { user { id } } }",
        ] {
            let r = app
                .gql(Some(&users_admin), document, json!({ "u": me }))
                .await;
            assert_eq!(r.code(), Some("FORBIDDEN"), "{document}: {}", r.body);
        }
        let r = app
            .gql(
                Some(&users_admin),
                "{ users(first: 50) { edges { node { email } } } }",
                json!({}),
            )
            .await;
        let emails = r.ok()["users"]["edges"].to_string();
        assert!(!emails.contains("mallory"), "{emails}");
        // The stepped-up admin may.
        let r = app
            .gql(
                Some(acme.token(Role::Admin)),
                create,
                json!({ "e": "trent@acme.test", "r": ["ADMIN"] }),
            )
            .await;
        assert!(r.ok()["createUser"]["oneTimePassword"].is_string());
    }
}
