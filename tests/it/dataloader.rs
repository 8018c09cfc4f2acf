//! DataLoaders batch: resolving a nested field for every node of a page costs the
//! same number of SQL statements whatever the page size.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use sequestra::{
    accounts::rules,
    audit::{Actor, Origin},
    auth::{Credential, Principal, Role, UserPrincipal, password, scopes_of},
    db::TenantDb,
    domain::Email,
    graphql::{context::RequestContext, loaders},
    ids::TenantId,
};

use crate::harness::TestApp;
use crate::on_both_backends;

on_both_backends!(nested_fields_cost_the_same_statements_for_any_page_size);

async fn nested_fields_cost_the_same_statements_for_any_page_size(app: TestApp) {
    let acme = app.tenant("acme").await;
    let tenant = TenantId::from_uuid(acme.id);
    let scoped = TenantDb::new(app.db.clone(), tenant);
    let hash = password::hash("a long enough passphrase".to_owned().into())
        .await
        .unwrap();
    for i in 0..20 {
        let email = Email::parse(&format!("extra{i}@acme.test")).unwrap();
        rules::create_user(
            &scoped,
            Actor::System,
            &Origin::default(),
            &email,
            hash.clone(),
            &[Role::Sender, Role::Beneficiary],
        )
        .await
        .unwrap();
    }

    // A pool of its own that counts every statement it runs.
    let statements = Arc::new(AtomicUsize::new(0));
    let mut counted = app.reconnect().await;
    let counter = statements.clone();
    counted.set_metric_callback(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let principal = Principal::User(UserPrincipal {
        tenant_id: tenant,
        user_id: acme.user(Role::Admin).id,
        credential: Credential::Session(uuid::Uuid::nil()),
        roles: vec![Role::Admin],
        scopes: scopes_of(&[Role::Admin]),
        mfa_verified_at: None,
        mfa_enrolment_required: false,
    });

    let mut counts = Vec::new();
    for n in [5, 20] {
        let context = RequestContext::new(
            principal.clone(),
            Some(TenantDb::new(counted.clone(), tenant)),
            Origin::default(),
            None,
        );
        let mut request = async_graphql::Request::new(format!(
            "{{ users(first: {n}) {{ edges {{ node {{ email roles }} }} }} }}"
        ));
        let fence = loaders::PollFence::default();
        loaders::attach(&mut request.data, context.db.as_ref(), Some(&fence));
        let request = request.data(context);
        let before = statements.load(Ordering::SeqCst);
        let response = fence.run(app.schema.execute(request)).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let json = serde_json::to_value(&response.data).unwrap();
        let edges = json["users"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), n);
        assert!(
            edges
                .iter()
                .all(|e| !e["node"]["roles"].as_array().unwrap().is_empty())
        );
        counts.push(statements.load(Ordering::SeqCst) - before);
    }
    assert_eq!(
        counts[0], counts[1],
        "statements for 5 and for 20 users: {counts:?}"
    );
    assert!(
        counts[0] <= 3,
        "one page query and one batched roles query: {counts:?}"
    );
}
