//! Attacks on the model catalog (issue 21, ADR 0130), with real OIDC tokens from the dev IdP:
//! alice (acme admin), bob (acme user), carol (globex admin), pat (platform administrator).
//! A tenant administrator can never change what another tenant's runs use, a user's key goes
//! only to the base URL it was given for, and provider base URLs pass the network guard.

use pa_testkit::{FakeProvider, Reply};
use serde_json::{Value, json};
use tests_e2e::{AsUser, DevIdp, Mesh, SseEvent};

type R = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const ALICE_KEY: &str = "sk-alice-byok-0123456789";

fn last_type(events: &[SseEvent]) -> &str {
    events.last().map(SseEvent::event_type).unwrap_or("")
}

fn labels(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|m| m["label"].as_str().or(m["id"].as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn find<'a>(page: &'a Value, field: &str, value: &str) -> Option<&'a Value> {
    page["items"]
        .as_array()?
        .iter()
        .find(|item| item[field].as_str() == Some(value))
}

/// Whether any request `fake` received carried `key`.
fn saw_key(fake: &FakeProvider, key: &str) -> bool {
    fake.requests()
        .iter()
        .any(|r| r.header("authorization") == Some(&format!("Bearer {key}")))
}

#[tokio::test]
async fn a_tenant_admin_cannot_take_over_the_shared_catalog_and_keys_stay_bound() -> R {
    let idp = DevIdp::start().await?;
    let mesh = Mesh::builder().oidc(idp.oidc_config()?).start().await?;
    let as_user = |token: String| AsUser::new(&mesh, token);
    let alice = as_user(idp.token(&mesh.http, "alice").await?);
    let bob = as_user(idp.token(&mesh.http, "bob").await?);
    let carol = as_user(idp.token(&mesh.http, "carol").await?);
    let pat = as_user(idp.token(&mesh.http, "pat").await?);

    let acme_upstream = FakeProvider::start().await?;
    acme_upstream.set_default(Reply::text("from the real provider"));
    let carol_server = FakeProvider::start().await?;
    carol_server.set_default(Reply::text("from carol's server"));

    // The platform administrator adds a shared provider without a platform key: users bring theirs.
    let (status, body) = pat
        .post(
            "/v1/admin/providers",
            &json!({ "id": "acmeai", "kind": "openai_compatible",
                     "base_url": acme_upstream.base_url(), "tags": ["eu-hosted"] }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "platform");
    let (status, body) = pat
        .post(
            "/v1/admin/models",
            &json!({ "label": "acmeai:m", "context_window": 8000 }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");

    // A tenant administrator is not a platform administrator.
    let (status, body) = alice
        .post(
            "/v1/admin/providers",
            &json!({ "id": "shared2", "kind": "openai_compatible", "scope": "platform",
                     "base_url": acme_upstream.base_url() }),
        )
        .await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));

    // alice stores her own key and uses the shared provider.
    let (status, body) = alice
        .put("/v1/me/keys/acmeai", &json!({ "api_key": ALICE_KEY }))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bound_base_url"], acme_upstream.base_url());
    let (_, events) = alice
        .run_in_new_chat(&json!({ "message": "hello", "model": "acmeai:m" }))
        .await?;
    assert_eq!(last_type(&events), "RUN_FINISHED");
    assert!(saw_key(&acme_upstream, ALICE_KEY));

    // ---- carol (globex admin) goes after acme's provider -------------------------------------
    let hijack = json!({ "id": "acmeai", "kind": "openai_compatible",
                         "base_url": carol_server.base_url(), "tags": ["eu-hosted"] });
    let (status, body) = carol.post("/v1/admin/providers", &hijack).await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let mut as_platform = hijack.clone();
    as_platform["scope"] = json!("platform");
    let (status, body) = carol.post("/v1/admin/providers", &as_platform).await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, _) = carol
        .patch("/v1/admin/models/acmeai:m", &json!({ "enabled": false }))
        .await?;
    assert_eq!(status, 403, "a platform model is not carol's to switch off");
    let (status, _) = carol
        .post(
            "/v1/admin/models",
            &json!({ "label": "acmeai:cheap", "context_window": 8000 }),
        )
        .await?;
    assert_eq!(
        status, 403,
        "no tenant model on a platform provider (its key)"
    );
    let (status, _) = carol
        .put(
            "/v1/admin/policies/public",
            &json!({ "scope": "platform", "required_tags": ["local"] }),
        )
        .await?;
    assert_eq!(status, 403, "default policies are the platform's");
    let (status, _) = carol.get("/v1/admin/schedules").await?;
    assert_eq!(status, 403, "maintenance spans every tenant");
    // carol's own tenant policy is hers alone.
    let (status, _) = carol
        .put(
            "/v1/admin/policies/public",
            &json!({ "required_tags": ["local"] }),
        )
        .await?;
    assert_eq!(status, 200);
    let (_, policies) = alice.get("/v1/admin/policies").await?;
    let public = find(&policies, "classification", "public").cloned();
    assert_eq!(
        public.map(|p| (p["required_tags"].clone(), p["scope"].clone())),
        Some((json!([]), json!("platform"))),
        "{policies}"
    );

    // Nothing changed: the shared provider still points where pat put it, alice's run still
    // goes there with her key, and carol's server never saw a request.
    let (_, providers) = pat.get("/v1/admin/providers").await?;
    let acmeai = find(&providers, "id", "acmeai")
        .cloned()
        .unwrap_or_default();
    assert_eq!(acmeai["base_url"], acme_upstream.base_url(), "{providers}");
    let (_, events) = alice
        .run_in_new_chat(&json!({ "message": "again", "model": "acmeai:m" }))
        .await?;
    assert_eq!(last_type(&events), "RUN_FINISHED");
    assert_eq!(carol_server.request_count(), 0);

    // ---- a tenant's own provider is its alone --------------------------------------------------
    let (status, body) = carol
        .post(
            "/v1/admin/providers",
            &json!({ "id": "globexai", "kind": "openai_compatible",
                     "base_url": carol_server.base_url(), "tags": ["eu-hosted"],
                     "platform_api_key": "sk-globex-org-key-1" }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "tenant");
    let (status, body) = carol
        .post(
            "/v1/admin/models",
            &json!({ "label": "globexai:m", "context_window": 8000 }),
        )
        .await?;
    assert_eq!((status, body["scope"].as_str()), (200, Some("tenant")));
    let (_, carol_models) = carol.get("/v1/models").await?;
    assert!(labels(&carol_models).contains(&"globexai:m".to_string()));
    let (_, carol_events) = carol
        .run_in_new_chat(&json!({ "message": "ours", "model": "globexai:m" }))
        .await?;
    assert_eq!(last_type(&carol_events), "RUN_FINISHED");
    assert!(saw_key(&carol_server, "sk-globex-org-key-1"));
    // acme sees none of it.
    for who in [&alice, &bob] {
        let (_, models) = who.get("/v1/models").await?;
        assert!(!labels(&models).contains(&"globexai:m".to_string()));
    }
    let (_, providers) = alice.get("/v1/admin/providers").await?;
    assert!(!labels(&providers).contains(&"globexai".to_string()));
    let (_, models) = alice.get("/v1/admin/models").await?;
    assert!(!labels(&models).contains(&"globexai:m".to_string()));
    let (status, _) = alice
        .put("/v1/me/keys/globexai", &json!({ "api_key": ALICE_KEY }))
        .await?;
    assert_eq!(status, 404);
    let before = carol_server.request_count();
    let (status, chat) = alice.post("/v1/chats", &json!({})).await?;
    assert_eq!(status, 201);
    let (status, _) = alice
        .post(
            &format!("/v1/chats/{}/runs", chat["id"].as_str().unwrap_or("")),
            &json!({ "message": "x", "model": "globexai:m" }),
        )
        .await?;
    assert!((400..500).contains(&status), "{status}");
    assert_eq!(carol_server.request_count(), before);
    assert!(!saw_key(&carol_server, ALICE_KEY));
    // Two tenants may each own a provider of the same id without meeting.
    let (status, body) = alice
        .post(
            "/v1/admin/providers",
            &json!({ "id": "globexai", "kind": "openai_compatible",
                     "base_url": acme_upstream.base_url() }),
        )
        .await?;
    assert_eq!((status, body["scope"].as_str()), (200, Some("tenant")));
    let (_, carol_providers) = carol.get("/v1/admin/providers").await?;
    let theirs = find(&carol_providers, "id", "globexai").cloned();
    assert_eq!(
        theirs.map(|p| p["base_url"].clone()),
        Some(json!(carol_server.base_url()))
    );

    // ---- overlays: acme switches a platform model off for acme only ---------------------------
    let (status, body) = alice
        .patch("/v1/admin/models/acmeai:m", &json!({ "enabled": false }))
        .await?;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (status, body) = alice
        .put(
            "/v1/admin/model-overlays/acmeai:m",
            &json!({ "enabled": false }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["enabled"].as_bool(), body["tenant_disabled"].as_bool()),
        (Some(true), Some(true))
    );
    let (_, models) = alice.get("/v1/models").await?;
    assert!(!labels(&models).contains(&"acmeai:m".to_string()));
    let (_, globex_view) = carol.get("/v1/admin/models").await?;
    let m = find(&globex_view, "label", "acmeai:m")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (m["enabled"].as_bool(), m["tenant_disabled"].as_bool()),
        (Some(true), Some(false)),
        "globex's view is untouched: {globex_view}"
    );
    let (status, _) = carol
        .put(
            "/v1/admin/model-overlays/globexai:m",
            &json!({ "enabled": false }),
        )
        .await?;
    assert_eq!(status, 400, "an overlay is for platform models");
    let (status, _) = bob
        .put(
            "/v1/admin/model-overlays/acmeai:m",
            &json!({ "enabled": true }),
        )
        .await?;
    assert_eq!(status, 403, "bob is no administrator");
    let (status, _) = alice
        .put(
            "/v1/admin/model-overlays/acmeai:m",
            &json!({ "enabled": true }),
        )
        .await?;
    assert_eq!(status, 200);

    // ---- a key follows its base URL ---------------------------------------------------------
    let moved = FakeProvider::start().await?;
    moved.set_default(Reply::text("from the moved endpoint"));
    let (status, body) = pat
        .post(
            "/v1/admin/providers",
            &json!({ "id": "acmeai", "kind": "openai_compatible",
                     "base_url": moved.base_url(), "tags": ["eu-hosted"] }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    // The run is refused before it starts, saying what to do (and not with the platform key).
    let (_, chat) = alice.post("/v1/chats", &json!({})).await?;
    let (status, refused) = alice
        .post(
            &format!("/v1/chats/{}/runs", chat["id"].as_str().unwrap_or("")),
            &json!({ "message": "after the move", "model": "acmeai:m" }),
        )
        .await?;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("failed_precondition")),
        "{refused}"
    );
    assert!(
        refused["detail"]
            .as_str()
            .unwrap_or("")
            .contains("/v1/me/keys/acmeai/confirm"),
        "{refused}"
    );
    assert_eq!(
        moved.request_count(),
        0,
        "the key never went to the new URL"
    );
    let (_, keys) = alice.get("/v1/me/keys").await?;
    let key = find(&keys, "provider", "acmeai")
        .cloned()
        .unwrap_or_default();
    assert_eq!(key["needs_confirmation"], true, "{keys}");
    assert_eq!(key["current_base_url"], moved.base_url());
    // Confirming an URL that is not the current one does nothing.
    let (status, _) = alice
        .post(
            "/v1/me/keys/acmeai/confirm",
            &json!({ "base_url": carol_server.base_url() }),
        )
        .await?;
    assert!((400..500).contains(&status));
    let (status, body) = alice
        .post(
            "/v1/me/keys/acmeai/confirm",
            &json!({ "base_url": moved.base_url() }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["needs_confirmation"], false);
    let (_, events) = alice
        .run_in_new_chat(&json!({ "message": "confirmed", "model": "acmeai:m" }))
        .await?;
    assert_eq!(last_type(&events), "RUN_FINISHED");
    assert!(saw_key(&moved, ALICE_KEY));
    assert!(!saw_key(&carol_server, ALICE_KEY));
    mesh.stop().await?;
    Ok(())
}

#[tokio::test]
async fn provider_base_urls_pass_the_network_guard() -> R {
    // Only public addresses: the operator allowed nothing.
    let mesh = Mesh::builder().models_net_allow("").start().await?;
    let local = FakeProvider::start().await?;
    for base_url in [
        local.base_url(),
        "http://localhost:11434/v1".to_string(),
        "http://169.254.169.254/latest".to_string(),
        "http://[::1]:8000/v1".to_string(),
        "http://10.0.0.7/v1".to_string(),
        "http://user:secret@api.example.com/v1".to_string(),
        "ftp://api.example.com/v1".to_string(),
    ] {
        let (status, body) = mesh
            .post_json(
                "/v1/admin/providers",
                &json!({ "id": "sneaky", "kind": "openai_compatible", "base_url": base_url }),
            )
            .await?;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{base_url}: {body}"
        );
    }
    let (_, providers) = mesh.get_json("/v1/admin/providers").await?;
    assert!(!labels(&providers).contains(&"sneaky".to_string()));
    mesh.stop().await?;

    // The operator's allow-list admits exactly what it names, and the metadata address never
    // by accident.
    let mesh = Mesh::builder()
        .models_net_allow("127.0.0.1")
        .start()
        .await?;
    let (status, body) = mesh
        .post_json(
            "/v1/admin/providers",
            &json!({ "id": "ollama", "kind": "openai_compatible", "base_url": local.base_url() }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = mesh
        .post_json(
            "/v1/admin/providers",
            &json!({ "id": "meta", "kind": "openai_compatible",
                     "base_url": "http://169.254.169.254/latest" }),
        )
        .await?;
    assert_eq!(status, 400);
    mesh.stop().await?;
    Ok(())
}
