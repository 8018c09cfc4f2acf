//! Persisted operations: Apollo's automatic persisted queries (APQ) and, for
//! production, an allow-list.
//!
//! A request may name its document by hash instead of sending it:
//! `extensions: {"persistedQuery": {"version": 1, "sha256Hash": "<hex>"}}`, over POST
//! or GET (a short GET URL a cache can key on). A hash the server does not know is
//! answered `PERSISTED_QUERY_NOT_FOUND` (message `PersistedQueryNotFound`, what Apollo
//! clients look for); the client sends the document again with its hash, the server
//! checks that the hash is the document's SHA-256 and remembers it (in this process,
//! newest first, [`RECENT_BYTES`] at most), and later requests need only the hash.
//!
//! Registered operations (`sequestra operations register FILE`) are kept in the
//! `persisted_operations` table and found by hash from any process. With
//! `SEQUESTRA_PERSISTED_ONLY=true` they are the only documents that run: a document
//! sent in full runs only if its hash is registered (`PERSISTED_QUERY_NOT_ALLOWED`
//! otherwise), and nothing a client sends is remembered. Over WebSocket a `subscribe`
//! follows the same rules.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
};

use chrono::Utc;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, sea_query::OnConflict};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::{
    entity::persisted_operation,
    error::{Error, ErrorCode},
};

/// How many bytes of documents sent by clients a process remembers for APQ.
pub const RECENT_BYTES: usize = 8 << 20;

/// The message Apollo clients recognise for an unknown hash.
pub const NOT_FOUND_MESSAGE: &str = "PersistedQueryNotFound";

