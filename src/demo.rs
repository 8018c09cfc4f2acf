//! `serve --demo`: two tenants, `acme` and `globex`, each with a user for every role
//! and a random password, an ADMIN who signs in with MFA, an API key, escrows in
//! several states (one with a photo proof), and a spend catalog with a mandate, its
//! purchases and a refusal alert. Refused in production. Run again on the same database,
//! it hands the demo users fresh passwords (the old ones are only stored hashed).

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::{
    accounts::rules,
    audit::{Actor, Origin},
    auth::{
        Credential, Role, Scope, TokenService, UserPrincipal, crypto::Sealer, password, scopes_of,
    },
    db::Scoped,
    domain::{Email, Slug},
    entity::{api_key, tenant, user},
    error::{Error, Result},
    escrow::storage::ProofStore,
    identity::{api_keys, mfa},
    ids::{TenantId, new_id},
};

pub const DEMO_TENANTS: [(&str, &str); 2] =
    [("acme", "Acme Corporation"), ("globex", "Globex Inc.")];

/// What `--demo-credentials` writes. Later features add fields, never remove them.
#[derive(Debug, Serialize)]
pub struct DemoCredentials {
    pub tenants: Vec<DemoTenant>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoTenant {
    pub slug: String,
    pub name: String,
    pub users: Vec<DemoUser>,
    pub api_keys: Vec<DemoApiKey>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoUser {
    pub email: String,
    /// Shown on purpose: this is the demo's one way to hand out sign-ins.
    pub password: String,
    pub roles: Vec<Role>,
    /// For the user with MFA: the TOTP seed in base32, for an authenticator app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DemoApiKey {
    pub name: String,
    pub key: String,
    pub scopes: Vec<String>,
}

/// The demo user who signs in with MFA (an ADMIN, so the two-step sign-in and step-up
/// can be tried on everything).
fn mfa_email(slug: &str) -> String {
    format!("secure-admin@{slug}.example")
}

const DEMO_KEY_NAME: &str = "demo";

fn demo_email(role: Role, slug: &str) -> String {
    format!("{}@{slug}.example", role.as_str().to_lowercase())
}

/// Seeds an empty database, or refreshes the secrets of an existing demo one.
pub async fn seed(
    db: &DatabaseConnection,
    tokens: &TokenService,
    sealer: &Sealer,
    proofs: &dyn ProofStore,
    psp: &dyn crate::payments::Psp,
) -> Result<DemoCredentials> {
    let tenant_count = tenant::Entity::find().count(db).await?;
    let mut existing = Vec::new();
    for (slug, _) in DEMO_TENANTS {
        if let Some(t) = rules::find_tenant_by_slug(db, slug).await? {
            existing.push(t);
        }
    }
    let refresh = match (tenant_count, existing.len()) {
        (0, _) => false,
        (2, 2) => true,
        _ => {
            return Err(Error::conflict(
                "NOT_A_DEMO_DATABASE",
                "--demo seeds only an empty database (or refreshes an earlier demo one); \
                 this one holds other tenants. Point SEQUESTRA_DATABASE_URL at a new file.",
            ));
        }
    };

    let mut tenants = Vec::new();
    for (slug, name) in DEMO_TENANTS {
        let mut users = Vec::new();
        let txn = crate::db::begin_write(db).await?;
        let (scoped, tenant) = if refresh {
            let tenant = existing
                .iter()
                .find(|t| t.slug == slug)
                .cloned()
                .ok_or(Error::NotFound)?;
            (
                Scoped::bind(txn, TenantId::from_uuid(tenant.id)).await?,
                tenant,
            )
        } else {
            let parsed = Slug::parse(slug)?;
            let scoped = Scoped::bind(txn, TenantId::from_uuid(new_id())).await?;
            let tenant = rules::create_tenant(&scoped, &parsed, name, false).await?;
            (scoped, tenant)
        };
        for role in Role::ALL {
            let email = Email::parse(&demo_email(role, slug))?;
            let secret = password::generate();
            let hash = password::hash(secret.clone()).await?;
            let who = if refresh {
                let found = scoped
                    .first::<user::Entity>(|q| q.filter(user::Column::Email.eq(email.as_str())))
                    .await?
                    .ok_or(Error::NotFound)?;
                rules::set_password_hash(&scoped, found.id, hash).await?;
                found
            } else {
                rules::create_user(
                    &scoped,
                    Actor::System,
                    &Origin::default(),
                    &email,
                    hash,
                    &[role],
                )
                .await?
            };
            // Releasing money needs a recent MFA step-up: the SENDER has TOTP, so the
            // README's money flows run as it (its seed is printed as `totpSecret`).
            let totp_secret = if role == Role::Sender {
                Some(fresh_totp(&scoped, sealer, &who, refresh).await?)
            } else {
                None
            };
            users.push(DemoUser {
                email: email.as_str().to_owned(),
                password: secret.expose_secret().to_owned(),
                roles: vec![role],
                totp_secret,
            });
        }
        users.push(seed_mfa_user(&scoped, sealer, slug, refresh).await?);
        let api_keys = vec![seed_api_key(&scoped, tokens, slug).await?];
        let payments = if refresh {
            Vec::new()
        } else {
            seed_escrows(&scoped, proofs, slug).await?
        };
        let refusal = if refresh {
            None
        } else {
            Some(seed_spending(&scoped, slug).await?)
        };
        scoped.commit().await?;
        let tenant_db = crate::db::TenantDb::new(db.clone(), TenantId::from_uuid(tenant.id));
        if let Some((sender, mandate, refused)) = refusal {
            crate::spend::rules::raise_alert(
                &tenant_db,
                sender,
                crate::spend::rules::alerting_reason(&refused)
                    .unwrap_or(crate::spend::rules::AlertKind::MerchantNotAllowed),
                Some(mandate),
                &refused.to_string(),
                serde_json::json!({ "merchant": "Lucky Casino", "amount": "40.00" }),
            )
            .await?;
        }
        crate::payments::dispatch(&tenant_db, psp, &payments).await;
        tenants.push(DemoTenant {
            slug: tenant.slug,
            name: tenant.name,
            users,
            api_keys,
        });
    }
    Ok(DemoCredentials { tenants })
}

/// Escrows in several states, through the real rules: DRAFT (part funded), FUNDED
/// with a photo proof approved by its geofence, RELEASABLE, RELEASED and DISPUTED.
/// Returns the payments to hand to the PSP once committed.
async fn seed_escrows<C: ConnectionTrait>(
    db: &Scoped<C>,
    proofs: &dyn ProofStore,
    slug: &str,
) -> Result<Vec<uuid::Uuid>> {
    use chrono::{Duration, Utc};
    use rust_decimal::Decimal;

    use crate::{
        entity::milestone::ProofRequirement,
        escrow::{
            inspect,
            rules::{self as escrow, Act, Caller, Geofence, NewEscrow, NewMilestone},
        },
    };

    let find = |role: Role| {
        let email = demo_email(role, slug);
        async move {
            db.first::<user::Entity>(|q| q.filter(user::Column::Email.eq(email)))
                .await?
                .ok_or(Error::NotFound)
        }
    };
    let sender = find(Role::Sender).await?;
    let provider = find(Role::Beneficiary).await?;
    let as_sender = Caller {
        user_id: sender.id,
        roles: vec![Role::Sender],
    };
    let as_provider = Caller {
        user_id: provider.id,
        roles: vec![Role::Beneficiary],
    };
    let origin = Origin::default();
    let by = |who: &Caller| Act {
        actor: Actor::User(who.user_id),
        origin: &origin,
        psp: "simulated",
    };
    let eur = |cents: i64| Decimal::new(cents, 2);
    let simple = |description: &str, cents: i64| NewEscrow {
        provider_id: provider.id,
        amount: eur(cents),
        currency: "EUR".to_owned(),
        description: description.to_owned(),
        deadline: Utc::now() + Duration::days(30),
        inspection_seconds: Some(7 * 24 * 3600),
        milestones: vec![],
    };
    let mut payments = Vec::new();

    // DRAFT, a third funded.
    let draft = escrow::create(
        db,
        by(&as_sender),
        &as_sender,
        simple("Website redesign", 150_000),
    )
    .await?;
    escrow::fund(db, by(&as_sender), &as_sender, draft.escrow, eur(50_000)).await?;

    // FUNDED, the first milestone proven by a photo taken on site.
    let (lat, lon) = (52.520_008, 13.404_954);
    let roof = escrow::create(
        db,
        by(&as_sender),
        &as_sender,
        NewEscrow {
            milestones: vec![
                NewMilestone {
                    title: "Materials delivered on site".to_owned(),
                    amount: eur(80_000),
                    proof: ProofRequirement::Photo,
                    geofence: Some(Geofence {
                        latitude: lat,
                        longitude: lon,
                        radius_m: 200.0,
                    }),
                    window_start: None,
                    window_end: None,
                },
                NewMilestone {
                    title: "Roof finished and inspected".to_owned(),
                    amount: eur(160_000),
                    proof: ProofRequirement::Document,
                    geofence: None,
                    window_start: None,
                    window_end: None,
                },
            ],
            ..simple("Roof repair", 240_000)
        },
    )
    .await?;
    escrow::fund(db, by(&as_sender), &as_sender, roof.escrow, eur(240_000)).await?;
    let photo = inspect::sample_photo(lat + 0.0003, lon, Utc::now());
    let inspected = inspect::inspect(&photo, photo.len())?;
    let key = format!("{}/{}", db.tenant().as_uuid().simple(), inspected.sha256);
    proofs.put(&key, &photo).await?;
    let first = db
        .first::<crate::entity::milestone::Entity>(|q| {
            q.filter(crate::entity::milestone::Column::EscrowId.eq(roof.escrow))
                .filter(crate::entity::milestone::Column::Position.eq(1))
        })
        .await?
        .ok_or(Error::NotFound)?;
    escrow::submit_proof(
        db,
        by(&as_provider),
        &as_provider,
        first.id,
        Some("Pallets unloaded at the site".to_owned()),
        Some(escrow::StoredFile {
            filename: "materials.jpg".to_owned(),
            storage_key: key,
            inspected,
        }),
    )
    .await?;

    // RELEASABLE: delivered and accepted, not paid yet.
    let logo = escrow::create(
        db,
        by(&as_sender),
        &as_sender,
        simple("Logo design", 30_000),
    )
    .await?;
    escrow::fund(db, by(&as_sender), &as_sender, logo.escrow, eur(30_000)).await?;
    escrow::mark_delivered(db, by(&as_provider), &as_provider, logo.escrow, None).await?;
    escrow::approve(db, by(&as_sender), &as_sender, logo.escrow).await?;

    // RELEASED: paid out.
    let copy = escrow::create(
        db,
        by(&as_sender),
        &as_sender,
        simple("Product copywriting", 45_000),
    )
    .await?;
    escrow::fund(db, by(&as_sender), &as_sender, copy.escrow, eur(45_000)).await?;
    payments.extend(
        escrow::release(db, by(&as_sender), &as_sender, copy.escrow)
            .await?
            .payments,
    );

    // DISPUTED after a delivery.
    let catering = escrow::create(
        db,
        by(&as_sender),
        &as_sender,
        simple("Event catering", 80_000),
    )
    .await?;
    escrow::fund(db, by(&as_sender), &as_sender, catering.escrow, eur(80_000)).await?;
    escrow::mark_delivered(db, by(&as_provider), &as_provider, catering.escrow, None).await?;
    escrow::open_dispute(
        db,
        by(&as_sender),
        &as_sender,
        catering.escrow,
        "Half of the order never arrived".to_owned(),
    )
    .await?;
    Ok(payments)
}

/// A spend catalog, and a mandate from the SENDER to the BENEFICIARY with two
/// purchases; the attempt the rules refused (at a merchant the mandate does not
/// allow) is returned so the caller records its alert once this commits.
async fn seed_spending<C: ConnectionTrait>(
    db: &Scoped<C>,
    slug: &str,
) -> Result<(uuid::Uuid, uuid::Uuid, Error)> {
    use chrono::{Duration, Utc};
    use rust_decimal::Decimal;

    use crate::spend::rules::{self as spend, Act, Caller, NewMandate};

    let find = |role: Role| {
        let email = demo_email(role, slug);
        async move {
            db.first::<user::Entity>(|q| q.filter(user::Column::Email.eq(email)))
                .await?
                .ok_or(Error::NotFound)
        }
    };
    let admin = Caller {
        user_id: find(Role::Admin).await?.id,
        roles: vec![Role::Admin],
    };
    let sender = Caller {
        user_id: find(Role::Sender).await?.id,
        roles: vec![Role::Sender],
    };
    let beneficiary = Caller {
        user_id: find(Role::Beneficiary).await?.id,
        roles: vec![Role::Beneficiary],
    };
    let origin = Origin::default();
    let by = |who: &Caller| Act {
        actor: Actor::User(who.user_id),
        origin: &origin,
        psp: "simulated",
    };
    let groceries =
        spend::create_category(db, by(&admin), &admin, "GROCERIES", "Groceries").await?;
    let pharmacy = spend::create_category(db, by(&admin), &admin, "PHARMACY", "Pharmacy").await?;
    let gambling = spend::create_category(db, by(&admin), &admin, "GAMBLING", "Gambling").await?;
    let market =
        spend::create_merchant(db, by(&admin), &admin, "FreshMart", groceries.id, true).await?;
    let chemist = spend::create_merchant(
        db,
        by(&admin),
        &admin,
        "Corner Pharmacy",
        pharmacy.id,
        false,
    )
    .await?;
    let casino =
        spend::create_merchant(db, by(&admin), &admin, "Lucky Casino", gambling.id, false).await?;
    let mandate = spend::grant(
        db,
        by(&sender),
        &sender,
        NewMandate {
            beneficiary_id: beneficiary.user_id,
            total: Decimal::new(50_000, 2),
            currency: "EUR".to_owned(),
            expires_at: Utc::now() + Duration::days(90),
            category_ids: vec![groceries.id, pharmacy.id],
            merchant_ids: vec![],
            per_purchase_limit: Some(Decimal::new(15_000, 2)),
            daily_limit: Some(Decimal::new(20_000, 2)),
            certified_only: false,
        },
    )
    .await?;
    spend::purchase(
        db,
        by(&beneficiary),
        &beneficiary,
        mandate.id,
        market.id,
        Decimal::new(4_250, 2),
        Some("Weekly shop".to_owned()),
    )
    .await?;
    spend::purchase(
        db,
        by(&beneficiary),
        &beneficiary,
        mandate.id,
        chemist.id,
        Decimal::new(1_890, 2),
        None,
    )
    .await?;
    // Refused before anything is written: the transaction goes on.
    let refused = spend::purchase(
        db,
        by(&beneficiary),
        &beneficiary,
        mandate.id,
        casino.id,
        Decimal::new(4_000, 2),
        None,
    )
    .await
    .err()
    .filter(|e| spend::alerting_reason(e).is_some())
    .ok_or_else(|| Error::internal(anyhow::anyhow!("the demo refusal was not refused")))?;
    Ok((sender.user_id, mandate.id, refused))
}

/// An ADMIN with TOTP enrolled and activated; on a refresh, a new seed and password.
async fn seed_mfa_user<C: ConnectionTrait>(
    db: &Scoped<C>,
    sealer: &Sealer,
    slug: &str,
    refresh: bool,
) -> Result<DemoUser> {
    let email = Email::parse(&mfa_email(slug))?;
    let secret = password::generate();
    let hash = password::hash(secret.clone()).await?;
    let existing = db
        .first::<user::Entity>(|q| q.filter(user::Column::Email.eq(email.as_str())))
        .await?;
    let who = match existing {
        Some(found) if refresh => {
            rules::set_password_hash(db, found.id, hash).await?;
            found
        }
        _ => {
            rules::create_user(
                db,
                Actor::System,
                &Origin::default(),
                &email,
                hash,
                &[Role::Admin],
            )
            .await?
        }
    };
    Ok(DemoUser {
        email: email.as_str().to_owned(),
        password: secret.expose_secret().to_owned(),
        roles: vec![Role::Admin],
        totp_secret: Some(fresh_totp(db, sealer, &who, refresh).await?),
    })
}

/// Enrols and activates TOTP for `who` (on a refresh, replacing the earlier seed);
/// returns the base32 seed, for an authenticator app.
async fn fresh_totp<C: ConnectionTrait>(
    db: &Scoped<C>,
    sealer: &Sealer,
    who: &user::Model,
    refresh: bool,
) -> Result<String> {
    if refresh {
        mfa::disable(db, who.id, &Origin::default()).await?;
    }
    let seed = mfa::enrol_activated(db, sealer, who, &Origin::default()).await?;
    Ok(seed.expose_secret().to_owned())
}

/// One API key per tenant, created by its ADMIN with the ADMIN's read scopes; earlier
/// demo keys are revoked.
async fn seed_api_key<C: ConnectionTrait>(
    db: &Scoped<C>,
    tokens: &TokenService,
    slug: &str,
) -> Result<DemoApiKey> {
    let admin_email = demo_email(Role::Admin, slug);
    let admin = db
        .first::<user::Entity>(|q| q.filter(user::Column::Email.eq(admin_email)))
        .await?
        .ok_or(Error::NotFound)?;
    let old = db
        .list::<api_key::Entity>(|q| {
            q.filter(api_key::Column::Name.eq(DEMO_KEY_NAME))
                .filter(api_key::Column::RevokedAt.is_null())
        })
        .await?;
    for key in old {
        api_keys::revoke(db, admin.id, key.id, &Origin::default()).await?;
    }
    let creator = UserPrincipal {
        tenant_id: db.tenant(),
        user_id: admin.id,
        credential: Credential::Session(uuid::Uuid::nil()),
        roles: vec![Role::Admin],
        scopes: scopes_of(&[Role::Admin]),
        mfa_verified_at: None,
        mfa_enrolment_required: false,
        expires_at: None,
    };
    let scopes = [
        Scope::UsersRead,
        Scope::AuditRead,
        Scope::EscrowRead,
        Scope::SpendRead,
    ];
    let created = api_keys::create(
        db,
        tokens,
        &creator,
        DEMO_KEY_NAME,
        &scopes,
        None,
        &Origin::default(),
    )
    .await?;
    Ok(DemoApiKey {
        name: DEMO_KEY_NAME.to_owned(),
        key: api_keys::reveal(&created),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
    })
}
