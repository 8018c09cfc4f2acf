//! Sending the outbox: the jobs' mail loop and the transports it sends through.
//!
//! Every outbox write wakes the sender (an update on the bus, across processes by
//! LISTEN/NOTIFY), which then sends that tenant's mail; a sweep of every tenant every
//! `poll_interval` takes the retries that came due and whatever a wake-up missed. One
//! process sends at a time (the `mail` lease, taken for a few poll intervals and
//! renewed while it works), and each mail is claimed by a conditional UPDATE
//! (`PENDING`, not claimed or its claim lapsed) before it is sent, so two senders never
//! send the same mail. A mail the server did not take is tried again after
//! `retry_base`, doubled for each further try, until `max_attempts`; a permanent
//! refusal (an SMTP 5xx) or the last try marks it `FAILED`. SMTP cannot be part of a
//! transaction: a process that dies between the server's "250 OK" and the `SENT`
//! mark sends that one mail again when the claim lapses (at least once, never lost).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use secrecy::ExposeSecret;

use super::{NoticeKind, templates};
use crate::{
    config::{MailConfig, MailTransport},
    db::TenantDb,
    entity::{notification, tenant, user},
    error::{Error, Result},
    graphql::context::Services,
    ids::TenantId,
    jobs::lease,
};

pub const PENDING: &str = "PENDING";
pub const SENT: &str = "SENT";
/// Not sent, and not to be: the user was deactivated or turned the kind off.
pub const SKIPPED: &str = "SKIPPED";
pub const FAILED: &str = "FAILED";

const LEASE: &str = "mail";
/// Mails one pass sends per tenant at most; the next pass takes the rest.
const BATCH: u64 = 50;
/// How long a sender holds a claimed mail before another may take it.
const CLAIM: Duration = Duration::from_secs(120);

/// Why a mail was not sent.
#[derive(Debug)]
pub struct SendError {
    /// The server refused it for good (retrying cannot help).
    pub permanent: bool,
    pub detail: String,
}

/// Where mail goes (`SEQUESTRA_SMTP_URL`, `SEQUESTRA_MAIL_DIR`, or the log).
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dir(AsyncFileTransport<Tokio1Executor>),
    Log,
}

impl Mailer {
    pub fn new(config: &MailConfig) -> anyhow::Result<Self> {
        Ok(match &config.transport {
            MailTransport::Smtp(url) => Mailer::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("SEQUESTRA_SMTP_URL: {e}"))?
                    .timeout(Some(Duration::from_secs(30)))
                    .build(),
            ),
            MailTransport::Dir(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("SEQUESTRA_MAIL_DIR {}: {e}", dir.display()))?;
                Mailer::Dir(AsyncFileTransport::<Tokio1Executor>::new(dir))
            }
            MailTransport::Log => Mailer::Log,
        })
    }

    /// What the start-up log says of it: `smtp`, `dir` or `log`.
    pub fn describe(&self) -> &'static str {
        match self {
            Mailer::Smtp(_) => "smtp",
            Mailer::Dir(_) => "dir",
            Mailer::Log => "log",
        }
    }

    async fn send(&self, kind: NoticeKind, message: Message) -> Result<(), SendError> {
        match self {
            Mailer::Smtp(smtp) => smtp.send(message).await.map(drop).map_err(|e| SendError {
                permanent: e.is_permanent(),
                detail: e.to_string(),
            }),
            Mailer::Dir(dir) => dir.send(message).await.map(drop).map_err(|e| SendError {
                permanent: false,
                detail: e.to_string(),
            }),
            Mailer::Log => {
                // Never the body: a reset mail carries a token.
                let to: Vec<String> = message
                    .envelope()
                    .to()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                tracing::info!(kind = %kind, ?to, "mail not delivered (no SMTP server configured)");
                Ok(())
            }
        }
    }
}

