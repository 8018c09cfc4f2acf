//! Checks on a document made once, when the request is prepared: before async-graphql
//! runs its own parse-time checks (its depth and directive limits walk every fragment
//! spread without memoizing, which is exactly the exponential work a chain of
//! fragments asks for), before validation, before anything resolves. The document is
//! parsed here once and handed on, so it is not parsed again. Over HTTP and WebSocket
//! alike:
//! - **the document's size**: more bytes than allowed → `QUERY_TOO_COMPLEX` before it
//!   is parsed (parsing is linear in it);
//! - **fields after fragment expansion**, each fragment measured once (time linear in
//!   the document), plain and weighed by page sizes: over either budget →
//!   `QUERY_TOO_COMPLEX`;
//! - **aliases**, so one request cannot repeat a field (a sign-in, say) hundreds of
//!   times → `BAD_USER_INPUT`;
//! - **NUL characters** in any string of the document or the variables (PostgreSQL
//!   cannot store one, and no name, reason or filter of ours needs one) →
//!   `BAD_USER_INPUT`, naming where.
//!
//! Depth and complexity limits are async-graphql's own, after these.

use std::collections::HashMap;

use async_graphql::{
    Positioned, ServerError, ServerResult, Variables,
    extensions::ExtensionContext,
    parser::types::{Directive, ExecutableDocument, Field, OperationType, Selection, SelectionSet},
    registry::{MetaTypeName, Registry},
};
use async_graphql_value::{ConstValue, Value};

#[derive(Clone, Copy)]
pub struct DocumentLimits {
    /// The document's text, before it is parsed (tokens are at most this many).
    pub max_bytes: usize,
    pub max_aliases: usize,
    /// Fields a document may ask for once its fragments are expanded.
    pub max_fields: u64,
    /// The same fields weighed by the pages they ask for ([`Measure::cost`]).
    pub max_cost: u64,
    /// A connection's page when the document names none, and the largest one.
    pub default_page: u64,
    pub max_page: u64,
}

impl DocumentLimits {
    /// Refuses a request over any limit before it is parsed for execution (the
    /// [`edge`](super::edge) extension's `prepare_request`); hands it back otherwise.
    pub fn check(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: async_graphql::Request,
    ) -> ServerResult<async_graphql::Request> {
        let bad = |message: String| Err(ServerError::new(message, None));
        if request.query.len() > self.max_bytes {
            return Err(too_complex(
                request.query.len() as u64,
                self.max_bytes as u64,
                "bytes of document text",
            ));
        }
        for (name, value) in request.variables.iter() {
            if const_has_nul(value) {
                return bad(nul_message(&format!("variable `${name}`")));
            }
        }
        // A document that does not parse is left to the normal path, which says why.
        // (The variables step aside while the document is borrowed, then come back.)
        let variables = std::mem::take(&mut request.variables);
        let Ok(document) = request.parsed_query() else {
            request.variables = variables;
            return Ok(request);
        };
        let measured = measure(
            document,
            &Weights {
                registry: Some(&ctx.schema_env.registry),
                variables: Some(&variables),
                default_page: self.default_page,
                max_page: self.max_page,
            },
        );
        if measured.fields > self.max_fields {
            return Err(too_complex(measured.fields, self.max_fields, "fields"));
        }
        if measured.cost > self.max_cost {
            return Err(too_complex(
                measured.cost,
                self.max_cost,
                "fields once connections are weighed by their page size",
            ));
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
        request.variables = variables;
        Ok(request)
    }
}

fn nul_message(place: &str) -> String {
    format!("{place} contains a NUL character, which no text input accepts")
}

/// `QUERY_TOO_COMPLEX`, about the whole document (so no location: GraphQL's start at
/// 1:1).
fn too_complex(measured: u64, max: u64, what: &str) -> ServerError {
    let message = if measured == u64::MAX {
        format!(
            "the document expands to more {what} than can be counted; at most {max} are allowed"
        )
    } else {
        format!("the document expands to {measured} {what}; at most {max} are allowed")
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

/// `query { ...F0 } fragment F0 on Query { ...F1 ...F1 } … fragment Fn on Query {
/// serverTime }`: about a kilobyte at 24 levels that expands to 2^n fields, the shape
/// these limits were built against (the tests and the `document_limits` bench send it).
pub fn fragment_chain(levels: usize) -> String {
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

/// What a document asks for once its fragments are expanded (saturating; a fragment
/// cycle, which validation refuses anyway, counts as unbounded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measure {
    /// Fields, each counted once per place it appears.
    pub fields: u64,
    /// Fields weighed by list size: what a connection field asks for is counted once
    /// per item of the page it asks for (`first`/`last`, else the default page size,
    /// never more than the largest page).
    pub cost: u64,
}

impl Measure {
    const UNBOUNDED: Measure = Measure {
        fields: u64::MAX,
        cost: u64::MAX,
    };

    fn plus(self, other: Measure) -> Measure {
        Measure {
            fields: self.fields.saturating_add(other.fields),
            cost: self.cost.saturating_add(other.cost),
        }
    }
}

/// What weighing needs beyond the document: the schema's types (which fields are
/// connections), the request's variables (`first: $n`), and the page sizes.
pub struct Weights<'a> {
    pub registry: Option<&'a Registry>,
    pub variables: Option<&'a Variables>,
    pub default_page: u64,
    pub max_page: u64,
}

impl Weights<'_> {
    /// Fields only: every multiplier is 1.
    pub const UNWEIGHTED: Weights<'static> = Weights {
        registry: None,
        variables: None,
        default_page: 1,
        max_page: 1,
    };

