//! TOTP MFA through HTTP: enrolment, single-use codes, recovery codes, lockout,
//! step-up and the tenant policy.

use sea_orm::EntityTrait;
use sequestra::auth::Role;
use serde_json::{Value, json};
use totp_rs::{Builder, Secret, Totp};

use crate::harness::{GqlResponse, TestApp, TestTenant};
use crate::on_both_backends;

on_both_backends!(
    enrol_then_sign_in_in_two_steps_with_single_use_codes,
    repeated_wrong_codes_lock_the_second_factor,
    step_up_and_tenant_policy_are_enforced,
    disabling_needs_password_and_code,
    a_seed_sealed_under_a_lost_key_is_a_clear_conflict,
);

const SIGN_IN: &str = "mutation($t: String!, $e: String!, $p: String!) { signIn(input: { tenant: $t, email: $e, password: $p }) { accessToken mfaChallenge } }";
const VERIFY: &str = "mutation($c: String!, $code: String, $rc: String) { verifyMfa(input: { challenge: $c, code: $code, recoveryCode: $rc }) { accessToken refreshToken } }";

/// An authenticator app: the TOTP of an enrolment's base32 secret.
pub(crate) fn authenticator(secret: &str) -> Totp {
    Builder::new()
        .with_secret(Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap()
}

pub(crate) fn code_at(totp: &Totp, offset_secs: i64) -> String {
    let now = chrono::Utc::now().timestamp() + offset_secs;
    totp.generate(u64::try_from(now).unwrap()).to_string()
}

/// Signs in a user who has MFA with its password and the next step's code of its
/// base32 `secret` (the current step's may be spent); returns the access token, which
/// carries a fresh step-up.
pub(crate) async fn sign_in_with_totp(
    app: &TestApp,
    slug: &str,
    email: &str,
    password: &str,
    secret: &str,
) -> String {
    let r = app
        .gql(
            None,
            SIGN_IN,
            json!({ "t": slug, "e": email, "p": password }),
        )
        .await;
    let challenge = r.ok()["signIn"]["mfaChallenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = code_at(&authenticator(secret), 30);
    let r = verify(app, &challenge, Some(&code), None).await;
    r.ok()["verifyMfa"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Enrols and activates MFA for the bearer of `token`; returns the authenticator, the
/// code used to activate, and the recovery codes.
pub(crate) async fn enrol(app: &TestApp, token: &str) -> (Totp, String, Vec<String>) {
    let r = app
        .gql(
            Some(token),
            "mutation { enrollMfa { secret otpauthUri qrCode } }",
            json!({}),
        )
        .await;
    let e = r.ok()["enrollMfa"].clone();
    assert!(
        e["otpauthUri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Sequestra:"),
        "{e}"
    );
    assert!(
        e["qrCode"]
            .as_str()
            .unwrap()
            .starts_with("data:image/svg+xml;base64,")
    );
    let totp = authenticator(e["secret"].as_str().unwrap());

    let wrong = app
        .gql(
            Some(token),
            "mutation { activateMfa(input: { code: \"000000\" }) { codes } }",
            json!({}),
        )
        .await;
    assert_eq!(wrong.code(), Some("BAD_USER_INPUT"));
    let first = code_at(&totp, 0);
    let r = app
        .gql(
            Some(token),
            "mutation($c: String!) { activateMfa(input: { code: $c }) { codes } }",
            json!({ "c": first }),
        )
        .await;
    let codes: Vec<String> = r.ok()["activateMfa"]["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (totp, first, codes)
}

async fn challenge(app: &TestApp, tenant: &TestTenant, role: Role) -> String {
    let u = tenant.user(role);
    let r = app
        .gql(
            None,
            SIGN_IN,
            json!({ "t": "acme", "e": u.email, "p": u.password }),
        )
        .await;
    let data = r.ok()["signIn"].clone();
    assert_eq!(
        data["accessToken"],
        Value::Null,
        "no tokens before the second factor"
    );
    data["mfaChallenge"].as_str().unwrap().to_owned()
}

async fn verify(
    app: &TestApp,
    challenge: &str,
    code: Option<&str>,
    recovery: Option<&str>,
) -> GqlResponse {
    app.gql(
        None,
        VERIFY,
        json!({ "c": challenge, "code": code, "rc": recovery }),
    )
    .await
}

async fn enrol_then_sign_in_in_two_steps_with_single_use_codes(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (totp, first_code, recovery) = enrol(&app, acme.token(Role::Sender)).await;
    assert_eq!(recovery.len(), 10);
    assert!(
        recovery
            .iter()
            .all(|c| c.len() == 19 && c.matches('-').count() == 3),
        "{recovery:?}"
    );
    let mfa = app
        .gql(Some(acme.token(Role::Sender)), "{ mfaEnabled }", json!({}))
        .await;
    assert_eq!(mfa.ok()["mfaEnabled"], true);

    // The activation code is spent: replaying it fails, the next step's code works.
    let c = challenge(&app, &acme, Role::Sender).await;
    assert_eq!(
        verify(&app, &c, Some(&first_code), None).await.code(),
        Some("UNAUTHENTICATED")
    );
    let next = code_at(&totp, 30);
    let tokens = verify(&app, &c, Some(&next), None).await;
    let access = tokens.ok()["verifyMfa"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.gql(Some(&access), "{ viewer { email } }", json!({}))
            .await
            .status,
        200
    );
    // The challenge is spent too.
    assert_eq!(
        verify(&app, &c, Some(&next), None).await.code(),
        Some("UNAUTHENTICATED")
    );

    // A recovery code works once, in any case and with or without dashes.
    let c = challenge(&app, &acme, Role::Sender).await;
    let r = verify(
        &app,
        &c,
        None,
        Some(&recovery[0].to_lowercase().replace('-', "")),
    )
    .await;
    assert!(r.ok()["verifyMfa"]["accessToken"].is_string());
    let c = challenge(&app, &acme, Role::Sender).await;
    assert_eq!(
        verify(&app, &c, None, Some(&recovery[0])).await.code(),
        Some("UNAUTHENTICATED")
    );
    assert_eq!(
        verify(&app, &c, Some("1"), Some("2")).await.code(),
        Some("BAD_USER_INPUT")
    );

    let actions = app.audit_actions(&acme).await;
    for expected in [
        "auth.mfa.enabled",
        "auth.mfa.recovery_code_used",
        "auth.mfa.failed",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    // The seed is stored sealed, never in the clear.
    let row = sequestra::entity::mfa_totp::Entity::find_by_id(acme.user(Role::Sender).id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.secret_sealed.starts_with("v1."));
}

async fn repeated_wrong_codes_lock_the_second_factor(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (totp, _, _) = enrol(&app, acme.token(Role::Beneficiary)).await;
    let c = challenge(&app, &acme, Role::Beneficiary).await;
    for _ in 0..5 {
        assert_eq!(
            verify(&app, &c, Some("123456"), None).await.code(),
            Some("UNAUTHENTICATED")
        );
    }
    let locked = verify(&app, &c, Some(&code_at(&totp, 30)), None).await;
    assert_eq!(locked.code(), Some("RATE_LIMITED"), "{}", locked.body);
    assert!(
        locked.body["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

async fn step_up_and_tenant_policy_are_enforced(app: TestApp) {
    let acme = app.tenant("acme").await;
    let admin = acme.token(Role::Admin).to_owned();
    let set = "mutation($r: [Role!]!) { setMfaRequiredRoles(input: { roles: $r }) { roles } }";

    // A password-only session has no recent MFA: sensitive mutations refuse.
    let r = app.gql(Some(&admin), set, json!({ "r": ["SENDER"] })).await;
    assert_eq!(r.code(), Some("MFA_REQUIRED"));
    let r = app
        .gql(
            Some(&admin),
            "mutation { regenerateRecoveryCodes { codes } }",
            json!({}),
        )
        .await;
    assert_eq!(r.code(), Some("MFA_REQUIRED"));

    // Activating MFA verifies this session; a step-up code does it later.
    let (totp, _, _) = enrol(&app, &admin).await;
    let r = app.gql(Some(&admin), set, json!({ "r": ["SENDER"] })).await;
    assert_eq!(r.ok()["setMfaRequiredRoles"]["roles"], json!(["SENDER"]));
    let r = app
        .gql(
            Some(&admin),
            "mutation($c: String!) { verifyStepUp(input: { code: $c }) { verifiedAt } }",
            json!({ "c": code_at(&totp, 30) }),
        )
        .await;
    assert!(r.ok()["verifyStepUp"]["verifiedAt"].is_string());
    let r = app
        .gql(
            Some(&admin),
            "mutation { regenerateRecoveryCodes { codes } }",
            json!({}),
        )
        .await;
    assert_eq!(
        r.ok()["regenerateRecoveryCodes"]["codes"]
            .as_array()
            .unwrap()
            .len(),
        10
    );

    // A sender without MFA can now only enrol (or sign out).
    let sender = acme.token(Role::Sender);
    let r = app
        .gql(Some(sender), "{ viewer { email } }", json!({}))
        .await;
    assert_eq!(r.code(), Some("MFA_REQUIRED"));
    let (_, _, _) = enrol(&app, sender).await;
    let r = app
        .gql(Some(sender), "{ viewer { email } }", json!({}))
        .await;
    assert_eq!(r.ok()["viewer"]["email"], "sender@acme.test");
    // Other roles are not affected.
    let r = app
        .gql(
            Some(acme.token(Role::Support)),
            "{ viewer { email } }",
            json!({}),
        )
        .await;
    assert!(r.body.get("errors").is_none());
    // Support reads the policy, cannot change it.
    let r = app
        .gql(
            Some(acme.token(Role::Support)),
            "{ mfaRequiredRoles }",
            json!({}),
        )
        .await;
    assert_eq!(r.ok()["mfaRequiredRoles"], json!(["SENDER"]));
    let r = app
        .gql(Some(acme.token(Role::Support)), set, json!({ "r": [] }))
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"));
}

async fn disabling_needs_password_and_code(app: TestApp) {
    let acme = app.tenant("acme").await;
    let token = acme.token(Role::Sender).to_owned();
    let password = acme.user(Role::Sender).password.clone();
    let (totp, _, _) = enrol(&app, &token).await;
    let disable = "mutation($p: String!, $c: String!) { disableMfa(input: { password: $p, code: $c }) { mfaEnabled } }";
    let r = app
        .gql(
            Some(&token),
            disable,
            json!({ "p": "not the password", "c": code_at(&totp, 30) }),
        )
        .await;
    assert_eq!(r.code(), Some("UNAUTHENTICATED"));
    let r = app
        .gql(
            Some(&token),
            disable,
            json!({ "p": password, "c": "000000" }),
        )
        .await;
    assert_eq!(r.code(), Some("UNAUTHENTICATED"));
    let r = app
        .gql(
            Some(&token),
            disable,
            json!({ "p": password, "c": code_at(&totp, 30) }),
        )
        .await;
    assert_eq!(r.ok()["disableMfa"]["mfaEnabled"], false);
    let r = app.gql(Some(&token), "{ mfaEnabled }", json!({})).await;
    assert_eq!(r.ok()["mfaEnabled"], false);
}

/// A server whose SEQUESTRA_MFA_KEYS lack the key a seed was sealed with (a restarted
/// development server with ephemeral keys, a rotation that dropped the old key)
/// answers CONFLICT with a reason, not INTERNAL; recovery codes still work there.
async fn a_seed_sealed_under_a_lost_key_is_a_clear_conflict(app: TestApp) {
    let acme = app.tenant("acme").await;
    let (totp, _, recovery) = enrol(&app, acme.token(Role::Sender)).await;
    // The peer has its own ephemeral MFA key.
    let peer = app.peer(&[]).await;
    let c = challenge(&peer, &acme, Role::Sender).await;
    let r = verify(&peer, &c, Some(&code_at(&totp, 30)), None).await;
    assert_eq!(r.code(), Some("CONFLICT"), "{:?}", r.body);
    assert_eq!(
        r.body["errors"][0]["extensions"]["reason"],
        "MFA_SEED_UNREADABLE"
    );
    let c = challenge(&peer, &acme, Role::Sender).await;
    let r = verify(&peer, &c, None, Some(&recovery[0])).await;
    assert!(r.ok()["verifyMfa"]["accessToken"].is_string());
    // The server that holds the key still opens it.
    let c = challenge(&app, &acme, Role::Sender).await;
    let r = verify(&app, &c, Some(&code_at(&totp, 30)), None).await;
    assert!(r.ok()["verifyMfa"]["accessToken"].is_string());
}
