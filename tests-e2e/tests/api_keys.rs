//! API keys: shown once, stored hashed, scoped, expirable, revocable.

use serde_json::{Value, json};
use sqlx::Connection;
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn an_api_key_works_until_revoked_and_only_its_hash_is_stored() -> R {
    let mesh = Mesh::builder().start().await?;
    let (status, created) = mesh
        .post_json("/v1/me/api-keys", &json!({ "name": "my script" }))
        .await?;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap_or_default().to_string();
    let id = created["id"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("pa_") && key.len() > 40, "{key}");
    let with_key = |method: reqwest::Method, path: &str| {
        mesh.http
            .request(method, mesh.url(path))
            .header("authorization", format!("Bearer {key}"))
    };

    // The key acts as its creator.
    let chat = mesh.create_chat("made by the dev user").await?;
    let r = with_key(reqwest::Method::GET, &format!("/v1/chats/{chat}"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let r = with_key(reqwest::Method::POST, &format!("/v1/chats/{chat}/runs"))
        .json(&json!({"message": "via key"}))
        .send()
        .await?;
    assert_eq!(r.status(), 202);

    // Listed without the secret; never shown again.
    let (_, list) = mesh.get_json("/v1/me/api-keys").await?;
    assert_eq!(list["items"][0]["id"], json!(id));
    assert!(
        !list.to_string().contains(&key[20..]),
        "the secret is not listed"
    );

    // Only a hash is in the database.
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM gateway.api_keys t")
            .fetch_one(&mut db)
            .await?;
    let secret = &key[20..];
    assert!(!dump.contains(secret), "the key's secret is stored");

    // An API key cannot mint more keys; a wrong secret is refused.
    let r = with_key(reqwest::Method::POST, "/v1/me/api-keys")
        .json(&json!({"name": "x"}))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let forged = format!(
        "{}{}",
        &key[..key.len() - 2],
        if key.ends_with("AA") { "BB" } else { "AA" }
    );
    let r = mesh
        .http
        .get(mesh.url("/v1/chats"))
        .header("authorization", format!("Bearer {forged}"))
        .send()
        .await?;
    assert_eq!(r.status(), 401);

    // Revoked → 401.
    let r = mesh
        .http
        .delete(mesh.url(&format!("/v1/me/api-keys/{id}")))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    let r = with_key(reqwest::Method::GET, "/v1/chats").send().await?;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await?;
    assert_eq!(body["code"], "unauthenticated");
    mesh.stop().await
}

#[tokio::test]
async fn api_keys_are_scoped_and_expire() -> R {
    let mesh = Mesh::builder().start().await?;
    let (status, created) = mesh
        .post_json(
            "/v1/me/api-keys",
            &json!({ "name": "models only", "scopes": ["models"] }),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap_or_default().to_string();
    let get = |path: &str| {
        mesh.http
            .get(mesh.url(path))
            .header("authorization", format!("Bearer {key}"))
            .send()
    };
    assert_eq!(get("/v1/models").await?.status(), 200);
    assert_eq!(get("/v1/chats").await?.status(), 403, "no chats scope");
    assert_eq!(
        get("/v1/me/devices").await?.status(),
        403,
        "no devices scope"
    );
    assert_eq!(
        get("/v1/admin/models").await?.status(),
        403,
        "no admin scope"
    );

    let (status, created) = mesh
        .post_json(
            "/v1/me/api-keys",
            &json!({ "name": "devices", "scopes": ["devices"] }),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let devices_key = created["key"].as_str().unwrap_or_default().to_string();
    let r = mesh
        .http
        .get(mesh.url("/v1/me/devices"))
        .bearer_auth(&devices_key)
        .send()
        .await?;
    assert_eq!(r.status(), 200, "the devices scope lists devices");

    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "scopes": ["everything"]}),
        json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
    ] {
        let (status, body) = mesh.post_json("/v1/me/api-keys", &bad).await?;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    // A non-admin cannot make an admin key.
    let r = mesh
        .http
        .post(mesh.url("/v1/me/api-keys"))
        .header("x-pa-dev-roles", "user")
        .json(&json!({"name": "x", "scopes": ["admin"]}))
        .send()
        .await?;
    assert_eq!(r.status(), 403);

    // Expired → 401.
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    sqlx::query("UPDATE gateway.api_keys SET expires_at = now() - interval '1 second'")
        .execute(&mut db)
        .await?;
    assert_eq!(get("/v1/models").await?.status(), 401);
    mesh.stop().await
}

/// Issue 21, item 5: every route declares its scope (a models-only key cannot create an
/// integration, touch credentials or revoke another key), and a key acts with its user's
/// current roles (a demoted admin's key loses admin at once, a disabled user's key stops).
#[tokio::test]
async fn keys_follow_route_scopes_and_their_users_current_roles() -> R {
    let owned = Mesh::builder().start().await?;
    let mesh = &owned;
    let create =
        |body: serde_json::Value| async move { mesh.post_json("/v1/me/api-keys", &body).await };
    let (status, models_only) = create(json!({"name": "m", "scopes": ["models"]})).await?;
    assert_eq!(status, 201, "{models_only}");
    let models_key = models_only["key"].as_str().unwrap_or_default().to_string();
    let (_, other) = create(json!({"name": "other", "scopes": ["chats"]})).await?;
    let other_id = other["id"].as_str().unwrap_or_default().to_string();
    let other_key = other["key"].as_str().unwrap_or_default().to_string();
    let (_, integrations) = create(json!({"name": "i", "scopes": ["integrations"]})).await?;
    let integrations_key = integrations["key"].as_str().unwrap_or_default().to_string();

    let with = |key: &str, method: reqwest::Method, path: &str| {
        mesh.http.request(method, mesh.url(path)).bearer_auth(key)
    };
    use reqwest::Method;
    // The models scope reaches the models, nothing else.
    assert_eq!(
        with(&models_key, Method::GET, "/v1/models")
            .send()
            .await?
            .status(),
        200
    );
    let integration = json!({"kind": "web_fetch", "name": "fetch"});
    let r = with(&models_key, Method::POST, "/v1/me/integrations")
        .json(&integration)
        .send()
        .await?;
    assert_eq!(r.status(), 403, "a models key cannot create an integration");
    let r = with(
        &models_key,
        Method::DELETE,
        &format!("/v1/me/api-keys/{other_id}"),
    )
    .send()
    .await?;
    assert_eq!(r.status(), 403, "a key never revokes keys");
    for (method, path) in [
        (Method::GET, "/v1/me/api-keys"),
        (Method::GET, "/v1/me/keys"),
        (Method::PUT, "/v1/me/keys/openai"),
        (Method::GET, "/v1/me/integrations"),
        (Method::GET, "/v1/me/memories"),
    ] {
        let r = with(&models_key, method.clone(), path).send().await?;
        assert_eq!(r.status(), 403, "{method} {path}");
    }
    assert_eq!(
        with(&other_key, Method::GET, "/v1/chats")
            .send()
            .await?
            .status(),
        200,
        "the other key still works"
    );
    // The integrations scope is what creating an integration takes.
    let r = with(&integrations_key, Method::POST, "/v1/me/integrations")
        .json(&integration)
        .send()
        .await?;
    assert_eq!(r.status(), 201, "{}", r.text().await?);

    // Current roles: an admin key works while its user is an admin…
    let (status, admin) = create(json!({"name": "a", "scopes": ["admin", "chats"]})).await?;
    assert_eq!(status, 201, "{admin}");
    let admin_key = admin["key"].as_str().unwrap_or_default().to_string();
    let users = |key: String| {
        let r = with(&key, Method::GET, "/v1/admin/users").send();
        async move { r.await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(users(admin_key.clone()).await?, 200);
    // …the user signs in demoted: the key loses admin at once…
    let r = mesh
        .http
        .get(mesh.url("/v1/chats"))
        .header("x-pa-dev-roles", "user")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(users(admin_key.clone()).await?, 403, "demoted");
    assert_eq!(
        with(&admin_key, Method::GET, "/v1/chats")
            .send()
            .await?
            .status(),
        200,
        "its other scopes still work"
    );
    // …and gets it back with the role.
    mesh.get_json("/v1/chats").await?;
    assert_eq!(users(admin_key.clone()).await?, 200, "promoted again");

    // Disabled by another admin: every key of the user stops at once.
    let r = mesh
        .http
        .patch(mesh.url("/v1/admin/users/dev-user"))
        .header("x-pa-dev-user", "boss")
        .json(&json!({"disabled": true}))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    assert_eq!(users(admin_key.clone()).await?, 403);
    assert_eq!(
        with(&other_key, Method::GET, "/v1/chats")
            .send()
            .await?
            .status(),
        403
    );
    owned.stop().await
}
