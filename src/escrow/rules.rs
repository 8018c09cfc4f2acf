//! The escrow rules. Each takes a tenant-scoped transaction and plain inputs; each
//! change of state goes through the machine tables, is made by a conditional UPDATE
//! (`… WHERE status = <expected>`), and writes its event and audit row in the same
//! transaction. Money counters move the same way (`… WHERE funded + x <= total`), and
//! CHECK constraints in the database hold the same invariants.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, QueryFilter, QueryOrder, UpdateMany,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{inspect::Inspected, machine};
use crate::kinds::EscrowEventKind;
use crate::{
    audit::{self, Actor, Origin},
    auth::Role,
    db::{Scoped, TenantTxn},
    entity::{
        deposit,
        escrow::{self, EscrowStatus},
        escrow_event,
        milestone::{self, MilestoneStatus, ProofRequirement},
        payment::{self, PaymentPurpose, PaymentStatus},
        proof::{self, ProofKind, ProofStatus},
        user,
    },
    error::{Error, Result},
    ids::{self, Kind, new_id},
    ledger::{self, Account, EntryKind},
    money::{Currency, Money},
    payments::{self, NewPayment, Payee},
};

pub use crate::rules::{Act, Caller};
use crate::rules::{MovesMoney, require, text};

/// What a money-moving mutation did: stored as its idempotent result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Effect {
    pub escrow: Uuid,
    #[serde(default)]
    pub deposit: Option<Uuid>,
    /// Payments recorded PENDING, to submit to the PSP once committed.
    #[serde(default)]
    pub payments: Vec<Uuid>,
}

impl MovesMoney for Effect {
    fn payments(&self) -> &[Uuid] {
        &self.payments
    }
}

impl Effect {
    fn of(escrow: Uuid) -> Self {
        Self {
            escrow,
            ..Self::default()
        }
    }
}

// ---------------------------------------------------------------- visibility

/// Parties see their own escrows; support and admins see the tenant's. Anyone else
/// (and another tenant's id) gets NOT_FOUND.
pub fn can_see(caller: &Caller, esc: &escrow::Model) -> bool {
    caller.is_staff() || esc.sender_id == caller.user_id || esc.provider_id == caller.user_id
}

/// The narrowing a listing needs for `caller` (none for staff).
pub fn visibility(caller: &Caller) -> Option<Condition> {
    (!caller.is_staff()).then(|| {
        Condition::any()
            .add(escrow::Column::SenderId.eq(caller.user_id))
            .add(escrow::Column::ProviderId.eq(caller.user_id))
    })
}

pub async fn visible<C: ConnectionTrait>(
    db: &Scoped<C>,
    caller: &Caller,
    id: Uuid,
) -> Result<escrow::Model> {
    let esc = db.get::<escrow::Entity>(id).await?;
    if can_see(caller, &esc) {
        Ok(esc)
    } else {
        Err(Error::NotFound)
    }
}

/// The escrow a rule is about to change, locked for the rest of its transaction
/// (see `Scoped::get_for_update`), when the caller may see it. Every rule that
/// decides on an escrow's state starts here, so two decisions on one escrow (a
/// dispute and a release, say) never interleave: the second sees the first's result.
pub async fn locked<C: ConnectionTrait>(
    txn: &Scoped<C>,
    caller: &Caller,
    id: Uuid,
) -> Result<escrow::Model> {
    let esc = txn.get_for_update::<escrow::Entity>(id).await?;
    if can_see(caller, &esc) {
        Ok(esc)
    } else {
        Err(Error::NotFound)
    }
}

/// A milestone and its escrow (locked, as [`locked`]), when the caller may see the
/// escrow.
pub async fn locked_milestone<C: ConnectionTrait>(
    txn: &Scoped<C>,
    caller: &Caller,
    id: Uuid,
) -> Result<(escrow::Model, milestone::Model)> {
    let escrow_id = txn.get::<milestone::Entity>(id).await?.escrow_id;
    let esc = locked(txn, caller, escrow_id).await?;
    // Read after the lock, so its state is the one the rule decides on.
    let m = txn.get::<milestone::Entity>(id).await?;
    Ok((esc, m))
}

/// A milestone and its escrow, when the caller may see the escrow.
pub async fn visible_milestone<C: ConnectionTrait>(
    db: &Scoped<C>,
    caller: &Caller,
    id: Uuid,
) -> Result<(escrow::Model, milestone::Model)> {
    let m = db.get::<milestone::Entity>(id).await?;
    let esc = visible(db, caller, m.escrow_id).await?;
    Ok((esc, m))
}

fn currency_of(esc: &escrow::Model) -> Result<Currency> {
    Currency::parse(&esc.currency).map_err(|_| {
        Error::internal(anyhow::anyhow!(
            "escrow {} has an unsupported currency",
            esc.id
        ))
    })
}

/// What is still held: funded, minus paid out, minus refunded.
fn held(esc: &escrow::Model) -> i64 {
    esc.funded_minor - esc.released_minor - esc.refunded_minor
}

// ---------------------------------------------------------------- events

#[allow(clippy::too_many_arguments)]
async fn event<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    escrow_id: Uuid,
    milestone_id: Option<Uuid>,
    kind: EscrowEventKind,
    from: Option<&'static str>,
    to: Option<&'static str>,
    data: serde_json::Value,
) -> Result<()> {
    let now = Utc::now();
    txn.insert(escrow_event::ActiveModel {
        id: Set(new_id()),
        tenant_id: Set(txn.tenant().as_uuid()),
        escrow_id: Set(escrow_id),
        milestone_id: Set(milestone_id),
        kind: Set(kind.as_str().to_owned()),
        from_status: Set(from.map(str::to_owned)),
        to_status: Set(to.map(str::to_owned)),
        actor_id: Set(act.actor_id()),
        data: Set(data.clone()),
        created_at: Set(now),
    })
    .await?;
    txn.publish(crate::events::Update::Escrow {
        tenant_id: txn.tenant().as_uuid(),
        escrow_id,
        event: kind.into(),
    });
    let subject = match milestone_id {
        Some(m) => ("milestone", m),
        None => ("escrow", escrow_id),
    };
    audit::record(
        txn,
        audit::Entry {
            actor: act.actor,
            action: kind.action(),
            subject: Some(subject),
            details: serde_json::json!({
                "escrow_id": escrow_id,
                "from": from,
                "to": to,
                "data": data,
            }),
            origin: act.origin,
        },
    )
    .await
}

