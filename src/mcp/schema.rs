//! The output schemas of the tools: the same utoipa definitions as `/openapi.json`, made
//! self-contained JSON Schemas (MCP's structured content is checked against them).

use std::sync::Arc;

use rmcp::model::JsonObject;

/// The output schema of a tool that answers a `T`: `T`'s schema as the OpenAPI document
/// states it (the same definitions), made self-contained with the types it refers to under
/// `$defs`.
pub(super) fn output<T: utoipa::ToSchema>() -> Arc<JsonObject> {
    let mut defs = definitions::<T>();
    let mut root = defs.remove(T::name().as_ref()).and_then(|v| v.as_object().cloned()).unwrap_or_default();
    if !defs.is_empty() {
        root.insert("$defs".into(), serde_json::Value::Object(defs));
    }
    Arc::new(root)
}

/// The schema of an argument of type `T` (priority, status) as the OpenAPI document states
/// it: the protocol's own list of values, not a copy of it.
pub(super) fn input<T: utoipa::ToSchema>(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let root = definitions::<T>().remove(T::name().as_ref()).unwrap_or_default();
    schemars::Schema::try_from(root).unwrap_or_default()
}

/// The schema of a list of `T` arguments (see [`input`]).
pub(super) fn input_list<T: utoipa::ToSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "array", "items": input::<T>(generator) })
}

/// How a wrapped result holds its `T`s.
pub(super) enum Shape {
    /// `T` or `null`.
    Nullable,
    /// A list of `T`.
    List,
}

/// The output schema of a tool that answers `{field: …}` with `T`s (MCP's structured
/// content is an object).
pub(super) fn output_field<T: utoipa::ToSchema>(field: &str, shape: Shape) -> Arc<JsonObject> {
    let item = serde_json::json!({ "$ref": format!("#/$defs/{}", T::name()) });
    let value = match shape {
        Shape::Nullable => serde_json::json!({ "anyOf": [item, { "type": "null" }] }),
        Shape::List => serde_json::json!({ "type": "array", "items": item }),
    };
    let schema = serde_json::json!({
        "type": "object",
        "properties": { field: value },
        "required": [field],
        "$defs": definitions::<T>(),
    });
    Arc::new(schema.as_object().cloned().unwrap_or_default())
}

/// `T` and every type its schema refers to, by name, with references into `$defs`.
fn definitions<T: utoipa::ToSchema>() -> JsonObject {
    let mut found = vec![(T::name().into_owned(), <T as utoipa::PartialSchema>::schema())];
    T::schemas(&mut found);
    let mut defs = JsonObject::new();
    for (name, schema) in found {
        let mut value = serde_json::to_value(schema).unwrap_or_default();
        to_defs(&mut value);
        defs.insert(name, value);
    }
    defs
}

/// Points OpenAPI's `#/components/schemas/X` references at `#/$defs/X`.
fn to_defs(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(r) if key == "$ref" => {
                        if let Some(name) = r.strip_prefix("#/components/schemas/") {
                            *r = format!("#/$defs/{name}");
                        }
                    }
                    other => to_defs(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(to_defs),
        _ => {}
    }
}
