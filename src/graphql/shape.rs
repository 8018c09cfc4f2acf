//! Responses shaped as the GraphQL spec says (§6.3 and §6.4.4), where async-graphql 7
//! does not: its executor inserts each field into the result when the field's future
//! finishes (so fields come back in completion order) and leaves an errored field out
//! of its object (where the spec makes it `null`, or, when the field is non-null, its
//! parent `null`, up to the nearest nullable field; or `data` itself).
//!
//! The edge extension keeps the executed document and, once the operation has run (each
//! response of a subscription too), walks the result once against it: every object's
//! fields are put in the order the document asked for them (fields merged from
//! fragments take the place of their first mention), and every field with an error at
//! its path that is missing from its object becomes `null`, propagated by the field's
//! type as §6.4.4 says. Time linear in the size of the response.

use std::sync::{Arc, Mutex};

use async_graphql::{
    Name, PathSegment, Response, ServerError, Value,
    extensions::ExtensionContext,
    indexmap::IndexMap,
    parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet},
    registry::{MetaTypeName, Registry},
};

/// The executed document of one request, once parsed (shared with a subscription's
/// stream, which outlives the hook that keeps it). The [`edge`](super::edge)
/// extension keeps it at `parse_query` and shapes each response with it.
#[derive(Default)]
pub struct Kept {
    document: Arc<Mutex<Option<Arc<ExecutableDocument>>>>,
}

impl Kept {
    pub fn keep(&self, document: &ExecutableDocument) {
        *self.document.lock().expect("shape lock") = Some(Arc::new(document.clone()));
    }

    /// Shapes an operation's response.
    pub fn shape(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        response: &mut Response,
    ) {
        let document = self.document.lock().expect("shape lock").clone();
        if let Some(document) = document {
            reshape(
                &ctx.schema_env.registry,
                &document,
                operation_name,
                response,
            );
        }
    }

    /// What shapes each response of a subscription's stream (the document is
    /// parsed by the time one flows).
    pub fn shaper(&self, ctx: &ExtensionContext<'_>) -> impl Fn(&mut Response) + Send + use<> {
        let schema = ctx.schema_env.clone();
        let document = self.document.clone();
        move |response| {
            if let Some(doc) = document.lock().expect("shape lock").clone() {
                reshape(&schema.registry, &doc, None, response);
            }
        }
    }
}

/// One field of an object as the document asks for it: its response key, the field's
/// name, and every selection set merged under that key (fragments included).
struct Wanted<'d> {
    key: &'d str,
    name: &'d str,
    sets: Vec<&'d SelectionSet>,
}