/// Moves an escrow from the state `esc` was read in to `to`, if the table allows it
/// and nobody moved it meanwhile; `set` adds column changes to the same UPDATE.
#[allow(clippy::too_many_arguments)]
async fn move_escrow<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    esc: &escrow::Model,
    to: EscrowStatus,
    action: &'static str,
    kind: EscrowEventKind,
    data: serde_json::Value,
    set: impl FnOnce(UpdateMany<escrow::Entity>) -> UpdateMany<escrow::Entity>,
) -> Result<escrow::Model> {
    machine::check_escrow(esc.status, to, action)?;
    let moved = txn
        .transition::<escrow::Entity>(
            esc.id,
            escrow::Column::Status,
            &[esc.status.as_str()],
            to.as_str(),
            |q| set(q.col_expr(escrow::Column::UpdatedAt, Expr::value(Utc::now()))),
        )
        .await?;
    let Some(moved) = moved else {
        let now = txn.get::<escrow::Entity>(esc.id).await?;
        return Err(Error::InvalidState {
            object: "escrow",
            state: now.status.as_str(),
            action,
        });
    };
    event(
        txn,
        act,
        esc.id,
        None,
        kind,
        Some(esc.status.as_str()),
        Some(to.as_str()),
        data,
    )
    .await?;
    Ok(moved)
}

async fn move_milestone<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    m: &milestone::Model,
    to: MilestoneStatus,
    action: &'static str,
    kind: EscrowEventKind,
    data: serde_json::Value,
) -> Result<milestone::Model> {
    machine::check_milestone(m.status, to, action)?;
    let moved = txn
        .transition::<milestone::Entity>(
            m.id,
            milestone::Column::Status,
            &[m.status.as_str()],
            to.as_str(),
            |q| q.col_expr(milestone::Column::UpdatedAt, Expr::value(Utc::now())),
        )
        .await?;
    let Some(moved) = moved else {
        let now = txn.get::<milestone::Entity>(m.id).await?;
        return Err(Error::InvalidState {
            object: "milestone",
            state: now.status.as_str(),
            action,
        });
    };
    event(
        txn,
        act,
        m.escrow_id,
        Some(m.id),
        kind,
        Some(m.status.as_str()),
        Some(to.as_str()),
        data,
    )
    .await?;
    Ok(moved)
}

async fn milestones_of<C: ConnectionTrait>(
    txn: &Scoped<C>,
    escrow_id: Uuid,
) -> Result<Vec<milestone::Model>> {
    txn.list::<milestone::Entity>(|q| {
        q.filter(milestone::Column::EscrowId.eq(escrow_id))
            .order_by_asc(milestone::Column::Position)
    })
    .await
}

// ---------------------------------------------------------------- creation

