//! Probes, the OpenAPI document and Swagger UI.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let resp = app.request(Method::GET, path, None).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
}

#[tokio::test]
async fn docs_and_spec_are_served_from_the_binary() {
    let app = spawn_app().await;
    let spec: Value = app.spec().await;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["components"]["securitySchemes"]["BearerAuth"].is_object());

    let resp = app.request(Method::GET, "/docs", None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    assert!(
        !html.contains("cdn.") && !html.contains("unpkg.com"),
        "no assets from a CDN"
    );
    // The page embeds the served document, additions included.
    assert!(
        html.contains("\"additionalProperties\": false"),
        "the served document"
    );
}

#[tokio::test]
async fn docs_can_be_switched_off() {
    let app = spawn_app_with(&["--docs", "false"]).await;
    for path in ["/docs", "/openapi.json"] {
        let resp = app.request(Method::GET, path, None).send().await.unwrap();
        assert_problem(resp, StatusCode::NOT_FOUND, path).await;
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let resp = app.request(Method::GET, "/healthz", None).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "64-bit hex id");
}
