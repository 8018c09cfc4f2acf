//! Checks on a document made once, when the request is prepared: before async-graphql
//! runs its own parse-time checks (its depth and directive limits walk every fragment
//! spread without memoizing, which is exactly the exponential work a chain of
//! fragments asks for), before validation, before anything resolves. The document is
//! parsed here once and handed on, so it is not parsed again. Over HTTP and WebSocket
//! alike:
//! - **fields after fragment expansion**, each fragment measured once (time linear in
//!   the document): over the budget → `QUERY_TOO_COMPLEX`;
//! - **aliases**, so one request cannot repeat a field (a sign-in, say) hundreds of
//!   times → `BAD_USER_INPUT`;
//! - **NUL characters** in any string of the document or the variables (PostgreSQL
//!   cannot store one, and no name, reason or filter of ours needs one) →
//!   `BAD_USER_INPUT`, naming where.
//!
//! Depth and complexity limits are async-graphql's own, after these.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    Positioned, ServerError, ServerResult,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest},
    parser::types::{Directive, ExecutableDocument, Selection, SelectionSet},
};
use async_graphql_value::{ConstValue, Value};

pub struct DocumentLimits {
    pub max_aliases: usize,
    /// Fields a document may ask for once its fragments are expanded.
    pub max_fields: usize,
}

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentLimitsExtension {
            max_aliases: self.max_aliases,
            max_fields: self.max_fields as u64,
        })
    }
}

struct DocumentLimitsExtension {
    max_aliases: usize,
    max_fields: u64,
}

#[async_trait::async_trait]
impl Extension for DocumentLimitsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        let bad = |message: String| Err(ServerError::new(message, None));
        for (name, value) in request.variables.iter() {
            if const_has_nul(value) {
                return bad(nul_message(&format!("variable `${name}`")));
            }
        }
        // A document that does not parse is left to the normal path, which says why.
        let Ok(document) = request.parsed_query() else {
            return next.run(ctx, request).await;
        };
        let fields = expanded_fields(document);
        if fields > self.max_fields {
            return Err(too_complex(fields, self.max_fields));
        }
        let walk = Walk::of(document);
        if walk.aliases > self.max_aliases {
            return bad(format!(
                "the document has {} aliases; at most {} are allowed",
                walk.aliases, self.max_aliases
            ));
        }
        if let Some(place) = walk.nul_at {
            return bad(nul_message(&place));
        }
        next.run(ctx, request).await
    }
}

fn nul_message(place: &str) -> String {
    format!("{place} contains a NUL character, which no text input accepts")
}

/// `QUERY_TOO_COMPLEX`, about the whole document (so no location: GraphQL's start at
/// 1:1).
fn too_complex(fields: u64, max: u64) -> ServerError {
    let message = if fields == u64::MAX {
        format!(
            "the document expands to more fields than can be counted; at most {max} are allowed"
        )
    } else {
        format!("the document expands to {fields} fields; at most {max} are allowed")
    };
    let mut error = async_graphql::Error::from(crate::error::Error::TooComplex(message))
        .into_server_error(async_graphql::Pos::default());
    error.locations.clear();
    error
}

/// One pass over every operation and fragment definition (each once, spreads not
/// followed): the aliases, and where the first NUL is.
#[derive(Default)]
struct Walk {
    aliases: usize,
    nul_at: Option<String>,
}

impl Walk {
    fn of(document: &ExecutableDocument) -> Self {
        let mut walk = Walk::default();
        for (_, operation) in document.operations.iter() {
            for var in &operation.node.variable_definitions {
                if var
                    .node
                    .default_value
                    .as_ref()
                    .is_some_and(|v| const_has_nul(&v.node))
                {
                    walk.nul(|| format!("the default of `${}`", var.node.name.node));
                }
            }
            walk.directives(&operation.node.directives, || "the operation".to_owned());
            walk.set(&operation.node.selection_set.node);
        }
        for (name, fragment) in document.fragments.iter() {
            walk.directives(&fragment.node.directives, || format!("fragment {name}"));
            walk.set(&fragment.node.selection_set.node);
        }
        walk
    }

    fn nul(&mut self, place: impl FnOnce() -> String) {
        if self.nul_at.is_none() {
            self.nul_at = Some(place());
        }
    }

    fn directives(&mut self, directives: &[Positioned<Directive>], place: impl Fn() -> String) {
        for d in directives {
            if d.node.arguments.iter().any(|(_, v)| value_has_nul(&v.node)) {
                self.nul(&place);
            }
        }
    }

