//! Security headers on every kind of answer, and CORS.

use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app, spawn_app_with};

const EVERYWHERE: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
    ),
];

#[tokio::test]
async fn every_kind_of_answer_carries_the_security_headers() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let cases = [
        (app.me(&user.access).await, "API 200", true),
        (app.me("garbage").await, "API 401", true),
        (
            app.request(Method::GET, "/api/v1/nope", None)
                .send()
                .await
                .unwrap(),
            "API 404",
            true,
        ),
        (
            app.request(Method::GET, "/nope", None).send().await.unwrap(),
            "404 outside the API",
            false,
        ),
        (
            app.request(Method::GET, "/healthz", None).send().await.unwrap(),
            "probe",
            false,
        ),
        (
            app.request(Method::GET, "/openapi.json", None)
                .send()
                .await
                .unwrap(),
            "spec",
            false,
        ),
    ];
    for (resp, what, api) in cases {
        let h = resp.headers();
        for (name, value) in EVERYWHERE {
            assert_eq!(
                h.get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{what}: {name}"
            );
        }
        assert_eq!(
            h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
            "{what}"
        );
        assert!(h.get("server").is_none(), "{what}: no Server header");
        assert!(
            h.get("strict-transport-security").is_none(),
            "{what}: no HSTS over plain HTTP"
        );
        if api {
            assert_eq!(h["cache-control"], "no-store", "{what}");
        }
    }
}

#[tokio::test]
async fn the_docs_page_gets_a_narrow_policy_that_names_its_scripts() {
    let app = spawn_app().await;
    let resp = app.request(Method::GET, "/docs", None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for (name, value) in EVERYWHERE {
        assert_eq!(
            resp.headers().get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "docs: {name}"
        );
    }
    assert!(resp.headers().get("server").is_none(), "docs: no Server header");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(
        csp.contains("style-src 'unsafe-inline'"),
        "Swagger UI sets style attributes: {csp}"
    );
    assert!(
        !csp.contains("script-src 'unsafe-inline'") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
}

#[tokio::test]
async fn the_docs_rendered_on_first_demand_are_one_page_for_every_reader() {
    // The page is rendered when first asked for: readers arriving together
    // wait for the one rendering and all get the same page and policy.
    let app = spawn_app().await;
    let reads = (0..8).map(|i| {
        let path = if i % 2 == 0 { "/docs" } else { "/openapi.json" };
        app.request(Method::GET, path, None).send()
    });
    let mut pages = Vec::new();
    for resp in futures_util::future::join_all(reads).await {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let json = resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json");
        pages.push((json, csp, resp.bytes().await.unwrap()));
    }
    let (html, json): (Vec<_>, Vec<_>) = pages.into_iter().partition(|(json, ..)| !json);
    assert!(html.windows(2).all(|w| w[0] == w[1]), "one page, one policy");
    assert!(json.windows(2).all(|w| w[0] == w[1]), "one document");
    assert!(html[0].1.contains("script-src 'sha256-"), "{}", html[0].1);
    assert_eq!(
        json[0].1, "default-src 'none'; frame-ancestors 'none'",
        "the document has the API's policy"
    );
    let document = String::from_utf8_lossy(&json[0].2);
    assert!(
        String::from_utf8_lossy(&html[0].2).contains(document.trim_end()),
        "the page embeds the served document"
    );
}

#[tokio::test]
async fn cors_is_off_unless_an_origin_is_allowed() {
    let app = spawn_app().await;
    let resp = app
        .request(Method::GET, "/api/v1/auth/keys", None)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_allowed_origin_gets_preflights_and_a_disallowed_one_does_not() {
    let app = spawn_app_with(&["--cors-origins", "https://notes.example,https://other.example"]).await;
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        app.request(Method::OPTIONS, "/api/v1/notes", None)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", headers)
            .send()
    };
    let ok = preflight(
        "https://notes.example",
        "PUT",
        "authorization, content-type, if-match",
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://notes.example");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("If-Match")
    );
    assert!(
        h.get("access-control-allow-credentials").is_none(),
        "no cookies, no credentials"
    );

    for (origin, method, headers, why) in [
        (
            "https://evil.example",
            "GET",
            "authorization",
            "origin not allowed",
        ),
        ("https://notes.example", "TRACE", "", "method not allowed"),
        ("https://notes.example", "GET", "x-custom", "header not allowed"),
    ] {
        let refused = preflight(origin, method, headers).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{why}");
        assert!(
            refused.headers().get("access-control-allow-origin").is_none(),
            "{why}"
        );
    }

    let user = app.new_user().await;
    let actual = app
        .request(Method::GET, "/api/v1/me", Some(&user.access))
        .header("Origin", "https://other.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://other.example"
    );
    let exposed = actual.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for name in ["ETag", "Location", "Retry-After", "RateLimit-Remaining"] {
        assert!(exposed.contains(name), "{name} exposed: {exposed}");
    }
    let foreign = app
        .request(Method::GET, "/api/v1/me", Some(&user.access))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_allowed_origin_may_read_refusals_too() {
    // Without Access-Control-Allow-Origin a browser hides the whole answer
    // from the page's script: a 429's Retry-After, a 431 or a 401 would
    // reach it as a network error.
    let app = spawn_app_with(&[
        "--cors-origins",
        "https://notes.example",
        "--rate-limit",
        "2",
        "--max-header-bytes",
        "4096",
    ])
    .await;
    let ask = |extra: Option<String>| {
        let mut req = app
            .request(Method::GET, "/api/v1/me", None)
            .header("Origin", "https://notes.example");
        if let Some(value) = extra {
            req = req.header("x-padding", value);
        }
        req.send()
    };
    let readable = |resp: &reqwest::Response, what: &str| {
        assert_eq!(
            resp.headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("https://notes.example".to_owned()),
            "{what}"
        );
        let exposed = resp.headers()["access-control-expose-headers"].to_str().unwrap();
        assert!(exposed.contains("Retry-After"), "{what}: {exposed}");
    };
    let oversized = ask(Some("a".repeat(5000))).await.unwrap();
    assert_eq!(oversized.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    readable(&oversized, "431");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = ask(None).await.unwrap();
        readable(&resp, resp.status().as_str());
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
            return;
        }
    }
    panic!("no 429 after 5 requests at --rate-limit 2: {statuses:?}");
}
