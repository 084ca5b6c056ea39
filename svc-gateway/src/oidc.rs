//! Bearer JWTs from an OpenID Provider, validated against the issuer's JWKS: keys found through
//! OIDC discovery and cached, refetched (at most every `jwks_min_refetch`) when a token names an unknown `kid`
//! (key rotation), and refreshed when the cached set is older than the JWKS answer's
//! `Cache-Control: max-age` (at most `jwks_max_age`), so a key the provider removed stops
//! working within that time; when the provider cannot be reached the last keys stay in use
//! (logged) and the refresh is retried. An algorithm allow-list (never `none`, never HMAC — so a token "signed" with
//! the public key as an HMAC secret is refused); `iss`, `aud`, `exp` and `nbf` checked with a
//! small clock skew. Tenant and roles come from configurable claims.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use pa_kit::PaError;
use pa_proto::v1::{AuthMethod, Identity};
use serde_json::Value;
use tokio::sync::RwLock;

#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// `PA_OIDC_ISSUER`, e.g. `http://127.0.0.1:8090`.
    pub issuer: String,
    /// `PA_OIDC_AUDIENCE`, default `pa-api`.
    pub audience: String,
    /// `PA_OIDC_CLIENT_ID`, default `pa-web`: what /v1/auth/config tells browser clients.
    pub client_id: String,
    /// `PA_OIDC_TENANT_CLAIM`, default `tenant`.
    pub tenant_claim: String,
    /// `PA_OIDC_ROLES_CLAIM`, default `roles`.
    pub roles_claim: String,
    /// `PA_PLATFORM_ADMIN_ROLE`, default `platform-admin`: the IdP role that makes a user a
    /// platform administrator (mapped to the mesh's `platform-admin`; ADR 0130).
    pub platform_admin_role: String,
    /// `PA_OIDC_ALGORITHMS`, default `RS256,ES256`.
    pub algorithms: Vec<Algorithm>,
    /// `PA_OIDC_LEEWAY_SECS`, default 30.
    pub leeway_secs: u64,
    /// `PA_OIDC_JWKS_MIN_REFETCH_SECS`, default 10: an unknown `kid` refetches the keys at most
    /// this often, so garbage tokens cannot hammer the provider.
    pub jwks_min_refetch: Duration,
    /// `PA_OIDC_JWKS_MAX_AGE_SECS`, default 600: the keys are refreshed at least this often
    /// (sooner when the JWKS answer's `Cache-Control: max-age` says so).
    pub jwks_max_age: Duration,
}

/// How long a JWKS answer may be used: its `Cache-Control` max-age (`no-cache`/`no-store`:
/// 0), never more than `cap`.
pub fn jwks_lifetime(cache_control: Option<&str>, cap: Duration) -> Duration {
    let Some(value) = cache_control else {
        return cap;
    };
    let mut lifetime = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Duration::ZERO;
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            lifetime = secs
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    lifetime.map_or(cap, |l| l.min(cap))
}

/// The IdP's platform role becomes the mesh's [`PLATFORM_ADMIN_ROLE`]; a token carrying the
/// mesh's name for it when the IdP's role is named otherwise does not make anyone a platform
/// administrator.
///
/// [`PLATFORM_ADMIN_ROLE`]: pa_kit::identity::PLATFORM_ADMIN_ROLE
pub fn platform_roles(roles: Vec<String>, platform_admin_role: &str) -> Vec<String> {
    use pa_kit::identity::PLATFORM_ADMIN_ROLE;
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        let mapped = if !platform_admin_role.is_empty() && role == platform_admin_role {
            PLATFORM_ADMIN_ROLE.to_string()
        } else if role == PLATFORM_ADMIN_ROLE {
            continue;
        } else {
            role
        };
        if !out.contains(&mapped) {
            out.push(mapped);
        }
    }
    out
}

/// Only asymmetric algorithms may be allowed.
pub fn parse_algorithms(list: &str) -> Result<Vec<Algorithm>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| match a {
            "RS256" => Ok(Algorithm::RS256),
            "RS384" => Ok(Algorithm::RS384),
            "RS512" => Ok(Algorithm::RS512),
            "PS256" => Ok(Algorithm::PS256),
            "PS384" => Ok(Algorithm::PS384),
            "PS512" => Ok(Algorithm::PS512),
            "ES256" => Ok(Algorithm::ES256),
            "ES384" => Ok(Algorithm::ES384),
            "EdDSA" => Ok(Algorithm::EdDSA),
            other => Err(format!(
                "algorithm {other:?} is not allowed (asymmetric algorithms only)"
            )),
        })
        .collect()
}

#[derive(Default)]
struct KeyCache {
    jwks_uri: Option<String>,
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    /// When the keys must be fetched again.
    stale_at: Option<Instant>,
}

pub struct OidcVerifier {
    pub config: OidcConfig,
    http: reqwest::Client,
    cache: RwLock<KeyCache>,
}

