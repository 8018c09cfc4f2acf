//! DataLoaders, created per request from the caller's tenant-scoped handle, so a
//! cache is never shared across requests or tenants.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::{ColumnTrait, QueryFilter};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    auth::Role,
    db::{TenantDb, TenantEntity},
    entity::{
        deposit, escrow, escrow_event, mandate, mandate_category, mandate_merchant, merchant,
        milestone, payee, payment, payment_attempt, proof, purchase, user, user_role,
    },
    error::Error,
};

/// Marks the end of each poll of a request's execution. Sibling fields of one level
/// all register their keys during a single poll of the request task, so a batch that
/// waits for the end of the poll it was started in holds all of them — without any
/// timer, so no level waits a millisecond (async-graphql's default delay).
///
/// A poll does not end the epoch when the level may not be done registering keys:
/// - the work asked to be polled again at once (a cooperative yield: long lists are
///   joined through `FuturesUnordered`, which yields every 32 ready futures);
/// - a batch is still delivering its results: they reach the waiting fields one by
///   one, and a poll in between would see only some of them. The delivery's end
///   wakes the request so that its next, quiet poll ends the epoch.
#[derive(Clone, Default)]
pub struct PollFence(Arc<FenceState>);

#[derive(Default)]
struct FenceState {
    epoch: AtomicU64,
    advanced: Notify,
    /// Batches between "their epoch passed" and "results delivered".
    delivering: AtomicUsize,
    /// A poll ended while a batch was delivering; its epoch is owed.
    owed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl PollFence {
    fn epoch(&self) -> u64 {
        self.0.epoch.load(Ordering::SeqCst)
    }

    fn advance(&self) {
        self.0.epoch.fetch_add(1, Ordering::SeqCst);
        self.0.advanced.notify_waiters();
    }

    /// Completes once the poll that was running at `start` has ended.
    async fn passed(&self, start: u64) {
        loop {
            let notified = self.0.advanced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.epoch() > start {
                return;
            }
            notified.await;
        }
    }

    /// Runs a batch's fetch (the query and the delivery of its results).
    async fn deliver(&self, fetch: impl Future<Output = ()>) {
        self.0.delivering.fetch_add(1, Ordering::SeqCst);
        fetch.await;
        if self.0.delivering.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.owed.swap(false, Ordering::SeqCst)
        {
            let waker = self.0.waker.lock().ok().and_then(|w| w.clone());
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// After a poll that registered everything it could: end the epoch now, or,
    /// while a batch is delivering, owe it to the next poll.
    fn poll_ended(&self, waker: &Waker) {
        if self.0.delivering.load(Ordering::SeqCst) == 0 {
            self.advance();
            return;
        }
        if let Ok(mut slot) = self.0.waker.lock() {
            *slot = Some(waker.clone());
        }
        self.0.owed.store(true, Ordering::SeqCst);
        // The delivery may have ended in between: whoever takes the debt settles it.
        if self.0.delivering.load(Ordering::SeqCst) == 0
            && self.0.owed.swap(false, Ordering::SeqCst)
        {
            self.advance();
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
        let watch = Arc::new(WakeWatch {
            inner: cx.waker().clone(),
            woken: AtomicBool::new(false),
        });
        let waker = std::task::Waker::from(watch.clone());
        let result = self.inner.as_mut().poll(&mut Context::from_waker(&waker));
        if result.is_ready() {
            self.fence.advance();
        } else if !watch.woken.load(Ordering::SeqCst) {
            self.fence.poll_ended(cx.waker());
        }
        result
    }
}

/// Forwards wakes to the task's waker and remembers that one happened.
struct WakeWatch {
    inner: std::task::Waker,
    woken: AtomicBool,
}

impl std::task::Wake for WakeWatch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.inner.wake_by_ref();
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
                    fence.deliver(fetch).await;
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

/// A child table read by its parent's id (milestones of an escrow, proofs of a
/// milestone, …): one query per batch, however many parents a page holds.
pub trait ChildOf: TenantEntity {
    const PARENT: Self::Column;
    fn parent(model: &Self::Model) -> Option<Uuid>;
}

macro_rules! child_of {
    ($entity:ty, $column:expr, |$m:ident| $parent:expr) => {
        impl ChildOf for $entity {
            const PARENT: Self::Column = $column;
            fn parent($m: &Self::Model) -> Option<Uuid> {
                $parent
            }
        }
    };
}

child_of!(milestone::Entity, milestone::Column::EscrowId, |m| Some(
    m.escrow_id
));
child_of!(deposit::Entity, deposit::Column::EscrowId, |m| Some(
    m.escrow_id
));
child_of!(escrow_event::Entity, escrow_event::Column::EscrowId, |m| {
    Some(m.escrow_id)
});
child_of!(payment::Entity, payment::Column::EscrowId, |m| m.escrow_id);
child_of!(
    payment_attempt::Entity,
    payment_attempt::Column::PaymentId,
    |m| Some(m.payment_id)
);
child_of!(proof::Entity, proof::Column::MilestoneId, |m| Some(
    m.milestone_id
));
child_of!(purchase::Entity, purchase::Column::MandateId, |m| Some(
    m.mandate_id
));
child_of!(payee::Entity, payee::Column::MandateId, |m| m.mandate_id);
child_of!(
    mandate_category::Entity,
    mandate_category::Column::MandateId,
    |m| Some(m.mandate_id)
);
child_of!(
    mandate_merchant::Entity,
    mandate_merchant::Column::MandateId,
    |m| Some(m.mandate_id)
);

/// Children of `E` by parent id, in creation order.
pub struct ChildrenLoader<E>(pub TenantDb, std::marker::PhantomData<E>);

impl<E> ChildrenLoader<E> {
    pub fn new(db: TenantDb) -> Self {
        Self(db, std::marker::PhantomData)
    }
}

impl<E> Loader<Uuid> for ChildrenLoader<E>
where
    E: ChildOf + Send + Sync + 'static,
    E::Model: Clone + Send + Sync,
{
    type Value = Vec<E::Model>;
    type Error = std::sync::Arc<Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Vec<E::Model>>, Self::Error> {
        use sea_orm::QueryOrder;
        let rows = self
            .0
            .list::<E>(|q| q.filter(E::PARENT.is_in(keys.to_vec())).order_by_asc(E::ID))
            .await
            .map_err(std::sync::Arc::new)?;
        let mut out: HashMap<Uuid, Vec<E::Model>> = HashMap::new();
        for row in rows {
            if let Some(parent) = E::parent(&row) {
                out.entry(parent).or_default().push(row);
            }
        }
        Ok(out)
    }
}

/// Rows of `E` by their own id (the object a relation field points to: an escrow's
/// sender, a milestone's escrow, a purchase's merchant, …): one query per batch.
pub struct ByIdLoader<E>(pub TenantDb, std::marker::PhantomData<E>);

impl<E> ByIdLoader<E> {
    pub fn new(db: TenantDb) -> Self {
        Self(db, std::marker::PhantomData)
    }
}

/// An entity a `ByIdLoader` reads: its id from a row.
pub trait ById: TenantEntity {
    fn id_of(model: &Self::Model) -> Uuid;
}

macro_rules! by_id {
    ($($entity:ident),* $(,)?) => {$(
        impl ById for $entity::Entity {
            fn id_of(model: &Self::Model) -> Uuid {
                model.id
            }
        }
    )*};
}

by_id!(user, escrow, mandate, merchant, payee);

impl<E> Loader<Uuid> for ByIdLoader<E>
where
    E: ById + Send + Sync + 'static,
    E::Model: Clone + Send + Sync,
{
    type Value = E::Model;
    type Error = std::sync::Arc<Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, E::Model>, Self::Error> {
        let rows = self
            .0
            .list::<E>(|q| q.filter(E::ID.is_in(keys.to_vec())))
            .await
            .map_err(std::sync::Arc::new)?;
        Ok(rows.into_iter().map(|row| (E::id_of(&row), row)).collect())
    }
}

/// The row `id` of `E` through the request's loader; NOT_FOUND when the caller's
/// tenant has none.
pub async fn by_id<E>(ctx: &async_graphql::Context<'_>, id: Uuid) -> Result<E::Model, Error>
where
    E: ById + Send + Sync + 'static,
    E::Model: Clone + Send + Sync,
{
    load_one(ctx, ByIdLoader::<E>::new, id)
        .await?
        .ok_or(Error::NotFound)
}

/// The loaders of a request (or of a WebSocket connection), each made on first use:
/// an operation needs a few of them at most, and a socket lives for hours, so making
/// all of them up front cost every request and every socket sixteen allocations and
/// their memory for nothing.
pub struct Loaders {
    db: TenantDb,
    fence: Option<PollFence>,
    made: Mutex<HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>>,
}

impl Loaders {
    /// The loader `L`, made from the tenant handle by `make` the first time it is asked
    /// for; every later call gets the same one (one batch, one cache per request).
    fn get<L, K>(&self, make: impl FnOnce(TenantDb) -> L) -> Arc<DataLoader<L>>
    where
        L: Loader<K>,
        K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    {
        let made = self
            .made
            .lock()
            .expect("loaders lock")
            .entry(std::any::TypeId::of::<L>())
            .or_insert_with(|| Arc::new(loader(make(self.db.clone()), self.fence.as_ref())))
            .clone();
        made.downcast::<DataLoader<L>>()
            .expect("an entry is keyed by its loader's type")
    }
}

/// Gives a request's (or a WebSocket connection's) data its loaders, made as they are
/// used. Pass the fence the request will run under (`PollFence::run`), if any.
pub fn attach(data: &mut async_graphql::Data, db: Option<&TenantDb>, fence: Option<&PollFence>) {
    if let Some(db) = db {
        data.insert(Loaders {
            db: db.clone(),
            fence: fence.cloned(),
            made: Mutex::default(),
        });
    }
}

/// `key` through the request's loader `L` (made by `make` the first time it is used).
async fn load_one<L>(
    ctx: &async_graphql::Context<'_>,
    make: impl FnOnce(TenantDb) -> L,
    key: Uuid,
) -> Result<Option<L::Value>, Error>
where
    L: Loader<Uuid>,
    L::Error: std::fmt::Display,
{
    let loader = ctx
        .data::<Loaders>()
        .map_err(|_| Error::internal(anyhow::anyhow!("request built without loaders")))?
        .get::<L, Uuid>(make);
    loader
        .load_one(key)
        .await
        .map_err(|e| Error::internal(anyhow::anyhow!("{e}")))
}

/// The roles of user `user` through the request's loader.
pub async fn user_roles(ctx: &async_graphql::Context<'_>, user: Uuid) -> Result<Vec<Role>, Error> {
    Ok(load_one(ctx, UserRolesLoader, user)
        .await?
        .unwrap_or_default())
}

/// The children of `parent` through the request's loader for `E`.
pub async fn children<E>(
    ctx: &async_graphql::Context<'_>,
    parent: Uuid,
) -> Result<Vec<E::Model>, Error>
where
    E: ChildOf + Send + Sync + 'static,
    E::Model: Clone + Send + Sync,
{
    Ok(load_one(ctx, ChildrenLoader::<E>::new, parent)
        .await?
        .unwrap_or_default())
}
