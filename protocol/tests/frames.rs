//! The WebSocket frames against their JSON Schema and the golden examples.
//!
//! - `schema/*.schema.json` are generated from the types; this test fails when they drift
//!   (regenerate with `MUSTER_UPDATE_SCHEMA=1 cargo test -p muster-protocol`).
//! - Every golden frame under `examples/` decodes, re-encodes to the same JSON, and is valid
//!   against the schema. Clients in other languages are tested against the same files.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};

use muster_protocol::ws::{Request, ServerFrame};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Removes `"additionalProperties": false`: it does not compose with `allOf` (a field of
/// one part is "additional" to the other). `unevaluatedProperties` on the frame types does
/// the same job across the parts.
fn without_additional(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            map.values_mut().for_each(without_additional);
        }
        Value::Array(items) => items.iter_mut().for_each(without_additional),
        _ => {}
    }
}

/// A standalone JSON Schema (2020-12) for `T` and everything it refers to; unknown fields
/// are refused on the types named in `closed`.
fn schema_of<T: ToSchema>(title: &str, id: &str, closed: &[&str]) -> Value {
    let mut defs: Vec<(String, RefOr<Schema>)> = Vec::new();
    T::schemas(&mut defs);
    defs.push((T::name().into_owned(), T::schema()));
    let mut map = serde_json::Map::new();
    for (name, schema) in defs {
        map.insert(name, serde_json::to_value(schema).unwrap());
    }
    let doc = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": id,
        "title": title,
        "$ref": format!("#/$defs/{}", T::name()),
        "$defs": map,
    });
    // utoipa writes OpenAPI references; a standalone schema keeps its definitions in $defs.
    let mut doc: Value = serde_json::from_str(&doc.to_string().replace("#/components/schemas/", "#/$defs/")).unwrap();
    without_additional(&mut doc);
    for name in closed {
        doc["$defs"][*name]["unevaluatedProperties"] = Value::Bool(false);
    }
    doc
}

fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "client-frame.schema.json",
            schema_of::<Request>("Muster WebSocket frame, client to server", "client-frame.schema.json", &["Request"]),
        ),
        (
            "server-frame.schema.json",
            schema_of::<ServerFrame>(
                "Muster WebSocket frame, server to client",
                "server-frame.schema.json",
                &["Reply", "Event"],
            ),
        ),
    ]
}

#[test]
fn the_checked_in_schema_matches_the_types() {
    let update = std::env::var_os("MUSTER_UPDATE_SCHEMA").is_some();
    for (file, schema) in schemas() {
        let path = dir("schema").join(file);
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == text,
            "{} is out of date with the protocol types; regenerate it with \
             MUSTER_UPDATE_SCHEMA=1 cargo test -p muster-protocol",
            path.display()
        );
    }
}

fn examples(side: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir("examples").join(side))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    assert!(out.len() >= 5, "golden {side} frames missing");
    out
}

fn validator(file: &str) -> jsonschema::Validator {
    let schema = schemas().into_iter().find(|(f, _)| *f == file).unwrap().1;
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn every_client_frame_decodes_re_encodes_and_fits_the_schema() {
    let validator = validator("client-frame.schema.json");
    let mut ops = std::collections::BTreeSet::new();
    for (name, text) in examples("client") {
        let original: Value = serde_json::from_str(&text).unwrap();
        let request = Request::parse(&text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(serde_json::to_value(&request).unwrap(), original, "{name} does not re-encode to itself");
        let errors: Vec<String> = validator.iter_errors(&original).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name} does not fit the schema: {errors:?}");
        ops.insert(original["op"].as_str().unwrap().to_owned());
    }
    let all: std::collections::BTreeSet<String> =
        muster_protocol::ws::Op::NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(ops, all, "every op has a golden frame");
}

#[test]
fn every_server_frame_decodes_re_encodes_and_fits_the_schema() {
    let validator = validator("server-frame.schema.json");
    for (name, text) in examples("server") {
        let original: Value = serde_json::from_str(&text).unwrap();
        let frame: ServerFrame = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kind = match &frame {
            ServerFrame::Reply(_) => "reply",
            ServerFrame::Event(_) => "event",
        };
        assert!(name.starts_with(kind) || (kind == "reply" && name == "welcome.json"), "{name} decoded as a {kind}");
        assert_eq!(serde_json::to_value(&frame).unwrap(), original, "{name} does not re-encode to itself");
        let errors: Vec<String> = validator.iter_errors(&original).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name} does not fit the schema: {errors:?}");
    }
}

#[test]
fn every_event_kind_has_a_golden_example_and_says_whether_it_changes_a_task() {
    let examples: std::collections::BTreeMap<String, String> = examples("server").into_iter().collect();
    for name in muster_protocol::EventKind::NAMES {
        let text =
            examples.get(&format!("event.{name}.json")).unwrap_or_else(|| panic!("{name} has no golden example"));
        let event: muster_protocol::Event = serde_json::from_str(text).unwrap();
        let data: Value = serde_json::from_str::<Value>(text).unwrap()["data"].clone();
        assert_eq!(event.kind.type_name(), *name);
        // What the store's task view is told (`EventKind::task`) is what the event carries.
        let carried = data.get("task").map(|t| t["id"].clone());
        let told = event.kind.task().map(|t| Value::String(t.id.to_string()));
        assert_eq!(told, carried, "{name}: EventKind::task() must name the task its data carries");
        if let Some(task) = event.kind.task() {
            assert!(
                event.kind.topics().contains(&muster_protocol::Topic::Task(task.id)),
                "{name}: not on its task's topic"
            );
        }
    }
}

#[test]
fn the_schema_refuses_what_the_parser_refuses() {
    let validator = validator("client-frame.schema.json");
    for bad in [
        json!({"op": "hello"}),
        json!({"id": 1, "op": "task.claim", "task": "T-1", "agnet": "x"}),
        json!({"id": 1, "op": "task.clam", "task": "T-1"}),
        json!({"id": 1, "op": "task.create"}),
    ] {
        assert!(!validator.is_valid(&bad), "schema accepts {bad}");
        assert!(Request::parse(&bad.to_string()).is_err(), "parser accepts {bad}");
    }
}
