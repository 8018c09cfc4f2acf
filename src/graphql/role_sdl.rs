//! `sequestra schema --role ROLE`: the SDL a role sees, built from introspection run
//! as that role (so it shows exactly what `visible` lets through).

use std::fmt::Write;

use serde_json::Value;

use super::context::RequestContext;
use crate::{
    audit::Origin,
    auth::{Principal, Role},
};

const INTROSPECTION: &str = r#"{ __schema {
  queryType { name } mutationType { name } subscriptionType { name }
  types { kind name
    fields { name args { name defaultValue type { ...T } } type { ...T } }
    inputFields { name defaultValue type { ...T } }
    interfaces { name } enumValues { name } possibleTypes { name } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }"#;

/// The principal introspection runs as: `None` is anonymous.
fn principal(role: Option<Role>) -> Principal {
    role.map_or(Principal::Anonymous, super::access::role_principal)
}

/// The SDL `role` (or an anonymous caller) sees, types sorted by name.
pub async fn sdl_for(role: Option<Role>) -> anyhow::Result<String> {
    let schema = super::builder().finish();
    let request = async_graphql::Request::new(INTROSPECTION).data(RequestContext::new(
        principal(role),
        None,
        Origin::default(),
        None,
    ));
    let response = schema.execute(request).await;
    if !response.errors.is_empty() {
        anyhow::bail!("introspection failed: {:?}", response.errors);
    }
    let json = serde_json::to_value(&response.data)?;
    Ok(print(&json["__schema"]))
}

fn type_ref(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", type_ref(&t["ofType"])),
        Some("LIST") => format!("[{}]", type_ref(&t["ofType"])),
        _ => t["name"].as_str().unwrap_or_default().to_owned(),
    }
}

fn args(field: &Value) -> String {
    let list: Vec<String> = field["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let mut s = format!(
                "{}: {}",
                a["name"].as_str().unwrap_or_default(),
                type_ref(&a["type"])
            );
            if let Some(d) = a["defaultValue"].as_str() {
                let _ = write!(s, " = {d}");
            }
            s
        })
        .collect();
    if list.is_empty() {
        String::new()
    } else {
        format!("({})", list.join(", "))
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect()
}

fn print(schema: &Value) -> String {
    const BUILT_IN: [&str; 5] = ["String", "Int", "Float", "Boolean", "ID"];
    let mut types: Vec<&Value> = schema["types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            let name = t["name"].as_str().unwrap_or_default();
            !name.starts_with("__") && !BUILT_IN.contains(&name)
        })
        .collect();
    types.sort_by_key(|t| t["name"].as_str().unwrap_or_default().to_owned());
    let mut out = String::new();
    for t in types {
        let name = t["name"].as_str().unwrap_or_default();
        let fields = t["fields"].as_array().cloned().unwrap_or_default();
        let kind = t["kind"].as_str().unwrap_or_default();
        if matches!(kind, "OBJECT" | "INTERFACE") && fields.is_empty() {
            continue; // nothing of it is visible
        }
        match kind {
            "SCALAR" => {
                let _ = writeln!(out, "scalar {name}\n");
            }
            "ENUM" => {
                let _ = writeln!(out, "enum {name} {{");
                for v in names(&t["enumValues"]) {
                    let _ = writeln!(out, "  {v}");
                }
                out.push_str("}\n\n");
            }
            "UNION" => {
                let _ = writeln!(
                    out,
                    "union {name} = {}\n",
                    names(&t["possibleTypes"]).join(" | ")
                );
            }
            "INPUT_OBJECT" => {
                let _ = writeln!(out, "input {name} {{");
                for f in t["inputFields"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "  {}: {}",
                        f["name"].as_str().unwrap_or_default(),
                        type_ref(&f["type"])
                    );
                }
                out.push_str("}\n\n");
            }
            _ => {
                let keyword = if kind == "INTERFACE" {
                    "interface"
                } else {
                    "type"
                };
                let interfaces = names(&t["interfaces"]);
                let implements = if interfaces.is_empty() {
                    String::new()
                } else {
                    format!(" implements {}", interfaces.join(" & "))
                };
                let _ = writeln!(out, "{keyword} {name}{implements} {{");
                for f in &fields {
                    let _ = writeln!(
                        out,
                        "  {}{}: {}",
                        f["name"].as_str().unwrap_or_default(),
                        args(f),
                        type_ref(&f["type"])
                    );
                }
                out.push_str("}\n\n");
            }
        }
    }
    out
}
