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

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    sync::{Arc, Mutex},
};

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

/// One field of an object as the document asks for it: its response key, its declared
/// type on the object (`Escrow!`, `[Payment!]!`…, when known), and every selection set
/// merged under that key (fragments included).
struct Wanted<'d> {
    key: &'d str,
    ty: Option<&'d str>,
    sets: Vec<&'d SelectionSet>,
}

/// The fields `sets` ask for, in the order of their first mention, fragments expanded
/// (each fragment followed once per level: a spread already met adds nothing new),
/// each with its declared type on `parent`.
fn collect<'d>(
    registry: &'d Registry,
    document: &'d ExecutableDocument,
    sets: &[&'d SelectionSet],
    parent: Option<&str>,
) -> Vec<Wanted<'d>> {
    fn walk<'d>(
        document: &'d ExecutableDocument,
        set: &'d SelectionSet,
        out: &mut Vec<(Wanted<'d>, &'d str)>,
        seen: &mut Vec<&'d str>,
    ) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let f = &field.node;
                    let key = f.response_key().node.as_str();
                    match out.iter_mut().find(|(w, _)| w.key == key) {
                        Some((w, _)) => w.sets.push(&f.selection_set.node),
                        None => out.push((
                            Wanted {
                                key,
                                ty: None,
                                sets: vec![&f.selection_set.node],
                            },
                            f.name.node.as_str(),
                        )),
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
    let object = parent.and_then(|parent| registry.types.get(parent));
    out.into_iter()
        .map(|(mut wanted, name)| {
            wanted.ty = if name == "__typename" {
                Some("String!")
            } else {
                object
                    .and_then(|o| o.field_by_name(name))
                    .map(|f| f.ty.as_str())
            };
            wanted
        })
        .collect()
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
        wanted: RefCell::default(),
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
    /// The fields each (selection sets, object type) asks for, collected once: the
    /// items of a list share them.
    wanted: RefCell<WantedBySets<'a>>,
}

