//! Every WebSocket text frame goes through `Request::parse` first: whatever the bytes, it
//! must answer (a request or an error naming the problem), never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the WebSocket protocol; tungstenite rejects the rest.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = muster_protocol::ws::Request::parse(text);
    }
});
