//! The `Decimal` scalar: exact amounts as strings on the wire. A JSON number is
//! refused, so a float never touches an amount.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// An exact decimal number, serialized as a string such as `"12.50"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal(pub rust_decimal::Decimal);

impl async_graphql::Description for Decimal {
    fn description() -> &'static str {
        "An exact decimal number sent and received as a string, e.g. \"12.50\". \
         JSON numbers are refused so that no float ever touches an amount."
    }
}

// The lexical form is XML Schema's `decimal` (without a leading `+`): the closest
// published definition of "an exact decimal number as text".
#[Scalar(
    name = "Decimal",
    use_type_description,
    specified_by_url = "https://www.w3.org/TR/xmlschema11-2/#decimal"
)]
impl ScalarType for Decimal {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => {
                let trimmed = s.trim();
                let valid = !trimmed.is_empty()
                    && trimmed.len() <= 40
                    && trimmed
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
                if !valid {
                    return Err(InputValueError::custom(
                        "a Decimal is a string of digits such as \"12.50\"",
                    ));
                }
                trimmed
                    .parse::<rust_decimal::Decimal>()
                    .map(Decimal)
                    .map_err(|_| {
                        InputValueError::custom("a Decimal is a string of digits such as \"12.50\"")
                    })
            }
            _ => Err(InputValueError::custom(
                "a Decimal is sent as a string, e.g. \"12.50\", never as a JSON number",
            )),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// For hashing inputs (idempotency): normalized, so `"10.0"` and `"10.00"` are one
/// amount.
impl serde::Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.normalize().to_string())
    }
}

/// An exact amount with its ISO 4217 currency.
#[derive(async_graphql::SimpleObject)]
#[graphql(name = "Money")]
pub struct MoneyValue {
    /// The amount, exact, with the currency's minor units.
    pub amount: Decimal,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
}

impl MoneyValue {
    /// `minor` units of a stored currency (always one `Currency::parse` accepts).
    pub fn new(minor: i64, currency: &str) -> Self {
        let amount = match crate::money::Currency::parse(currency) {
            Ok(c) => crate::money::Money::from_minor(minor, c).to_decimal(),
            Err(_) => rust_decimal::Decimal::from(minor),
        };
        Self {
            amount: Decimal(amount),
            currency: currency.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_only() {
        let d = <Decimal as ScalarType>::parse(Value::String("12.50".into())).unwrap();
        assert_eq!(d.to_value(), Value::String("12.50".into()));
        assert!(<Decimal as ScalarType>::parse(Value::Number(12.into())).is_err());
        for bad in ["", "1e5", "12,50", "abc", "NaN"] {
            assert!(
                <Decimal as ScalarType>::parse(Value::String(bad.into())).is_err(),
                "{bad}"
            );
        }
    }
}