#[derive(Debug, Clone, Serialize)]
pub struct Geofence {
    pub latitude: f64,
    pub longitude: f64,
    pub radius_m: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewMilestone {
    pub title: String,
    pub amount: Decimal,
    pub proof: ProofRequirement,
    pub geofence: Option<Geofence>,
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NewEscrow {
    pub provider_id: Uuid,
    pub amount: Decimal,
    pub currency: String,
    pub description: String,
    pub deadline: DateTime<Utc>,
    pub inspection_seconds: Option<i64>,
    pub milestones: Vec<NewMilestone>,
}

pub const MAX_MILESTONES: usize = 50;
const MAX_INSPECTION_SECONDS: i64 = 90 * 24 * 3600;

fn check_geofence(g: &Geofence) -> Result<()> {
    let ok = (-90.0..=90.0).contains(&g.latitude)
        && (-180.0..=180.0).contains(&g.longitude)
        && (1.0..=100_000.0).contains(&g.radius_m);
    if ok {
        Ok(())
    } else {
        Err(Error::bad_field(
            "geofence",
            "latitude is -90..90, longitude -180..180, radius 1 to 100000 metres",
        ))
    }
}

/// Creates a DRAFT escrow from `caller` (the sender) to a provider of the tenant.
/// Without milestones, one milestone for the whole amount (no proof required).
pub async fn create<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    new: NewEscrow,
) -> Result<Effect> {
    require(caller.roles.contains(&Role::Sender))?;
    let currency = Currency::parse(&new.currency)?;
    let total = Money::parse_positive(new.amount, currency)?;
    let description = text("description", &new.description, 2000)?;
    let now = Utc::now();
    if new.deadline <= now {
        return Err(Error::bad_field(
            "deadline",
            "the deadline must be in the future",
        ));
    }
    if let Some(secs) = new.inspection_seconds
        && !(1..=MAX_INSPECTION_SECONDS).contains(&secs)
    {
        return Err(Error::bad_field(
            "inspectionPeriodSeconds",
            "the inspection period is 1 second to 90 days",
        ));
    }
    if new.provider_id == caller.user_id {
        return Err(Error::bad_field("providerId", "you cannot pay yourself"));
    }
    let provider = txn
        .find_by_id::<user::Entity>(new.provider_id)
        .await?
        .filter(|u| u.is_active)
        // A missing user and another tenant's are the same answer.
        .ok_or(Error::NotFound)?;

    let mut milestones = new.milestones;
    if milestones.len() > MAX_MILESTONES {
        return Err(Error::bad_field(
            "milestones",
            format!("at most {MAX_MILESTONES} milestones"),
        ));
    }
    if milestones.is_empty() {
        milestones.push(NewMilestone {
            title: "Delivery".to_owned(),
            amount: new.amount,
            proof: ProofRequirement::None,
            geofence: None,
            window_start: None,
            window_end: None,
        });
    }
    let mut sum = Money::from_minor(0, currency);
    let mut parsed = Vec::with_capacity(milestones.len());
    for m in milestones {
        let amount = Money::parse_positive(m.amount, currency).map_err(|_| {
            Error::bad_field(
                "milestones",
                "each milestone amount must be positive, in the escrow's currency precision",
            )
        })?;
        sum = sum.checked_add(amount)?;
        if let Some(g) = &m.geofence {
            if m.proof != ProofRequirement::Photo {
                return Err(Error::bad_field(
                    "milestones",
                    "a geofence only applies to PHOTO proofs",
                ));
            }
            check_geofence(g)?;
        }
        if let (Some(a), Some(b)) = (m.window_start, m.window_end)
            && a >= b
        {
            return Err(Error::bad_field(
                "milestones",
                "a milestone's window must start before it ends",
            ));
        }
        parsed.push((text("milestones", &m.title, 200)?, amount, m));
    }
    if sum != total {
        return Err(Error::bad_field(
            "milestones",
            format!("the milestones add up to {sum}, not {total}"),
        ));
    }

    let esc = txn
        .insert(escrow::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            sender_id: Set(caller.user_id),
            provider_id: Set(provider.id),
            description: Set(description),
            currency: Set(currency.code().to_owned()),
            amount_minor: Set(total.minor()),
            funded_minor: Set(0),
            released_minor: Set(0),
            refunded_minor: Set(0),
            status: Set(EscrowStatus::Draft),
            disputed_from: Set(None),
            dispute_reason: Set(None),
            deadline: Set(new.deadline),
            inspection_seconds: Set(new.inspection_seconds),
            delivered_at: Set(None),
            inspection_ends_at: Set(None),
            refundable_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .await?;
    for (index, (title, amount, m)) in parsed.into_iter().enumerate() {
        txn.insert(milestone::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            escrow_id: Set(esc.id),
            position: Set(i32::try_from(index + 1).unwrap_or(i32::MAX)),
            title: Set(title),
            amount_minor: Set(amount.minor()),
            status: Set(MilestoneStatus::Waiting),
            proof_kind: Set(m.proof),
            geo_latitude: Set(m.geofence.as_ref().map(|g| g.latitude)),
            geo_longitude: Set(m.geofence.as_ref().map(|g| g.longitude)),
            geo_radius_m: Set(m.geofence.as_ref().map(|g| g.radius_m)),
            window_start: Set(m.window_start),
            window_end: Set(m.window_end),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .await?;
    }
    event(
        txn,
        act,
        esc.id,
        None,
        EscrowEventKind::EscrowCreated,
        None,
        Some(EscrowStatus::Draft.as_str()),
        serde_json::json!({ "amount_minor": esc.amount_minor, "currency": esc.currency }),
    )
    .await?;
    Ok(Effect::of(esc.id))
}

// ---------------------------------------------------------------- money in

/// A deposit by the sender. Partial deposits are fine; one above what remains is
/// refused; the deposit that completes the total moves the escrow to FUNDED.
pub async fn fund<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
    amount: Decimal,
) -> Result<Effect> {
    let esc = locked(txn, caller, escrow_id).await?;
    require(esc.sender_id == caller.user_id)?;
    machine::check_escrow(esc.status, EscrowStatus::Funded, "fund")?;
    let money = Money::parse_positive(amount, currency_of(&esc)?)?;
    let x = money.minor();
    let added = txn
        .update_where::<escrow::Entity>(|q| {
            q.col_expr(
                escrow::Column::FundedMinor,
                Expr::col(escrow::Column::FundedMinor).add(x),
            )
            .col_expr(escrow::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(escrow::Column::Id.eq(esc.id))
            .filter(escrow::Column::Status.eq(EscrowStatus::Draft.as_str()))
            .filter(
                Expr::expr(Expr::col(escrow::Column::FundedMinor).add(x))
                    .lte(Expr::col(escrow::Column::AmountMinor)),
            )
        })
        .await?;
    if added == 0 {
        let now = txn.get::<escrow::Entity>(esc.id).await?;
        machine::check_escrow(now.status, EscrowStatus::Funded, "fund")?;
        let remaining = Money::from_minor(now.amount_minor - now.funded_minor, money.currency());
        return Err(Error::conflict(
            "EXCEEDS_REMAINING",
            format!("the deposit is above the {remaining} that remains to be funded"),
        ));
    }
    let dep = txn
        .insert(deposit::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            escrow_id: Set(esc.id),
            depositor_id: Set(caller.user_id),
            amount_minor: Set(x),
            currency: Set(esc.currency.clone()),
            created_at: Set(Utc::now()),
        })
        .await?;
    ledger::post(
        txn,
        ledger::Movement {
            kind: EntryKind::Deposit,
            subject: ("deposit", dep.id),
            currency: &esc.currency,
            amount_minor: x,
            from: Account::Funding(caller.user_id),
            to: Account::Escrow(esc.id),
        },
    )
    .await?;
    event(
        txn,
        act,
        esc.id,
        None,
        EscrowEventKind::EscrowDepositReceived,
        None,
        None,
        serde_json::json!({
            "depositId": ids::encode(Kind::Deposit, dep.id),
            "amount": money.to_decimal().to_string(),
        }),
    )
    .await?;
    let now = txn.get::<escrow::Entity>(esc.id).await?;
    if now.funded_minor == now.amount_minor {
        move_escrow(
            txn,
            act,
            &now,
            EscrowStatus::Funded,
            "fund",
            EscrowEventKind::EscrowFunded,
            serde_json::json!({}),
            |q| q,
        )
        .await?;
    }
    Ok(Effect {
        escrow: esc.id,
        deposit: Some(dep.id),
        payments: vec![],
    })
}

// ---------------------------------------------------------------- money out

/// Pays `amount` of what the escrow holds to its provider (for `m`, if given).
async fn pay_provider<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    esc: &escrow::Model,
    milestone_id: Option<Uuid>,
    amount_minor: i64,
) -> Result<Uuid> {
    move_counter(txn, esc, escrow::Column::ReleasedMinor, amount_minor).await?;
    let pay = payments::record(
        txn,
        act.psp,
        NewPayment {
            payee: Payee::User(esc.provider_id),
            purpose: PaymentPurpose::EscrowRelease,
            amount: Money::from_minor(amount_minor, currency_of(esc)?),
            escrow_id: Some(esc.id),
            milestone_id,
            source: Account::Escrow(esc.id),
        },
        act.actor,
        act.origin,
    )
    .await?;
    Ok(pay.id)
}

/// Returns everything the escrow still holds to its sender; `None` when nothing is held.
async fn refund_rest<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    esc: &escrow::Model,
) -> Result<Option<Uuid>> {
    let rest = held(esc);
    if rest <= 0 {
        return Ok(None);
    }
    move_counter(txn, esc, escrow::Column::RefundedMinor, rest).await?;
    let pay = payments::record(
        txn,
        act.psp,
        NewPayment {
            payee: Payee::User(esc.sender_id),
            purpose: PaymentPurpose::EscrowRefund,
            amount: Money::from_minor(rest, currency_of(esc)?),
            escrow_id: Some(esc.id),
            milestone_id: None,
            source: Account::Escrow(esc.id),
        },
        act.actor,
        act.origin,
    )
    .await?;
    Ok(Some(pay.id))
}

/// Adds `x` to the released or refunded counter, only while paid-out stays within
/// funded: `… WHERE released + refunded + x <= funded`.
async fn move_counter<C: ConnectionTrait>(
    txn: &Scoped<C>,
    esc: &escrow::Model,
    column: escrow::Column,
    x: i64,
) -> Result<()> {
    let moved = txn
        .update_where::<escrow::Entity>(|q| {
            q.col_expr(column, Expr::col(column).add(x))
                .filter(escrow::Column::Id.eq(esc.id))
                .filter(
                    Expr::expr(
                        Expr::col(escrow::Column::ReleasedMinor)
                            .add(Expr::col(escrow::Column::RefundedMinor))
                            .add(x),
                    )
                    .lte(Expr::col(escrow::Column::FundedMinor)),
                )
        })
        .await?;
    if moved == 0 {
        return Err(Error::conflict(
            "INSUFFICIENT_FUNDS",
            "the escrow no longer holds that much",
        ));
    }
    Ok(())
}

