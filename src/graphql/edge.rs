//! The one extension every operation passes through: the document limits before
//! it is parsed for execution ([`limits`](super::limits)), the document kept to shape
//! the response as the spec orders it ([`shape`](super::shape)), the variables
//! checked against the operation's definitions before it runs (a required one
//! missing or null is a request error, GraphQL §6.1.2 CoerceVariableValues), the
//! operation's latency (`graphql_operation_duration_seconds{type, root}`) and its
//! trace spans (the operation's, each root field's), and every error given its stable
//! code ([`errors`](super::errors)), in that order.
//!
//! One extension rather than three: async-graphql calls each registered extension's
//! `resolve` hook for every field it resolves (a boxed future per extension per
//! field, even for one that only forwards), so three extensions were three hops per
//! field where one is the least an extension costs.

use std::sync::{Arc, Mutex, OnceLock};

use async_graphql::{
    Request, Response, ServerError, ServerResult, Value, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
        NextPrepareRequest, NextRequest, NextResolve, NextSubscribe, ResolveInfo,
    },
    parser::types::ExecutableDocument,
};
use futures_util::{StreamExt, stream::BoxStream};
use tracing::Instrument;

use super::{errors, limits::DocumentLimits, shape};

pub struct Edge {
    limits: DocumentLimits,
    /// The operations' latency histograms by root field and type, made once for the
    /// schema rather than once per request.
    latencies: Arc<crate::telemetry::Handles<&'static str, metrics::Histogram>>,
}

impl Edge {
    pub fn new(limits: DocumentLimits) -> Self {
        Self {
            limits,
            latencies: Arc::default(),
        }
    }
}

impl ExtensionFactory for Edge {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(EdgeExtension {
            limits: self.limits,
            latencies: self.latencies.clone(),
            kept: shape::Kept::default(),
            labels: Mutex::default(),
            operation: Mutex::default(),
            running: OnceLock::new(),
        })
    }
}

struct EdgeExtension {
    limits: DocumentLimits,
    latencies: Arc<crate::telemetry::Handles<&'static str, metrics::Histogram>>,
    kept: shape::Kept,
    /// Per operation of the document (by name): its type and first root field, the
    /// labels of its latency (bounded by the schema, unlike a client's operation name).
    labels: Mutex<Vec<Label>>,
    /// The request's operation name (kept from `prepare_request` for `parse_query`,
    /// which is not given it).
    operation: Mutex<Option<String>>,
    /// The running operation's labels and latency histogram, found at its first
    /// execution: a subscription executes once per event, on every socket following
    /// it, and looking the histogram up by its labels each time cost a fan-out more
    /// than recording into it (and a request, once per request: hence the schema's
    /// `latencies`).
    running: OnceLock<Option<Running>>,
}

/// The operation that runs: its type, first root field and latency histogram.
struct Running {
    kind: &'static str,
    root: String,
    latency: metrics::Histogram,
}

/// An operation's name, type and first root field.
pub(crate) type Label = (Option<String>, &'static str, String);

/// Each operation's name, type and first root field (`…` for a fragment first).
pub(crate) fn operation_labels(document: &ExecutableDocument) -> Vec<Label> {
    use async_graphql::parser::types::{OperationType, Selection};
    document
        .operations
        .iter()
        .map(|(name, operation)| {
            let kind = match operation.node.ty {
                OperationType::Query => "query",
                OperationType::Mutation => "mutation",
                OperationType::Subscription => "subscription",
            };
            let root = match operation
                .node
                .selection_set
                .node
                .items
                .first()
                .map(|s| &s.node)
            {
                Some(Selection::Field(field)) => field.node.name.node.to_string(),
                _ => "…".to_owned(),
            };
            (name.map(|n| n.to_string()), kind, root)
        })
        .collect()
}

/// The labels of the operation that runs: the named one, or the document's first
/// (a document of several without a name is refused before it runs).
pub(crate) fn running<'l>(labels: &'l [Label], name: Option<&str>) -> Option<&'l Label> {
    match name {
        Some(name) => labels.iter().find(|(n, ..)| n.as_deref() == Some(name)),
        None => labels.first(),
    }
}

