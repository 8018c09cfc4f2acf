//! The audit log's hash chain: how one row is written down (its canonical form) and
//! how it is linked to the one before it. Shared by the migration that seals the rows
//! written before the chain existed and by the server, which links every new row; an
//! auditor re-implements exactly this to check an export (README, "Audit trail").
//!
//! A tenant's log is a few parallel chains, its *lanes* (a transaction appends to one
//! lane that no other transaction holds, so concurrent writers do not queue); within a
//! lane rows are numbered `seq` = 1, 2, 3, … in commit order and
//! `hash = hex(SHA-256(prev_hash ‖ canonical))`, where `prev_hash` is the previous
//! row's `hash` in the same lane (64 zeros before the first) as ASCII hex, and
//! `canonical` is the UTF-8 JSON array
//! `[tenant_id, lane, seq, id, actor_type, actor_id, action, subject_type, subject_id,
//! ip, request_id, details, created_at]`: ids as lowercase hyphenated UUIDs, absent values
//! as `null`, `details` as JSON with every object's keys sorted and no whitespace,
//! `created_at` as RFC 3339 UTC with microseconds (`2026-11-30T15:04:05.123456Z`).

use sea_orm::prelude::{DateTimeUtc, Uuid};
use sha2::{Digest, Sha256};

/// The link before a tenant's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit row as the chain sees it.
pub struct Row<'a> {
    pub tenant_id: Uuid,
    pub lane: i16,
    pub seq: i64,
    pub id: Uuid,
    pub actor_type: &'a str,
    pub actor_id: Option<Uuid>,
    pub action: &'a str,
    pub subject_type: Option<&'a str>,
    pub subject_id: Option<Uuid>,
    pub ip: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub details: &'a serde_json::Value,
    pub created_at: DateTimeUtc,
}

/// The row's canonical form (see the module's documentation).
pub fn canonical(row: &Row<'_>) -> String {
    use serde_json::Value;
    let text = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(s.to_owned()));
    let id = |v: Option<Uuid>| v.map_or(Value::Null, |u| Value::String(u.to_string()));
    let fields = [
        Value::String(row.tenant_id.to_string()),
        Value::from(row.lane),
        Value::from(row.seq),
        Value::String(row.id.to_string()),
        Value::String(row.actor_type.to_owned()),
        id(row.actor_id),
        Value::String(row.action.to_owned()),
        text(row.subject_type),
        id(row.subject_id),
        text(row.ip),
        text(row.request_id),
        row.details.clone(),
        Value::String(
            row.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
    ];
    let mut out = String::new();
    write_sorted(&Value::Array(fields.into()), &mut out);
    out
}

/// `hex(SHA-256(prev ‖ canonical(row)))`.
pub fn link(prev: &str, row: &Row<'_>) -> String {
    let mut digest = Sha256::new();
    digest.update(prev.as_bytes());
    digest.update(canonical(row).as_bytes());
    hex::encode(digest.finalize())
}

/// JSON with object keys sorted at every depth, whatever map order serde_json keeps.
fn write_sorted(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_sorted(&map[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_at_every_depth_and_the_hash_is_stable() {
        let details =
            serde_json::json!({ "b": 1, "a": { "z": [1, { "y": null, "x": "é" }], "c": 1.5 } });
        let row = Row {
            tenant_id: Uuid::nil(),
            lane: 2,
            seq: 1,
            id: Uuid::from_u128(1),
            actor_type: "SYSTEM",
            actor_id: None,
            action: "escrow.created",
            subject_type: Some("escrow"),
            subject_id: Some(Uuid::from_u128(2)),
            ip: None,
            request_id: None,
            details: &details,
            created_at: "2026-11-30T15:04:05.123456789Z".parse().unwrap(),
        };
        assert_eq!(
            canonical(&row),
            r#"["00000000-0000-0000-0000-000000000000",2,1,"00000000-0000-0000-0000-000000000001","SYSTEM",null,"escrow.created","escrow","00000000-0000-0000-0000-000000000002",null,null,{"a":{"c":1.5,"z":[1,{"x":"é","y":null}]},"b":1},"2026-11-30T15:04:05.123456Z"]"#
        );
        // What an auditor gets from `printf '%s%s' "$GENESIS" "$canonical" | sha256sum`.
        assert_eq!(link(GENESIS, &row).len(), 64);
        assert_ne!(link(GENESIS, &row), link(&link(GENESIS, &row), &row));
    }
}