/// Approves (without a proof) every milestone not approved yet, then pays every
/// approved milestone. Returns the payments.
async fn approve_and_pay_all<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    esc: &escrow::Model,
    why: &'static str,
) -> Result<Vec<Uuid>> {
    let mut paid = Vec::new();
    for m in approve_all(txn, act, esc.id, why).await? {
        if m.status == MilestoneStatus::Approved {
            paid.push(pay_milestone(txn, act, esc, &m).await?);
        }
    }
    Ok(paid)
}

/// Approves every milestone of the escrow not approved yet; answers all of them as
/// they are now, in order.
async fn approve_all<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    escrow_id: Uuid,
    why: &'static str,
) -> Result<Vec<milestone::Model>> {
    let mut all = milestones_of(txn, escrow_id).await?;
    for m in &mut all {
        if matches!(
            m.status,
            MilestoneStatus::Waiting | MilestoneStatus::PendingReview | MilestoneStatus::Rejected
        ) {
            *m = move_milestone(
                txn,
                act,
                m,
                MilestoneStatus::Approved,
                "approve",
                EscrowEventKind::MilestoneApproved,
                serde_json::json!({ "by": why }),
            )
            .await?;
        }
    }
    Ok(all)
}

async fn pay_milestone<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    esc: &escrow::Model,
    m: &milestone::Model,
) -> Result<Uuid> {
    let m = move_milestone(
        txn,
        act,
        m,
        MilestoneStatus::Paying,
        "release",
        EscrowEventKind::MilestonePaying,
        serde_json::json!({}),
    )
    .await?;
    pay_provider(txn, act, esc, Some(m.id), m.amount_minor).await
}

/// After money moved: an escrow that holds nothing more and paid everything it
/// received is RELEASED (from FUNDED, RELEASABLE or DISPUTED).
async fn complete_if_paid<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    escrow_id: Uuid,
) -> Result<escrow::Model> {
    let esc = txn.get::<escrow::Entity>(escrow_id).await?;
    if held(&esc) == 0 && esc.released_minor > 0 && !machine::is_final(esc.status) {
        return move_escrow(
            txn,
            act,
            &esc,
            EscrowStatus::Released,
            "release",
            EscrowEventKind::EscrowReleased,
            serde_json::json!({ "released_minor": esc.released_minor, "refunded_minor": esc.refunded_minor }),
            |q| q,
        )
        .await;
    }
    Ok(esc)
}

/// A FUNDED escrow whose milestones are all approved (or paid) becomes RELEASABLE.
async fn releasable_if_approved<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    escrow_id: Uuid,
) -> Result<escrow::Model> {
    let esc = txn.get::<escrow::Entity>(escrow_id).await?;
    if esc.status != EscrowStatus::Funded {
        return Ok(esc);
    }
    let all = milestones_of(txn, escrow_id).await?.iter().all(|m| {
        matches!(
            m.status,
            MilestoneStatus::Approved | MilestoneStatus::Paying | MilestoneStatus::Paid
        )
    });
    if !all {
        return Ok(esc);
    }
    move_escrow(
        txn,
        act,
        &esc,
        EscrowStatus::Releasable,
        "approve",
        EscrowEventKind::EscrowReleasable,
        serde_json::json!({}),
        |q| q,
    )
    .await
}

/// The sender pays one approved milestone to the provider.
pub async fn release_milestone<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    milestone_id: Uuid,
) -> Result<Effect> {
    let (esc, m) = locked_milestone(txn, caller, milestone_id).await?;
    require(esc.sender_id == caller.user_id)?;
    if !matches!(esc.status, EscrowStatus::Funded | EscrowStatus::Releasable) {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action: "release a milestone",
        });
    }
    let payment = pay_milestone(txn, act, &esc, &m).await?;
    releasable_if_approved(txn, act, esc.id).await?;
    complete_if_paid(txn, act, esc.id).await?;
    Ok(Effect {
        escrow: esc.id,
        deposit: None,
        payments: vec![payment],
    })
}

/// The sender releases everything the escrow holds: milestones not approved yet are
/// approved by this decision, and each is paid.
pub async fn release<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
) -> Result<Effect> {
    let esc = locked(txn, caller, escrow_id).await?;
    require(esc.sender_id == caller.user_id)?;
    // A dispute freezes the money: only its resolution moves it.
    if !matches!(esc.status, EscrowStatus::Funded | EscrowStatus::Releasable) {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action: "release",
        });
    }
    let payments = approve_and_pay_all(txn, act, &esc, "release").await?;
    complete_if_paid(txn, act, esc.id).await?;
    Ok(Effect {
        escrow: esc.id,
        deposit: None,
        payments,
    })
}

/// The sender withdraws a DRAFT escrow (partial deposits are refunded), or the
/// provider withdraws from a FUNDED one before anything was paid (full refund).
pub async fn cancel<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
    reason: Option<String>,
) -> Result<Effect> {
    let esc = locked(txn, caller, escrow_id).await?;
    machine::check_escrow(esc.status, EscrowStatus::Cancelled, "cancel")?;
    match esc.status {
        EscrowStatus::Draft => require(esc.sender_id == caller.user_id)?,
        _ => {
            require(esc.provider_id == caller.user_id)?;
            if esc.released_minor > 0 {
                return Err(Error::conflict(
                    "ALREADY_PAID",
                    "part of this escrow was paid out; open a dispute instead",
                ));
            }
        }
    }
    let reason = reason.map(|r| text("reason", &r, 2000)).transpose()?;
    let refund = refund_rest(txn, act, &esc).await?;
    move_escrow(
        txn,
        act,
        &esc,
        EscrowStatus::Cancelled,
        "cancel",
        EscrowEventKind::EscrowCancelled,
        serde_json::json!({ "reason": reason }),
        |q| q,
    )
    .await?;
    Ok(Effect {
        escrow: esc.id,
        deposit: None,
        payments: refund.into_iter().collect(),
    })
}

