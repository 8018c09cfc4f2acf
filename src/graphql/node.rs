//! `node(id:)` and `nodes(ids:)` over opaque global ids: every object with a global id
//! is a `Node`. Each resolves for whoever may read it through the root field that lists
//! it (the same scope, the same party rule); a malformed id, a missing row, another
//! tenant's row and a row the caller may not see all answer NOT_FOUND: nothing is
//! enumerable.

use async_graphql::{Context, ID, Interface, Object};

use crate::{
    accounts::graphql::{TenantNode, UserNode},
    auth::Scope,
    entity::{
        alert, api_key, deposit, escrow_event, ledger_entry, merchant, payee, payout, proof,
        purchase, session, spend_category, transfer, user,
    },
    error::Error,
    escrow::{
        graphql::{DepositNode, EscrowEventNode, EscrowNode, MilestoneNode, ProofNode},
        rules::{self as escrow_rules},
    },
    identity::graphql::{ApiKeyNode, SessionNode},
    ids::{self, Kind},
    ledger::{Account, graphql::LedgerEntryNode},
    payments::graphql::PaymentNode,
    spend::{
        graphql::{
            AlertNode, CategoryNode, MandateNode, MerchantNode, PayeeNode, PayoutNode,
            PurchaseNode, TransferNode,
        },
        rules as spend_rules,
    },
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
    Deposit(DepositNode),
    EscrowEvent(EscrowEventNode),
    SpendCategory(CategoryNode),
    Merchant(MerchantNode),
    Mandate(MandateNode),
    Purchase(PurchaseNode),
    Payee(PayeeNode),
    Payout(PayoutNode),
    Transfer(TransferNode),
    Alert(AlertNode),
    LedgerEntry(LedgerEntryNode),
}

/// The most ids one `nodes` call resolves.
pub const MAX_NODES: usize = 100;

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

    /// Objects by their global ids, in the order asked: each one the caller may not
    /// read (or that does not exist) is null, with a NOT_FOUND error at its index.
    #[graphql(visible = "access::visible::nodes")]
    async fn nodes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Global ids (at most 100).")] ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<Option<Node>>> {
        if ids.len() > MAX_NODES {
            return Err(Error::bad_field("ids", "at most 100 ids at once").into());
        }
        let key = ctx.item.node.response_key().node.to_string();
        let mut found = Vec::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            match resolve(ctx, id).await {
                Ok(node) => found.push(Some(node)),
                Err(err) => {
                    // Null in its place, its error at its index: one unreadable id
                    // does not take the others with it.
                    let mut error = async_graphql::Error::from(err).into_server_error(ctx.item.pos);
                    error.path = vec![
                        async_graphql::PathSegment::Field(key.clone()),
                        async_graphql::PathSegment::Index(index),
                    ];
                    ctx.add_error(error);
                    found.push(None);
                }
            }
        }
        Ok(found)
    }
}

