//! Topics against the shared cases in `examples/topics.json` (the JavaScript client is
//! tested against the same file): how each is read, and which events each receives.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use muster_protocol::{Event, Topic};
use serde_json::Value;

fn examples() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/topics.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn topics_are_read_and_normalized_as_the_shared_cases_say() {
    let cases = examples();
    for case in cases["parse"].as_array().unwrap() {
        let raw = case["topic"].as_str().unwrap();
        match raw.parse::<Topic>() {
            Ok(topic) => assert_eq!(Some(topic.to_string().as_str()), case["normalized"].as_str(), "{raw:?}"),
            Err(e) => assert_eq!(case["error"], true, "{raw:?} was refused: {e}"),
        }
    }
}

#[test]
fn each_event_reaches_the_subscribers_of_its_topics_and_no_others() {
    let cases = examples();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/server");
    for case in cases["match"].as_array().unwrap() {
        let file = case["event"].as_str().unwrap();
        let event: Event = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        for (key, expected) in [("receive", true), ("skip", false)] {
            for topic in case[key].as_array().unwrap() {
                let topic: Topic = topic.as_str().unwrap().parse().unwrap();
                assert_eq!(topic.matches(&event), expected, "{file}: {topic}");
                assert_eq!(topic.covers(&event.kind.topics()), expected, "{file}: {topic} (stored topics)");
            }
        }
    }
}