/// The jobs' mail loop: every `poll_interval`, if this process holds the `mail` lease,
/// sends what is due.
pub async fn run(
    services: Services,
    mailer: Arc<Mailer>,
    config: Arc<MailConfig>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let holder = uuid::Uuid::now_v7().simple().to_string();
    let ttl = config.poll_interval * 3 + CLAIM;
    let mut ticker = tokio::time::interval(config.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Woken by every outbox write (this process's and, on PostgreSQL, every other's):
    // that tenant's mail goes at once; the sweep every `poll_interval` takes retries
    // that came due and anything a wake-up missed.
    let mut wake = services.bus.subscribe(crate::events::Topic::Mail);
    loop {
        let only = tokio::select! {
            _ = ticker.tick() => None,
            woke = wake.recv() => woke.ok().map(|update| update.tenant_id()),
            _ = stop.changed() => return,
        };
        match lease::acquire(&services.db, LEASE, &holder, ttl).await {
            Ok(true) => match send_due(&services, &mailer, &config, only)
                .await
                .inspect(|_| crate::jobs::ran("mail", true))
                .inspect_err(|_| crate::jobs::ran("mail", false))
            {
                Ok(0) => {}
                Ok(sent) => tracing::debug!(sent, "mail sent"),
                Err(err) => tracing::warn!(error = %err, "sending mail failed; retrying next tick"),
            },
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "mail lease not taken"),
        }
    }
}

/// One pass over every tenant's due mail (or `only` one tenant's); answers how many
/// were sent.
pub async fn send_due(
    services: &Services,
    mailer: &Mailer,
    config: &MailConfig,
    only: Option<uuid::Uuid>,
) -> Result<usize> {
    let mut sent = 0;
    let tenants = match only {
        Some(id) => tenant::Entity::find_by_id(id).all(&services.db).await?,
        None => tenant::Entity::find().all(&services.db).await?,
    };
    for t in tenants {
        let db = services.tenant_db(TenantId::from_uuid(t.id));
        let now = Utc::now();
        let due = db
            .list::<notification::Entity>(|q| {
                q.filter(notification::Column::Status.eq(PENDING))
                    .filter(notification::Column::NextAttemptAt.lte(now))
                    .filter(
                        Condition::any()
                            .add(notification::Column::ClaimedUntil.is_null())
                            .add(notification::Column::ClaimedUntil.lt(now)),
                    )
                    .order_by_asc(notification::Column::CreatedAt)
                    .limit(BATCH)
            })
            .await?;
        for n in due {
            match send_one(&db, mailer, config, &t, &n).await {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(err) => tracing::warn!(notification = %n.id, error = %err, "mail not handled"),
            }
        }
    }
    Ok(sent)
}