    /// The field's type (named, without list or non-null) on `parent`, if known.
    fn field_type(&self, parent: Option<&str>, field: &str) -> Option<&str> {
        let meta = self.registry?.types.get(parent?)?.field_by_name(field)?;
        Some(MetaTypeName::concrete_typename(&meta.ty))
    }

    /// How many times a field's selection is produced per occurrence of the field.
    fn multiplier(&self, field: &Field, ty: Option<&str>) -> u64 {
        if !ty.is_some_and(|t| t.ends_with("Connection")) {
            return 1;
        }
        let argument = |name: &str| {
            field.get_argument(name).and_then(|v| match &v.node {
                Value::Number(n) => n.as_u64(),
                Value::Variable(var) => {
                    self.variables
                        .and_then(|vars| vars.get(var))
                        .and_then(|v| match v {
                            ConstValue::Number(n) => n.as_u64(),
                            _ => None,
                        })
                }
                _ => None,
            })
        };
        argument("first")
            .or_else(|| argument("last"))
            .unwrap_or(self.default_page)
            .min(self.max_page)
            .max(1)
    }
}

/// Measures every operation of `document`, each fragment once (time linear in the
/// document's size, however often its fragments are spread).
pub fn measure(document: &ExecutableDocument, weights: &Weights<'_>) -> Measure {
    enum Memo {
        InProgress,
        Done(Measure),
    }

    struct Walker<'a, 'w> {
        document: &'a ExecutableDocument,
        weights: &'a Weights<'w>,
        memo: HashMap<&'a str, Memo>,
    }

    impl<'a> Walker<'a, '_> {
        fn fragment(&mut self, name: &'a str) -> Measure {
            match self.memo.get(name) {
                Some(Memo::Done(m)) => return *m,
                Some(Memo::InProgress) => return Measure::UNBOUNDED,
                None => {}
            }
            let Some(def) = self
                .document
                .fragments
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, f)| f)
            else {
                return Measure::default(); // unknown: validation names it
            };
            self.memo.insert(name, Memo::InProgress);
            let on = def.node.type_condition.node.on.node.as_str();
            let m = self.set(&def.node.selection_set.node, Some(on));
            self.memo.insert(name, Memo::Done(m));
            m
        }

        fn set(&mut self, selection: &'a SelectionSet, parent: Option<&'a str>) -> Measure {
            selection
                .items
                .iter()
                .fold(Measure::default(), |sum, item| {
                    let m = match &item.node {
                        Selection::Field(field) => {
                            let f = &field.node;
                            let ty = self.weights.field_type(parent, f.name.node.as_str());
                            let children = self.set(&f.selection_set.node, ty);
                            let times = self.weights.multiplier(f, ty);
                            Measure {
                                fields: 1u64.saturating_add(children.fields),
                                cost: 1u64.saturating_add(children.cost.saturating_mul(times)),
                            }
                        }
                        Selection::InlineFragment(inline) => {
                            let on = inline
                                .node
                                .type_condition
                                .as_ref()
                                .map(|c| c.node.on.node.as_str())
                                .or(parent);
                            self.set(&inline.node.selection_set.node, on)
                        }
                        Selection::FragmentSpread(spread) => {
                            self.fragment(spread.node.fragment_name.node.as_str())
                        }
                    };
                    sum.plus(m)
                })
        }
    }

    let mut walker = Walker {
        document,
        weights,
        memo: HashMap::new(),
    };
    document
        .operations
        .iter()
        .fold(Measure::default(), |sum, (_, op)| {
            let root = weights.registry.and_then(|r| match op.node.ty {
                OperationType::Query => Some(r.query_type.as_str()),
                OperationType::Mutation => r.mutation_type.as_deref(),
                OperationType::Subscription => r.subscription_type.as_deref(),
            });
            sum.plus(walker.set(&op.node.selection_set.node, root))
        })
}

