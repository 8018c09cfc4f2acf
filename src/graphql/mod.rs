//! Schema assembly: one root per business area, merged; limits; error mapping.

pub mod access;
pub mod connection;
pub mod context;
pub(crate) mod edge;
pub mod errors;
pub mod limits;
pub mod loaders;
pub mod mutation;
pub mod node;
pub mod persisted;
pub mod role_sdl;
pub mod scalars;
pub mod shape;
pub mod system;

use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};

use crate::{
    accounts::graphql::{AccountsMutation, AccountsQuery},
    config::GraphqlConfig,
    escrow::graphql::{EscrowMutation, EscrowQuery},
    identity::graphql::{ApiKeysMutation, ApiKeysQuery, IdentityMutation, IdentityQuery},
    payments::graphql::{PaymentsMutation, PaymentsSubscription},
    spend::graphql::{SpendMutation, SpendQuery},
};

/// Everything that can be read. Another tenant's objects answer NOT_FOUND, like missing ones.
#[derive(MergedObject, Default)]
pub struct Query(
    node::NodeQuery,
    system::SystemQuery,
    AccountsQuery,
    IdentityQuery,
    crate::notify::graphql::NotifyQuery,
    ApiKeysQuery,
    EscrowQuery,
    SpendQuery,
);

/// Everything that changes state. Money-moving mutations take an `idempotencyKey` in
/// their `input`.
#[derive(MergedObject, Default)]
pub struct Mutation(
    IdentityMutation,
    crate::notify::graphql::NotifyMutation,
    ApiKeysMutation,
    AccountsMutation,
    EscrowMutation,
    SpendMutation,
    PaymentsMutation,
);

/// Live updates over `/graphql/ws` (graphql-transport-ws).
#[derive(MergedSubscription, Default)]
pub struct Subscription(system::SystemSubscription, PaymentsSubscription);

pub type AppSchema = Schema<Query, Mutation, Subscription>;

fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .register_output_type::<scalars::Decimal>()
}

/// The schema the server runs, with limits from config.
pub fn build_schema(
    cfg: &GraphqlConfig,
    production: bool,
    services: context::Services,
) -> AppSchema {
    with_limits(cfg, production).data(services).finish()
}

/// The schema's builder with every limit and extension the server runs with (what
/// happens to a document before any resolver needs the services).
fn with_limits(
    cfg: &GraphqlConfig,
    production: bool,
) -> SchemaBuilder<Query, Mutation, Subscription> {
    let mut builder = builder()
        .limit_depth(cfg.max_depth)
        .limit_complexity(cfg.max_complexity)
        .limit_recursive_depth(64)
        .limit_directives(16)
        .extension(edge::Edge::new(limits::DocumentLimits {
            max_bytes: cfg.max_document_bytes,
            max_aliases: cfg.max_aliases,
            max_fields: cfg.max_complexity as u64,
            max_cost: cfg.max_cost,
            default_page: connection::DEFAULT_PAGE_SIZE as u64,
            max_page: cfg.max_page_size,
        }))
        .data(cfg.clone());
    if production {
        builder = builder.disable_suggestions();
    }
    builder
}

/// The full SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    builder()
        .finish()
        .sdl_with_options(async_graphql::SDLExportOptions::new().include_specified_by())
}

/// The fields of the root type `root` (`Query`, `Mutation`, `Subscription`) in the
/// SDL, for the tests that hold a declared list to the schema.
#[cfg(test)]
pub(crate) fn root_fields(root: &str) -> Vec<String> {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let document = async_graphql::parser::parse_schema(sdl()).expect("the SDL parses");
    document
        .definitions
        .into_iter()
        .filter_map(|definition| match definition {
            TypeSystemDefinition::Type(ty) if ty.node.name.node == root => match ty.node.kind {
                TypeKind::Object(object) => Some(object.fields),
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .map(|field| field.node.name.node.to_string())
        .collect()
}
