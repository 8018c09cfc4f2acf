//! `sequestra schema --role ROLE`: the SDL a role sees, built from introspection run
//! as that role (so it shows exactly what `visible` lets through).

use std::fmt::Write;

use serde_json::Value;

use super::context::RequestContext;
use crate::{audit::Origin, auth::Principal};

const INTROSPECTION: &str = r#"{ __schema {
  queryType { name } mutationType { name } subscriptionType { name }
  types { kind name description specifiedByURL
    fields(includeDeprecated: true) { name description isDeprecated deprecationReason
      args { name description defaultValue type { ...T } } type { ...T } }
    inputFields { name description defaultValue type { ...T } }
    interfaces { name }
    enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
    possibleTypes { name } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }"#;

/// The roles `--role` takes: every role, PLATFORM_ADMIN (an ADMIN of the platform
/// tenant, with the platform scopes) and ANONYMOUS (no credential).
pub fn role_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = super::access::role_principals()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.push("ANONYMOUS");
    names
}

/// The principal introspection runs as for `role` (a name from `role_names`, any
/// case); `None` for an unknown name.
pub fn principal(role: &str) -> Option<Principal> {
    let role = role.to_ascii_uppercase();
    if role == "ANONYMOUS" {
        return Some(Principal::Anonymous);
    }
    super::access::role_principals()
        .into_iter()
        .find(|(name, _)| *name == role)
        .map(|(_, principal)| principal)
}

/// The SDL `principal` (see `principal`) sees, types sorted by name, with the
/// descriptions and deprecations of the full schema.
pub async fn sdl_for(principal: Principal) -> anyhow::Result<String> {
    let schema = super::builder().finish();
    let request = async_graphql::Request::new(INTROSPECTION).data(RequestContext::new(
        principal,
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

/// `item`'s description as an SDL block string, indented by `indent`.
fn description(out: &mut String, item: &Value, indent: &str) {
    let Some(text) = item["description"].as_str().filter(|d| !d.is_empty()) else {
        return;
    };
    let _ = writeln!(out, "{indent}\"\"\"");
    for line in text.replace("\"\"\"", "\\\"\"\"").lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{indent}{line}");
        }
    }
    let _ = writeln!(out, "{indent}\"\"\"");
}

fn deprecation(item: &Value) -> String {
    if item["isDeprecated"].as_bool() != Some(true) {
        return String::new();
    }
    match item["deprecationReason"].as_str() {
        Some(reason) => format!(" @deprecated(reason: {})", Value::from(reason)),
        None => " @deprecated".to_owned(),
    }
}

/// `name: Type = default`, the shape of an argument and of an input field.
fn input_value(v: &Value) -> String {
    let mut s = format!(
        "{}: {}",
        v["name"].as_str().unwrap_or_default(),
        type_ref(&v["type"])
    );
    if let Some(d) = v["defaultValue"].as_str() {
        let _ = write!(s, " = {d}");
    }
    s
}

/// A field's arguments: inline when none has a description, else one per line.
fn args(out: &mut String, field: &Value) {
    let list = field["args"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return;
    }
    if list.iter().all(|a| a["description"].as_str().is_none()) {
        let inline: Vec<String> = list.iter().map(input_value).collect();
        let _ = write!(out, "({})", inline.join(", "));
        return;
    }
    out.push_str("(\n");
    for a in &list {
        description(out, a, "\t\t");
        let _ = writeln!(out, "\t\t{}", input_value(a));
    }
    out.push_str("\t)");
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
        description(&mut out, t, "");
        match kind {
            "SCALAR" => {
                let specified = t["specifiedByURL"]
                    .as_str()
                    .map(|url| format!(" @specifiedBy(url: {})", Value::from(url)))
                    .unwrap_or_default();
                let _ = writeln!(out, "scalar {name}{specified}\n");
            }
            "ENUM" => {
                let _ = writeln!(out, "enum {name} {{");
                for v in t["enumValues"].as_array().into_iter().flatten() {
                    description(&mut out, v, "\t");
                    let _ = writeln!(
                        out,
                        "\t{}{}",
                        v["name"].as_str().unwrap_or_default(),
                        deprecation(v)
                    );
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
                    description(&mut out, f, "\t");
                    let _ = writeln!(out, "\t{}", input_value(f));
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
                    description(&mut out, f, "\t");
                    let _ = write!(out, "\t{}", f["name"].as_str().unwrap_or_default());
                    args(&mut out, f);
                    let _ = writeln!(out, ": {}{}", type_ref(&f["type"]), deprecation(f));
                }
                out.push_str("}\n\n");
            }
        }
    }
    out
}
