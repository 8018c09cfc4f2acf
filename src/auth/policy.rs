//! The password policy: at least 12 characters, at most 128, some variety, and not
//! one of a bundled list of common passwords (compared case-insensitively).

use crate::error::{Error, Result};

const COMMON: &str = include_str!("common_passwords.txt");
pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 128;

pub fn check_password(candidate: &str, email: &str) -> Result<()> {
    let chars = candidate.chars().count();
    if chars < MIN_LEN {
        return Err(Error::bad_field("password", "use at least 12 characters"));
    }
    if chars > MAX_LEN {
        return Err(Error::bad_field("password", "use at most 128 characters"));
    }
    let lower = candidate.to_lowercase();
    let distinct: std::collections::HashSet<char> = lower.chars().collect();
    if distinct.len() < 5 {
        return Err(Error::bad_field(
            "password",
            "too repetitive; use more different characters",
        ));
    }
    if COMMON.lines().any(|common| common == lower) {
        return Err(Error::bad_field(
            "password",
            "this is a common password; choose another",
        ));
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.len() >= 4 && lower.contains(&local) {
        return Err(Error::bad_field(
            "password",
            "do not use your email address in your password",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_password("short", "a@b.example").is_err());
        assert!(
            check_password("Password1234", "a@b.example").is_err(),
            "common, any case"
        );
        assert!(check_password("aaaaaaaaaaaaaaaa", "a@b.example").is_err());
        assert!(check_password("ada.lovelace.rules", "ada.lovelace@b.example").is_err());
        assert!(check_password("vivid-otter-carries-lamp", "a@b.example").is_ok());
        assert!(
            COMMON.lines().all(|l| l.chars().count() >= MIN_LEN),
            "the list only needs long entries"
        );
    }
}