/// Why a request's document cannot run.
#[derive(Debug)]
pub enum Refused {
    /// No document with that hash here: send the document with its hash, or register it.
    NotFound,
    /// `SEQUESTRA_PERSISTED_ONLY`: the document is not registered.
    NotAllowed,
    /// A malformed `persistedQuery` extension, or a hash that is not the document's.
    Invalid(&'static str),
    /// The allow-list could not be read.
    Internal(Error),
}

impl Refused {
    pub fn code(&self) -> ErrorCode {
        match self {
            Refused::NotFound => ErrorCode::PersistedQueryNotFound,
            Refused::NotAllowed => ErrorCode::PersistedQueryNotAllowed,
            Refused::Invalid(_) => ErrorCode::BadUserInput,
            Refused::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Refused::NotFound => NOT_FOUND_MESSAGE,
            Refused::NotAllowed => "only registered operations run on this server",
            Refused::Invalid(why) => why,
            Refused::Internal(_) => "internal error",
        }
    }
}

/// The lower-case hex SHA-256 of a document's exact text: its persisted id.
pub fn sha256_hex(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

/// Documents clients sent with their hash, oldest dropped first past a byte budget.
#[derive(Default)]
struct Recent {
    documents: HashMap<String, Arc<str>>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Recent {
    fn remember(&mut self, hash: String, document: Arc<str>) {
        if document.len() > RECENT_BYTES || self.documents.contains_key(&hash) {
            return;
        }
        self.bytes += document.len();
        self.order.push_back(hash.clone());
        self.documents.insert(hash, document);
        while self.bytes > RECENT_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.documents.remove(&oldest) {
                self.bytes -= gone.len();
            }
        }
    }
}

/// One process's view of persisted operations.
pub struct Persisted {
    db: DatabaseConnection,
    only: bool,
    /// Registered documents found so far (a hash always names the same text, so a
    /// found one never goes stale).
    registered: RwLock<HashMap<String, Arc<str>>>,
    recent: Mutex<Recent>,
}

impl Persisted {
    pub fn new(db: DatabaseConnection, only: bool) -> Self {
        Self {
            db,
            only,
            registered: RwLock::default(),
            recent: Mutex::default(),
        }
    }

    /// Whether only registered operations run.
    pub fn only(&self) -> bool {
        self.only
    }

    /// The document a request runs, from its `query` (absent or empty when it sends
    /// only a hash) and its `extensions`.
    pub async fn document(
        &self,
        query: Option<String>,
        extensions: Option<&Json>,
    ) -> Result<String, Refused> {
        let query = query.filter(|q| !q.is_empty());
        let hash = match extensions.and_then(|e| e.get("persistedQuery")) {
            None | Some(Json::Null) => None,
            Some(persisted) => Some(requested_hash(persisted)?),
        };
        match (query, hash) {
            (Some(query), Some(hash)) => {
                if sha256_hex(&query) != hash {
                    return Err(Refused::Invalid("provided sha does not match query"));
                }
                self.admit(query, hash).await
            }
            (Some(query), None) if self.only => {
                let hash = sha256_hex(&query);
                self.admit(query, hash).await
            }
            (Some(query), None) => Ok(query),
            (None, Some(hash)) => match self.registered(&hash).await? {
                Some(document) => Ok(document.to_string()),
                None if self.only => Err(Refused::NotFound),
                None => self
                    .recent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .documents
                    .get(&hash)
                    .map(|d| d.to_string())
                    .ok_or(Refused::NotFound),
            },
            (None, None) => Err(Refused::Invalid("`query` is required")),
        }
    }

    /// A document sent in full with its (checked) hash: it runs if it is registered,
    /// or, unless only registered operations run, it is remembered and runs.
    async fn admit(&self, query: String, hash: String) -> Result<String, Refused> {
        if self.only {
            return match self.registered(&hash).await? {
                Some(_) => Ok(query),
                None => Err(Refused::NotAllowed),
            };
        }
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remember(hash, Arc::from(query.as_str()));
        Ok(query)
    }

    /// The registered document with this hash: from memory, or read once.
    async fn registered(&self, hash: &str) -> Result<Option<Arc<str>>, Refused> {
        if let Some(found) = self
            .registered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(hash)
        {
            return Ok(Some(found.clone()));
        }
        let row = persisted_operation::Entity::find_by_id(hash.to_owned())
            .one(&self.db)
            .await
            .map_err(|e| Refused::Internal(e.into()))?;
        Ok(row.map(|row| {
            let document: Arc<str> = Arc::from(row.document);
            self.registered
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(row.sha256, document.clone());
            document
        }))
    }
}

/// The hash a `persistedQuery` extension names (version 1, 64 hex digits).
fn requested_hash(persisted: &Json) -> Result<String, Refused> {
    if persisted.get("version").and_then(Json::as_i64) != Some(1) {
        return Err(Refused::Invalid(
            "only version 1 of the persistedQuery extension is supported",
        ));
    }
    match persisted.get("sha256Hash").and_then(Json::as_str) {
        Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hash.to_ascii_lowercase())
        }
        _ => Err(Refused::Invalid(
            "persistedQuery.sha256Hash must be 64 hexadecimal digits",
        )),
    }
}

/// One operation to register: its document and, if known, its name.
pub struct Operation {
    pub document: String,
    pub name: Option<String>,
}

/// The operations of a file: an Apollo persisted-query manifest
/// (`{"format": "apollo-persisted-query-manifest", "operations": [{"name", "body"}, …]}`),
/// a JSON object of hash → document (the `persistgraphql` / Relay form; each hash is
/// checked), or else the whole file as one GraphQL document (run with `operationName`
/// when it holds several operations).
pub fn operations_in(text: &str) -> Result<Vec<Operation>, String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        return Ok(vec![Operation {
            document: text.to_owned(),
            name: None,
        }]);
    }
    let json: Json = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    if let Some(operations) = json.get("operations").and_then(Json::as_array) {
        return operations
            .iter()
            .enumerate()
            .map(|(i, op)| {
                let document = op
                    .get("body")
                    .and_then(Json::as_str)
                    .ok_or_else(|| format!("operation {i} has no `body` string"))?;
                if let Some(id) = op.get("id").and_then(Json::as_str)
                    && id != sha256_hex(document)
                {
                    return Err(format!("operation {i}: `id` is not the body's SHA-256"));
                }
                Ok(Operation {
                    document: document.to_owned(),
                    name: op.get("name").and_then(Json::as_str).map(str::to_owned),
                })
            })
            .collect();
    }
    let Json::Object(map) = json else {
        return Err("a JSON file must be a manifest or an object of hash → document".into());
    };
    map.into_iter()
        .map(|(hash, document)| {
            let document = document
                .as_str()
                .ok_or_else(|| format!("{hash}: the document must be a string"))?;
            if hash.to_ascii_lowercase() != sha256_hex(document) {
                return Err(format!("{hash} is not the SHA-256 of its document"));
            }
            Ok(Operation {
                document: document.to_owned(),
                name: None,
            })
        })
        .collect()
}