#[cfg(test)]
mod tests {
    use super::{Walk, Weights, measure};

    fn expanded_fields(document: &async_graphql::parser::types::ExecutableDocument) -> u64 {
        measure(document, &Weights::UNWEIGHTED).fields
    }

    fn parse(doc: &str) -> async_graphql::parser::types::ExecutableDocument {
        async_graphql::parser::parse_query(doc).unwrap()
    }

    use super::fragment_chain as bomb;

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

    /// Random documents through the whole front of the schema the server runs (its
    /// limits, parser, validation; resolvers that need the database answer with an
    /// error): none panics, none takes long, and every one the walk measures over a
    /// budget is refused with QUERY_TOO_COMPLEX. A fixed number of cases, so a bounded
    /// time in CI (`PROPTEST_CASES` raises it for a longer local run).
    mod generated {
        use super::super::{Measure, Weights, measure};
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Item {
            Field {
                name: &'static str,
                alias: Option<u8>,
                first: Option<u16>,
                children: Vec<Item>,
            },
            Spread(u8),
            Inline(Vec<Item>),
        }

        const FIELDS: &[&str] = &[
            "serverTime",
            "viewer",
            "escrows",
            "users",
            "edges",
            "node",
            "id",
            "email",
            "milestones",
            "proofs",
            "payments",
            "events",
            "__typename",
            "tenant",
            "slug",
            "noSuchField",
        ];

        fn item() -> impl Strategy<Value = Item> {
            let leaf = prop_oneof![
                (0..FIELDS.len(), proptest::option::of(0u8..40)).prop_map(|(f, alias)| {
                    Item::Field {
                        name: FIELDS[f],
                        alias,
                        first: None,
                        children: vec![],
                    }
                }),
                (0u8..8).prop_map(Item::Spread),
            ];
            leaf.prop_recursive(6, 64, 6, |inner| {
                prop_oneof![
                    (
                        0..FIELDS.len(),
                        proptest::option::of(0u8..40),
                        proptest::option::of(0u16..300),
                        proptest::collection::vec(inner.clone(), 1..6),
                    )
                        .prop_map(|(f, alias, first, children)| Item::Field {
                            name: FIELDS[f],
                            alias,
                            first,
                            children,
                        }),
                    proptest::collection::vec(inner, 1..6).prop_map(Item::Inline),
                ]
            })
        }

        fn render(items: &[Item], out: &mut String) {
            out.push_str("{ ");
            for item in items {
                match item {
                    Item::Field {
                        name,
                        alias,
                        first,
                        children,
                    } => {
                        if let Some(a) = alias {
                            out.push_str(&format!("a{a}: "));
                        }
                        out.push_str(name);
                        if let Some(n) = first {
                            out.push_str(&format!("(first: {n})"));
                        }
                        out.push(' ');
                        if !children.is_empty() {
                            render(children, out);
                        }
                    }
                    Item::Spread(f) => out.push_str(&format!("...F{f} ")),
                    Item::Inline(children) => {
                        out.push_str("... on Query ");
                        render(children, out);
                    }
                }
            }
            out.push_str("} ");
        }

        fn document() -> impl Strategy<Value = String> {
            (
                proptest::collection::vec(item(), 1..6),
                proptest::collection::vec(proptest::collection::vec(item(), 1..4), 0..8),
            )
                .prop_map(|(operation, fragments)| {
                    let mut doc = String::from("query ");
                    render(&operation, &mut doc);
                    for (i, body) in fragments.iter().enumerate() {
                        doc.push_str(&format!("fragment F{i} on Query "));
                        render(body, &mut doc);
                    }
                    doc
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn no_document_panics_stalls_or_passes_a_budget(doc in document()) {
                let config = crate::config::Config::from_lookup(|_| None).expect("defaults");
                let limits = &config.graphql;
                let schema = crate::graphql::with_limits(limits, true).finish();
                // Fields need no types (the schema's registry, which weighs pages, is
                // async-graphql's own; the page weights have their HTTP test).
                let measured = async_graphql::parser::parse_query(&doc)
                    .ok()
                    .map(|d| measure(&d, &Weights::UNWEIGHTED));
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let started = std::time::Instant::now();
                let response = runtime.block_on(schema.execute(doc.as_str()));
                let took = started.elapsed();
                prop_assert!(took < std::time::Duration::from_secs(2), "{took:?} for {doc}");
                if let Some(Measure { fields, .. }) = measured
                    && fields > limits.max_complexity as u64
                {
                    let code = response.errors.first().and_then(|e| e.extensions.as_ref()).and_then(|x| x.get("code")).cloned();
                    prop_assert_eq!(code, Some(async_graphql::Value::from("QUERY_TOO_COMPLEX")), "{}", doc);
                }
            }
        }
    }
}
