//! Access tokens: attacks on them, and verification by an independent
//! PASETO implementation.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use notesd::auth::keyring::KeyRing;
use notesd::auth::tokens::Tokens;
use notesd::domain::{Role, SessionId, UserId};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_missing_or_malformed_authorization_header_is_401() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let cases = [
        (None, "no header"),
        (Some("Bearer".to_owned()), "scheme only"),
        (Some(format!("Basic {}", user.access)), "wrong scheme"),
        (Some("Bearer not-a-token".to_owned()), "garbage token"),
        (
            Some(format!("Bearer {}", user.refresh)),
            "a refresh token is not an access token",
        ),
    ];
    for (header, why) in cases {
        let mut req = app.request(Method::GET, "/api/v1/me", None);
        if let Some(h) = header {
            req = req.header("Authorization", h);
        }
        assert_problem(req.send().await.unwrap(), StatusCode::UNAUTHORIZED, why).await;
    }
}

#[tokio::test]
async fn a_token_in_the_url_is_ignored() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let path = format!("/api/v1/me?access_token={}&token={}", user.access, user.access);
    let resp = app.request(Method::GET, &path, None).send().await.unwrap();
    assert_problem(
        resp,
        StatusCode::UNAUTHORIZED,
        "tokens are read from the header only",
    )
    .await;
}

#[tokio::test]
async fn a_tampered_token_is_401() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let parts: Vec<&str> = user.access.split('.').collect();
    assert_eq!(parts.len(), 4, "v4.public.payload.footer");

    // Rewrite the payload to claim admin, keeping the signature.
    let raw = Base64UrlUnpadded::decode_vec(parts[2]).unwrap();
    let (claims, signature) = raw.split_at(raw.len() - 64);
    let mut claims: Value = serde_json::from_slice(claims).unwrap();
    claims["role"] = "admin".into();
    let mut forged = serde_json::to_vec(&claims).unwrap();
    forged.extend_from_slice(signature);
    let escalated = format!(
        "v4.public.{}.{}",
        Base64UrlUnpadded::encode_string(&forged),
        parts[3]
    );

    // Flip one bit of the signature.
    let mut raw_flipped = raw.clone();
    let last = raw_flipped.len() - 1;
    raw_flipped[last] ^= 1;
    let bad_sig = format!(
        "v4.public.{}.{}",
        Base64UrlUnpadded::encode_string(&raw_flipped),
        parts[3]
    );

    // Point the footer at another key id.
    let other_footer =
        Base64UrlUnpadded::encode_string(br#"{"kid":"k4.pid.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#);
    let other_kid = format!("v4.public.{}.{}", parts[2], other_footer);

    // Drop the footer.
    let no_footer = format!("v4.public.{}", parts[2]);

    for (token, why) in [
        (escalated, "claims changed"),
        (bad_sig, "signature changed"),
        (other_kid, "footer changed"),
        (no_footer, "footer removed"),
    ] {
        assert_problem(app.me(&token).await, StatusCode::UNAUTHORIZED, why).await;
    }
    assert_eq!(
        app.me(&user.access).await.status(),
        StatusCode::OK,
        "the genuine token still works"
    );
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_401() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    // A well-formed token for the same user, issuer and audience, signed by
    // a key this server never had.
    let elsewhere = tempfile::tempdir().unwrap();
    let ring = Arc::new(RwLock::new(
        KeyRing::load_or_create(
            elsewhere.path(),
            &notesd::masterkey::MasterKeys::create(&elsewhere.path().join("master.key")).unwrap(),
        )
        .unwrap(),
    ));
    let tokens = Tokens::new(
        ring,
        "notesd".into(),
        "notesd".into(),
        Duration::from_secs(900),
        10,
    );
    let now = time::OffsetDateTime::now_utc();
    let user_id = UserId(uuid::Uuid::parse_str(&user.id).unwrap());
    let foreign = tokens
        .issue(
            user_id,
            SessionId::generate(),
            Role::Admin,
            now,
            now + time::Duration::days(1),
            false,
        )
        .unwrap()
        .token;
    assert_problem(app.me(&foreign).await, StatusCode::UNAUTHORIZED, "foreign key").await;
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let app = spawn_app_with(&["--access-token-ttl", "60s"]).await;
    let user = app.new_user().await;
    assert_eq!(
        app.me(&user.access).await.status(),
        StatusCode::OK,
        "fresh token works (and is cached)"
    );
    app.advance_clock(Duration::from_secs(61));
    assert_problem(
        app.me(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "expired, even though cached",
    )
    .await;
    // The refresh token still gets a new, working access token.
    let pair: Value = app.refresh(&user.refresh).await.json().await.unwrap();
    assert_eq!(
        app.me(pair["access_token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_independent_paseto_library_verifies_our_tokens_from_the_published_paserk() {
    use rusty_paseto::core::{Footer, Key, Paseto, PasetoAsymmetricPublicKey, Public, V4};

    let app = spawn_app().await;
    let user = app.new_user().await;
    let keys = app.keys().await;
    let key = &keys["keys"][0];
    let paserk = key["paserk"].as_str().unwrap();
    let kid = key["kid"].as_str().unwrap();

    // PASERK k4.public is the 32-byte Ed25519 key in unpadded base64url.
    let encoded = paserk.strip_prefix("k4.public.").expect("PASERK k4.public");
    let bytes: [u8; 32] = Base64UrlUnpadded::decode_vec(encoded)
        .unwrap()
        .try_into()
        .unwrap();
    let key = Key::<32>::from(bytes);
    let public = PasetoAsymmetricPublicKey::<V4, Public>::from(&key);

    let footer_b64 = user.access.rsplit('.').next().unwrap();
    let footer = String::from_utf8(Base64UrlUnpadded::decode_vec(footer_b64).unwrap()).unwrap();
    let footer_json: Value = serde_json::from_str(&footer).unwrap();
    assert_eq!(footer_json["kid"], kid, "footer names the published key");

    let payload =
        Paseto::<V4, Public>::try_verify(&user.access, &public, Footer::from(footer.as_str()), None)
            .expect("an independent implementation verifies the token");
    let claims: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(claims["sub"], user.id.as_str());
    for claim in ["sub", "sid", "role", "iss", "aud", "iat", "nbf", "exp", "jti"] {
        assert!(claims.get(claim).is_some(), "claim {claim} present: {claims}");
    }

    // And it rejects a token we did not sign.
    let mut tampered = user.access.clone();
    tampered.replace_range(20..21, if &tampered[20..21] == "A" { "B" } else { "A" });
    assert!(
        Paseto::<V4, Public>::try_verify(&tampered, &public, Footer::from(footer.as_str()), None).is_err()
    );
}
