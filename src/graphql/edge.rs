//! The one extension every operation passes through: the document limits before
//! it is parsed for execution ([`limits`](super::limits)), the document kept to shape
//! the response as the spec orders it ([`shape`](super::shape)), and every error
//! given its stable code ([`errors`](super::errors)), in that order.
//!
//! One extension rather than three: async-graphql calls each registered extension's
//! `resolve` hook for every field it resolves (a boxed future per extension per
//! field, even for one that only forwards), so three extensions were three hops per
//! field where one is the least an extension costs.

use std::sync::Arc;

use async_graphql::{
    Request, Response, ServerResult, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
        NextPrepareRequest, NextRequest, NextSubscribe,
    },
    parser::types::ExecutableDocument,
};
use futures_util::{StreamExt, stream::BoxStream};

use super::{errors, limits::DocumentLimits, shape};

pub struct Edge {
    pub limits: DocumentLimits,
}

impl ExtensionFactory for Edge {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(EdgeExtension {
            limits: self.limits,
            kept: shape::Kept::default(),
        })
    }
}

struct EdgeExtension {
    limits: DocumentLimits,
    kept: shape::Kept,
}

#[async_trait::async_trait]
impl Extension for EdgeExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        errors::map_response(&mut response);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let shape = self.kept.shaper(ctx);
        next.run(ctx, stream)
            .map(move |mut response| {
                shape(&mut response);
                errors::map_response(&mut response);
                response
            })
            .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = self.limits.check(ctx, request)?;
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        self.kept.keep(&document);
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        self.kept.shape(ctx, operation_name, &mut response);
        response
    }
}
