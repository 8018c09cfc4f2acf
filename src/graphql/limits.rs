//! A limit on aliases per document, so one request cannot repeat a field (a sign-in,
//! say) hundreds of times. Depth and complexity limits are async-graphql's own.

use std::sync::Arc;

use async_graphql::{
    ServerError, ServerResult, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
    },
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};

pub struct AliasLimit(pub usize);

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AliasLimitExtension(self.0))
    }
}

struct AliasLimitExtension(usize);

#[async_trait::async_trait]
impl Extension for AliasLimitExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let mut aliases = 0;
        for (_, operation) in document.operations.iter() {
            aliases += count_aliases(&operation.node.selection_set.node);
        }
        for fragment in document.fragments.values() {
            aliases += count_aliases(&fragment.node.selection_set.node);
        }
        if aliases > self.0 {
            return Err(ServerError::new(
                format!(
                    "the document has {aliases} aliases; at most {} are allowed",
                    self.0
                ),
                None,
            ));
        }
        Ok(document)
    }
}

fn count_aliases(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(field.node.alias.is_some())
                    + count_aliases(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => count_aliases(&fragment.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Text in a request never carries a NUL character (`\u0000`): PostgreSQL cannot store
/// one in text, and no name, reason or filter of ours needs one. Checked once, here,
/// for every string in the document (arguments and directive arguments, variable
/// defaults) and in the variables, over HTTP and WebSocket alike, before anything
/// runs: BAD_USER_INPUT, naming where it was found.
pub struct NoNulText;

impl ExtensionFactory for NoNulText {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(NoNulText)
    }
}

#[async_trait::async_trait]
impl Extension for NoNulText {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let refuse = |place: String| {
            Err(ServerError::new(
                format!("{place} contains a NUL character, which no text input accepts"),
                None,
            ))
        };
        for (name, value) in variables.iter() {
            if const_has_nul(value) {
                return refuse(format!("variable `${name}`"));
            }
        }
        let document = next.run(ctx, query, variables).await?;
        for (_, operation) in document.operations.iter() {
            for var in &operation.node.variable_definitions {
                if var
                    .node
                    .default_value
                    .as_ref()
                    .is_some_and(|v| const_has_nul(&v.node))
                {
                    return refuse(format!("the default of `${}`", var.node.name.node));
                }
            }
            if let Some(field) = nul_in_selection(&operation.node.selection_set.node) {
                return refuse(format!("an argument of `{field}`"));
            }
        }
        for fragment in document.fragments.values() {
            if let Some(field) = nul_in_selection(&fragment.node.selection_set.node) {
                return refuse(format!("an argument of `{field}`"));
            }
        }
        Ok(document)
    }
}

fn const_has_nul(value: &async_graphql::Value) -> bool {
    use async_graphql::Value as V;
    match value {
        V::String(s) => s.contains('\0'),
        V::List(items) => items.iter().any(const_has_nul),
        V::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains('\0') || const_has_nul(v)),
        _ => false,
    }
}

/// Whether a document value (which may name variables, checked on their own) carries
/// a NUL. A macro, because the parser's non-constant value type is not exported.
macro_rules! value_has_nul {
    ($value:expr) => {
        $value
            .clone()
            .into_const_with(|_| Ok::<_, std::convert::Infallible>(async_graphql::Value::Null))
            .is_ok_and(|v| const_has_nul(&v))
    };
}

fn directives_have_nul(
    directives: &[async_graphql::Positioned<async_graphql::parser::types::Directive>],
) -> bool {
    directives
        .iter()
        .any(|d| d.node.arguments.iter().any(|(_, v)| value_has_nul!(v.node)))
}

/// The name of the first field whose arguments (or a directive's) carry a NUL.
fn nul_in_selection(set: &SelectionSet) -> Option<String> {
    set.items.iter().find_map(|item| match &item.node {
        Selection::Field(field) => {
            let f = &field.node;
            if f.arguments.iter().any(|(_, v)| value_has_nul!(v.node))
                || directives_have_nul(&f.directives)
            {
                Some(f.name.node.to_string())
            } else {
                nul_in_selection(&f.selection_set.node)
            }
        }
        Selection::InlineFragment(fragment) => {
            if directives_have_nul(&fragment.node.directives) {
                Some("an inline fragment".to_owned())
            } else {
                nul_in_selection(&fragment.node.selection_set.node)
            }
        }
        Selection::FragmentSpread(spread) => directives_have_nul(&spread.node.directives)
            .then(|| format!("...{}", spread.node.fragment_name.node)),
    })
}

/// The number of fields a document asks for once every fragment is expanded, computed
/// before the document is checked, validated or run, in time linear in its size: each
/// fragment's count is computed once (memoized), so a chain of fragments that each
/// spread the next twice costs a few microseconds to measure, not the exponential
/// work of expanding it. Over the limit: `QUERY_TOO_COMPLEX`.
pub struct FieldBudget(pub usize);

impl ExtensionFactory for FieldBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(FieldBudgetExtension(self.0 as u64))
    }
}

struct FieldBudgetExtension(u64);

#[async_trait::async_trait]
impl Extension for FieldBudgetExtension {
    /// Before async-graphql's own parse-time checks (its depth and directive limits
    /// walk every fragment spread without memoizing, which is the exponential work a
    /// fragment chain asks for): parse once, measure, refuse or hand the parsed
    /// document on so it is not parsed again.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        // A document that does not parse is left to the normal path, which says why.
        if let Ok(document) = request.parsed_query() {
            let fields = expanded_fields(document);
            if fields > self.0 {
                let message = if fields == u64::MAX {
                    format!(
                        "the document expands to more fields than can be counted; at most {} are allowed",
                        self.0
                    )
                } else {
                    format!(
                        "the document expands to {fields} fields; at most {} are allowed",
                        self.0
                    )
                };
                let mut error =
                    async_graphql::Error::from(crate::error::Error::TooComplex(message))
                        .into_server_error(async_graphql::Pos::default());
                // About the whole document: no location (GraphQL's start at 1:1).
                error.locations.clear();
                return Err(error);
            }
        }
        next.run(ctx, request).await
    }
}

/// Fields of every operation with fragments expanded (saturating; a fragment cycle,
/// which validation refuses anyway, counts as unbounded).
pub fn expanded_fields(document: &ExecutableDocument) -> u64 {
    use std::collections::HashMap;

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
    use super::expanded_fields;

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
        let count = |doc: &str| expanded_fields(&async_graphql::parser::parse_query(doc).unwrap());
        assert_eq!(count("{ a b { c } }"), 3);
        assert_eq!(count("{ ...F ...F } fragment F on Query { a b }"), 4);
        assert_eq!(count(&bomb(10)), 1 << 10);
        assert_eq!(count(&bomb(60)), 1 << 60);
        assert_eq!(count(&bomb(100)), u64::MAX, "saturates");
        let cycle = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert_eq!(count(cycle), u64::MAX);
    }
}
