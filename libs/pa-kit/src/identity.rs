//! Service-to-service trust. Only the gateway builds an [`Identity`]; it travels as
//! `x-pa-identity-bin` (the protobuf bytes) together with `x-pa-internal`, an HMAC-SHA256 over
//! the identity and an expiry, keyed by the mesh's shared `PA_INTERNAL_SECRET`. A service
//! refuses any call whose identity is missing, unsigned, forged or expired, so identity headers
//! from outside the mesh are never trusted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
pub use pa_proto::v1::{AuthMethod, Identity};
use prost::Message;
use sha2::Sha256;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::error::PaError;

const IDENTITY_HEADER: &str = "x-pa-identity-bin";
const CREDENTIAL_HEADER: &str = "x-pa-internal";
/// How long a signed identity stays valid; calls are short and clocks are shared within a mesh.
const TOKEN_TTL: Duration = Duration::from_secs(300);
/// Allowed clock difference between services.
const CLOCK_SKEW_MS: u64 = 5_000;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies the internal credential. Cheap to clone.
#[derive(Clone)]
pub struct InternalAuth {
    secret: std::sync::Arc<Vec<u8>>,
}

impl std::fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalAuth(..)")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl InternalAuth {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self {
            secret: std::sync::Arc::new(secret.as_ref().to_vec()),
        }
    }

    fn mac(&self, expires_ms: u64, identity_bytes: &[u8]) -> HmacSha256 {
        #[allow(clippy::expect_used)]
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(&expires_ms.to_be_bytes());
        mac.update(identity_bytes);
        mac
    }

    /// Puts the identity and its credential into outgoing metadata.
    pub fn sign_into(&self, identity: &Identity, metadata: &mut MetadataMap) {
        let bytes = identity.encode_to_vec();
        let expires_ms = now_ms() + TOKEN_TTL.as_millis() as u64;
        let tag = hex_encode(&self.mac(expires_ms, &bytes).finalize().into_bytes());
        metadata.insert_bin(IDENTITY_HEADER, MetadataValue::from_bytes(&bytes));
        if let Ok(value) = format!("v1.{expires_ms}.{tag}").parse() {
            metadata.insert(CREDENTIAL_HEADER, value);
        }
        // Every internal call continues the caller's trace.
        crate::trace::inject_current(metadata);
    }

    /// Wraps a message in a request that carries the caller's identity.
    pub fn request<T>(&self, identity: &Identity, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.sign_into(identity, request.metadata_mut());
        request
    }

    /// Checks the credential and returns the identity it vouches for.
    pub fn verify(&self, metadata: &MetadataMap) -> Result<Identity, PaError> {
        let refuse = |why: &str| PaError::unauthenticated(format!("internal credential: {why}"));
        let bytes = metadata
            .get_bin(IDENTITY_HEADER)
            .ok_or_else(|| refuse("no identity"))?
            .to_bytes()
            .map_err(|_| refuse("identity is not valid base64"))?;
        let credential = metadata
            .get(CREDENTIAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| refuse("missing"))?;
        let mut parts = credential.splitn(3, '.');
        let (Some("v1"), Some(expires), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(refuse("malformed"));
        };
        let expires_ms: u64 = expires.parse().map_err(|_| refuse("malformed expiry"))?;
        let tag = hex_decode(tag).ok_or_else(|| refuse("malformed signature"))?;
        self.mac(expires_ms, &bytes)
            .verify_slice(&tag)
            .map_err(|_| refuse("bad signature"))?;
        if expires_ms + CLOCK_SKEW_MS < now_ms() {
            return Err(refuse("expired"));
        }
        let identity =
            Identity::decode(bytes.as_ref()).map_err(|_| refuse("undecodable identity"))?;
        if identity.tenant_id.is_empty() || identity.user_id.is_empty() {
            return Err(refuse("identity without tenant or user"));
        }
        Ok(identity)
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The identity a service uses when it acts for itself (schedules, maintenance): tenant
/// `_platform`, user = the service's name, [`AuthMethod::Internal`].
pub fn internal_identity(service: &str) -> Identity {
    Identity {
        tenant_id: "_platform".into(),
        user_id: service.into(),
        roles: vec![],
        scopes: vec![],
        auth_method: AuthMethod::Internal as i32,
        display_name: service.into(),
    }
}

/// Refuses (403) anyone but a service acting for itself. The gateway never builds an internal
/// identity, so no end user (not even an admin) reaches what this guards.
pub fn require_internal(identity: &Identity) -> Result<(), PaError> {
    if identity.auth_method == AuthMethod::Internal as i32 {
        Ok(())
    } else {
        Err(PaError::new(
            crate::ErrorCode::Forbidden,
            "only the platform's own services may call this",
        ))
    }
}

/// The role of a platform administrator: the shared model catalog, platform keys, default
/// policies and platform maintenance (ADR 0130). The gateway maps the IdP's role named by
/// `PA_PLATFORM_ADMIN_ROLE` to it; `admin` alone is a tenant administrator.
pub const PLATFORM_ADMIN_ROLE: &str = "platform-admin";
/// The role of a tenant administrator.
pub const TENANT_ADMIN_ROLE: &str = "admin";

/// Whether the caller administers the platform.
pub fn is_platform_admin(identity: &Identity) -> bool {
    identity.roles.iter().any(|r| r == PLATFORM_ADMIN_ROLE)
}

/// Refuses (403) a caller who is not a platform administrator.
pub fn require_platform_admin(identity: &Identity) -> Result<(), PaError> {
    require_role(identity, PLATFORM_ADMIN_ROLE)
}

/// Refuses (403) a caller who administers neither the tenant nor the platform.
pub fn require_any_admin(identity: &Identity) -> Result<(), PaError> {
    if is_platform_admin(identity) {
        return Ok(());
    }
    require_role(identity, TENANT_ADMIN_ROLE)
}

/// Refuses (403) a caller without `role`.
pub fn require_role(identity: &Identity, role: &str) -> Result<(), PaError> {
    if identity.roles.iter().any(|r| r == role) {
        Ok(())
    } else {
        Err(PaError::new(
            crate::ErrorCode::Forbidden,
            format!("this needs the {role} role"),
        ))
    }
}

/// A tonic interceptor that admits only calls with a valid internal credential and stores the
/// verified [`Identity`] in the request extensions.
#[derive(Clone, Debug)]
pub struct RequireIdentity(pub InternalAuth);

impl tonic::service::Interceptor for RequireIdentity {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let identity = self.0.verify(request.metadata())?;
        request.extensions_mut().insert(identity);
        Ok(request)
    }
}

