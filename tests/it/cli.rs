//! The command line as an operator uses it: real process, real environment.

use std::process::{Command, Output};

use serde_json::{Value, json};

fn sequestra(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sequestra"));
    cmd.args(args).current_dir(dir).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sequestra")
}

const STRONG: &str = "4f1e9c2b7a6d3e8f0a5b1c7d9e2f4a6b8c0d1e3f";

#[test]
fn production_refuses_missing_or_weak_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/p.db?mode=rwc", dir.path().display());
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[], "SEQUESTRA_JWT_SECRET"),
        (
            &[(
                "SEQUESTRA_JWT_SECRET",
                "change-me-please-change-me-please-0000",
            )],
            "SEQUESTRA_JWT_SECRET",
        ),
        (
            &[
                ("SEQUESTRA_JWT_SECRET", STRONG),
                ("SEQUESTRA_API_KEY_SECRET", STRONG),
                ("SEQUESTRA_WEBHOOK_SECRETS", "short"),
            ],
            "SEQUESTRA_WEBHOOK_SECRETS",
        ),
    ];
    for (extra, setting) in cases {
        let mut env = vec![
            ("SEQUESTRA_ENV", "production"),
            ("SEQUESTRA_DATABASE_URL", db.as_str()),
        ];
        env.extend_from_slice(extra);
        let out = sequestra(&["serve"], &env, dir.path());
        assert!(!out.status.success(), "must refuse: {extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(setting), "names {setting}: {stderr}");
        assert!(
            !stderr.contains("change-me-please"),
            "never echoes the secret: {stderr}"
        );
    }
}

#[test]
fn demo_is_refused_in_production() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/p.db?mode=rwc", dir.path().display());
    let out = sequestra(
        &["serve", "--demo"],
        &[
            ("SEQUESTRA_ENV", "production"),
            ("SEQUESTRA_DATABASE_URL", &db),
            ("SEQUESTRA_JWT_SECRET", STRONG),
            ("SEQUESTRA_API_KEY_SECRET", STRONG),
            (
                "SEQUESTRA_WEBHOOK_SECRETS",
                "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b",
            ),
            (
                "SEQUESTRA_MFA_KEYS",
                "k1:00112233445566778899aabbccddeeff0123456789abcdef0f1e2d3c4b5a6978",
            ),
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--demo is refused"));
}

#[test]
fn bootstrap_creates_a_tenant_with_a_one_time_password() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/b.db?mode=rwc", dir.path().display());
    let env = [("SEQUESTRA_DATABASE_URL", db.as_str())];
    let out = sequestra(
        &[
            "bootstrap",
            "--tenant",
            "initech",
            "--admin-email",
            "Boss@Initech.example",
        ],
        &env,
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("admin:    boss@initech.example"),
        "{stdout}"
    );
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("password line");
    assert!(password.len() >= 24);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(password),
        "the password never reaches the log"
    );

    // Twice is a conflict, not a second tenant.
    let again = sequestra(
        &[
            "bootstrap",
            "--tenant",
            "initech",
            "--admin-email",
            "x@initech.example",
        ],
        &env,
        dir.path(),
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let bad = sequestra(
        &[
            "bootstrap",
            "--tenant",
            "Not A Slug",
            "--admin-email",
            "x@y.example",
        ],
        &env,
        dir.path(),
    );
    assert!(!bad.status.success());
}