/// The sender takes back what an undelivered escrow holds once the deadline job has
/// made it refundable.
pub async fn refund<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
) -> Result<Effect> {
    let esc = locked(txn, caller, escrow_id).await?;
    require(esc.sender_id == caller.user_id)?;
    // A DISPUTED escrow moves money only through the dispute's resolution.
    if esc.status != EscrowStatus::Funded {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action: "refund",
        });
    }
    if esc.refundable_at.is_none() {
        return Err(Error::conflict(
            "NOT_REFUNDABLE",
            "an escrow is refundable once its deadline passed without a delivery",
        ));
    }
    let refund = refund_rest(txn, act, &esc).await?;
    move_escrow(
        txn,
        act,
        &esc,
        EscrowStatus::Refunded,
        "refund",
        EscrowEventKind::EscrowRefunded,
        serde_json::json!({}),
        |q| q,
    )
    .await?;
    Ok(Effect {
        escrow: esc.id,
        deposit: None,
        payments: refund.into_iter().collect(),
    })
}

/// The sender pays an allowed payee of the escrow (a supplier, say) from what the
/// escrow holds; it counts as released. The payee's own limits were checked by the
/// caller (`spend::rules::payout`).
pub async fn pay_external<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
    reference: &str,
    amount: Decimal,
) -> Result<Effect> {
    let esc = locked(txn, caller, escrow_id).await?;
    require(esc.sender_id == caller.user_id)?;
    if !matches!(esc.status, EscrowStatus::Funded | EscrowStatus::Releasable) {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action: "pay a payee",
        });
    }
    let money = Money::parse_positive(amount, currency_of(&esc)?)?;
    move_counter(txn, &esc, escrow::Column::ReleasedMinor, money.minor()).await?;
    let pay = payments::record(
        txn,
        act.psp,
        NewPayment {
            payee: Payee::External(reference.to_owned()),
            purpose: PaymentPurpose::SpendPayout,
            amount: money,
            escrow_id: Some(esc.id),
            milestone_id: None,
            source: Account::Escrow(esc.id),
        },
        act.actor,
        act.origin,
    )
    .await?;
    event(
        txn,
        act,
        esc.id,
        None,
        EscrowEventKind::EscrowPayeePaid,
        None,
        None,
        serde_json::json!({
            "paymentId": ids::encode(Kind::Payment, pay.id),
            "reference": reference,
            "amount": money.to_decimal().to_string(),
        }),
    )
    .await?;
    complete_if_paid(txn, act, esc.id).await?;
    Ok(Effect {
        escrow: esc.id,
        deposit: None,
        payments: vec![pay.id],
    })
}

// ---------------------------------------------------------------- delivery

/// The provider says the work is delivered; the inspection window starts.
pub async fn mark_delivered<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
    note: Option<String>,
) -> Result<escrow::Model> {
    let esc = locked(txn, caller, escrow_id).await?;
    require(esc.provider_id == caller.user_id)?;
    if !matches!(esc.status, EscrowStatus::Funded | EscrowStatus::Releasable) {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action: "mark it delivered",
        });
    }
    if esc.delivered_at.is_some() {
        return Err(Error::conflict(
            "ALREADY_DELIVERED",
            "the escrow is already marked delivered",
        ));
    }
    if esc.refundable_at.is_some() {
        return Err(Error::conflict(
            "DEADLINE_PASSED",
            "the deadline passed without a delivery",
        ));
    }
    let note = note.map(|n| text("note", &n, 2000)).transpose()?;
    let now = Utc::now();
    let ends = esc.inspection_seconds.map(|s| now + Duration::seconds(s));
    let moved = txn
        .update_where::<escrow::Entity>(|q| {
            q.col_expr(escrow::Column::DeliveredAt, Expr::value(now))
                .col_expr(escrow::Column::InspectionEndsAt, Expr::value(ends))
                .col_expr(escrow::Column::UpdatedAt, Expr::value(now))
                .filter(escrow::Column::Id.eq(esc.id))
                .filter(escrow::Column::Status.eq(esc.status.as_str()))
                .filter(escrow::Column::DeliveredAt.is_null())
                .filter(escrow::Column::RefundableAt.is_null())
        })
        .await?;
    if moved == 0 {
        return Err(Error::conflict(
            "ALREADY_DELIVERED",
            "the escrow changed meanwhile; reload it",
        ));
    }
    event(
        txn,
        act,
        esc.id,
        None,
        EscrowEventKind::EscrowDelivered,
        None,
        None,
        serde_json::json!({ "note": note, "inspection_ends_at": ends }),
    )
    .await?;
    txn.get::<escrow::Entity>(esc.id).await
}

fn within_inspection(esc: &escrow::Model, action: &'static str) -> Result<()> {
    if esc.status != EscrowStatus::Funded {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action,
        });
    }
    if esc.delivered_at.is_none() {
        return Err(Error::conflict(
            "NOT_DELIVERED",
            "the provider has not delivered yet",
        ));
    }
    if esc.inspection_ends_at.is_some_and(|end| end <= Utc::now()) {
        return Err(Error::conflict(
            "INSPECTION_WINDOW_CLOSED",
            "the inspection window is over",
        ));
    }
    Ok(())
}

/// The sender accepts the delivery: every milestone is approved and the escrow
/// becomes RELEASABLE.
pub async fn approve<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
) -> Result<escrow::Model> {
    let esc = locked(txn, caller, escrow_id).await?;
    require(esc.sender_id == caller.user_id)?;
    within_inspection(&esc, "approve it")?;
    approve_all(txn, act, esc.id, "approval").await?;
    releasable_if_approved(txn, act, esc.id).await
}

