//! Bearer JWTs: the gateway validates them against the issuer's JWKS (found by discovery) and
//! refuses every kind of bad token with a 401 problem+json.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const KEY_1: &str = include_str!("../fixtures/test-rsa-key.pem");
const KEY_2: &str = include_str!("../fixtures/test-rsa-key-2.pem");
const PUB_1: &str = include_str!("../fixtures/test-rsa-pub.pem");
const JWKS_1: &str = include_str!("../fixtures/test-jwks.json");
const JWKS_2: &str = include_str!("../fixtures/test-jwks-2.json");

/// A stand-in OpenID Provider: discovery and a JWKS that the test can rotate.
async fn issuer(
    jwks: Arc<Mutex<Value>>,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let discovery = json!({ "issuer": base, "jwks_uri": format!("{base}/jwks") });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route(
            "/jwks",
            get(move || async move { Json(jwks.lock().map(|j| j.clone()).unwrap_or_default()) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn sign(kid: &str, pem: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test key");
    encode(&header, claims, &key).expect("sign")
}

fn claims(iss: &str, sub: &str, tenant: &str, roles: &[&str]) -> Value {
    json!({ "iss": iss, "aud": "pa-api", "sub": sub, "tenant": tenant, "roles": roles,
            "iat": now(), "exp": now() + 600, "name": sub })
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn tokens_are_checked_against_the_issuers_keys_and_every_bad_one_is_refused() -> R {
    let jwks = Arc::new(Mutex::new(serde_json::from_str::<Value>(JWKS_1)?));
    let iss = issuer(jwks.clone()).await?;
    let config = svc_gateway::oidc::OidcConfig {
        issuer: iss.clone(),
        audience: "pa-api".into(),
        client_id: "pa-web".into(),
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
        platform_admin_role: "platform-admin".into(),
        algorithms: svc_gateway::oidc::parse_algorithms("RS256").map_err(|e| e.to_string())?,
        leeway_secs: 30,
        jwks_min_refetch: Duration::ZERO,
        jwks_max_age: Duration::from_secs(600),
    };
    let mesh = Mesh::builder().oidc(config).start().await?;
    let call = |token: String| {
        mesh.http
            .get(mesh.url("/v1/chats"))
            .header("authorization", format!("Bearer {token}"))
            .send()
    };

    let (status, auth) = mesh.get_json("/v1/auth/config").await?;
    assert_eq!(
        (status, auth["mode"].as_str(), auth["issuer"].as_str()),
        (200, Some("oidc"), Some(iss.as_str()))
    );

    // A good token: the identity comes from its claims.
    let alice = sign(
        "test-key-1",
        KEY_1,
        &claims(&iss, "alice", "acme", &["user"]),
    );
    let r = mesh
        .http
        .post(mesh.url("/v1/chats"))
        .header("authorization", format!("Bearer {alice}"))
        .json(&json!({"title": "mine"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let chat: Value = r.json().await?;
    assert_eq!(call(alice.clone()).await?.status(), 200);
    // Another tenant's user does not see it.
    let carol = sign(
        "test-key-1",
        KEY_1,
        &claims(&iss, "carol", "globex", &["user", "admin"]),
    );
    let r = mesh
        .http
        .get(mesh.url(&format!("/v1/chats/{}", chat["id"].as_str().unwrap_or(""))))
        .header("authorization", format!("Bearer {carol}"))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    // Roles come from the token: alice is no admin.
    let r = mesh
        .http
        .get(mesh.url("/v1/admin/models"))
        .header("authorization", format!("Bearer {alice}"))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let r = mesh
        .http
        .get(mesh.url("/v1/admin/models"))
        .header("authorization", format!("Bearer {carol}"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    let mut bad: Vec<(&str, String)> = Vec::new();
    let mut c = claims(&iss, "alice", "acme", &["user"]);
    c["exp"] = json!(now() - 120);
    bad.push(("expired", sign("test-key-1", KEY_1, &c)));
    let mut c = claims(&iss, "alice", "acme", &["user"]);
    c["nbf"] = json!(now() + 600);
    bad.push(("not yet valid", sign("test-key-1", KEY_1, &c)));
    bad.push((
        "wrong iss",
        sign(
            "test-key-1",
            KEY_1,
            &claims("http://evil.example", "alice", "acme", &["user"]),
        ),
    ));
    let mut c = claims(&iss, "alice", "acme", &["user"]);
    c["aud"] = json!("someone-else");
    bad.push(("wrong aud", sign("test-key-1", KEY_1, &c)));
    let mut c = claims(&iss, "alice", "acme", &["user"]);
    c.as_object_mut().map(|o| o.remove("tenant"));
    bad.push(("no tenant", sign("test-key-1", KEY_1, &c)));
    let good = claims(&iss, "alice", "acme", &["admin"]);
    bad.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": "test-key-1"})),
            b64(&good)
        ),
    ));
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("test-key-1".into());
    bad.push((
        "HS256 with the public key",
        encode(&hs, &good, &EncodingKey::from_secret(PUB_1.as_bytes()))?,
    ));
    bad.push(("unknown kid", sign("test-key-2", KEY_2, &good)));
    let parts: Vec<&str> = alice.split('.').collect();
    bad.push((
        "tampered payload",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&claims(&iss, "alice", "acme", &["admin"])),
            parts[2]
        ),
    ));
    bad.push(("garbage", "not-a-jwt".into()));
    for (what, token) in bad {
        let r = call(token).await?;
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{what}"
        );
        let body: Value = r.json().await?;
        assert_eq!(body["code"], "unauthenticated", "{what}: {body}");
    }
    let r = mesh.http.get(mesh.url("/v1/chats")).send().await?;
    assert_eq!(r.status(), 401, "no token");

    // Key rotation: the provider publishes a new key; a token signed with it is accepted after
    // the gateway refetches the JWKS on the unknown kid.
    let mut rotated = serde_json::from_str::<Value>(JWKS_1)?;
    let second = serde_json::from_str::<Value>(JWKS_2)?;
    if let (Some(keys), Some(new)) = (rotated["keys"].as_array_mut(), second["keys"].as_array()) {
        keys.extend(new.iter().cloned());
    }
    *jwks.lock().map_err(|_| "poisoned")? = rotated;
    let after = sign(
        "test-key-2",
        KEY_2,
        &claims(&iss, "alice", "acme", &["user"]),
    );
    assert_eq!(call(after).await?.status(), 200);
    mesh.stop().await
}

/// Issue 21, item 5: the keys are refreshed on a schedule (the JWKS lifetime, at most
/// `jwks_max_age`), so a key the provider removed stops working even though no token named an
/// unknown key.
#[tokio::test]
async fn a_key_the_provider_removed_stops_working() -> R {
    let jwks = Arc::new(Mutex::new(serde_json::from_str::<Value>(JWKS_1)?));
    let iss = issuer(jwks.clone()).await?;
    let config = svc_gateway::oidc::OidcConfig {
        issuer: iss.clone(),
        audience: "pa-api".into(),
        client_id: "pa-web".into(),
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
        platform_admin_role: "platform-admin".into(),
        algorithms: svc_gateway::oidc::parse_algorithms("RS256").map_err(|e| e.to_string())?,
        leeway_secs: 30,
        jwks_min_refetch: Duration::ZERO,
        jwks_max_age: Duration::from_secs(1),
    };
    let mesh = Mesh::builder().oidc(config).start().await?;
    let call = |token: &str| {
        mesh.http
            .get(mesh.url("/v1/chats"))
            .bearer_auth(token)
            .send()
    };
    let old = sign(
        "test-key-1",
        KEY_1,
        &claims(&iss, "alice", "acme", &["user"]),
    );
    let new = sign(
        "test-key-2",
        KEY_2,
        &claims(&iss, "alice", "acme", &["user"]),
    );
    assert_eq!(call(&old).await?.status(), 200);
    // The provider replaces key 1 with key 2.
    *jwks.lock().map_err(|_| "poisoned")? = serde_json::from_str::<Value>(JWKS_2)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = call(&old).await?;
    assert_eq!(r.status(), 401, "the removed key is no longer trusted");
    let body: Value = r.json().await?;
    assert_eq!(body["code"], "unauthenticated", "{body}");
    assert_eq!(call(&new).await?.status(), 200, "the new key is");
    mesh.stop().await
}