/// The fields `sets` ask for, in the order of their first mention, fragments expanded
/// (each fragment followed once per level: a spread already met adds nothing new).
fn collect<'d>(document: &'d ExecutableDocument, sets: &[&'d SelectionSet]) -> Vec<Wanted<'d>> {
    fn walk<'d>(
        document: &'d ExecutableDocument,
        set: &'d SelectionSet,
        out: &mut Vec<Wanted<'d>>,
        seen: &mut Vec<&'d str>,
    ) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let f = &field.node;
                    let key = f.response_key().node.as_str();
                    match out.iter_mut().find(|w| w.key == key) {
                        Some(w) => w.sets.push(&f.selection_set.node),
                        None => out.push(Wanted {
                            key,
                            name: f.name.node.as_str(),
                            sets: vec![&f.selection_set.node],
                        }),
                    }
                }
                Selection::InlineFragment(inline) => {
                    walk(document, &inline.node.selection_set.node, out, seen)
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if seen.contains(&name) {
                        continue;
                    }
                    seen.push(name);
                    if let Some((_, fragment)) =
                        document.fragments.iter().find(|(n, _)| n.as_str() == name)
                    {
                        walk(document, &fragment.node.selection_set.node, out, seen);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for set in sets {
        walk(document, set, &mut out, &mut seen);
    }
    out
}

fn reshape(
    registry: &Registry,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    response: &mut Response,
) {
    let operation = match operation_name {
        Some(name) => document
            .operations
            .iter()
            .find(|(n, _)| n.map(|n| n.as_str()) == Some(name)),
        None => {
            let mut all = document.operations.iter();
            match (all.next(), all.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    };
    let Some((_, operation)) = operation else {
        return;
    };
    if matches!(response.data, Value::Null) {
        return;
    }
    let root = match operation.node.ty {
        OperationType::Query => Some(registry.query_type.as_str()),
        OperationType::Mutation => registry.mutation_type.as_deref(),
        OperationType::Subscription => registry.subscription_type.as_deref(),
    };
    let errors: Vec<&[PathSegment]> = response
        .errors
        .iter()
        .map(|e: &ServerError| e.path.as_slice())
        .filter(|p| !p.is_empty())
        .collect();
    let shaper = Shaper {
        registry,
        document,
        errors,
    };
    let mut path = Vec::new();
    let data = std::mem::take(&mut response.data);
    response.data =
        match shaper.object(data, &[&operation.node.selection_set.node], root, &mut path) {
            Some(data) => data,
            // A non-null root field failed: `data` is null (§6.4.4).
            None => Value::Null,
        };
}

struct Shaper<'a> {
    registry: &'a Registry,
    document: &'a ExecutableDocument,
    /// Paths of the errors that have one.
    errors: Vec<&'a [PathSegment]>,
}

impl Shaper<'_> {
    fn errored_at(&self, path: &[PathSegment]) -> bool {
        self.errors.contains(&path)
    }

    /// The field's declared type (`Escrow!`, `[Payment!]!`…) on `parent`, if known.
    fn field_type(&self, parent: Option<&str>, field: &str) -> Option<&str> {
        if field == "__typename" {
            return Some("String!");
        }
        let meta = self.registry.types.get(parent?)?.field_by_name(field)?;
        Some(meta.ty.as_str())
    }

    /// Shapes one object; `None` when a non-null field of it failed, so it must be
    /// null itself.
    fn object(
        &self,
        value: Value,
        sets: &[&SelectionSet],
        parent: Option<&str>,
        path: &mut Vec<PathSegment>,
    ) -> Option<Value> {
        let Value::Object(mut map) = value else {
            return Some(value);
        };
        let wanted = collect(self.document, sets);
        let mut shaped = IndexMap::with_capacity(map.len());
        for w in &wanted {
            let ty = self.field_type(parent, w.name);
            path.push(PathSegment::Field(w.key.to_owned()));
            let outcome = match map.shift_remove(w.key) {
                Some(value) => self.value(value, &w.sets, ty, path),
                // Absent and errored: null here, or the object's own null if the
                // field may not be null.
                None if self.errored_at(path) => Self::null_for(ty),
                // Absent without an error: skipped, or of a fragment that did not
                // apply.
                None => {
                    path.pop();
                    continue;
                }
            };
            path.pop();
            match outcome {
                Some(value) => {
                    shaped.insert(Name::new(w.key), value);
                }
                None => return None,
            }
        }
        // Anything the document walk did not name (never expected) keeps its place
        // at the end rather than being lost.
        shaped.extend(map);
        Some(Value::Object(shaped))
    }

    /// A value of declared type `ty`: `None` when it must become its parent's null.
    fn value(
        &self,
        value: Value,
        sets: &[&SelectionSet],
        ty: Option<&str>,
        path: &mut Vec<PathSegment>,
    ) -> Option<Value> {
        let inner = ty.map(|t| t.strip_suffix('!').unwrap_or(t));
        let shaped = match value {
            Value::Object(_) => {
                let named = inner.map(MetaTypeName::concrete_typename);
                self.object(value, sets, named, path)
            }
            Value::List(items) => {
                let item_ty = inner.and_then(|t| t.strip_prefix('[')?.strip_suffix(']'));
                let mut out = Vec::with_capacity(items.len());
                let mut failed = false;
                for (index, item) in items.into_iter().enumerate() {
                    path.push(PathSegment::Index(index));
                    let shaped = self.value(item, sets, item_ty, path);
                    path.pop();
                    match shaped {
                        Some(v) => out.push(v),
                        None => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed { None } else { Some(Value::List(out)) }
            }
            other => Some(other),
        };
        match shaped {
            Some(v) => Some(v),
            None => Self::null_for(ty),
        }
    }

    /// `null` for a field of type `ty` that failed: itself when nullable (or of an
    /// unknown type), else `None`: its parent's null.
    fn null_for(ty: Option<&str>) -> Option<Value> {
        match ty {
            Some(t) if t.ends_with('!') => None,
            _ => Some(Value::Null),
        }
    }
}