/// The operations of `document` whose required variables (non-null, no default)
/// `variables` leaves out or sets to null, each with the error to answer.
fn missing_variables(
    document: &ExecutableDocument,
    variables: &Variables,
) -> Vec<(Option<String>, ServerError)> {
    let mut out = Vec::new();
    for (name, operation) in document.operations.iter() {
        for definition in &operation.node.variable_definitions {
            let definition = &definition.node;
            let ty = &definition.var_type.node;
            let given = variables.get(&definition.name.node);
            let error = match given {
                Some(Value::Null) if !ty.nullable => Some(format!(
                    "Variable \"${}\" of non-null type \"{ty}\" must not be null.",
                    definition.name.node
                )),
                None if !ty.nullable && definition.default_value.is_none() => Some(format!(
                    "Variable \"${}\" of required type \"{ty}\" was not provided.",
                    definition.name.node
                )),
                _ => None,
            };
            if let Some(message) = error {
                let pos = definition.name.pos;
                out.push((
                    name.map(|n| n.to_string()),
                    ServerError::new(message, Some(pos)),
                ));
                break;
            }
        }
    }
    out
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
        *self.operation.lock().expect("edge lock") = request.operation_name.clone();
        next.run(ctx, request).await
    }

    /// A trace span for each root field's resolver (the fields under it are not
    /// traced: their statements are, as the root field's children).
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if info.path_node.parent.is_some() {
            return next.run(ctx, info).await;
        }
        let span = tracing::trace_span!(
            "graphql.resolve",
            otel.name = %format_args!("{}.{}", info.parent_type, info.name),
            graphql.field.name = info.name,
            graphql.field.alias = info.alias,
            graphql.parent_type = info.parent_type,
        );
        next.run(ctx, info).instrument(span).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        // The operation that runs (the named one, or the document's only one) never
        // starts when it leaves out a required variable: a request error, no `data`
        // (400 where it applies; an `error` message for a subscription over the
        // socket). Here, not at execution: a subscription's stream has no execute hook.
        let operation = self.operation.lock().expect("edge lock").clone();
        let missing = missing_variables(&document, variables);
        let chosen = match operation.as_deref() {
            Some(name) => missing
                .into_iter()
                .find(|(n, _)| n.as_deref() == Some(name)),
            None => missing.into_iter().next(),
        };
        if let Some((_, mut error)) = chosen {
            error.extensions = None;
            return Err(error);
        }
        self.kept.keep(&document);
        let labels = operation_labels(&document);
        // A query's reads may share one transaction (when the edge armed its handle
        // for it: HTTP requests).
        if running(&labels, operation.as_deref()).is_some_and(|(_, kind, _)| *kind == "query")
            && let Some(db) = ctx
                .data_opt::<super::context::RequestContext>()
                .and_then(|request| request.db.as_ref())
        {
            db.share_reads();
        }
        *self.labels.lock().expect("edge lock") = labels;
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let running = self.running.get_or_init(|| {
            let labels = self.labels.lock().expect("edge lock");
            running(&labels, operation_name).map(|(_, kind, root)| Running {
                kind,
                root: root.clone(),
                latency: self.latencies.get(root, *kind, || {
                    metrics::histogram!(
                        "graphql_operation_duration_seconds",
                        "type" => *kind,
                        "root" => root.clone()
                    )
                }),
            })
        });
        // The operation's trace span (a `trace`-level span: only the trace exporter
        // takes it, so the log and a run without traces pay nothing for it).
        let span = match running {
            Some(Running { kind, root, .. }) => tracing::trace_span!(
                "graphql.operation",
                otel.name = %format_args!("{kind} {root}"),
                graphql.operation.type = *kind,
                graphql.operation.name = operation_name,
            ),
            None => tracing::Span::none(),
        };
        let started = std::time::Instant::now();
        let mut response = next.run(ctx, operation_name).instrument(span).await;
        if let Some(running) = running {
            running.latency.record(started.elapsed().as_secs_f64());
        }
        self.kept.shape(ctx, operation_name, &mut response);
        response
    }
}
