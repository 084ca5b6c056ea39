//! Users and roles for admins: the gateway records who signs in (with their roles), admins list
//! and search them page by page, and a disabled user is refused everywhere — signed in or with
//! an API key, on every gateway replica — until re-enabled. Non-admins get 403, an admin cannot
//! disable themselves, and another tenant's users are never listed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests_e2e::Mesh;

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A request as `user` of `tenant` with `roles` (dev auth), or with an API key.
async fn call(
    mesh: &Mesh,
    base: &str,
    method: reqwest::Method,
    path: &str,
    who: (&str, &str, &str),
    body: Option<Value>,
) -> BoxResult<(u16, Value)> {
    let (tenant, user, roles) = who;
    let mut request = mesh
        .http
        .request(method, format!("{base}{path}"))
        .header("x-pa-dev-tenant", tenant)
        .header("x-pa-dev-user", user)
        .header("x-pa-dev-roles", roles);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// `PATCH /v1/admin/users/{user}` with `{"disabled": disabled}` on the first replica, as `who`.
async fn set_disabled(
    mesh: &Mesh,
    who: (&str, &str, &str),
    user: &str,
    disabled: Value,
) -> BoxResult<(u16, Value)> {
    let path = format!("/v1/admin/users/{user}");
    let body = Some(json!({ "disabled": disabled }));
    call(
        mesh,
        &mesh.gateway_url,
        reqwest::Method::PATCH,
        &path,
        who,
        body,
    )
    .await
}

async fn with_key(mesh: &Mesh, key: &str, path: &str) -> BoxResult<u16> {
    let response = mesh
        .http
        .get(mesh.url(path))
        .bearer_auth(key)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

const ADMIN: (&str, &str, &str) = ("acme", "ada", "user,admin");
const BOB: (&str, &str, &str) = ("acme", "bob", "user");
const BOBBY: (&str, &str, &str) = ("acme", "bobby", "user,reviewer");
const OTHER_ADMIN: (&str, &str, &str) = ("globex", "gus", "user,admin");

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["user_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn admins_see_the_users_and_a_disabled_user_is_refused_everywhere() -> R {
    let mut mesh = Mesh::builder().start().await?;
    let second = mesh.add_gateway().await?;
    let first = mesh.gateway_url.clone();
    use reqwest::Method as M;

    // Signing in is enough to be listed (with the roles of that sign-in).
    for who in [ADMIN, BOB, BOBBY, OTHER_ADMIN] {
        let (status, body) = call(&mesh, &first, M::GET, "/v1/chats", who, None).await?;
        assert_eq!(status, 200, "{who:?}: {body}");
    }
    // bob has an API key for his scripts.
    let (status, key) = call(
        &mesh,
        &first,
        M::POST,
        "/v1/me/api-keys",
        BOB,
        Some(json!({ "name": "script", "scopes": ["chats"] })),
    )
    .await?;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap_or_default().to_string();
    assert_eq!(with_key(&mesh, &key, "/v1/chats").await?, 200);

    let (status, page) = call(&mesh, &first, M::GET, "/v1/admin/users", ADMIN, None).await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["ada", "bob", "bobby"], "{page}");
    let bobby = &page["items"][2];
    assert_eq!(bobby["roles"], json!(["user", "reviewer"]));
    assert_eq!(bobby["disabled"], false);
    assert!(
        bobby["last_seen_at"]
            .as_str()
            .is_some_and(|t| t.contains('T'))
    );
    // The other tenant's admin sees only their own.
    let (_, theirs) = call(&mesh, &first, M::GET, "/v1/admin/users", OTHER_ADMIN, None).await?;
    assert_eq!(ids(&theirs), ["gus"]);
    // Search and pages.
    let (_, found) = call(&mesh, &first, M::GET, "/v1/admin/users?q=BOB", ADMIN, None).await?;
    assert_eq!(ids(&found), ["bob", "bobby"]);
    let (_, first_page) = call(
        &mesh,
        &first,
        M::GET,
        "/v1/admin/users?limit=2",
        ADMIN,
        None,
    )
    .await?;
    assert_eq!(ids(&first_page), ["ada", "bob"]);
    let cursor = first_page["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(cursor, "bob");
    let (_, rest) = call(
        &mesh,
        &first,
        M::GET,
        &format!("/v1/admin/users?limit=2&cursor={cursor}"),
        ADMIN,
        None,
    )
    .await?;
    assert_eq!(ids(&rest), ["bobby"]);
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let (_, wild) = call(&mesh, &first, M::GET, "/v1/admin/users?q=%25", ADMIN, None).await?;
    assert_eq!(
        ids(&wild),
        Vec::<String>::new(),
        "% is a character, not a wildcard"
    );

    // Not for non-admins.
    let (status, problem) = call(&mesh, &first, M::GET, "/v1/admin/users", BOB, None).await?;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["code"], "forbidden");
    let (status, _) = set_disabled(&mesh, BOB, "bobby", json!(true)).await?;
    assert_eq!(status, 403);

    // Bad requests and impossible ones.
    let (status, problem) = set_disabled(&mesh, ADMIN, "ada", json!(true)).await?;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "failed_precondition");
    let (status, problem) = set_disabled(&mesh, ADMIN, "nobody", json!(true)).await?;
    assert_eq!(status, 404, "{problem}");
    let (status, problem) = set_disabled(&mesh, ADMIN, "gus", json!(true)).await?;
    assert_eq!(status, 404, "another tenant's user: {problem}");
    let (status, problem) = set_disabled(&mesh, ADMIN, "bob", json!("yes")).await?;
    assert_eq!(status, 400, "{problem}");

    // Disabled: refused at once on this replica, signed in or by key, and soon on the other.
    let (status, bob) = set_disabled(&mesh, ADMIN, "bob", json!(true)).await?;
    assert_eq!(status, 200, "{bob}");
    assert_eq!(bob["disabled"], true);
    assert_eq!(bob["disabled_by"], "ada");
    let (status, problem) = call(&mesh, &first, M::GET, "/v1/chats", BOB, None).await?;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["code"], "forbidden");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("disabled")),
        "{problem}"
    );
    assert_eq!(with_key(&mesh, &key, "/v1/chats").await?, 403);
    let deadline = Instant::now() + user_recheck() + Duration::from_secs(30);
    loop {
        let (status, _) = call(&mesh, &second, M::GET, "/v1/chats", BOB, None).await?;
        if status == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other replica still admits bob"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // bobby is untouched.
    let (status, _) = call(&mesh, &first, M::GET, "/v1/chats", BOBBY, None).await?;
    assert_eq!(status, 200);

    // Enabled again.
    let (status, bob) = set_disabled(&mesh, ADMIN, "bob", json!(false)).await?;
    assert_eq!(status, 200, "{bob}");
    assert_eq!(bob["disabled"], false);
    assert!(bob["disabled_by"].is_null(), "{bob}");
    let (status, _) = call(&mesh, &first, M::GET, "/v1/chats", BOB, None).await?;
    assert_eq!(status, 200);
    assert_eq!(with_key(&mesh, &key, "/v1/chats").await?, 200);
    mesh.stop().await
}

/// How long a replica may trust what it read about a user (svc-gateway's users::RECHECK).
fn user_recheck() -> Duration {
    svc_gateway::USER_RECHECK
}
