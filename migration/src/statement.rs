//! Hand-written SQL for both backends: write `$1`, `$2`, … and get the placeholders the
//! backend expects (`?` on SQLite). Used where the query builder does not reach (the
//! backfill in a migration, the aggregate checks of `ledger verify`).

use sea_orm::{DbBackend, Statement, Value};

/// `text` with its `$n` placeholders as `backend` writes them, bound to `values` in
/// order (each `$n` used once, in increasing order).
pub fn statement(backend: DbBackend, text: &str, values: Vec<Value>) -> Statement {
    let text = if backend == DbBackend::Postgres {
        text.to_owned()
    } else {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                out.push('?');
            } else {
                out.push(c);
            }
        }
        out
    };
    Statement::from_sql_and_values(backend, text, values)
}
