//! Nothing secret at any log level: a real `serve --demo` process logging at `trace`
//! signs a user in with a password and a TOTP code and creates an API key; its whole
//! log is then searched for every credential the database holds (password, token, key
//! and recovery-code hashes, sealed TOTP seeds) and for the secrets that travelled
//! over HTTP (password, TOTP secret, tokens, keys).

use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

use crate::cli::serve_with_log;

/// The `data` of a GraphQL POST that must succeed.
async fn gql(listen: &str, token: Option<&str>, query: &str, variables: Value) -> Value {
    let body = crate::cli::gql_at(listen, token, query, variables).await;
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

/// Every value of the credential columns, read straight from the database.
async fn stored_credentials(db_url: &str) -> Vec<String> {
    let db = Database::connect(db_url).await.unwrap();
    let mut found = Vec::new();
    for (table, column) in [
        ("users", "password_hash"),
        ("api_keys", "key_hash"),
        ("mfa_totp", "secret_sealed"),
        ("mfa_challenges", "token_hash"),
        ("recovery_codes", "code_hash"),
        ("refresh_tokens", "token_hash"),
    ] {
        let rows = db
            .query_all(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT {column} AS v FROM {table}"),
            ))
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table} holds no {column}");
        for row in rows {
            found.push(row.try_get::<String>("", "v").unwrap());
        }
    }
    found
}

#[tokio::test]
async fn trace_logs_hold_no_credential() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/logs.db?mode=rwc", dir.path().display());
    let creds = dir.path().join("creds.json");
    let log = dir.path().join("serve.log");
    let (mut child, listen) = serve_with_log(
        &["--demo", "--demo-credentials", creds.to_str().unwrap()],
        &db,
        &[("SEQUESTRA_LOG", "trace")],
        &log,
    )
    .await;

    let demo: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let tenant = &demo["tenants"][0];
    let slug = tenant["slug"].as_str().unwrap();
    let admin = tenant["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["roles"] == json!(["ADMIN"]) && u["totpSecret"].is_string())
        .expect("the demo's ADMIN with MFA");
    let password = admin["password"].as_str().unwrap();
    let totp_secret = admin["totpSecret"].as_str().unwrap();

    let challenge = gql(
        &listen,
        None,
        "mutation($i: SignInInput!) { signIn(input: $i) { mfaChallenge } }",
        json!({ "i": { "tenant": slug, "email": admin["email"], "password": password } }),
    )
    .await["signIn"]["mfaChallenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let authenticator = crate::mfa::authenticator(totp_secret);
    // The next step's code: seeding spent the current one (codes are single-use).
    let code = crate::mfa::code_at(&authenticator, 30);
    let tokens = gql(
        &listen,
        None,
        "mutation($i: VerifyMfaInput!) { verifyMfa(input: $i) { accessToken refreshToken } }",
        json!({ "i": { "challenge": challenge, "code": code } }),
    )
    .await["verifyMfa"]
        .clone();
    let access = tokens["accessToken"].as_str().unwrap();
    let key = gql(
        &listen,
        Some(access),
        "mutation { createApiKey(input: { name: \"ci\", scopes: [ESCROW_READ] }) { key } }",
        json!({}),
    )
    .await["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    child.kill().await.ok();
    child.wait().await.ok();

    let text = std::fs::read_to_string(&log).unwrap();
    // The log is really at `trace` and really shows statements: the search below is
    // not over an empty or quiet log.
    assert!(text.contains("TRACE"), "no trace line in the log");
    assert!(
        text.contains("password_hash"),
        "no statement touching users.password_hash in the log"
    );
    let mut secrets: Vec<String> = vec![
        password.to_owned(),
        totp_secret.to_owned(),
        challenge,
        access.to_owned(),
        tokens["refreshToken"].as_str().unwrap().to_owned(),
        key,
        tenant["apiKeys"][0]["key"].as_str().unwrap().to_owned(),
    ];
    secrets.extend(
        tenant["users"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|u| [&u["password"], &u["totpSecret"]])
            .filter_map(|v| v.as_str().map(str::to_owned)),
    );
    secrets.extend(stored_credentials(&db).await);
    for secret in &secrets {
        if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
            panic!(
                "a credential appears in the trace log, in: {}",
                line.replace(secret.as_str(), "<CREDENTIAL>")
            );
        }
    }
    assert!(!text.contains("$argon2"), "an argon2 hash in the trace log");
    println!(
        "searched {} bytes of trace log for {} credentials",
        text.len(),
        secrets.len()
    );
}
