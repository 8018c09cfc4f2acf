//! How resolvers run rules: in a write transaction of the caller's tenant, and for
//! money-moving rules once per idempotency key, handing the payments they recorded
//! to the PSP after commit (a replay re-submits any still pending; harmless, the PSP
//! is asked with the payment id as its key).

use async_graphql::Context;
use futures_util::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};

use super::context::ContextExt;
use crate::{
    audit::Actor,
    db::TenantTxn,
    error::Result,
    idempotency, payments,
    rules::{Act, Caller, MovesMoney},
};

/// Runs `rule` in a write transaction and commits what it did.
pub async fn in_txn<T, F>(ctx: &Context<'_>, rule: F) -> Result<T>
where
    F: for<'t> FnOnce(&'t TenantTxn, Act<'t>, Caller) -> BoxFuture<'t, Result<T>>,
{
    let caller = ctx.caller()?;
    let act = Act {
        actor: Actor::User(caller.user_id),
        origin: &ctx.request().origin,
        psp: ctx.services()?.psp.name(),
    };
    let txn = ctx.tenant_db()?.begin().await?;
    let value = rule(&txn, act, caller).await?;
    txn.commit().await?;
    Ok(value)
}

/// Runs a money-moving `rule` once per (caller, operation, key), then submits its
/// payments to the PSP.
pub async fn money_move<T, F>(
    ctx: &Context<'_>,
    operation: &'static str,
    key: &str,
    input: &impl Serialize,
    rule: F,
) -> Result<T>
where
    T: Serialize + DeserializeOwned + MovesMoney,
    F: for<'t> FnOnce(&'t TenantTxn, Act<'t>, Caller) -> BoxFuture<'t, Result<T>> + Send + 'static,
{
    let db = ctx.tenant_db()?;
    let services = ctx.services()?;
    let caller = ctx.caller()?;
    let origin = ctx.request().origin.clone();
    let psp = services.psp.name();
    let user = caller.user_id;
    let done: T = idempotency::run(db, user, operation, key, input, move |txn| {
        Box::pin(async move {
            // The origin lives in the future, so the rule can borrow it.
            let origin = origin;
            let act = Act {
                actor: Actor::User(caller.user_id),
                origin: &origin,
                psp,
            };
            rule(txn, act, caller).await
        })
    })
    .await?;
    payments::dispatch(db, services.psp.as_ref(), done.payments()).await;
    Ok(done)
}

/// A mutation's payload that answers the one object the mutation changed: the row,
/// and a GraphQL object with one field that gives it as its node. The doc comments
/// are the type's and the field's descriptions.
macro_rules! one_object_payload {
    (
        $(#[doc = $doc:literal])*
        $payload:ident { $(#[doc = $field_doc:literal])* $field:ident: $node:ident($model:ty) }
    ) => {
        $(#[doc = $doc])*
        pub struct $payload(pub $model);

        $(#[doc = $doc])*
        #[async_graphql::Object]
        impl $payload {
            $(#[doc = $field_doc])*
            async fn $field(&self) -> $node {
                $node(self.0.clone())
            }
        }
    };
}
pub(crate) use one_object_payload;
