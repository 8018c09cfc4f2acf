//! DataLoaders, created per request from the caller's tenant-scoped handle, so a
//! cache is never shared across requests or tenants.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::{ColumnTrait, QueryFilter};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{auth::Role, db::TenantDb, entity::user_role, error::Error};

/// Marks the end of each poll of a request's execution. Sibling fields of one level
/// all register their keys during a single poll of the request task, so a batch that
/// waits for the end of the poll it was started in holds all of them — without any
/// timer, so no level waits a millisecond (async-graphql's default delay).
#[derive(Clone, Default)]
pub struct PollFence(Arc<(AtomicU64, Notify)>);

impl PollFence {
    fn epoch(&self) -> u64 {
        self.0.0.load(Ordering::SeqCst)
    }

    /// Completes once the poll that was running at `start` has ended.
    async fn passed(&self, start: u64) {
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.epoch() > start {
                return;
            }
            notified.await;
        }
    }

    /// Runs `work` (the request's execution), ending an epoch after each of its polls.
    pub fn run<F: Future>(&self, work: F) -> Fenced<F> {
        Fenced {
            inner: Box::pin(work),
            fence: self.clone(),
        }
    }
}

pub struct Fenced<F: Future> {
    inner: Pin<Box<F>>,
    fence: PollFence,
}

impl<F: Future> Future for Fenced<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let result = self.inner.as_mut().poll(cx);
        self.fence.0.0.fetch_add(1, Ordering::SeqCst);
        self.fence.0.1.notify_waiters();
        result
    }
}

/// Without a fence (a WebSocket subscription's events), a short window instead.
pub const UNFENCED_DELAY: Duration = Duration::from_micros(500);

pub fn loader<L: Loader<K>, K>(inner: L, fence: Option<&PollFence>) -> DataLoader<L>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
{
    match fence {
        Some(fence) => {
            let fence = fence.clone();
            DataLoader::new(inner, move |fetch| {
                let fence = fence.clone();
                let start = fence.epoch();
                tokio::spawn(async move {
                    fence.passed(start).await;
                    fetch.await;
                })
            })
            .delay(Duration::ZERO)
        }
        None => DataLoader::new(inner, tokio::spawn).delay(UNFENCED_DELAY),
    }
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
/// Pass the fence the request will run under (`PollFence::run`), if any.
pub fn attach(data: &mut async_graphql::Data, db: Option<&TenantDb>, fence: Option<&PollFence>) {
    if let Some(db) = db {
        data.insert(loader(UserRolesLoader(db.clone()), fence));
    }
}