/// Claims `n`, sends it, records how it went. `false`: another sender had it.
async fn send_one(
    db: &TenantDb,
    mailer: &Mailer,
    config: &MailConfig,
    tenant: &tenant::Model,
    n: &notification::Model,
) -> Result<bool> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(CLAIM).unwrap_or(chrono::Duration::MAX);
    let claimed = db
        .update_where::<notification::Entity>(|q| {
            q.col_expr(notification::Column::ClaimedUntil, Expr::value(until))
                .col_expr(
                    notification::Column::Attempts,
                    Expr::col(notification::Column::Attempts).add(1),
                )
                .filter(notification::Column::Id.eq(n.id))
                .filter(notification::Column::Status.eq(PENDING))
                .filter(
                    Condition::any()
                        .add(notification::Column::ClaimedUntil.is_null())
                        .add(notification::Column::ClaimedUntil.lt(now)),
                )
        })
        .await?;
    if claimed == 0 {
        return Ok(false);
    }
    let attempt = n.attempts + 1;
    let kind = NoticeKind::from_stored(&n.kind)?;
    let outcome = match compose(db, config, tenant, n, kind).await {
        Ok(Some(message)) => mailer.send(kind, message).await.map(|()| true),
        // Nobody to send it to any more (the user was deactivated, or turned this
        // kind off): settled without a mail.
        Ok(None) => Ok(false),
        Err(e) => Err(e),
    };
    let finished_at = Utc::now();
    let update = match &outcome {
        Ok(false) => Outcome::Skipped,
        Ok(true) => {
            metrics::counter!("notifications_sent_total", "kind" => kind.as_str()).increment(1);
            Outcome::Sent
        }
        Err(e) if e.permanent || attempt >= config.max_attempts => {
            metrics::counter!("notifications_failed_total", "kind" => kind.as_str()).increment(1);
            tracing::warn!(notification = %n.id, kind = %kind, attempt, error = %e.detail, "mail given up");
            Outcome::Failed(e.detail.clone())
        }
        Err(e) => {
            let wait = config.retry_base * 2u32.saturating_pow((attempt - 1).clamp(0, 16) as u32);
            tracing::info!(notification = %n.id, kind = %kind, attempt, error = %e.detail, "mail not taken; will retry");
            Outcome::Retry(
                finished_at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                e.detail.clone(),
            )
        }
    };
    // From PENDING (the claim holds it there) to where the try left it, in one
    // conditional UPDATE; a mail that carried a token keeps no copy once settled.
    let to = match &update {
        Outcome::Sent => SENT,
        Outcome::Skipped => SKIPPED,
        Outcome::Failed(_) => FAILED,
        Outcome::Retry(..) => PENDING,
    };
    let forget = kind.carries_secret() || matches!(update, Outcome::Skipped);
    db.transition::<notification::Entity>(
        n.id,
        notification::Column::Status,
        &[PENDING],
        to,
        |q| {
            let q = q.col_expr(
                notification::Column::ClaimedUntil,
                Expr::value(None::<chrono::DateTime<Utc>>),
            );
            let q = match &update {
                Outcome::Sent => q
                    .col_expr(notification::Column::SentAt, Expr::value(finished_at))
                    .col_expr(notification::Column::LastError, Expr::value(None::<String>)),
                Outcome::Skipped => q,
                Outcome::Failed(why) => {
                    q.col_expr(notification::Column::LastError, Expr::value(bounded(why)))
                }
                Outcome::Retry(at, why) => q
                    .col_expr(notification::Column::NextAttemptAt, Expr::value(*at))
                    .col_expr(notification::Column::LastError, Expr::value(bounded(why))),
            };
            if forget && !matches!(update, Outcome::Retry(..)) {
                q.col_expr(notification::Column::Data, Expr::value("{}"))
            } else {
                q
            }
        },
    )
    .await?;
    Ok(matches!(update, Outcome::Sent))
}

enum Outcome {
    Sent,
    Skipped,
    Failed(String),
    Retry(chrono::DateTime<Utc>, String),
}

fn bounded(why: &str) -> String {
    why.chars().take(500).collect()
}

/// The message for `n`, or `None` when it is no longer to be sent. A database error
/// is worth a retry; a mail that cannot be built (a template or an address) is not.
async fn compose(
    db: &TenantDb,
    config: &MailConfig,
    tenant: &tenant::Model,
    n: &notification::Model,
    kind: NoticeKind,
) -> Result<Option<Message>, SendError> {
    let transient = |e: Error| SendError {
        permanent: false,
        detail: e.to_string(),
    };
    let permanent = |detail: String| SendError {
        permanent: true,
        detail,
    };
    let Some(who) = db
        .find_by_id::<user::Entity>(n.user_id)
        .await
        .map_err(transient)?
    else {
        return Ok(None);
    };
    if !who.is_active {
        return Ok(None);
    }
    if !kind.always_sent()
        && super::is_opted_out(db, n.user_id, kind)
            .await
            .map_err(transient)?
    {
        return Ok(None);
    }
    let to = n.to_address.clone().unwrap_or(who.email);
    let data: serde_json::Value =
        serde_json::from_str(&n.data).map_err(|e| permanent(format!("data: {e}")))?;
    let mail = templates::render(kind, &data, &tenant.name, &to)
        .map_err(|e| permanent(format!("template: {e:#}")))?;
    let sender = config
        .from
        .parse()
        .map_err(|e| permanent(format!("from: {e}")))?;
    let recipient: Mailbox = to.parse().map_err(|e| permanent(format!("to: {e}")))?;
    Message::builder()
        .from(Mailbox::new(Some(tenant.name.clone()), sender))
        .to(recipient)
        .subject(mail.subject)
        .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
        .map(Some)
        .map_err(|e| permanent(format!("message: {e}")))
}
