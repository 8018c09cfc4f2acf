//! Conditional spending: a sender's usage mandate that a beneficiary may spend only
//! at allowed merchants or categories, never beyond its budget however many requests
//! race; allowed payees; restricted transfers; and the alerts refusals raise.

pub mod graphql;
pub mod rules;
