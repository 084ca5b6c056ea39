//! The tenant's users, as the gateway sees them. Who a user is and which roles they have is the
//! identity provider's business (Keycloak, the dev IdP); the gateway records each caller it
//! admits (name, roles of the last sign-in, first and last seen) so admins can see who uses the
//! platform, and lets an admin **disable** a user here: every request of a disabled user —
//! signed in or through an API key — is refused with 403 `forbidden`.
//!
//! Each replica checks a user at most every [`RECHECK`](crate::user_directory::RECHECK) (the answer is cached in memory), so a
//! disable takes effect everywhere within that time, at once on the replica that did it.
//!
//! - `GET /v1/admin/users?q=&limit=&cursor=` (admins): `{items, next_cursor}`;
//! - `PATCH /v1/admin/users/{user_id}` (admins) `{disabled}`: not yourself.

use axum::Json;
use axum::extract::{Path, Query, State};
use pa_kit::PaError;
use serde::Deserialize;

use crate::api::ApiJson;
use crate::auth::Caller;
use crate::dto::Page;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::user_directory::{DEFAULT_LIMIT, MAX_LIMIT, UserDirectory, UserJson, UserRecord};
use pa_proto::v1::{
    DirectoryUser, Identity, ListUsersRequest, ListUsersResponse, SetUserDisabledRequest,
};

fn directory(state: &AppState) -> Result<&UserDirectory, PaError> {
    state
        .users
        .as_deref()
        .ok_or_else(|| PaError::unavailable("the user directory needs the gateway's database"))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct UsersQuery {
    /// Part of a user id or display name.
    #[serde(default)]
    q: String,
    /// 1-200 (default 50); outside: 400.
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    cursor: String,
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", params(UsersQuery),
    responses((status = 200, description = "`{items: [{user_id, display_name, roles, auth_method, first_seen_at, last_seen_at, disabled, disabled_at, disabled_by}], next_cursor}`: the users who signed in to this tenant, by id", body = Page<UserJson>)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Query(query): Query<UsersQuery>,
) -> Result<Json<Page<UserJson>>, ApiError> {
    if query.limit == Some(0) {
        return Err(PaError::bad_request(format!("limit must be 1-{MAX_LIMIT}")).into());
    }
    let request = ListUsersRequest {
        query: query.q,
        limit: query.limit.unwrap_or(0),
        cursor: query.cursor,
    };
    let page = list_users(&state, &identity, request).await?;
    Ok(Json(Page {
        items: page.users.into_iter().map(UserJson::from).collect(),
        next_cursor: (!page.next_cursor.is_empty()).then_some(page.next_cursor),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// `true` refuses every request of the user (sign-in and API keys) until set back.
    disabled: bool,
}

#[utoipa::path(patch, path = "/v1/admin/users/{user_id}", tag = "admin", request_body = UserPatch,
    params(("user_id" = String, Path, description = "The user's id (the token's subject)")),
    responses((status = 200, description = "The user after the change", body = UserJson),
              (status = 404, description = "No such user has signed in to this tenant"),
              (status = 409, description = "An admin cannot disable themselves (`failed_precondition`)")))]
pub async fn patch(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<UserJson>, ApiError> {
    let request = SetUserDisabledRequest {
        user_id,
        disabled: body.disabled,
    };
    Ok(Json(
        set_user_disabled(&state, &identity, request).await?.into(),
    ))
}

// The operation layer of the user directory (ADR 0211): the REST handlers above and the public
// gRPC UserAdminService call these.

/// `UserAdminService/ListUsers` (tenant administrators): the users who signed in, by id.
pub(crate) async fn list_users(
    state: &AppState,
    identity: &Identity,
    request: ListUsersRequest,
) -> Result<ListUsersResponse, PaError> {
    pa_kit::identity::require_role(identity, "admin")?;
    let limit = i64::from(request.limit);
    if !(0..=MAX_LIMIT).contains(&limit) {
        return Err(PaError::bad_request(format!("limit must be 1-{MAX_LIMIT}")));
    }
    let (users, next) = directory(state)?
        .list(
            &identity.tenant_id,
            request.query.trim(),
            &request.cursor,
            if limit == 0 { DEFAULT_LIMIT } else { limit },
        )
        .await?;
    Ok(ListUsersResponse {
        users: users.iter().map(UserRecord::proto).collect(),
        next_cursor: next.unwrap_or_default(),
    })
}

/// `UserAdminService/SetUserDisabled` (tenant administrators; not themselves).
pub(crate) async fn set_user_disabled(
    state: &AppState,
    identity: &Identity,
    request: SetUserDisabledRequest,
) -> Result<DirectoryUser, PaError> {
    pa_kit::identity::require_role(identity, "admin")?;
    let user = directory(state)?
        .set_disabled(identity, &request.user_id, request.disabled)
        .await?;
    tracing::info!(admin = %identity.user_id, user = %request.user_id, disabled = request.disabled, "user access changed");
    Ok(user.proto())
}
