//! DataLoaders, created per request from the caller's tenant-scoped handle, so a
//! cache is never shared across requests or tenants.

use std::{collections::HashMap, time::Duration};

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::{ColumnTrait, QueryFilter};
use uuid::Uuid;

use crate::{auth::Role, db::TenantDb, entity::user_role, error::Error};

/// How long a loader waits to gather sibling keys before one batched query. Siblings
/// register their keys within one poll of the parent, in microseconds, so a fraction
/// of a millisecond batches them without adding a millisecond per nested level
/// (async-graphql's default is 1 ms).
pub const BATCH_DELAY: Duration = Duration::from_micros(200);

pub fn loader<L: Loader<K>, K>(inner: L) -> DataLoader<L>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
{
    DataLoader::new(inner, tokio::spawn).delay(BATCH_DELAY)
}

/// Roles of users, by user id.
pub struct UserRolesLoader(pub TenantDb);

impl Loader<Uuid> for UserRolesLoader {
    type Value = Vec<Role>;
    type Error = std::sync::Arc<Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Vec<Role>>, Self::Error> {
        let rows = self
            .0
            .list::<user_role::Entity>(|q| q.filter(user_role::Column::UserId.is_in(keys.to_vec())))
            .await
            .map_err(std::sync::Arc::new)?;
        let mut out: HashMap<Uuid, Vec<Role>> = HashMap::new();
        for row in rows {
            out.entry(row.user_id).or_default().push(row.role);
        }
        for roles in out.values_mut() {
            roles.sort_by_key(|r| r.as_str());
        }
        Ok(out)
    }
}

/// Adds every per-request loader to a request's (or a WebSocket connection's) data.
pub fn attach(data: &mut async_graphql::Data, db: Option<&TenantDb>) {
    if let Some(db) = db {
        data.insert(loader(UserRolesLoader(db.clone())));
    }
}
