//! A limit on aliases per document, so one request cannot repeat a field (a sign-in,
//! say) hundreds of times. Depth and complexity limits are async-graphql's own.

use std::sync::Arc;

use async_graphql::{
    ServerError, ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery},
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
