//! Local-web security: what a web page in the user's browser can and cannot make the broker
//! do. Requests are built as a browser would send them (Host, Origin, Sec-Fetch-Site).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, split};
use serde_json::{Value, json};

async fn send(s: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
    let mut request = s.http.request(method.parse().unwrap(), s.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    split(request.send().await.unwrap()).await
}

async fn task_count(s: &Server) -> usize {
    s.get("/tasks").await.1["tasks"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_rebinding_host_is_refused() {
    let s = Server::start_with(|c| c.host_names = vec!["muster.internal".into()]).await;
    let port = s.addr().port();
    let (status, body) = send(&s, "GET", "/tasks", &[("host", &format!("evil.example:{port}"))], None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"].as_str().unwrap().contains("--host-name evil.example"), "{body}");
    let (status, _) = send(&s, "POST", "/tasks", &[("host", "evil.example")], Some(json!({"title": "planted"}))).await;
    assert_eq!(status, 403);
    assert_eq!(task_count(&s).await, 0, "nothing was written");

    for ours in
        [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}"), "muster.internal".into()]
    {
        let (status, body) = send(&s, "GET", "/tasks", &[("host", &ours)], None).await;
        assert_eq!(status, 200, "{ours}: {body}");
    }
}

#[tokio::test]
async fn a_cross_origin_write_is_refused_and_nothing_is_written() {
    let s = Server::start_with(|c| c.allow_origins = vec!["https://tools.example".into()]).await;
    let own = format!("http://{}", s.addr());
    let task = json!({"title": "from a page"});

    for (headers, why) in [
        (vec![("origin", "http://evil.example")], "another origin"),
        (vec![("origin", "null")], "an opaque origin (sandboxed frame, file://)"),
        (vec![("sec-fetch-site", "cross-site")], "a cross-site request without Origin"),
        (vec![("sec-fetch-site", "same-site")], "a sibling site without Origin"),
    ] {
        let (status, body) = send(&s, "POST", "/tasks", &headers, Some(task.clone())).await;
        assert_eq!(status, 403, "{why}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{why}");
        let (status, _) = send(&s, "PATCH", "/tasks/T-1", &headers, Some(json!({"priority": "P0"}))).await;
        assert_eq!(status, 403, "{why}");
    }
    assert_eq!(task_count(&s).await, 0, "nothing was written");

    // The one GET that writes is guarded too: an <img src> on another site cannot claim.
    s.task("Fix auth redirect").await;
    let (status, _) =
        send(&s, "GET", "/tasks/next?agent=mallory&claim=true", &[("sec-fetch-site", "cross-site")], None).await;
    assert_eq!(status, 403);
    assert!(s.get("/tasks/T-1").await.1["task"]["claim"].is_null());

    // The dashboard's own origin, an allowed origin, and non-browser clients may write.
    for headers in [
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![("origin", "https://tools.example"), ("sec-fetch-site", "cross-site")],
        vec![],
    ] {
        let (status, body) = send(&s, "POST", "/tasks", &headers, Some(task.clone())).await;
        assert_eq!(status, 201, "{headers:?}: {body}");
    }
    // Reading and navigating from a link elsewhere stay possible.
    let (status, _) = send(&s, "GET", "/dashboard", &[("sec-fetch-site", "cross-site")], None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn cors_never_reflects_an_origin() {
    let s = Server::start().await;
    for method in ["GET", "OPTIONS", "POST"] {
        let response = s
            .http
            .request(method.parse().unwrap(), s.url("/tasks"))
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        for name in ["access-control-allow-origin", "access-control-allow-credentials"] {
            assert!(response.headers().get(name).is_none(), "{method} answered with {name}");
        }
    }
}
