//! The HTTP API's OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! annotations and the JSON types' `ToSchema` derives, served at `GET /v1/openapi.json`.
//! Every operation also declares its errors: `application/problem+json` (see `problem.rs`).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

use crate::{admin, agui, api, api_keys, control_ws, devices, integrations, memories, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Personal Agent HTTP API",
        description = "REST + SSE face of the Personal Agent mesh. Authenticate with \
            `Authorization: Bearer <OIDC JWT or pa_… API key>` (or the dev headers when \
            PA_AUTH_MODE=dev). Every error is `application/problem+json` with a stable `code`."
    ),
    paths(
        crate::root, crate::index, serve, crate::healthz, crate::readyz, crate::auth_config,
        control_ws::control,
        api::create_chat, api::list_chats, api::get_chat, api::rename_chat, api::delete_chat, api::list_messages,
        api::create_run, api::get_run, api::cancel_run, api::decide_tool_call, api::run_events,
        api::list_models,
        api_keys::create, api_keys::list, api_keys::revoke,
        admin::list_keys, admin::put_key, admin::delete_key, admin::confirm_key, admin::my_usage, admin::tenant_usage,
        admin::list_providers, admin::upsert_provider, admin::list_all_models, admin::upsert_model,
        admin::patch_model, admin::put_model_overlay, admin::list_policies, admin::put_policy, admin::list_schedules,
        admin::trigger_schedule, users::list, users::patch,
        agui::run_agent,
        integrations::list, integrations::create, integrations::get, integrations::patch,
        integrations::delete, integrations::get_selection, integrations::put_selection,
        devices::create_enrollment, devices::list, devices::delete, devices::enroll, devices::connect,
        memories::list, memories::create, memories::patch, memories::delete, memories::upload_file,
    ),
    components(schemas(crate::problem::Problem)),
    modifiers(&Errors),
)]
struct ApiDoc;

/// Adds the problem+json error answer to every operation, and the two ways to authenticate.
struct Errors;

impl utoipa::Modify for Errors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let problem = ResponseBuilder::new()
            .description(
                "An error as RFC 9457 problem details: `{type, title, status, detail, code}` \
                 with a stable `code` (bad_request, unauthenticated, forbidden, not_found, \
                 conflict, too_many_requests, unavailable, …); 429 and 503 carry Retry-After",
            )
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                op.responses
                    .responses
                    .insert("default".into(), problem.clone().into());
            }
        }
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An OIDC access token (JWT) or a pa_… API key"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "dev_user",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-pa-dev-user",
                "PA_AUTH_MODE=dev only: act as this user",
            ))),
        );
    }
}

/// The document as JSON (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|err| {
            format!(r#"{{"error": "cannot render the OpenAPI document: {err}"}}"#)
        })
    })
}

/// The OpenAPI 3.1 document's outline (see the OpenAPI specification for the parts).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the document `serve` answers; never built.
pub struct OpenApiDocumentJson {
    /// The OpenAPI version, `3.1.0`.
    openapi: String,
    info: OpenApiInfoJson,
    /// Path → path item (the operations of the path).
    #[schema(value_type = std::collections::BTreeMap<String, Object>)]
    paths: serde_json::Value,
    /// The reusable schemas, responses and security schemes.
    #[schema(value_type = Object)]
    components: serde_json::Value,
}

/// The OpenAPI document's `info`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OpenApiInfoJson {
    title: String,
    description: Option<String>,
    /// The gateway's version.
    version: String,
    #[schema(value_type = Option<Object>)]
    license: serde_json::Value,
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = OpenApiDocumentJson)))]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[cfg(test)]
mod tests {
    /// Every answer with a body says what the body is (issue 22: no untyped body): a 2xx answer
    /// declares its content, except 204 and a bare 202 (accepted, nothing to say).
    #[test]
    fn every_answer_with_a_body_declares_its_schema() {
        let doc: serde_json::Value = serde_json::from_str(super::document()).expect("JSON");
        let mut undeclared = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                    let bodyless = matches!(status.as_str(), "204" | "202" | "101" | "304");
                    if !status.starts_with('2') || bodyless {
                        continue;
                    }
                    match response["content"].as_object() {
                        Some(content)
                            if !content.is_empty()
                                && content.values().all(|c| c.get("schema").is_some()) => {}
                        _ => {
                            undeclared.push(format!("{} {path} → {status}", method.to_uppercase()))
                        }
                    }
                }
            }
        }
        assert!(
            undeclared.is_empty(),
            "answers without a declared body: {undeclared:#?}"
        );
    }
}