#[test]
fn migrate_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/m.db?mode=rwc", dir.path().display());
    for _ in 0..2 {
        let out = sequestra(&["migrate"], &[("SEQUESTRA_DATABASE_URL", &db)], dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The JSON answer to a GraphQL POST to the server at `listen`.
pub async fn gql_at(listen: &str, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("http://{listen}/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Starts `sequestra serve ARGS` on a free port against `db`; returns once /health answers.
async fn serve(args: &[&str], db: &str) -> (tokio::process::Child, String) {
    serve_with(args, db, &[]).await
}

/// Like `serve`, with extra `SEQUESTRA_*` settings.
pub async fn serve_with(
    args: &[&str],
    db: &str,
    settings: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    serve_to(args, db, settings, std::process::Stdio::null()).await
}

/// Like `serve_with`, the server's log (stderr) going to `log`.
pub async fn serve_with_log(
    args: &[&str],
    db: &str,
    settings: &[(&str, &str)],
    log: &std::path::Path,
) -> (tokio::process::Child, String) {
    let file = std::fs::File::create(log).unwrap();
    serve_to(args, db, settings, file.into()).await
}

async fn serve_to(
    args: &[&str],
    db: &str,
    settings: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (tokio::process::Child, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sequestra"))
        .arg("serve")
        .args(args)
        .env("SEQUESTRA_DATABASE_URL", db)
        .env("SEQUESTRA_LISTEN", &listen)
        // Ephemeral development secrets unless a test names a file: nothing written
        // to the home directory of whoever runs the tests.
        .env("SEQUESTRA_DEV_SECRETS_FILE", "none")
        .env(
            "SEQUESTRA_PROOF_DIR",
            std::env::temp_dir().join(format!("sq-proofs-{port}")),
        )
        .envs(settings.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("http://{listen}/health")).send().await
            && r.status() == 200
        {
            return (child, listen);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("sequestra serve {args:?} did not answer /health");
}

#[tokio::test]
async fn serve_no_migrate_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/fresh.db?mode=rwc", dir.path().display());
    let (mut child, listen) = serve(&["--no-migrate"], &db).await;
    let ready = reqwest::get(format!("http://{listen}/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["migrations"]["status"], "pending");
    child.kill().await.ok();
}

/// `serve --demo --demo-credentials FILE` writes working sign-ins in the documented
/// shape, then serves; each demo password is a valid argon2id secret for its user.
#[tokio::test]
async fn demo_writes_credentials_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/demo.db?mode=rwc", dir.path().display());
    let creds = dir.path().join("creds.json");
    let (mut child, listen) = serve(
        &["--demo", "--demo-credentials", creds.to_str().unwrap()],
        &db,
    )
    .await;
    let client = reqwest::Client::new();
    let json: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let tenants = json["tenants"].as_array().unwrap();
    let slugs: Vec<&str> = tenants
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme", "globex"]);
    for tenant in tenants {
        let roles: Vec<&str> = tenant["users"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|u| {
                u["roles"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
            })
            .collect();
        assert_eq!(
            roles,
            ["ADMIN", "SUPPORT", "SENDER", "BENEFICIARY", "ADMIN"]
        );
        let with_mfa: Vec<&Value> = tenant["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["totpSecret"].is_string())
            .flat_map(|u| u["roles"].as_array().unwrap())
            .collect();
        assert_eq!(
            with_mfa,
            [&json!("SENDER"), &json!("ADMIN")],
            "the SENDER (money flows need a step-up) and the secure ADMIN have MFA"
        );
        let keys = tenant["apiKeys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let key = keys[0]["key"].as_str().unwrap();
        assert!(key.starts_with("sq_live_"));
        // The demo key works against the running server.
        let r = client
            .post(format!("http://{listen}/graphql"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "query": "{ users(first: 1) { edges { cursor } } }" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.json::<Value>().await.unwrap().get("errors").is_none());
        // Escrows in several states, one with a photo proof approved by its geofence.
        let r: Value = client
            .post(format!("http://{listen}/graphql"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "query": "{ escrows(first: 20) { edges { node { status milestones { proofs { kind status decidedAutomatically } } } } } }" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let edges = r["data"]["escrows"]["edges"].as_array().expect("escrows");
        let states: Vec<&str> = edges
            .iter()
            .map(|e| e["node"]["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            states,
            ["DRAFT", "FUNDED", "RELEASABLE", "RELEASED", "DISPUTED"]
        );
        // A mandate with purchases, and the refusal's alert (the demo key reads as ADMIN).
        let r: Value = client
            .post(format!("http://{listen}/graphql"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "query": "{ mandates { edges { node { status spent { amount } purchases { id } } } } alerts { edges { node { kind } } } }" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(r.get("errors").is_none(), "{r}");
        let mandate = &r["data"]["mandates"]["edges"][0]["node"];
        assert_eq!(mandate["status"], "ACTIVE");
        assert_eq!(mandate["spent"]["amount"], "61.40");
        assert_eq!(mandate["purchases"].as_array().unwrap().len(), 2);
        assert_eq!(
            r["data"]["alerts"]["edges"][0]["node"]["kind"],
            "MERCHANT_NOT_ALLOWED"
        );
        let photo = &edges[1]["node"]["milestones"][0]["proofs"][0];
        assert_eq!(photo["kind"], "PHOTO");
        assert_eq!(photo["status"], "ACCEPTED");
        assert_eq!(photo["decidedAutomatically"], true);
        for user in tenant["users"].as_array().unwrap() {
            assert!(user["password"].as_str().unwrap().len() >= 24);
            assert!(user["email"].as_str().unwrap().contains('@'));
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "credentials file is private");
    }
    child.kill().await.ok();
}

/// A restarted development server keeps the secrets it generated (kept in a 0600
/// file outside the repository): the access token issued before the restart still
/// works, and the demo SENDER's TOTP seed, sealed before, still opens.
#[tokio::test]
async fn development_secrets_survive_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dev.db?mode=rwc", dir.path().display());
    let creds = dir.path().join("creds.json");
    let kept = dir.path().join("state/dev-secrets.env");
    let settings = [("SEQUESTRA_DEV_SECRETS_FILE", kept.to_str().unwrap())];
    let (mut first, listen) = serve_with(
        &["--demo", "--demo-credentials", creds.to_str().unwrap()],
        &db,
        &settings,
    )
    .await;
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the kept secrets file is private");
    let demo: Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let tenant = &demo["tenants"][0];
    let sender = tenant["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["roles"] == json!(["SENDER"]))
        .unwrap()
        .clone();
    let totp = crate::mfa::authenticator(sender["totpSecret"].as_str().unwrap());
    let sign_in = json!({ "i": { "tenant": tenant["slug"], "email": sender["email"], "password": sender["password"] } });
    // Password, then `code`: the answer to verifyMfa.
    let with_mfa = async |listen: &str, code: &str| {
        let challenge = gql_at(
            listen,
            None,
            "mutation($i: SignInInput!) { signIn(input: $i) { mfaChallenge } }",
            sign_in.clone(),
        )
        .await["data"]["signIn"]["mfaChallenge"]
            .clone();
        gql_at(
            listen,
            None,
            "mutation($i: VerifyMfaInput!) { verifyMfa(input: $i) { accessToken } }",
            json!({ "i": { "challenge": challenge, "code": code } }),
        )
        .await
    };
    let code = crate::mfa::code_at(&totp, 30);
    let r = with_mfa(&listen, &code).await;
    let token = r["data"]["verifyMfa"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    first.kill().await.ok();
    first.wait().await.ok();

    let (mut second, listen) = serve_with(&[], &db, &settings).await;
    let r = gql_at(&listen, Some(&token), "{ viewer { email } }", json!({})).await;
    assert_eq!(r["data"]["viewer"]["email"], sender["email"], "{r}");
    // The code already used: the seed opens and the code is refused as spent
    // (UNAUTHENTICATED); a seed the server could not open would answer CONFLICT.
    let r = with_mfa(&listen, &code).await;
    assert_eq!(
        r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{r}"
    );
    second.kill().await.ok();
}