/// `caller` may read what `scope` guards on the root fields.
fn require(ctx: &Context<'_>, scope: Scope) -> Result<(), Error> {
    if ctx.principal().has_scope(scope) {
        Ok(())
    } else {
        Err(Error::NotFound)
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
            require(ctx, Scope::KeysAdmin)?;
            Ok(Node::ApiKey(ApiKeyNode(
                db.get::<api_key::Entity>(uuid).await?,
            )))
        }
        Kind::Escrow | Kind::Milestone | Kind::Proof | Kind::Payment => {
            require(ctx, Scope::EscrowRead)?;
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
        // Visible exactly when their escrow is.
        Kind::Deposit => {
            require(ctx, Scope::EscrowRead)?;
            let d = db.get::<deposit::Entity>(uuid).await?;
            escrow_rules::visible(db, &ctx.caller()?, d.escrow_id).await?;
            Ok(Node::Deposit(DepositNode(d)))
        }
        Kind::EscrowEvent => {
            require(ctx, Scope::EscrowRead)?;
            let e = db.get::<escrow_event::Entity>(uuid).await?;
            escrow_rules::visible(db, &ctx.caller()?, e.escrow_id).await?;
            Ok(Node::EscrowEvent(EscrowEventNode(e)))
        }
        // The catalog: the tenant's, for whoever may read spending.
        Kind::Category => {
            require(ctx, Scope::SpendRead)?;
            Ok(Node::SpendCategory(CategoryNode(
                db.get::<spend_category::Entity>(uuid).await?,
            )))
        }
        Kind::Merchant => {
            require(ctx, Scope::SpendRead)?;
            Ok(Node::Merchant(MerchantNode(
                db.get::<merchant::Entity>(uuid).await?,
            )))
        }
        // A mandate's parties and staff; a purchase as its mandate.
        Kind::Mandate => {
            require(ctx, Scope::SpendRead)?;
            let m = spend_rules::visible(db, &ctx.caller()?, uuid).await?;
            Ok(Node::Mandate(MandateNode(m)))
        }
        Kind::Purchase => {
            require(ctx, Scope::SpendRead)?;
            let p = db.get::<purchase::Entity>(uuid).await?;
            spend_rules::visible(db, &ctx.caller()?, p.mandate_id).await?;
            Ok(Node::Purchase(PurchaseNode(p)))
        }
        // A payee as the mandate or escrow it belongs to.
        Kind::Payee => {
            let p = db.get::<payee::Entity>(uuid).await?;
            let caller = ctx.caller()?;
            match (p.mandate_id, p.escrow_id) {
                (Some(m), _) => {
                    require(ctx, Scope::SpendRead)?;
                    spend_rules::visible(db, &caller, m).await?;
                }
                (None, Some(e)) => {
                    require(ctx, Scope::EscrowRead)?;
                    escrow_rules::visible(db, &caller, e).await?;
                }
                (None, None) => return Err(Error::NotFound),
            }
            Ok(Node::Payee(PayeeNode(p)))
        }
        // A payout as its payment: its parties and staff.
        Kind::Payout => {
            require(ctx, Scope::SpendRead)?;
            let p = db.get::<payout::Entity>(uuid).await?;
            crate::payments::visible(db, &ctx.caller()?, p.payment_id).await?;
            Ok(Node::Payout(PayoutNode(p)))
        }
        Kind::Transfer => {
            require(ctx, Scope::SpendRead)?;
            let t = db.get::<transfer::Entity>(uuid).await?;
            let caller = ctx.caller()?;
            if !caller.is_staff() && ![t.sender_id, t.recipient_id].contains(&caller.user_id) {
                return Err(Error::NotFound);
            }
            Ok(Node::Transfer(TransferNode(t)))
        }
        Kind::Alert => {
            require(ctx, Scope::SpendRead)?;
            let a = db.get::<alert::Entity>(uuid).await?;
            let caller = ctx.caller()?;
            if !caller.is_staff() && a.sender_id != caller.user_id {
                return Err(Error::NotFound);
            }
            Ok(Node::Alert(AlertNode(a)))
        }
        Kind::LedgerEntry => ledger_entry(ctx, uuid).await.map(Node::LedgerEntry),
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

/// A journal entry, for whoever may read the `ledgerEntries` that list it: an
/// escrow's or a mandate's whose account it moves, or the payment it is recorded
/// against.
async fn ledger_entry(ctx: &Context<'_>, id: uuid::Uuid) -> Result<LedgerEntryNode, Error> {
    let db = ctx.tenant_db()?;
    let caller = ctx.caller()?;
    let entry = db.get::<ledger_entry::Entity>(id).await?;
    let principal = ctx.principal();
    let mut visible = false;
    if entry.subject_type == "payment" && principal.has_scope(Scope::EscrowRead) {
        visible = crate::payments::visible(db, &caller, entry.subject_id)
            .await
            .is_ok();
    }
    for (kind, reference) in [
        (&entry.from_kind, &entry.from_ref),
        (&entry.to_kind, &entry.to_ref),
    ] {
        if visible {
            break;
        }
        visible = match Account::from_key(kind, reference) {
            Some(Account::Escrow(e)) if principal.has_scope(Scope::EscrowRead) => {
                escrow_rules::visible(db, &caller, e).await.is_ok()
            }
            Some(Account::Mandate(m)) if principal.has_scope(Scope::SpendRead) => {
                spend_rules::visible(db, &caller, m).await.is_ok()
            }
            _ => false,
        };
    }
    if !visible {
        return Err(Error::NotFound);
    }
    Ok(LedgerEntryNode(entry))
}
