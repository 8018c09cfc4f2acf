//! `serve --demo`: two tenants, `acme` and `globex`, each with a user for every role
//! and a random password. Refused in production. Run again on the same database,
//! it hands the demo users fresh passwords (the old ones are only stored hashed).

use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, TransactionTrait,
};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::{
    accounts::rules,
    audit::{Actor, Origin},
    auth::{Role, password},
    db::Scoped,
    domain::{Email, Slug},
    entity::{tenant, user},
    error::{Error, Result},
    ids::TenantId,
};

pub const DEMO_TENANTS: [(&str, &str); 2] =
    [("acme", "Acme Corporation"), ("globex", "Globex Inc.")];

/// What `--demo-credentials` writes. Later features add fields, never remove them.
#[derive(Debug, Serialize)]
pub struct DemoCredentials {
    pub tenants: Vec<DemoTenant>,
}

#[derive(Debug, Serialize)]
pub struct DemoTenant {
    pub slug: String,
    pub name: String,
    pub users: Vec<DemoUser>,
}

#[derive(Debug, Serialize)]
pub struct DemoUser {
    pub email: String,
    /// Shown on purpose: this is the demo's one way to hand out sign-ins.
    pub password: String,
    pub roles: Vec<Role>,
}

fn demo_email(role: Role, slug: &str) -> String {
    format!("{}@{slug}.example", role.as_str().to_lowercase())
}

/// Seeds an empty database, or refreshes the passwords of an existing demo one.
pub async fn seed(db: &DatabaseConnection) -> Result<DemoCredentials> {
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
        let txn = db.begin().await?;
        let tenant = if refresh {
            existing
                .iter()
                .find(|t| t.slug == slug)
                .cloned()
                .ok_or(Error::NotFound)?
        } else {
            let parsed = Slug::parse(slug)?;
            rules::create_tenant(&txn, &parsed, name).await?
        };
        let scoped = Scoped::bind(txn, TenantId::from_uuid(tenant.id));
        for role in Role::ALL {
            let email = Email::parse(&demo_email(role, slug))?;
            let secret = password::generate();
            let hash = password::hash(secret.clone()).await?;
            if refresh {
                let found = scoped
                    .first::<user::Entity>(|q| q.filter(user::Column::Email.eq(email.as_str())))
                    .await?
                    .ok_or(Error::NotFound)?;
                rules::set_password_hash(&scoped, found.id, hash).await?;
            } else {
                rules::create_user(
                    &scoped,
                    Actor::System,
                    &Origin::default(),
                    &email,
                    hash,
                    &[role],
                )
                .await?;
            }
            users.push(DemoUser {
                email: email.as_str().to_owned(),
                password: secret.expose_secret().to_owned(),
                roles: vec![role],
            });
        }
        scoped.commit().await?;
        tenants.push(DemoTenant {
            slug: tenant.slug,
            name: tenant.name,
            users,
        });
    }
    Ok(DemoCredentials { tenants })
}