    fn set(&mut self, set: &SelectionSet) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let f = &field.node;
                    self.aliases += usize::from(f.alias.is_some());
                    if f.arguments.iter().any(|(_, v)| value_has_nul(&v.node)) {
                        self.nul(|| format!("an argument of `{}`", f.name.node));
                    }
                    self.directives(&f.directives, || {
                        format!("a directive of `{}`", f.name.node)
                    });
                    self.set(&f.selection_set.node);
                }
                Selection::InlineFragment(inline) => {
                    self.directives(&inline.node.directives, || "an inline fragment".to_owned());
                    self.set(&inline.node.selection_set.node);
                }
                Selection::FragmentSpread(spread) => {
                    self.directives(&spread.node.directives, || {
                        format!("...{}", spread.node.fragment_name.node)
                    });
                }
            }
        }
    }
}

fn const_has_nul(value: &ConstValue) -> bool {
    match value {
        ConstValue::String(s) => s.contains('\0'),
        ConstValue::List(items) => items.iter().any(const_has_nul),
        ConstValue::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains('\0') || const_has_nul(v)),
        _ => false,
    }
}

/// A document value (variables in it are checked on their own).
fn value_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::List(items) => items.iter().any(value_has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains('\0') || value_has_nul(v)),
        _ => false,
    }
}

/// Fields of every operation with fragments expanded (saturating; a fragment cycle,
/// which validation refuses anyway, counts as unbounded), each fragment counted once.
pub fn expanded_fields(document: &ExecutableDocument) -> u64 {
    enum Memo {
        InProgress,
        Done(u64),
    }

    fn fragment(
        document: &ExecutableDocument,
        name: &str,
        memo: &mut HashMap<String, Memo>,
    ) -> u64 {
        match memo.get(name) {
            Some(Memo::Done(n)) => return *n,
            Some(Memo::InProgress) => return u64::MAX,
            None => {}
        }
        let Some(def) = document
            .fragments
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, f)| f)
        else {
            return 0; // unknown: validation names it
        };
        memo.insert(name.to_owned(), Memo::InProgress);
        let n = set(document, &def.node.selection_set.node, memo);
        memo.insert(name.to_owned(), Memo::Done(n));
        n
    }

    fn set(
        document: &ExecutableDocument,
        selection: &SelectionSet,
        memo: &mut HashMap<String, Memo>,
    ) -> u64 {
        selection.items.iter().fold(0u64, |sum, item| {
            let n = match &item.node {
                Selection::Field(field) => {
                    1u64.saturating_add(set(document, &field.node.selection_set.node, memo))
                }
                Selection::InlineFragment(inline) => {
                    set(document, &inline.node.selection_set.node, memo)
                }
                Selection::FragmentSpread(spread) => {
                    fragment(document, spread.node.fragment_name.node.as_str(), memo)
                }
            };
            sum.saturating_add(n)
        })
    }

    let mut memo = HashMap::new();
    document.operations.iter().fold(0u64, |sum, (_, op)| {
        sum.saturating_add(set(document, &op.node.selection_set.node, &mut memo))
    })
}

#[cfg(test)]
mod tests {
    use super::{Walk, expanded_fields};

    fn parse(doc: &str) -> async_graphql::parser::types::ExecutableDocument {
        async_graphql::parser::parse_query(doc).unwrap()
    }

    /// `query { ...F0 } fragment F0 { ...F1 ...F1 } … fragment Fn { serverTime }`.
    fn bomb(levels: usize) -> String {
        let mut doc = String::from("query { ...F0 }");
        for i in 0..levels {
            doc.push_str(&format!(
                " fragment F{i} on Query {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        doc.push_str(&format!(" fragment F{levels} on Query {{ serverTime }}"));
        doc
    }

    #[test]
    fn fragment_chains_are_counted_without_expanding_them() {
        let count = |doc: &str| expanded_fields(&parse(doc));
        assert_eq!(count("{ a b { c } }"), 3);
        assert_eq!(count("{ ...F ...F } fragment F on Query { a b }"), 4);
        assert_eq!(count(&bomb(10)), 1 << 10);
        assert_eq!(count(&bomb(60)), 1 << 60);
        assert_eq!(count(&bomb(100)), u64::MAX, "saturates");
        let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert_eq!(count(cycle), u64::MAX);
    }

    #[test]
    fn one_walk_counts_aliases_and_finds_nul() {
        let walk = Walk::of(&parse(
            r#"{ a: f(x: "ok") b: g { c: h(y: ["x", "n\u0000l"]) } ...F } fragment F on Q { d: i }"#,
        ));
        assert_eq!(walk.aliases, 4);
        assert_eq!(walk.nul_at.as_deref(), Some("an argument of `h`"));
        assert!(Walk::of(&parse("{ a }")).nul_at.is_none());
    }
}
