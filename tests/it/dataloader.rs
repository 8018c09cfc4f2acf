//! DataLoaders batch: resolving a nested field for every node of a page costs the
//! same number of SQL statements whatever the page size.

use sequestra::{
    accounts::rules,
    audit::{Actor, Origin},
    auth::{Role, password},
    db::TenantDb,
    domain::Email,
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

    let mut counts = Vec::new();
    for n in [5, 20] {
        let (count, json) = app
            .count_statements(
                acme.id,
                acme.user(Role::Admin).id,
                &[Role::Admin],
                &format!("{{ users(first: {n}) {{ edges {{ node {{ email roles }} }} }} }}"),
            )
            .await;
        let edges = json["users"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), n);
        assert!(
            edges
                .iter()
                .all(|e| !e["node"]["roles"].as_array().unwrap().is_empty())
        );
        counts.push(count);
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
