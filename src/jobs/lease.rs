//! Leases: one holder per job name until the lease expires. Taking one is a single
//! conditional UPDATE, so two processes racing for it cannot both win.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter,
    sea_query::{Expr, OnConflict},
};

use crate::{entity::job_lease, error::Result};

/// Takes or renews the lease `name` for `holder`; `false` while another holds it.
pub async fn acquire(
    db: &DatabaseConnection,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool> {
    let now = Utc::now();
    job_lease::Entity::insert(job_lease::ActiveModel {
        name: Set(name.to_owned()),
        holder: Set(String::new()),
        expires_at: Set(now - chrono::Duration::seconds(1)),
    })
    .on_conflict(
        OnConflict::column(job_lease::Column::Name)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    let until = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
    let taken = job_lease::Entity::update_many()
        .col_expr(job_lease::Column::Holder, Expr::value(holder))
        .col_expr(job_lease::Column::ExpiresAt, Expr::value(until))
        .filter(job_lease::Column::Name.eq(name))
        .filter(
            Condition::any()
                .add(job_lease::Column::Holder.eq(holder))
                .add(job_lease::Column::ExpiresAt.lt(now)),
        )
        .exec(db)
        .await?
        .rows_affected;
    Ok(taken == 1)
}
