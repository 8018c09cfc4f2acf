//! Rules over a transaction, with no GraphQL types, so the CLI, jobs and resolvers
//! call the same functions.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, QueryFilter, TransactionTrait, sea_query::Expr,
};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use crate::{
    audit::{self, Actor, Origin},
    auth::{Role, password},
    db::Scoped,
    domain::{Email, Slug},
    entity::{tenant, user, user_role},
    error::{Error, Result},
    ids::{TenantId, new_id},
};

/// Creates a tenant. Platform-level: the tenants table is not tenant-owned.
pub async fn create_tenant<C: ConnectionTrait>(
    conn: &C,
    slug: &Slug,
    name: &str,
) -> Result<tenant::Model> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Error::bad_field(
            "name",
            "a tenant name is 1 to 200 characters",
        ));
    }
    let exists = tenant::Entity::find()
        .filter(tenant::Column::Slug.eq(slug.as_str()))
        .one(conn)
        .await?;
    if exists.is_some() {
        return Err(Error::conflict(
            "TENANT_EXISTS",
            format!("tenant `{slug}` already exists"),
        ));
    }
    Ok(tenant::ActiveModel {
        id: Set(new_id()),
        slug: Set(slug.as_str().to_owned()),
        name: Set(name.to_owned()),
        created_at: Set(Utc::now()),
    }
    .insert(conn)
    .await?)
}

pub async fn find_tenant_by_slug(
    db: &DatabaseConnection,
    slug: &str,
) -> Result<Option<tenant::Model>> {
    Ok(tenant::Entity::find()
        .filter(tenant::Column::Slug.eq(slug))
        .one(db)
        .await?)
}

/// Creates a user with `roles` in the scoped tenant, with an argon2id hash of
/// `password`, and audits it.
pub async fn create_user<C: ConnectionTrait>(
    db: &Scoped<C>,
    actor: Actor,
    origin: &Origin,
    email: &Email,
    password_hash: String,
    roles: &[Role],
) -> Result<user::Model> {
    if roles.is_empty() {
        return Err(Error::bad_field("roles", "a user needs at least one role"));
    }
    let taken = db
        .first::<user::Entity>(|q| q.filter(user::Column::Email.eq(email.as_str())))
        .await?;
    if taken.is_some() {
        return Err(Error::conflict(
            "EMAIL_TAKEN",
            "a user with this email already exists",
        ));
    }
    let now = Utc::now();
    let created = db
        .insert(user::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(db.tenant().as_uuid()),
            email: Set(email.as_str().to_owned()),
            password_hash: Set(password_hash),
            is_active: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .await?;
    for role in roles {
        db.insert(user_role::ActiveModel {
            tenant_id: Set(db.tenant().as_uuid()),
            user_id: Set(created.id),
            role: Set(*role),
            created_at: Set(now),
        })
        .await?;
    }
    audit::record(
        db,
        audit::Entry {
            actor,
            action: "user.created",
            subject: Some(("user", created.id)),
            details: json!({ "email": email.as_str(), "roles": roles }),
            origin,
        },
    )
    .await?;
    Ok(created)
}

/// What `bootstrap` made: the one-time password is shown once and never stored.
pub struct Bootstrapped {
    pub tenant: tenant::Model,
    pub admin: user::Model,
    pub one_time_password: SecretString,
}

/// Creates a tenant and its first ADMIN with a random one-time password, in one
/// transaction: either both exist afterwards or neither does.
pub async fn bootstrap(
    db: &DatabaseConnection,
    slug: &Slug,
    name: &str,
    admin_email: &Email,
) -> Result<Bootstrapped> {
    let one_time_password = password::generate();
    let hash = password::hash(one_time_password.clone()).await?;
    let txn = db.begin().await?;
    let tenant = create_tenant(&txn, slug, name).await?;
    let scoped = Scoped::bind(txn, TenantId::from_uuid(tenant.id));
    let admin = create_user(
        &scoped,
        Actor::System,
        &Origin::default(),
        admin_email,
        hash,
        &[Role::Admin],
    )
    .await?;
    audit::record(
        &scoped,
        audit::Entry {
            actor: Actor::System,
            action: "tenant.bootstrapped",
            subject: Some(("tenant", tenant.id)),
            details: json!({ "slug": slug.as_str() }),
            origin: &Origin::default(),
        },
    )
    .await?;
    scoped.commit().await?;
    Ok(Bootstrapped {
        tenant,
        admin,
        one_time_password,
    })
}

/// Replaces a user's password hash (used by the demo seed to hand out fresh secrets).
pub async fn set_password_hash<C: ConnectionTrait>(
    db: &Scoped<C>,
    user_id: Uuid,
    hash: String,
) -> Result<()> {
    let changed = db
        .update_where::<user::Entity>(|q| {
            q.col_expr(user::Column::PasswordHash, Expr::value(hash))
                .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(user::Column::Id.eq(user_id))
        })
        .await?;
    if changed == 1 {
        Ok(())
    } else {
        Err(Error::NotFound)
    }
}