/// The sender refuses the delivery: it is undone, the escrow stays FUNDED, and the
/// provider may deliver again before the deadline (or either party disputes).
pub async fn reject<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
    reason: String,
) -> Result<escrow::Model> {
    let esc = locked(txn, caller, escrow_id).await?;
    require(esc.sender_id == caller.user_id)?;
    within_inspection(&esc, "reject it")?;
    let reason = text("reason", &reason, 2000)?;
    let moved = txn
        .update_where::<escrow::Entity>(|q| {
            q.col_expr(
                escrow::Column::DeliveredAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                escrow::Column::InspectionEndsAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(escrow::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(escrow::Column::Id.eq(esc.id))
            .filter(escrow::Column::Status.eq(EscrowStatus::Funded.as_str()))
            .filter(escrow::Column::DeliveredAt.is_not_null())
        })
        .await?;
    if moved == 0 {
        return Err(Error::conflict(
            "NOT_DELIVERED",
            "the escrow changed meanwhile; reload it",
        ));
    }
    event(
        txn,
        act,
        esc.id,
        None,
        EscrowEventKind::EscrowDeliveryRejected,
        None,
        None,
        serde_json::json!({ "reason": reason }),
    )
    .await?;
    txn.get::<escrow::Entity>(esc.id).await
}

// ---------------------------------------------------------------- disputes

/// Either party freezes the escrow until an admin resolves it.
pub async fn open_dispute<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
    reason: String,
) -> Result<escrow::Model> {
    let esc = locked(txn, caller, escrow_id).await?;
    require(esc.sender_id == caller.user_id || esc.provider_id == caller.user_id)?;
    machine::check_escrow(esc.status, EscrowStatus::Disputed, "open a dispute")?;
    let reason = text("reason", &reason, 2000)?;
    let from = esc.status.as_str();
    let stored = reason.clone();
    let told = reason.clone();
    let disputed = move_escrow(
        txn,
        act,
        &esc,
        EscrowStatus::Disputed,
        "open a dispute",
        EscrowEventKind::EscrowDisputed,
        serde_json::json!({ "reason": reason }),
        move |q| {
            q.col_expr(escrow::Column::DisputedFrom, Expr::value(from))
                .col_expr(escrow::Column::DisputeReason, Expr::value(stored))
        },
    )
    .await?;
    // The other party is told.
    let other = if caller.user_id == esc.sender_id {
        esc.provider_id
    } else {
        esc.sender_id
    };
    let mut data = escrow_notice(&disputed);
    data["reason"] = serde_json::json!(told);
    crate::notify::enqueue(txn, other, crate::notify::NoticeKind::EscrowDisputed, data).await?;
    Ok(disputed)
}

/// What an escrow's notices show of it.
fn escrow_notice(esc: &escrow::Model) -> serde_json::Value {
    serde_json::json!({
        "description": esc.description,
        "amount": crate::notify::amount(esc.amount_minor, &esc.currency),
        "currency": esc.currency,
        "escrow_id": crate::ids::encode(crate::ids::Kind::Escrow, esc.id),
    })
}

/// How an admin settles a dispute.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Resolution {
    /// Everything held goes to the provider.
    Release,
    /// Everything held goes back to the sender.
    Refund,
    /// `provider_amount` to the provider, the rest to the sender.
    Split { provider_amount: Decimal },
}

pub async fn resolve_dispute<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    escrow_id: Uuid,
    resolution: Resolution,
    note: Option<String>,
) -> Result<Effect> {
    require(caller.is_admin())?;
    let esc = locked(txn, caller, escrow_id).await?;
    if esc.status != EscrowStatus::Disputed {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action: "resolve a dispute",
        });
    }
    let note = note.map(|n| text("note", &n, 2000)).transpose()?;
    let details = serde_json::json!({ "resolution": resolution, "note": note });
    event(
        txn,
        act,
        esc.id,
        None,
        EscrowEventKind::EscrowDisputeResolved,
        None,
        None,
        details,
    )
    .await?;
    let mut payments = Vec::new();
    match resolution {
        Resolution::Release => {
            payments = approve_and_pay_all(txn, act, &esc, "dispute").await?;
            let now = txn.get::<escrow::Entity>(esc.id).await?;
            // Anything held beyond the milestones (none, by construction) is released too.
            if held(&now) > 0 {
                payments.push(pay_provider(txn, act, &now, None, held(&now)).await?);
            }
            complete_if_paid(txn, act, esc.id).await?;
        }
        Resolution::Refund => {
            payments.extend(refund_rest(txn, act, &esc).await?);
            move_escrow(
                txn,
                act,
                &esc,
                EscrowStatus::Refunded,
                "refund",
                EscrowEventKind::EscrowRefunded,
                serde_json::json!({ "by": "dispute" }),
                |q| q,
            )
            .await?;
        }
        Resolution::Split { provider_amount } => {
            let part = Money::parse_positive(provider_amount, currency_of(&esc)?)?;
            if part.minor() >= held(&esc) {
                return Err(Error::bad_field(
                    "providerAmount",
                    "a split gives the provider less than everything held; use RELEASE for all",
                ));
            }
            payments.push(pay_provider(txn, act, &esc, None, part.minor()).await?);
            let now = txn.get::<escrow::Entity>(esc.id).await?;
            payments.extend(refund_rest(txn, act, &now).await?);
            complete_if_paid(txn, act, esc.id).await?;
        }
    }
    Ok(Effect {
        escrow: esc.id,
        deposit: None,
        payments,
    })
}

// ---------------------------------------------------------------- proofs

/// A checked file, already in storage under `storage_key`.
pub struct StoredFile {
    pub filename: String,
    pub storage_key: String,
    pub inspected: Inspected,
}

/// The provider submits a proof for a milestone. A photo taken inside the
/// milestone's geofence and time window is approved at once; anything else waits
/// for the sender's (or support's) decision.
pub async fn submit_proof<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    milestone_id: Uuid,
    note: Option<String>,
    file: Option<StoredFile>,
) -> Result<proof::Model> {
    let (esc, m) = locked_milestone(txn, caller, milestone_id).await?;
    require(esc.provider_id == caller.user_id)?;
    if esc.status != EscrowStatus::Funded {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action: "submit a proof",
        });
    }
    machine::check_milestone(m.status, MilestoneStatus::PendingReview, "submit a proof")?;
    let note = note.map(|n| text("note", &n, 2000)).transpose()?;
    let kind = match (&file, m.proof_kind) {
        (None, ProofRequirement::None) if note.is_some() => ProofKind::Note,
        (None, ProofRequirement::None) => {
            return Err(Error::bad_field("note", "send a note or a file"));
        }
        (None, _) => return Err(Error::bad_field("file", "this milestone needs a file")),
        (Some(f), ProofRequirement::Photo) if !f.inspected.file_type.is_image() => {
            return Err(Error::bad_field(
                "file",
                "this milestone needs a JPEG or PNG photo",
            ));
        }
        (Some(f), _) if f.inspected.file_type.is_image() => ProofKind::Photo,
        (Some(_), _) => ProofKind::Document,
    };
    if let Some(f) = &file
        && txn
            .first::<proof::Entity>(|q| {
                q.filter(proof::Column::Sha256.eq(f.inspected.sha256.clone()))
            })
            .await?
            .is_some()
    {
        return Err(proof_reused());
    }
    let meta = file.as_ref().map(|f| f.inspected.meta).unwrap_or_default();
    let automatic = kind == ProofKind::Photo && inside_fence_and_window(&esc, &m, &meta);
    let now = Utc::now();
    let inserted = txn
        .insert(proof::ActiveModel {
            id: Set(new_id()),
            tenant_id: Set(txn.tenant().as_uuid()),
            escrow_id: Set(esc.id),
            milestone_id: Set(m.id),
            submitted_by: Set(caller.user_id),
            kind: Set(kind),
            filename: Set(file.as_ref().map(|f| f.filename.clone())),
            content_type: Set(file
                .as_ref()
                .map(|f| f.inspected.file_type.content_type().to_owned())),
            size_bytes: Set(file
                .as_ref()
                .map(|f| i64::try_from(f.inspected.size).unwrap_or(i64::MAX))),
            sha256: Set(file.as_ref().map(|f| f.inspected.sha256.clone())),
            storage_key: Set(file.as_ref().map(|f| f.storage_key.clone())),
            note: Set(note),
            latitude: Set(meta.latitude),
            longitude: Set(meta.longitude),
            captured_at: Set(meta.captured_at),
            status: Set(if automatic {
                ProofStatus::Accepted
            } else {
                ProofStatus::Pending
            }),
            decided_by: Set(None),
            decided_automatically: Set(automatic),
            decision_note: Set(
                automatic.then(|| "taken inside the geofence and time window".to_owned())
            ),
            decided_at: Set(automatic.then_some(now)),
            created_at: Set(now),
        })
        .await;
    let proof = match inserted {
        Err(Error::Conflict { .. }) => return Err(proof_reused()),
        other => other?,
    };
    let m = move_milestone(
        txn,
        act,
        &m,
        MilestoneStatus::PendingReview,
        "submit a proof",
        EscrowEventKind::MilestoneProofSubmitted,
        serde_json::json!({ "proofId": ids::encode(Kind::Proof, proof.id), "kind": kind }),
    )
    .await?;
    if automatic {
        move_milestone(
            txn,
            act,
            &m,
            MilestoneStatus::Approved,
            "approve",
            EscrowEventKind::MilestoneApproved,
            serde_json::json!({ "by": "geofence", "proofId": ids::encode(Kind::Proof, proof.id) }),
        )
        .await?;
        releasable_if_approved(txn, act, esc.id).await?;
    }
    Ok(proof)
}

