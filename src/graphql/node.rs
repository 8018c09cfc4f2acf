//! `node(id:)` over opaque global ids. A malformed id, a missing row and another
//! tenant's row all answer NOT_FOUND: nothing is enumerable.

use async_graphql::{Context, ID, Interface, Object};

use crate::{
    accounts::graphql::{TenantNode, UserNode},
    auth::Scope,
    entity::{api_key, proof, session, user},
    error::Error,
    escrow::{
        graphql::{EscrowNode, MilestoneNode, ProofNode},
        rules::{self as escrow_rules},
    },
    identity::graphql::{ApiKeyNode, SessionNode},
    ids::{self, Kind},
    payments::graphql::PaymentNode,
};

use super::{access, context::ContextExt};

/// The opaque global id of a `kind` object, as GraphQL shows it.
pub fn global_id(kind: Kind, id: uuid::Uuid) -> ID {
    ID(ids::encode(kind, id))
}

/// An object with a global id that `node(id:)` resolves.
#[derive(Interface)]
#[graphql(field(
    name = "id",
    ty = "ID",
    desc = "The object's global id, with a type prefix (`esc_…`)."
))]
pub enum Node {
    Tenant(TenantNode),
    User(UserNode),
    Session(SessionNode),
    ApiKey(ApiKeyNode),
    Escrow(EscrowNode),
    Milestone(MilestoneNode),
    Proof(ProofNode),
    Payment(PaymentNode),
}

#[derive(Default)]
pub struct NodeQuery;

#[Object(guard = "access::Guard(access::Root::Query)")]
impl NodeQuery {
    /// Any object by its global id.
    #[graphql(visible = "access::visible::node")]
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Any global id (`esc_…`, `usr_…`, …).")] id: ID,
    ) -> async_graphql::Result<Option<Node>> {
        Ok(Some(resolve(ctx, &id).await?))
    }
}

async fn resolve(ctx: &Context<'_>, id: &str) -> Result<Node, Error> {
    let (kind, uuid) = ids::decode(id).ok_or(Error::NotFound)?;
    let me = ctx.user()?;
    let db = ctx.tenant_db()?;
    match kind {
        Kind::Tenant => {
            if uuid != db.tenant().as_uuid() {
                return Err(Error::NotFound);
            }
            Ok(Node::Tenant(db.tenant_record().await?.into()))
        }
        Kind::User => {
            // Users read themselves; admins and support read their whole tenant.
            if uuid != me.user_id && !ctx.principal().has_scope(Scope::UsersRead) {
                return Err(Error::NotFound);
            }
            Ok(Node::User(UserNode(db.get::<user::Entity>(uuid).await?)))
        }
        Kind::ApiKey => {
            if !ctx.principal().has_scope(Scope::KeysAdmin) {
                return Err(Error::NotFound);
            }
            Ok(Node::ApiKey(ApiKeyNode(
                db.get::<api_key::Entity>(uuid).await?,
            )))
        }
        Kind::Escrow | Kind::Milestone | Kind::Proof | Kind::Payment => {
            if !ctx.principal().has_scope(Scope::EscrowRead) {
                return Err(Error::NotFound);
            }
            let caller = ctx.caller()?;
            // Each is visible exactly when its escrow is.
            Ok(match kind {
                Kind::Escrow => {
                    Node::Escrow(EscrowNode(escrow_rules::visible(db, &caller, uuid).await?))
                }
                Kind::Milestone => {
                    let (esc, m) = escrow_rules::visible_milestone(db, &caller, uuid).await?;
                    Node::Milestone(MilestoneNode(m, esc.currency))
                }
                Kind::Proof => {
                    let p = db.get::<proof::Entity>(uuid).await?;
                    escrow_rules::visible(db, &caller, p.escrow_id).await?;
                    Node::Proof(ProofNode(p))
                }
                _ => Node::Payment(PaymentNode(
                    crate::payments::visible(db, &caller, uuid).await?,
                )),
            })
        }
        // Reachable through their parents only.
        Kind::Deposit
        | Kind::EscrowEvent
        | Kind::Category
        | Kind::Merchant
        | Kind::Mandate
        | Kind::Purchase
        | Kind::Payee
        | Kind::Payout
        | Kind::Transfer
        | Kind::Alert
        | Kind::LedgerEntry => Err(Error::NotFound),
        Kind::Session => {
            // Sessions are their owner's alone.
            let model = db.get::<session::Entity>(uuid).await?;
            if model.user_id != me.user_id {
                return Err(Error::NotFound);
            }
            Ok(Node::Session(SessionNode {
                current: me.session().ok() == Some(model.id),
                model,
            }))
        }
    }
}
