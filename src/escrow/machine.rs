//! The two state machines, each one table. Every move a rule makes is checked here;
//! anything else answers `CONFLICT` (reason `INVALID_STATE`) naming the current state.

use crate::{
    entity::{escrow::EscrowStatus, milestone::MilestoneStatus},
    error::{Error, Result},
};

use EscrowStatus as E;
use MilestoneStatus as M;

/// Allowed escrow moves.
pub const ESCROW: &[(EscrowStatus, EscrowStatus)] = &[
    // Deposits reached the total.
    (E::Draft, E::Funded),
    // The sender withdraws before funding completes (partial deposits refunded).
    (E::Draft, E::Cancelled),
    // Every milestone approved, or the sender accepted the delivery.
    (E::Funded, E::Releasable),
    // Everything paid out (milestone by milestone, or released early by the sender).
    (E::Funded, E::Released),
    // The provider withdraws before anything was paid: full refund.
    (E::Funded, E::Cancelled),
    // The deadline passed without a delivery and the sender took the money back.
    (E::Funded, E::Refunded),
    (E::Funded, E::Disputed),
    (E::Releasable, E::Released),
    (E::Releasable, E::Disputed),
    // Dispute resolution: release (or split), or refund.
    (E::Disputed, E::Released),
    (E::Disputed, E::Refunded),
];

/// Allowed milestone moves.
pub const MILESTONE: &[(MilestoneStatus, MilestoneStatus)] = &[
    // A proof arrived.
    (M::Waiting, M::PendingReview),
    // Accepted without a proof: the sender accepted the whole delivery, the
    // inspection window lapsed, or a dispute was resolved in the provider's favour.
    (M::Waiting, M::Approved),
    (M::PendingReview, M::Approved),
    (M::PendingReview, M::Rejected),
    // The provider tries again with another proof, or the whole delivery is accepted.
    (M::Rejected, M::PendingReview),
    (M::Rejected, M::Approved),
    (M::Approved, M::Paying),
    (M::Paying, M::Paid),
    // The PSP took the settled payout back (`payout.returned`, `payment.refunded`):
    // paying again, until the payment's retry settles.
    (M::Paid, M::Paying),
];

pub fn check_escrow(from: EscrowStatus, to: EscrowStatus, action: &'static str) -> Result<()> {
    if ESCROW.contains(&(from, to)) {
        Ok(())
    } else {
        Err(Error::InvalidState {
            object: "escrow",
            state: from.as_str(),
            action,
        })
    }
}

pub fn check_milestone(
    from: MilestoneStatus,
    to: MilestoneStatus,
    action: &'static str,
) -> Result<()> {
    if MILESTONE.contains(&(from, to)) {
        Ok(())
    } else {
        Err(Error::InvalidState {
            object: "milestone",
            state: from.as_str(),
            action,
        })
    }
}

/// Where money can no longer move.
pub fn is_final(status: EscrowStatus) -> bool {
    matches!(status, E::Released | E::Cancelled | E::Refunded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    #[test]
    fn final_states_have_no_way_out() {
        for status in EscrowStatus::iter().filter(|s| is_final(*s)) {
            assert!(
                ESCROW.iter().all(|(from, _)| *from != status),
                "{status:?} must be final"
            );
        }
        // A paid milestone leaves PAID only when the PSP takes its payout back.
        assert_eq!(
            MILESTONE
                .iter()
                .filter(|(from, _)| *from == M::Paid)
                .collect::<Vec<_>>(),
            [&(M::Paid, M::Paying)]
        );
    }

    #[test]
    fn refused_moves_name_the_current_state() {
        let err = check_escrow(E::Released, E::Funded, "fund").unwrap_err();
        assert_eq!(err.to_string(), "the escrow is RELEASED: cannot fund");
        assert!(check_milestone(M::Waiting, M::Paying, "release").is_err());
        assert!(check_milestone(M::Approved, M::Paying, "release").is_ok());
    }

    #[test]
    fn every_state_is_reachable_from_draft() {
        let mut seen = vec![E::Draft];
        let mut i = 0;
        while i < seen.len() {
            for (from, to) in ESCROW {
                if *from == seen[i] && !seen.contains(to) {
                    seen.push(*to);
                }
            }
            i += 1;
        }
        assert_eq!(seen.len(), EscrowStatus::iter().count());
    }
}