fn refuse(why: &str) -> PaError {
    PaError::unauthenticated(format!("invalid bearer token: {why}"))
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            config,
            http,
            cache: RwLock::default(),
        })
    }

    async fn fetch_keys(&self) -> Result<(), PaError> {
        let unavailable = |what: &str| {
            PaError::unavailable(format!("identity provider: {what}")).with_retry_after_ms(1000)
        };
        let mut cache = self.cache.write().await;
        if cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.config.jwks_min_refetch)
        {
            return Ok(()); // another request just refreshed
        }
        let jwks_uri = match &cache.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let discovery: Value = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|_| unavailable("discovery failed"))?
                    .json()
                    .await
                    .map_err(|_| unavailable("discovery is not JSON"))?;
                if discovery["issuer"].as_str() != Some(self.config.issuer.as_str()) {
                    return Err(unavailable("discovery names another issuer"));
                }
                let uri = discovery["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| unavailable("no jwks_uri"))?
                    .to_string();
                cache.jwks_uri = Some(uri.clone());
                uri
            }
        };
        // Whatever happens next, do not ask again before `jwks_min_refetch`.
        cache.fetched_at = Some(Instant::now());
        let response = self
            .http
            .get(&jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|_| unavailable("JWKS fetch failed"))?;
        let lifetime = jwks_lifetime(
            response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            self.config.jwks_max_age,
        );
        let jwks: JwkSet = response
            .json()
            .await
            .map_err(|_| unavailable("JWKS is not valid"))?;
        cache.keys = jwks
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        cache.fetched_at = Some(Instant::now());
        cache.stale_at = Some(Instant::now() + lifetime);
        tracing::info!(
            keys = cache.keys.len(),
            "fetched the identity provider's signing keys"
        );
        Ok(())
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, PaError> {
        let stale = {
            let cache = self.cache.read().await;
            cache.stale_at.is_some_and(|at| Instant::now() >= at)
        };
        if stale {
            // The scheduled refresh: a key the provider removed goes now. An unreachable
            // provider leaves the last keys in use (retried after `jwks_min_refetch`).
            if let Err(err) = self.fetch_keys().await {
                tracing::warn!(%err, "cannot refresh the identity provider's keys; using the last ones");
            }
        }
        if let Some(key) = self.cache.read().await.keys.get(kid) {
            return Ok(key.clone());
        }
        // Unknown kid: the provider may have rotated its keys.
        self.fetch_keys().await?;
        self.cache
            .read()
            .await
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| refuse("unknown signing key"))
    }

    pub async fn verify(&self, token: &str) -> Result<Identity, PaError> {
        let header = decode_header(token).map_err(|_| refuse("malformed"))?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(refuse("algorithm not allowed"));
        }
        let kid = header.kid.ok_or_else(|| refuse("no key id"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let data = decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            refuse(match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not yet valid",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                _ => "not valid",
            })
        })?;
        self.identity(&data.claims)
    }

    fn identity(&self, claims: &Value) -> Result<Identity, PaError> {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let user_id = text(&claims["sub"])
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refuse("no subject"))?;
        let tenant_id = text(&claims[&self.config.tenant_claim])
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refuse("no tenant claim"))?;
        let roles: Vec<String> = match &claims[&self.config.roles_claim] {
            Value::Array(items) => items.iter().filter_map(text).collect(),
            Value::String(list) => list.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let roles = platform_roles(roles, &self.config.platform_admin_role);
        let scopes = text(&claims["scope"])
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let display_name = text(&claims["name"])
            .or_else(|| text(&claims["preferred_username"]))
            .unwrap_or_else(|| user_id.clone());
        Ok(Identity {
            tenant_id,
            user_id,
            roles,
            scopes,
            auth_method: AuthMethod::Oidc as i32,
            display_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_jwks_lifetime_follows_cache_control_within_the_cap() {
        let cap = Duration::from_secs(600);
        let life = |h| super::jwks_lifetime(h, cap);
        assert_eq!(life(None), cap);
        assert_eq!(life(Some("public, max-age=60")), Duration::from_secs(60));
        assert_eq!(life(Some("max-age=86400")), cap);
        assert_eq!(life(Some("no-cache")), Duration::ZERO);
        assert_eq!(life(Some("public")), cap);
        assert_eq!(life(Some("max-age=oops")), cap);
    }

    #[test]
    fn only_the_configured_idp_role_makes_a_platform_administrator() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            super::platform_roles(roles(&["admin", "ops-root"]), "ops-root"),
            roles(&["admin", "platform-admin"])
        );
        // The mesh's own name, from an IdP whose platform role is named otherwise: dropped.
        assert_eq!(
            super::platform_roles(roles(&["admin", "platform-admin"]), "ops-root"),
            roles(&["admin"])
        );
        assert_eq!(
            super::platform_roles(roles(&["user", "platform-admin"]), "platform-admin"),
            roles(&["user", "platform-admin"])
        );
    }

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        assert!(super::parse_algorithms("RS256, ES256").is_ok());
        assert!(super::parse_algorithms("HS256").is_err());
        assert!(super::parse_algorithms("none").is_err());
    }
}