/// Adds `operations` to the allow-list (one already there stays as it is); answers
/// how many were new.
pub async fn register(
    db: &DatabaseConnection,
    operations: &[Operation],
) -> crate::error::Result<u64> {
    let mut added = 0;
    for op in operations {
        let result = persisted_operation::Entity::insert(persisted_operation::ActiveModel {
            sha256: Set(sha256_hex(&op.document)),
            document: Set(op.document.clone()),
            name: Set(op.name.clone()),
            registered_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::column(persisted_operation::Column::Sha256)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
        added += result;
    }
    Ok(added)
}

/// The registered operations as an Apollo persisted-query manifest, oldest first.
pub async fn manifest(db: &DatabaseConnection) -> crate::error::Result<Json> {
    use sea_orm::QueryOrder;
    let rows = persisted_operation::Entity::find()
        .order_by_asc(persisted_operation::Column::RegisteredAt)
        .order_by_asc(persisted_operation::Column::Sha256)
        .all(db)
        .await?;
    let operations: Vec<Json> = rows
        .into_iter()
        .map(|row| {
            let kind = async_graphql::parser::parse_query(&row.document)
                .ok()
                .and_then(|doc| {
                    doc.operations
                        .iter()
                        .next()
                        .map(|(_, op)| match op.node.ty {
                            async_graphql::parser::types::OperationType::Query => "query",
                            async_graphql::parser::types::OperationType::Mutation => "mutation",
                            async_graphql::parser::types::OperationType::Subscription => {
                                "subscription"
                            }
                        })
                });
            serde_json::json!({
                "id": row.sha256,
                "name": row.name,
                "type": kind,
                "body": row.document,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": operations,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_documents_stay_within_their_budget() {
        let mut recent = Recent::default();
        let big: Arc<str> = Arc::from("x".repeat(RECENT_BYTES / 3 + 1).as_str());
        for i in 0..5 {
            recent.remember(format!("h{i}"), big.clone());
        }
        assert!(recent.bytes <= RECENT_BYTES);
        assert_eq!(recent.documents.len(), 2);
        assert!(recent.documents.contains_key("h4") && !recent.documents.contains_key("h0"));
    }

    #[test]
    fn a_hash_is_checked_and_lower_cased() {
        let ok = serde_json::json!({ "version": 1, "sha256Hash": "AB".repeat(32) });
        assert_eq!(requested_hash(&ok).unwrap(), "ab".repeat(32));
        let v2 = serde_json::json!({ "version": 2, "sha256Hash": "ab".repeat(32) });
        assert!(matches!(requested_hash(&v2), Err(Refused::Invalid(_))));
        let short = serde_json::json!({ "version": 1, "sha256Hash": "abc" });
        assert!(matches!(requested_hash(&short), Err(Refused::Invalid(_))));
    }

    #[test]
    fn files_of_operations_are_read_in_each_form() {
        let doc = "query A { serverTime }";
        let manifest = serde_json::json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [{ "id": sha256_hex(doc), "name": "A", "type": "query", "body": doc }],
        });
        let ops = operations_in(&manifest.to_string()).unwrap();
        assert_eq!(
            (ops[0].document.as_str(), ops[0].name.as_deref()),
            (doc, Some("A"))
        );
        let map = serde_json::json!({ sha256_hex(doc): doc });
        assert_eq!(operations_in(&map.to_string()).unwrap()[0].document, doc);
        let wrong = serde_json::json!({ "00": doc });
        assert!(operations_in(&wrong.to_string()).is_err());
        assert_eq!(operations_in(doc).unwrap()[0].document, doc);
    }
}
