//! PostgreSQL row-level security, the third tenant wall: the server's role sees no
//! tenant's rows unless its transaction entered that tenant, cannot write into
//! another tenant from inside one, and every tenant table is held to it (FORCE).

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sequestra::{auth::Role, db::wall};

use crate::harness::{Backend, SERVER_ROLE, TestApp};

/// The platform tables and why each has its own policy (the migration says more);
/// the migration history is the one table outside row-level security.
const PLATFORM_TABLES: &[&str] = &[
    "job_leases",
    "persisted_operations",
    "tenants",
    "webhook_events",
    "webhook_rejections",
];
const OUTSIDE: &[&str] = &["seaql_migrations"];

async fn postgres_app(test: &str) -> Option<TestApp> {
    let app = TestApp::spawn(Backend::Postgres).await;
    if app.is_none() {
        crate::harness::skipped(test);
    }
    app
}

async fn strings(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

async fn count<C: ConnectionTrait>(db: &C, table: &str) -> i64 {
    db.query_one(Statement::from_string(
        DbBackend::Postgres,
        format!("SELECT count(*) FROM {table}"),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index::<i64>(0)
    .unwrap()
}

async fn tenant_tables(db: &DatabaseConnection) -> Vec<String> {
    strings(
        db,
        "SELECT table_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND column_name = 'tenant_id' ORDER BY 1",
    )
    .await
    .into_iter()
    .filter(|t| !PLATFORM_TABLES.contains(&t.as_str()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_held_by_row_level_security() {
    let Some(app) = postgres_app("row_security::every_table_is_held_by_row_level_security").await
    else {
        return;
    };
    let tables = strings(
        &app.db,
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1",
    )
    .await;
    let held = strings(
        &app.db,
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' \
           AND c.relrowsecurity AND c.relforcerowsecurity ORDER BY 1",
    )
    .await;
    let tenant = tenant_tables(&app.db).await;
    assert!(tenant.len() >= 30, "tenant tables: {tenant:?}");
    for table in &tables {
        if OUTSIDE.contains(&table.as_str()) {
            assert!(!held.contains(table), "{table} was not expected under RLS");
        } else {
            assert!(
                held.contains(table),
                "{table} lacks ENABLE + FORCE ROW LEVEL SECURITY"
            );
        }
    }
    // Every tenant table has the tenant policy, with the same predicate both ways.
    let walled = strings(
        &app.db,
        "SELECT tablename::text FROM pg_policies WHERE schemaname = 'public' \
           AND policyname = 'tenant_wall' AND cmd = 'ALL' \
           AND qual LIKE '%sequestra.tenant_id%' AND with_check = qual ORDER BY 1",
    )
    .await;
    assert_eq!(
        walled, tenant,
        "tables with a tenant_id and the tenant_wall policy"
    );
    // The server's role: not a superuser, not BYPASSRLS, owner of nothing.
    let role = strings(
        &app.db,
        &format!(
            "SELECT rolsuper::text || rolbypassrls::text FROM pg_roles WHERE rolname = '{SERVER_ROLE}'"
        ),
    )
    .await;
    assert_eq!(role, ["falsefalse"]);
    let owned = strings(
        &app.db,
        &format!(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
             AND tableowner = '{SERVER_ROLE}'"
        ),
    )
    .await;
    assert!(owned.is_empty(), "the server's role owns {owned:?}");
    crate::harness::report(&format!(
        "row-level security: {} tenant tables and {} platform tables under FORCE ROW LEVEL SECURITY",
        tenant.len(),
        PLATFORM_TABLES.len()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_role_sees_no_rows_without_a_tenant() {
    let Some(app) =
        postgres_app("row_security::the_server_role_sees_no_rows_without_a_tenant").await
    else {
        return;
    };
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    for t in [&acme, &globex] {
        crate::escrow::create_escrow(
            &app,
            t,
            "100.00",
            serde_json::json!([]),
            None,
            chrono::Duration::days(3),
        )
        .await;
    }
    // The owner (outside RLS) sees both tenants' rows.
    assert_eq!(count(&app.db, "escrows").await, 2);
    let per_tenant = Role::ALL.len() as i64;
    assert_eq!(count(&app.db, "users").await, 2 * per_tenant);

    // The server's role, raw SQL, no tenant set: zero rows of every tenant table.
    let tables = tenant_tables(&app.db).await;
    for table in &tables {
        assert_eq!(
            count(&app.server_db, table).await,
            0,
            "{table} without a tenant"
        );
    }
    // …and an UPDATE or DELETE without the setting touches nothing.
    let touched = app
        .server_db
        .execute_unprepared("UPDATE escrows SET description = 'x'")
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(touched, 0);
    let deleted = app
        .server_db
        .execute_unprepared("DELETE FROM audit_log")
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 0);

    // Inside acme's wall: acme's rows only, and no row can be written into globex.
    let txn = app.server_db.begin().await.unwrap();
    wall::enter(&txn, acme.id).await.unwrap();
    assert_eq!(count(&txn, "escrows").await, 1);
    let other_tenant = strings(
        &app.db,
        &format!(
            "SELECT count(*)::text FROM users WHERE tenant_id = '{}'",
            globex.id
        ),
    )
    .await;
    assert_eq!(other_tenant, [per_tenant.to_string()]);
    let seen = txn
        .query_one(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT count(*) FROM users WHERE tenant_id = '{}'",
                globex.id
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(seen, 0, "globex's users from inside acme's wall");
    let smuggled = txn
        .execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO user_roles (tenant_id, user_id, role, created_at) VALUES ($1, $2, 'ADMIN', now())",
            [globex.id.into(), globex.user(Role::Sender).id.into()],
        ))
        .await;
    let err = smuggled.expect_err("a row of globex written from acme's wall");
    assert!(
        err.to_string().contains("row-level security"),
        "unexpected error: {err}"
    );
    txn.rollback().await.unwrap();
    crate::harness::report(&format!(
        "row-level security: the server's role without a tenant saw 0 rows in each of {} tenant tables (the owner sees 2 escrows)",
        tables.len()
    ));
}

/// A query over HTTP reads through one read-only transaction: one wall setting for
/// the whole page, first (the per-statement transactions' settings are not counted
/// by the tap: without the shared transaction there is none), and a mutation's
/// statements never run in one. Each query holds one connection while it
/// runs, so many pages at once on a pool of two, with mutations among them, all
/// finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_querys_reads_share_one_transaction() {
    use futures_util::future::join_all;
    use serde_json::json;
    let test = "row_security::a_querys_reads_share_one_transaction";
    let Some(app) =
        TestApp::spawn_with(Backend::Postgres, &[("SEQUESTRA_DB_MAX_CONNECTIONS", "2")]).await
    else {
        crate::harness::skipped(test);
        return;
    };
    let books = app.books();
    let t = app.tenant("acme").await;
    for i in 0..3 {
        crate::escrow::funded_escrow(&app, &t, "10.00", &format!("f-{i}")).await;
    }
    let sender = t.token(Role::Sender).to_owned();
    const PAGE: &str = "{ escrows(first: 10) { edges { node { id sender { email } milestones { id } payments { id } deposits { id } } } } }";
    app.gql(Some(&sender), "{ __typename }", json!({})).await;

    app.tap().capture(true);
    let r = app.gql(Some(&sender), PAGE, json!({})).await;
    app.tap().capture(false);
    let statements = app.tap().take();
    let edges = r.ok()["escrows"]["edges"].as_array().unwrap().len();
    assert_eq!(edges, 3);
    let walls: Vec<&String> = statements
        .iter()
        .filter(|s| s.contains("set_config"))
        .collect();
    let selects = statements.len() - walls.len();
    assert!(selects >= 4, "the page's reads: {statements:#?}");
    assert_eq!(
        walls.len(),
        1,
        "one wall setting for the page: {statements:#?}"
    );
    assert!(statements[0].contains("set_config"), "{statements:#?}");
    assert!(
        walls[0].contains("transaction_read_only"),
        "{statements:#?}"
    );

    // A mutation's statements run in their own transactions, never a shared one.
    app.tap().capture(true);
    crate::escrow::funded_escrow(&app, &t, "10.00", "f-late").await;
    app.tap().capture(false);
    let statements = app.tap().take();
    assert!(
        statements
            .iter()
            .all(|s| !s.contains("transaction_read_only")),
        "{statements:#?}"
    );

    // Twenty pages and two deposits at once on two connections.
    let pages = (0..20).map(|_| app.gql(Some(&sender), PAGE, json!({})));
    let (pages, _) = tokio::join!(join_all(pages), async {
        crate::escrow::funded_escrow(&app, &t, "10.00", "f-during-1").await;
        crate::escrow::funded_escrow(&app, &t, "10.00", "f-during-2").await;
    });
    for page in pages {
        assert!(page.ok()["escrows"]["edges"].as_array().unwrap().len() >= 4);
    }
    books.check().await;
}
