//! Rules over a transaction, with no GraphQL types, so the CLI, jobs and resolvers
//! call the same functions.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, QueryFilter, QueryOrder, sea_query::Expr,
};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use crate::kinds::AuditAction;
use crate::{
    audit::{self, Actor, Origin},
    auth::{Role, password},
    db::Scoped,
    domain::{Email, Slug},
    entity::{tenant, user, user_role},
    error::{Error, Result},
    ids::{TenantId, new_id},
};

/// Creates the tenant `db` is bound to (a fresh id): row-level security admits a
/// new `tenants` row only from inside its own wall.
pub async fn create_tenant<C: ConnectionTrait>(
    db: &Scoped<C>,
    slug: &Slug,
    name: &str,
    platform: bool,
) -> Result<tenant::Model> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(Error::bad_field(
            "name",
            "a tenant name is 1 to 200 characters",
        ));
    }
    let conn = db.unscoped();
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
        id: Set(db.tenant().as_uuid()),
        slug: Set(slug.as_str().to_owned()),
        name: Set(name.to_owned()),
        created_at: Set(Utc::now()),
        is_platform: Set(platform),
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

/// The tenant named `slug`, or every tenant (oldest first) without one: what the
/// operator commands (`ledger verify`, `audit verify`) and jobs walk. An unknown slug
/// is NOT_FOUND.
pub async fn tenants(db: &DatabaseConnection, slug: Option<&str>) -> Result<Vec<tenant::Model>> {
    match slug {
        Some(slug) => Ok(vec![
            find_tenant_by_slug(db, slug)
                .await?
                .ok_or(crate::error::Error::NotFound)?,
        ]),
        None => Ok(tenant::Entity::find()
            .order_by_asc(tenant::Column::CreatedAt)
            .order_by_asc(tenant::Column::Id)
            .all(db)
            .await?),
    }
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
            email_verified_at: Set(None),
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
            action: AuditAction::UserCreated,
            subject: Some(("user", created.id)),
            // No address: the audit log outlives an erasure (the subject's id suffices).
            details: json!({ "roles": roles }),
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

/// Who asks for a new tenant.
pub struct BootstrapBy {
    pub actor: Actor,
    pub origin: Origin,
}

/// Creates a tenant (or, with `platform`, the one platform tenant) and its first
/// ADMIN with a random one-time password, in one transaction: either both exist
/// afterwards or neither does.
pub async fn bootstrap(
    db: &DatabaseConnection,
    slug: &Slug,
    name: &str,
    admin_email: &Email,
    platform: bool,
    by: BootstrapBy,
) -> Result<Bootstrapped> {
    let one_time_password = password::generate();
    let hash = password::hash(one_time_password.clone()).await?;
    let txn = crate::db::begin_write(db).await?;
    if platform
        && tenant::Entity::find()
            .filter(tenant::Column::IsPlatform.eq(true))
            .one(&txn)
            .await?
            .is_some()
    {
        return Err(Error::conflict(
            "PLATFORM_EXISTS",
            "the platform tenant already exists",
        ));
    }
    let scoped = Scoped::bind(txn, TenantId::from_uuid(new_id())).await?;
    let tenant = create_tenant(&scoped, slug, name, platform).await?;
    let admin = create_user(
        &scoped,
        by.actor,
        &by.origin,
        admin_email,
        hash,
        &[Role::Admin],
    )
    .await?;
    audit::record(
        &scoped,
        audit::Entry {
            actor: by.actor,
            action: AuditAction::TenantBootstrapped,
            subject: Some(("tenant", tenant.id)),
            details: json!({ "slug": slug.as_str(), "platform": platform }),
            origin: &by.origin,
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

/// The roles `user_id` holds in the scoped tenant.
pub async fn roles_of<C: ConnectionTrait>(db: &Scoped<C>, user_id: Uuid) -> Result<Vec<Role>> {
    Ok(db
        .list::<user_role::Entity>(|q| q.filter(user_role::Column::UserId.eq(user_id)))
        .await?
        .into_iter()
        .map(|r| r.role)
        .collect())
}

/// Replaces a user's roles. Refused when it would leave the tenant without an active
/// ADMIN. Audited with the roles before and after.
pub async fn set_roles<C: ConnectionTrait>(
    db: &Scoped<C>,
    actor: Uuid,
    origin: &Origin,
    user_id: Uuid,
    roles: &[Role],
) -> Result<Vec<Role>> {
    if roles.is_empty() {
        return Err(Error::bad_field("roles", "a user needs at least one role"));
    }
    // The tenant's admin set is decided on under the tenant's lock.
    db.lock_tenant().await?;
    let target = db.get::<user::Entity>(user_id).await?;
    let before = roles_of(db, user_id).await?;
    let mut after: Vec<Role> = roles.to_vec();
    after.sort_by_key(|r| r.as_str());
    after.dedup();
    if before.contains(&Role::Admin) && !after.contains(&Role::Admin) && target.is_active {
        ensure_another_admin(db, user_id).await?;
    }
    db.delete_where::<user_role::Entity>(|q| q.filter(user_role::Column::UserId.eq(user_id)))
        .await?;
    for role in &after {
        db.insert(user_role::ActiveModel {
            tenant_id: Set(db.tenant().as_uuid()),
            user_id: Set(user_id),
            role: Set(*role),
            created_at: Set(Utc::now()),
        })
        .await?;
    }
    audit::record(
        db,
        audit::Entry {
            actor: Actor::User(actor),
            action: AuditAction::UserRolesChanged,
            subject: Some(("user", user_id)),
            details: json!({ "before": before, "after": after }),
            origin,
        },
    )
    .await?;
    Ok(after)
}

/// CONFLICT unless an active ADMIN other than `leaving` remains.
pub(crate) async fn ensure_another_admin<C: ConnectionTrait>(
    db: &Scoped<C>,
    leaving: Uuid,
) -> Result<()> {
    let admins = db
        .list::<user_role::Entity>(|q| {
            q.filter(user_role::Column::Role.eq(Role::Admin))
                .filter(user_role::Column::UserId.ne(leaving))
        })
        .await?;
    for admin in admins {
        if db
            .find_by_id::<user::Entity>(admin.user_id)
            .await?
            .is_some_and(|u| u.is_active)
        {
            return Ok(());
        }
    }
    Err(Error::conflict(
        "LAST_ADMIN",
        "the tenant would be left without an active ADMIN",
    ))
}

/// Deactivates a user and ends all their sessions at once. Run it in a transaction:
/// "at least one active ADMIN" holds under concurrency through the tenant's lock.
pub async fn deactivate<C: ConnectionTrait>(
    db: &Scoped<C>,
    actor: Uuid,
    origin: &Origin,
    user_id: Uuid,
) -> Result<user::Model> {
    if actor == user_id {
        return Err(Error::conflict(
            "SELF_DEACTIVATION",
            "you cannot deactivate yourself",
        ));
    }
    // The tenant's admin set is decided on under the tenant's lock.
    db.lock_tenant().await?;
    let target = db.get::<user::Entity>(user_id).await?;
    let is_admin = db
        .count::<user_role::Entity>(|q| {
            q.filter(user_role::Column::UserId.eq(user_id))
                .filter(user_role::Column::Role.eq(Role::Admin))
        })
        .await?
        > 0;
    if is_admin && target.is_active {
        ensure_another_admin(db, user_id).await?;
    }
    db.update_where::<user::Entity>(|q| {
        q.col_expr(user::Column::IsActive, Expr::value(false))
            .col_expr(user::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(user::Column::Id.eq(user_id))
    })
    .await?;
    let ended =
        crate::identity::rules::revoke_all_except(db, user_id, None, "USER_DEACTIVATED").await?;
    audit::record(
        db,
        audit::Entry {
            actor: Actor::User(actor),
            action: AuditAction::UserDeactivated,
            subject: Some(("user", user_id)),
            details: json!({ "sessionsEnded": ended }),
            origin,
        },
    )
    .await?;
    db.get::<user::Entity>(user_id).await
}

/// Changes the caller's password after checking the current one and the policy, and
/// ends every other session of theirs.
///
/// The current password is checked like a sign-in's: counted against the account
/// before it is made, and a failure is audited.
pub async fn change_password(
    db: &crate::db::TenantDb,
    lockout: &crate::identity::rules::LockoutPolicy,
    user_id: Uuid,
    keep_session: Uuid,
    origin: &Origin,
    current: SecretString,
    new: SecretString,
) -> Result<u64> {
    let who = db.get::<user::Entity>(user_id).await?;
    crate::identity::rules::confirm_password(db, lockout, &who, origin, current, "change_password")
        .await?;
    crate::auth::policy::check_password(secrecy::ExposeSecret::expose_secret(&new), &who.email)?;
    let hash = password::hash(new).await?;
    let txn = db.begin().await?;
    set_password_hash(&txn, user_id, hash).await?;
    let ended = crate::identity::rules::revoke_all_except(
        &txn,
        user_id,
        Some(keep_session),
        "PASSWORD_CHANGED",
    )
    .await?;
    audit::record(
        &txn,
        audit::Entry {
            actor: Actor::User(user_id),
            action: AuditAction::UserPasswordChanged,
            subject: Some(("user", user_id)),
            details: json!({ "sessionsEnded": ended }),
            origin,
        },
    )
    .await?;
    let mut notice = crate::notify::security_data(origin.ip.as_deref());
    notice["how"] = json!("changed");
    crate::notify::enqueue(
        &txn,
        user_id,
        crate::notify::NoticeKind::PasswordChanged,
        notice,
    )
    .await?;
    txn.commit().await?;
    Ok(ended)
}
