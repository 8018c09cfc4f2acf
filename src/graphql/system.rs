//! Platform-level operations that read no tenant data.

use std::time::Duration;

use async_graphql::{Object, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};

use crate::{error::Error, graphql::access};

#[derive(Default)]
pub struct SystemQuery;

#[Object(guard = "access::Guard(access::Root::Query)")]
impl SystemQuery {
    /// The server's clock, UTC.
    async fn server_time(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[derive(Default)]
pub struct SystemSubscription;

#[Subscription(guard = "access::Guard(access::Root::Subscription)")]
impl SystemSubscription {
    /// A heartbeat: the server's clock every `intervalSeconds` (1 to 60).
    async fn server_time(
        &self,
        #[graphql(default = 1, desc = "Seconds between ticks, 1 to 60.")] interval_seconds: i32,
    ) -> async_graphql::Result<impl Stream<Item = DateTime<Utc>>> {
        let secs = u64::try_from(interval_seconds)
            .ok()
            .filter(|s| (1..=60).contains(s))
            .ok_or_else(|| Error::bad_field("intervalSeconds", "must be between 1 and 60"))?;
        Ok(interval_stream(Duration::from_secs(secs)).map(|_| Utc::now()))
    }
}

/// Ticks immediately, then every `period`.
fn interval_stream(period: Duration) -> impl Stream<Item = ()> {
    futures_util::stream::unfold(tokio::time::interval(period), |mut interval| async move {
        interval.tick().await;
        Some(((), interval))
    })
}