/// Reads the verified identity a [`RequireIdentity`] interceptor stored.
pub trait RequestIdentity {
    fn identity(&self) -> Result<Identity, tonic::Status>;
}

impl<T> RequestIdentity for tonic::Request<T> {
    fn identity(&self) -> Result<Identity, tonic::Status> {
        self.extensions()
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| PaError::unauthenticated("no verified identity on this call").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            tenant_id: "t1".into(),
            user_id: "alice".into(),
            roles: vec!["user".into()],
            auth_method: AuthMethod::Dev as i32,
            ..Default::default()
        }
    }

    #[test]
    fn signed_identity_verifies() {
        let auth = InternalAuth::new("s3cret");
        let mut md = MetadataMap::new();
        auth.sign_into(&alice(), &mut md);
        assert_eq!(auth.verify(&md).unwrap(), alice());
    }

    #[test]
    fn forged_identity_is_refused() {
        let auth = InternalAuth::new("s3cret");
        let mut md = MetadataMap::new();
        auth.sign_into(&alice(), &mut md);
        let mut mallory = alice();
        mallory.tenant_id = "t2".into();
        md.insert_bin(
            IDENTITY_HEADER,
            MetadataValue::from_bytes(&mallory.encode_to_vec()),
        );
        let err = auth.verify(&md).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::Unauthenticated);
    }

    #[test]
    fn other_secret_and_missing_credential_are_refused() {
        let mut md = MetadataMap::new();
        InternalAuth::new("other").sign_into(&alice(), &mut md);
        assert!(InternalAuth::new("s3cret").verify(&md).is_err());
        let mut bare = MetadataMap::new();
        bare.insert_bin(
            IDENTITY_HEADER,
            MetadataValue::from_bytes(&alice().encode_to_vec()),
        );
        assert!(InternalAuth::new("s3cret").verify(&bare).is_err());
    }
}
