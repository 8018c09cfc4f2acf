//! Exact money (DESIGN §2): integer minor units plus an ISO 4217 currency. Amounts
//! arrive as `rust_decimal::Decimal` (the `Decimal` scalar, a string on the wire); an
//! amount with more decimals than its currency allows is rejected, never rounded. A
//! float never touches an amount.

use std::fmt;

use rust_decimal::Decimal;

use crate::error::{Error, Result};

/// ISO 4217 codes this server accepts, with their minor units.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("GHS", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("RON", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("ZAR", 2),
];

/// A supported ISO 4217 currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

impl Currency {
    pub fn parse(raw: &str) -> Result<Self> {
        let code = raw.trim().to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(code, minor_units)| Currency {
                code,
                minor_units: *minor_units,
            })
            .ok_or_else(|| {
                Error::bad_field(
                    "currency",
                    format!("`{raw}` is not a supported ISO 4217 currency"),
                )
            })
    }

    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn minor_units(self) -> u32 {
        self.minor_units
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// An amount in a currency, held as integer minor units (cents for EUR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// Parses `amount` in `currency`, refusing more decimals than the currency has.
    pub fn parse(amount: Decimal, currency: Currency) -> Result<Self> {
        let too_precise = || {
            Error::bad_field(
                "amount",
                format!(
                    "{currency} amounts have at most {} decimals",
                    currency.minor_units
                ),
            )
        };
        let normalized = amount.normalize();
        if normalized.scale() > currency.minor_units {
            return Err(too_precise());
        }
        let factor = Decimal::from(10_i64.pow(currency.minor_units));
        let minor = normalized
            .checked_mul(factor)
            .and_then(|m| i64::try_from(m).ok())
            .ok_or_else(|| Error::bad_field("amount", "the amount is too large"))?;
        Ok(Self { minor, currency })
    }

    /// Like [`Money::parse`], and the amount must be above zero.
    pub fn parse_positive(amount: Decimal, currency: Currency) -> Result<Self> {
        let money = Self::parse(amount, currency)?;
        if money.minor <= 0 {
            return Err(Error::bad_field("amount", "the amount must be positive"));
        }
        Ok(money)
    }

    pub fn from_minor(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The amount with exactly the currency's decimals, e.g. `12.50`.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.minor, self.currency.minor_units)
    }

    fn same_currency(self, other: Money) -> Result<()> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(Error::bad_field(
                "currency",
                format!("cannot combine {} with {}", self.currency, other.currency),
            ))
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or_else(|| Error::bad_field("amount", "the amount is too large"))?;
        Ok(Self { minor, ..self })
    }

    pub fn checked_sub(self, other: Money) -> Result<Money> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or_else(|| Error::bad_field("amount", "the amount is too large"))?;
        Ok(Self { minor, ..self })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn currencies_have_their_minor_units() {
        assert_eq!(Currency::parse("eur").unwrap().minor_units(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("EURO").is_err());
    }

    #[test]
    fn amounts_are_exact_and_never_rounded() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(Money::parse(d("12.50"), eur).unwrap().minor(), 1250);
        assert_eq!(
            Money::parse(d("12.500"), eur).unwrap().minor(),
            1250,
            "trailing zeros are fine"
        );
        assert!(
            Money::parse(d("12.505"), eur).is_err(),
            "a third decimal is refused, not rounded"
        );
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Money::parse(d("1500"), jpy).unwrap().minor(), 1500);
        assert!(Money::parse(d("1500.5"), jpy).is_err());
        assert_eq!(
            Money::parse(d("0.1"), eur)
                .unwrap()
                .checked_add(Money::parse(d("0.2"), eur).unwrap())
                .unwrap()
                .to_decimal(),
            d("0.30")
        );
        assert_eq!(
            Money::from_minor(1250, eur).to_decimal().to_string(),
            "12.50"
        );
        assert!(Money::parse_positive(d("0"), eur).is_err());
        assert!(Money::parse_positive(d("-1"), eur).is_err());
        assert!(
            Money::parse(d("99999999999999999999"), eur).is_err(),
            "overflow is refused"
        );
        let usd = Currency::parse("USD").unwrap();
        assert!(
            Money::from_minor(1, eur)
                .checked_add(Money::from_minor(1, usd))
                .is_err()
        );
    }
}