/// [`Wanted`] fields by the selection sets (their addresses) and the object's type.
type WantedBySets<'a> = HashMap<(Vec<usize>, Option<&'a str>), Rc<[Wanted<'a>]>>;

impl<'a> Shaper<'a> {
    fn errored_at(&self, path: &[PathSegment]) -> bool {
        self.errors.contains(&path)
    }

    /// Whether paths are followed: only errors have one to compare with.
    fn tracks_paths(&self) -> bool {
        !self.errors.is_empty()
    }

    /// `f` with `segment` on the path (made and pushed only when paths are followed).
    fn at<R>(
        &self,
        path: &mut Vec<PathSegment>,
        segment: impl FnOnce() -> PathSegment,
        f: impl FnOnce(&mut Vec<PathSegment>) -> R,
    ) -> R {
        if !self.tracks_paths() {
            return f(path);
        }
        path.push(segment());
        let result = f(path);
        path.pop();
        result
    }

    /// The fields `sets` ask for of an object of type `parent`.
    fn wanted(&self, sets: &[&'a SelectionSet], parent: Option<&'a str>) -> Rc<[Wanted<'a>]> {
        let key = (
            sets.iter()
                .map(|s| std::ptr::from_ref::<SelectionSet>(s) as usize)
                .collect(),
            parent,
        );
        if let Some(found) = self.wanted.borrow().get(&key) {
            return found.clone();
        }
        let wanted: Rc<[Wanted<'a>]> = collect(self.registry, self.document, sets, parent).into();
        self.wanted.borrow_mut().insert(key, wanted.clone());
        wanted
    }

    /// Shapes one object; `None` when a non-null field of it failed, so it must be
    /// null itself.
    fn object(
        &self,
        value: Value,
        sets: &[&'a SelectionSet],
        parent: Option<&'a str>,
        path: &mut Vec<PathSegment>,
    ) -> Option<Value> {
        let Value::Object(mut map) = value else {
            return Some(value);
        };
        let wanted = self.wanted(sets, parent);
        // Without errors nothing is missing to be made null: an object whose fields
        // already came back in the document's order is shaped where it is.
        if !self.tracks_paths()
            && map.len() == wanted.len()
            && map
                .keys()
                .zip(wanted.iter())
                .all(|(k, w)| k.as_str() == w.key)
        {
            for ((_, slot), w) in map.iter_mut().zip(wanted.iter()) {
                let value = std::mem::take(slot);
                *slot = self.value(value, &w.sets, w.ty, path)?;
            }
            return Some(Value::Object(map));
        }
        let mut shaped = IndexMap::with_capacity(map.len());
        for w in wanted.iter() {
            let field = || PathSegment::Field(w.key.to_owned());
            let outcome = self.at(path, field, |path| match map.shift_remove(w.key) {
                Some(value) => Some(self.value(value, &w.sets, w.ty, path)),
                // Absent and errored: null here, or the object's own null if the
                // field may not be null.
                None if self.errored_at(path) => Some(Self::null_for(w.ty)),
                // Absent without an error: skipped, or of a fragment that did not
                // apply.
                None => None,
            });
            match outcome {
                Some(Some(value)) => {
                    shaped.insert(Name::new(w.key), value);
                }
                Some(None) => return None,
                None => {}
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
        sets: &[&'a SelectionSet],
        ty: Option<&'a str>,
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
                    let shaped = self.at(
                        path,
                        || PathSegment::Index(index),
                        |path| self.value(item, sets, item_ty, path),
                    );
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

#[cfg(test)]
mod tests {
    use async_graphql::{OutputType, SimpleObject, parser::parse_query};
    use serde_json::{Value as Json, json};

    use super::*;

    #[derive(SimpleObject)]
    struct Item {
        x: i32,
        y: Option<i32>,
    }

    #[derive(SimpleObject)]
    struct Root {
        name: String,
        items: Vec<Item>,
        maybe: Option<Item>,
        must: Item,
    }

    fn registry() -> Registry {
        let mut registry = Registry::default();
        <Root as OutputType>::create_type_info(&mut registry);
        registry.query_type = "Root".to_owned();
        registry
    }

    /// `data` (JSON text: its objects' keys in the order written) shaped for `query`,
    /// with errors at `errors`; the result as JSON text, in the response's order.
    fn shaped(query: &str, data: &str, errors: &[Json]) -> String {
        let document = parse_query(query).unwrap();
        let mut response = Response::new(serde_json::from_str::<Value>(data).unwrap());
        for path in errors {
            let mut error = ServerError::new("failed", None);
            error.path = serde_json::from_value(path.clone()).unwrap();
            response.errors.push(error);
        }
        reshape(&registry(), &document, None, &mut response);
        serde_json::to_string(&response.data).unwrap()
    }

    #[test]
    fn objects_take_the_documents_order_at_every_level() {
        // The root already in order, the list's items not: each item is reordered.
        let query = "{ name items { y x } must { x } }";
        let data = r#"{ "name": "n", "items": [{ "x": 1, "y": 2 }, { "y": 4, "x": 3 }], "must": { "x": 5 } }"#;
        assert_eq!(
            shaped(query, data, &[]),
            r#"{"name":"n","items":[{"y":2,"x":1},{"y":4,"x":3}],"must":{"x":5}}"#
        );
        // The root out of order, its objects in order.
        let data = r#"{ "must": { "x": 5 }, "items": [{ "y": 2, "x": 1 }], "name": "n" }"#;
        assert_eq!(
            shaped(query, data, &[]),
            r#"{"name":"n","items":[{"y":2,"x":1}],"must":{"x":5}}"#
        );
    }

    #[test]
    fn fragments_merge_at_their_first_mention() {
        let query = "{ must { x } ...F } fragment F on Root { name must { y } }";
        let data = r#"{ "name": "n", "must": { "y": 2, "x": 1 } }"#;
        assert_eq!(
            shaped(query, data, &[]),
            r#"{"must":{"x":1,"y":2},"name":"n"}"#
        );
    }

    #[test]
    fn failed_fields_become_null_up_to_the_nearest_nullable_one() {
        // A nullable field that failed is null in its place.
        let query = "{ name maybe { x } items { x y } }";
        let data = r#"{ "name": "n", "items": [{ "x": 1 }, { "x": 2, "y": 3 }] }"#;
        assert_eq!(
            shaped(query, data, &[json!(["maybe"]), json!(["items", 0, "y"])]),
            r#"{"name":"n","maybe":null,"items":[{"x":1,"y":null},{"x":2,"y":3}]}"#
        );
        // A non-null one makes its parent null; a non-null root field, `data`.
        let query = "{ name maybe { x } }";
        let data = r#"{ "name": "n", "maybe": {} }"#;
        assert_eq!(
            shaped(query, data, &[json!(["maybe", "x"])]),
            r#"{"name":"n","maybe":null}"#
        );
        let query = "{ name must { x } }";
        let data = r#"{ "name": "n" }"#;
        assert_eq!(shaped(query, data, &[json!(["must"])]), "null");
    }
}