fn proof_reused() -> Error {
    Error::conflict(
        "PROOF_ALREADY_USED",
        "this file was already submitted as a proof",
    )
}

/// Inside the geofence (when the milestone has one: without, never automatic) and
/// taken inside the window: from `window_start` (else the escrow's creation) to
/// `window_end` (else now), with five minutes either side for camera clocks (EXIF
/// times have whole seconds and often no zone).
fn inside_fence_and_window(
    esc: &escrow::Model,
    m: &milestone::Model,
    meta: &super::inspect::PhotoMeta,
) -> bool {
    let (Some(lat), Some(lon), Some(radius)) = (m.geo_latitude, m.geo_longitude, m.geo_radius_m)
    else {
        return false;
    };
    let (Some(plat), Some(plon), Some(at)) = (meta.latitude, meta.longitude, meta.captured_at)
    else {
        return false;
    };
    let drift = Duration::minutes(5);
    let from = m.window_start.unwrap_or(esc.created_at) - drift;
    let to = m.window_end.unwrap_or_else(Utc::now) + drift;
    super::inspect::distance_m(lat, lon, plat, plon) <= radius && at >= from && at <= to
}

/// The sender (or support, or an admin) accepts or refuses a pending proof.
pub async fn decide_proof<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    caller: &Caller,
    proof_id: Uuid,
    accept: bool,
    note: Option<String>,
) -> Result<proof::Model> {
    let p = txn.get::<proof::Entity>(proof_id).await?;
    let (esc, m) = locked_milestone(txn, caller, p.milestone_id).await?;
    require(esc.sender_id == caller.user_id || caller.is_staff())?;
    if esc.status != EscrowStatus::Funded {
        return Err(Error::InvalidState {
            object: "escrow",
            state: esc.status.as_str(),
            action: "decide a proof",
        });
    }
    let to = if accept {
        MilestoneStatus::Approved
    } else {
        MilestoneStatus::Rejected
    };
    machine::check_milestone(m.status, to, "decide a proof")?;
    let note = note.map(|n| text("note", &n, 2000)).transpose()?;
    let status = if accept {
        ProofStatus::Accepted
    } else {
        ProofStatus::Rejected
    };
    let now = Utc::now();
    let decided = txn
        .transition::<proof::Entity>(
            p.id,
            proof::Column::Status,
            &["PENDING"],
            if accept { "ACCEPTED" } else { "REJECTED" },
            |q| {
                q.col_expr(proof::Column::DecidedBy, Expr::value(caller.user_id))
                    .col_expr(proof::Column::DecisionNote, Expr::value(note.clone()))
                    .col_expr(proof::Column::DecidedAt, Expr::value(now))
            },
        )
        .await?;
    let Some(decided) = decided else {
        return Err(Error::conflict(
            "ALREADY_DECIDED",
            "this proof was already decided",
        ));
    };
    move_milestone(
        txn,
        act,
        &m,
        to,
        "decide a proof",
        if accept {
            EscrowEventKind::MilestoneApproved
        } else {
            EscrowEventKind::MilestoneRejected
        },
        serde_json::json!({
            "by": "review",
            "proofId": ids::encode(Kind::Proof, p.id),
            "status": status,
            "note": note,
        }),
    )
    .await?;
    if accept {
        releasable_if_approved(txn, act, esc.id).await?;
    }
    Ok(decided)
}

// ---------------------------------------------------------------- payments, jobs

/// A payment of an escrow moved on: once settled, its milestone is paid (a failed
/// one stays PAYING until a retry settles). Registered with the payments' hook.
fn payment_moved<'a>(
    txn: &'a TenantTxn,
    payment: &'a payment::Model,
    from: Option<PaymentStatus>,
) -> futures_util::future::BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        match (payment.status, from) {
            (PaymentStatus::Settled, _) => {
                milestone_payment_moved(
                    txn,
                    payment,
                    MilestoneStatus::Paying,
                    MilestoneStatus::Paid,
                    "mark it paid",
                    EscrowEventKind::MilestonePaid,
                )
                .await
            }
            (PaymentStatus::Failed, Some(PaymentStatus::Settled)) => {
                milestone_payment_moved(
                    txn,
                    payment,
                    MilestoneStatus::Paid,
                    MilestoneStatus::Paying,
                    "pay it again",
                    EscrowEventKind::MilestonePaymentReturned,
                )
                .await
            }
            _ => Ok(()),
        }
    })
}

inventory::submit! {
    crate::hooks::PaymentMoved { name: "escrow", run: payment_moved }
}

fn payment_disputed<'a>(
    txn: &'a TenantTxn,
    payment: &'a payment::Model,
    what: crate::payments::Dispute,
    reason: Option<&'a str>,
) -> futures_util::future::BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        if what == crate::payments::Dispute::Opened {
            psp_dispute_opened(txn, payment, reason).await?;
        }
        Ok(())
    })
}

