//! The mail templates (`templates/mail/`, built into the binary): for each kind a
//! `.txt` whose first line is the subject and whose rest (after a blank line) is the
//! plain-text body, and a `.html` body extending `layout.html`. Values are escaped in
//! the HTML bodies (by file name) and used as they are in the text. A value a template
//! names and the data lacks is an error, not an empty string.

use std::sync::LazyLock;

use minijinja::{Environment, UndefinedBehavior, context};
use serde_json::Value;

use super::NoticeKind;

/// A mail ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

macro_rules! templates {
    ($($name:literal),+ $(,)?) => {
        &[$(
            (concat!($name, ".txt"), include_str!(concat!("../../templates/mail/", $name, ".txt"))),
            (concat!($name, ".html"), include_str!(concat!("../../templates/mail/", $name, ".html"))),
        )+]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "payment_sent",
    "payment_settled",
    "payment_failed",
    "payment_disputed",
    "escrow_disputed",
    "escrow_auto_released",
    "mandate_granted",
    "mandate_nearly_spent",
    "sign_in",
    "password_changed",
    "mfa_disabled",
    "password_reset",
    "email_verification",
    "email_change_confirmation",
    "email_change_requested",
];

static ENV: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template(
        "layout.html",
        include_str!("../../templates/mail/layout.html"),
    )
    .map_err(|e| format!("{e:#}"))?;
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|e| format!("{e:#}"))?;
    }
    Ok(env)
});

/// Renders `kind` for `email` in tenant `tenant` from `data` (an object).
pub fn render(
    kind: NoticeKind,
    data: &Value,
    tenant: &str,
    email: &str,
) -> Result<Rendered, minijinja::Error> {
    let env = ENV
        .as_ref()
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.clone()))?;
    let base = kind.template();
    let ctx = context! {
        tenant => tenant,
        email => email,
        security => kind.is_security(),
        ..minijinja::Value::from_serialize(data)
    };
    let text = env.get_template(&format!("{base}.txt"))?.render(&ctx)?;
    let (subject, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
    let subject = subject.trim().to_owned();
    let ctx = context! { subject => subject, ..ctx };
    let html = env.get_template(&format!("{base}.html"))?.render(&ctx)?;
    Ok(Rendered {
        subject,
        text: body.trim_start_matches('\n').to_owned(),
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What each kind's data carries (as the code that enqueues it writes it).
    fn sample(kind: NoticeKind) -> Value {
        match kind {
            NoticeKind::PaymentDisputed => {
                json!({ "amount": "12.50", "currency": "EUR", "payment_id": "pay_x", "reason": "fraud claim", "outcome": "LOST" })
            }
            NoticeKind::PaymentSent | NoticeKind::PaymentSettled | NoticeKind::PaymentFailed => {
                json!({ "amount": "12.50", "currency": "EUR", "payment_id": "pay_x", "reason": "account closed" })
            }
            NoticeKind::EscrowDisputed | NoticeKind::EscrowAutoReleased => {
                json!({ "description": "Kitchen", "amount": "100.00", "currency": "EUR", "escrow_id": "esc_x", "reason": "late" })
            }
            NoticeKind::MandateGranted | NoticeKind::MandateNearlySpent => {
                json!({ "total": "50.00", "remaining": "4.00", "currency": "EUR", "mandate_id": "mnd_x", "expires": "2026-12-31" })
            }
            NoticeKind::SignIn | NoticeKind::MfaDisabled => {
                json!({ "at": "2026-11-30 10:00 UTC", "ip": "192.0.2.1" })
            }
            NoticeKind::PasswordChanged => {
                json!({ "at": "2026-11-30 10:00 UTC", "ip": null, "how": "reset" })
            }
            NoticeKind::PasswordReset => {
                json!({ "token": "sq_pr_x", "link": null, "minutes": 30 })
            }
            NoticeKind::EmailVerification | NoticeKind::EmailChangeConfirmation => {
                json!({ "token": "sq_ev_x", "link": null, "address": "new@example.com", "hours": 24 })
            }
            NoticeKind::EmailChangeRequested => {
                json!({ "at": "2026-11-30 10:00 UTC", "ip": null, "address": "new@example.com" })
            }
        }
    }

    /// Every kind has both templates, and they render from the data its code writes
    /// (a template naming a value the data lacks fails here, not in a user's inbox).
    #[test]
    fn every_kind_renders() {
        for kind in NoticeKind::ALL {
            let mail = render(*kind, &sample(*kind), "Acme <Escrow>", "a@example.com")
                .unwrap_or_else(|e| panic!("{kind}: {e:#}"));
            assert!(
                !mail.subject.is_empty() && !mail.subject.contains('\n'),
                "{kind}"
            );
            assert!(mail.text.contains("Hello,"), "{kind}: {}", mail.text);
            assert!(mail.html.contains("Hello,"), "{kind}");
            // Escaped in HTML, as is in text.
            assert!(mail.html.contains("Acme &lt;Escrow&gt;"), "{kind}");
            assert!(!mail.html.contains("Acme <Escrow>"), "{kind}");
            assert_eq!(
                mail.html.contains("notification settings"),
                !kind.is_security(),
                "{kind}: only notices a user can turn off say how"
            );
        }
    }

    #[test]
    fn a_missing_value_is_an_error() {
        let err = render(
            NoticeKind::PaymentSettled,
            &json!({ "amount": "1" }),
            "T",
            "a@b.c",
        );
        assert!(err.is_err());
    }

    #[test]
    fn the_reset_mail_carries_the_token_or_the_link() {
        let plain = render(
            NoticeKind::PasswordReset,
            &sample(NoticeKind::PasswordReset),
            "T",
            "a@b.c",
        )
        .unwrap();
        assert!(plain.text.contains("sq_pr_x") && plain.html.contains("sq_pr_x"));
        let linked = render(
            NoticeKind::PasswordReset,
            &json!({ "token": "sq_pr_x", "link": "https://app.example/reset-password#token=sq_pr_x", "minutes": 30 }),
            "T",
            "a@b.c",
        )
        .unwrap();
        assert!(
            linked
                .text
                .contains("https://app.example/reset-password#token=sq_pr_x")
        );
        // In HTML every value is escaped, `/` too (a browser reads it back).
        assert!(
            linked.html.contains(
                "href=\"https:&#x2f;&#x2f;app.example&#x2f;reset-password#token=sq_pr_x\""
            )
        );
    }
}
