//! Relay connections over any tenant-owned entity, keyed by its UUID v7 id (which
//! sorts by creation time), with opaque cursors, oldest or newest first, and a
//! `totalCount` counted only when asked for.

use std::{future::Future, pin::Pin, sync::Arc};

use async_graphql::{
    Context, Enum, Object, OutputType,
    connection::{Connection, CursorType, Edge, query},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use uuid::Uuid;

use super::context::ContextExt;
use crate::{
    config::GraphqlConfig,
    db::{TenantDb, TenantEntity},
    error::Error,
};

/// An opaque cursor: a versioned, base64url-encoded position.
pub struct IdCursor(pub Uuid);

const CURSOR_PREFIX: &str = "c1:";

impl CursorType for IdCursor {
    type Error = Error;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        let invalid = || Error::bad_input("invalid cursor");
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
        let raw = text.strip_prefix(CURSOR_PREFIX).ok_or_else(invalid)?;
        Uuid::parse_str(raw).map(IdCursor).map_err(|_| invalid())
    }

    fn encode_cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{}", self.0.simple()))
    }
}

/// The order of a list: by creation.
#[derive(Enum, Copy, Clone, Default, PartialEq, Eq, Debug)]
pub enum ListOrder {
    /// Oldest first (the default).
    #[default]
    OldestFirst,
    /// Newest first.
    NewestFirst,
}

/// The four Relay arguments and the order, as a resolver receives them.
#[derive(Default)]
pub struct PageArgs {
    pub after: Option<String>,
    pub before: Option<String>,
    pub first: Option<i32>,
    pub last: Option<i32>,
    pub order: ListOrder,
}

type Count = dyn Fn() -> Pin<Box<dyn Future<Output = Result<u64, Error>> + Send>> + Send + Sync;

/// What a connection tells about its whole list, beyond the page.
pub struct Totals(Arc<Count>);

#[Object]
impl Totals {
    /// How many items the whole list holds (every page, the same filters). Counted
    /// only when asked for: one more statement.
    async fn total_count(&self) -> async_graphql::Result<u64> {
        Ok((self.0)().await?)
    }
}

/// A page of `N`, with `totalCount`.
pub type Page<N> = Connection<IdCursor, N, Totals>;

pub const DEFAULT_PAGE_SIZE: usize = 20;

/// One page of `E` rows of the caller's tenant, narrowed by `filter`, each turned
/// into a node by `to_node` (which returns the row's id with it). The page size is
/// bounded by `SEQUESTRA_GRAPHQL_MAX_PAGE_SIZE`.
///
/// `first`/`after` pages forward, `last`/`before` backward; both together are refused.
pub async fn paginate<E, N>(
    ctx: &Context<'_>,
    args: PageArgs,
    filter: impl Fn(Select<E>) -> Select<E> + Send + Sync + 'static,
    to_node: impl Fn(E::Model) -> (Uuid, N),
) -> async_graphql::Result<Page<N>>
where
    E: TenantEntity,
    E::Model: Sync,
    N: OutputType,
{
    let db: &TenantDb = ctx.tenant_db()?;
    let max_page_size = ctx.data::<GraphqlConfig>()?.max_page_size;
    let max = usize::try_from(max_page_size).unwrap_or(usize::MAX);
    let filter = Arc::new(filter);
    let totals = {
        let (db, filter) = (db.clone(), filter.clone());
        Totals(Arc::new(move || {
            let (db, filter) = (db.clone(), filter.clone());
            Box::pin(async move { db.count::<E>(|q| filter(q)).await })
        }))
    };
    let newest_first = args.order == ListOrder::NewestFirst;
    query(
        args.after,
        args.before,
        args.first,
        args.last,
        |after: Option<IdCursor>, before: Option<IdCursor>, first, last| async move {
            if first.is_some() && last.is_some() {
                return Err(Error::bad_input("pass either `first` or `last`, not both"));
            }
            let (limit, backward) = match (first, last) {
                (_, Some(last)) => (last, true),
                (Some(first), None) => (first, false),
                (None, None) => (DEFAULT_PAGE_SIZE.min(max), false),
            };
            if limit > max {
                return Err(Error::bad_input(format!(
                    "a page holds at most {max} items"
                )));
            }
            let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
            let (after_id, before_id) = (after.map(|c| c.0), before.map(|c| c.0));
            let mut rows = db
                .list::<E>(|q| {
                    let mut q = filter(q);
                    // "After" and "before" in the list's own order.
                    if let Some(a) = after_id {
                        q = q.filter(if newest_first {
                            E::ID.lt(a)
                        } else {
                            E::ID.gt(a)
                        });
                    }
                    if let Some(b) = before_id {
                        q = q.filter(if newest_first {
                            E::ID.gt(b)
                        } else {
                            E::ID.lt(b)
                        });
                    }
                    // A backward page is read from its end, then turned around.
                    let q = if backward != newest_first {
                        q.order_by_desc(E::ID)
                    } else {
                        q.order_by_asc(E::ID)
                    };
                    q.limit(limit_u64.saturating_add(1))
                })
                .await?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            if backward {
                rows.reverse();
            }
            let (has_previous, has_next) = if backward {
                (more, before_id.is_some())
            } else {
                (after_id.is_some(), more)
            };
            let mut connection = Connection::with_additional_fields(has_previous, has_next, totals);
            connection.edges.extend(rows.into_iter().map(|row| {
                let (id, node) = to_node(row);
                Edge::new(IdCursor(id), node)
            }));
            Ok::<_, Error>(connection)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::now_v7();
        let encoded = IdCursor(id).encode_cursor();
        assert!(
            !encoded.contains(&id.simple().to_string()),
            "cursor must be opaque"
        );
        assert_eq!(IdCursor::decode_cursor(&encoded).unwrap().0, id);
        for bad in ["", "!!", "YWJj", &URL_SAFE_NO_PAD.encode("c1:nope")] {
            assert!(IdCursor::decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