inventory::submit! {
    crate::hooks::PaymentDisputed { name: "escrow", run: payment_disputed }
}

/// The PSP opened a dispute on one of an escrow's payments: an escrow that may still
/// be disputed (FUNDED, RELEASABLE) is, as if a party had opened it, until an admin
/// resolves it; both parties are told. A final or already disputed escrow keeps its
/// state (the payment and the audit log carry the dispute).
async fn psp_dispute_opened<C: ConnectionTrait>(
    txn: &Scoped<C>,
    payment: &payment::Model,
    reason: Option<&str>,
) -> Result<()> {
    let Some(escrow_id) = payment.escrow_id else {
        return Ok(());
    };
    let esc = txn.get_for_update::<escrow::Entity>(escrow_id).await?;
    if !matches!(esc.status, EscrowStatus::Funded | EscrowStatus::Releasable) {
        return Ok(());
    }
    let origin = Origin::default();
    let act = Act {
        actor: Actor::System,
        origin: &origin,
        psp: &payment.psp,
    };
    let reason = format!(
        "the PSP opened a dispute on payment {}: {}",
        ids::encode(Kind::Payment, payment.id),
        reason.unwrap_or("no reason given")
    );
    let from = esc.status.as_str();
    let stored = reason.clone();
    let disputed = move_escrow(
        txn,
        act,
        &esc,
        EscrowStatus::Disputed,
        "open a dispute",
        EscrowEventKind::EscrowDisputed,
        serde_json::json!({ "reason": reason, "paymentId": ids::encode(Kind::Payment, payment.id) }),
        move |q| {
            q.col_expr(escrow::Column::DisputedFrom, Expr::value(from))
                .col_expr(escrow::Column::DisputeReason, Expr::value(stored))
        },
    )
    .await?;
    for party in [disputed.sender_id, disputed.provider_id] {
        let mut data = escrow_notice(&disputed);
        data["reason"] = serde_json::json!(reason);
        crate::notify::enqueue(txn, party, crate::notify::NoticeKind::EscrowDisputed, data).await?;
    }
    Ok(())
}

/// A milestone's payment settled (PAYING → PAID), or the PSP took its settled payment
/// back (PAID → PAYING: paid again, until the payment's retry settles). Nothing when
/// the payment pays no milestone or the milestone is not where the move starts.
async fn milestone_payment_moved<C: ConnectionTrait>(
    txn: &Scoped<C>,
    payment: &payment::Model,
    from: MilestoneStatus,
    to: MilestoneStatus,
    action: &'static str,
    kind: EscrowEventKind,
) -> Result<()> {
    let (Some(escrow_id), Some(milestone_id)) = (payment.escrow_id, payment.milestone_id) else {
        return Ok(());
    };
    // Escrow first, then its milestone: the order every escrow rule locks in.
    txn.get_for_update::<escrow::Entity>(escrow_id).await?;
    let m = txn.get::<milestone::Entity>(milestone_id).await?;
    if m.status != from {
        return Ok(());
    }
    let origin = Origin::default();
    let act = Act {
        actor: Actor::System,
        origin: &origin,
        psp: &payment.psp,
    };
    let mut data = serde_json::json!({
        "paymentId": ids::encode(Kind::Payment, payment.id),
        "escrowId": ids::encode(Kind::Escrow, escrow_id),
    });
    if payment.status == PaymentStatus::Failed {
        data["reason"] = serde_json::json!(payment.failure_reason);
    }
    move_milestone(txn, act, &m, to, action, kind, data).await?;
    Ok(())
}

/// The deadline job, for a delivered escrow whose inspection window has lapsed:
/// accept and pay everything. `None` when the escrow no longer qualifies (another
/// process did it, or the sender acted first).
pub async fn auto_release<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    escrow_id: Uuid,
) -> Result<Option<Effect>> {
    let esc = txn.get::<escrow::Entity>(escrow_id).await?;
    let lapsed =
        esc.delivered_at.is_some() && esc.inspection_ends_at.is_some_and(|end| end <= Utc::now());
    if !lapsed || !matches!(esc.status, EscrowStatus::Funded | EscrowStatus::Releasable) {
        return Ok(None);
    }
    // Claim the escrow first: only one process gets past this UPDATE.
    let claimed = txn
        .update_returning::<escrow::Entity>(|q| {
            q.col_expr(escrow::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(escrow::Column::Id.eq(esc.id))
                .filter(escrow::Column::Status.eq(esc.status.as_str()))
                .filter(escrow::Column::InspectionEndsAt.lte(Utc::now()))
        })
        .await?;
    let Some(esc) = claimed.into_iter().next() else {
        return Ok(None);
    };
    let milestones = approve_all(txn, act, esc.id, "inspection_lapsed").await?;
    let esc = releasable_if_approved(txn, act, esc.id).await?;
    let mut payments = Vec::new();
    for m in milestones {
        if m.status == MilestoneStatus::Approved {
            payments.push(pay_milestone(txn, act, &esc, &m).await?);
        }
    }
    complete_if_paid(txn, act, esc.id).await?;
    crate::notify::enqueue(
        txn,
        esc.sender_id,
        crate::notify::NoticeKind::EscrowAutoReleased,
        escrow_notice(&esc),
    )
    .await?;
    Ok(Some(Effect {
        escrow: esc.id,
        deposit: None,
        payments,
    }))
}

/// The deadline job, for a FUNDED escrow past its deadline without a delivery:
/// it becomes refundable (once).
pub async fn mark_refundable<C: ConnectionTrait>(
    txn: &Scoped<C>,
    act: Act<'_>,
    escrow_id: Uuid,
) -> Result<bool> {
    let now = Utc::now();
    let marked = txn
        .update_where::<escrow::Entity>(|q| {
            q.col_expr(escrow::Column::RefundableAt, Expr::value(now))
                .col_expr(escrow::Column::UpdatedAt, Expr::value(now))
                .filter(escrow::Column::Id.eq(escrow_id))
                .filter(escrow::Column::Status.eq(EscrowStatus::Funded.as_str()))
                .filter(escrow::Column::DeliveredAt.is_null())
                .filter(escrow::Column::RefundableAt.is_null())
                .filter(escrow::Column::Deadline.lte(now))
        })
        .await?;
    if marked == 0 {
        return Ok(false);
    }
    event(
        txn,
        act,
        escrow_id,
        None,
        EscrowEventKind::EscrowDeadlinePassed,
        None,
        None,
        serde_json::json!({ "refundable_at": now }),
    )
    .await?;
    Ok(true)
}
