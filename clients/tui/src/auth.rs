//! Login with the deployment's OpenID Provider (device-code grant, or the password grant for
//! scripts and tests) and the stored token file (mode 0600).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// `$PA_TOKEN_FILE`, else `$XDG_CONFIG_HOME/personal-agent/token.json`, else
/// `~/.config/personal-agent/token.json`.
pub fn token_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PA_TOKEN_FILE") {
        return Some(p.into());
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("personal-agent").join("token.json"))
}

/// `PA_TOKEN` wins over the stored token; an expired stored token is not used.
pub fn current_token() -> Option<String> {
    if let Ok(t) = std::env::var("PA_TOKEN")
        && !t.is_empty()
    {
        return Some(t);
    }
    let stored: Value = serde_json::from_slice(&std::fs::read(token_path()?).ok()?).ok()?;
    let expires_at = stored["expires_at"].as_u64().unwrap_or(u64::MAX);
    (expires_at > now_secs()).then(|| stored["access_token"].as_str().map(str::to_string))?
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Writes the token answer readable by its owner only (0600 from creation on, so it is never
/// briefly world-readable).
pub fn store_token(issuer: &str, answer: &Value) -> Result<PathBuf, BoxError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = token_path().ok_or("no config directory: set PA_TOKEN_FILE or HOME")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let expires_at = answer["expires_in"].as_u64().map(|s| now_secs() + s);
    let stored = json!({
        "issuer": issuer,
        "access_token": answer["access_token"],
        "refresh_token": answer["refresh_token"],
        "expires_at": expires_at,
    });
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    // An existing file keeps its old mode on open: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(serde_json::to_string_pretty(&stored)?.as_bytes())?;
    Ok(path)
}

pub struct Client {
    pub id: String,
    pub secret: Option<String>,
}

impl Client {
    fn post(
        &self,
        http: &reqwest::Client,
        url: &str,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let request = http.post(url);
        match &self.secret {
            Some(secret) => request.basic_auth(&self.id, Some(secret)).form(&form),
            None => {
                form.push(("client_id", &self.id));
                request.form(&form)
            }
        }
    }
}

pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Value, BoxError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let r = http.get(&url).send().await?;
    if !r.status().is_success() {
        return Err(format!("{url}: {}", r.status()).into());
    }
    Ok(r.json().await?)
}

async fn answer(r: reqwest::Response) -> Result<(u16, Value), BoxError> {
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "error": text })),
    ))
}

fn oauth_error(status: u16, body: &Value) -> BoxError {
    let error = body["error"].as_str().unwrap_or("error");
    match body["error_description"].as_str() {
        Some(d) => format!("{error}: {d} ({status})").into(),
        None => format!("{error} ({status})").into(),
    }
}

pub async fn password_login(
    http: &reqwest::Client,
    issuer: &str,
    client: &Client,
    user: &str,
    password: &str,
) -> Result<Value, BoxError> {
    let discovery = discover(http, issuer).await?;
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .ok_or("the IdP has no token_endpoint")?;
    let form = [
        ("grant_type", "password"),
        ("username", user),
        ("password", password),
        ("scope", "openid"),
    ];
    let (status, body) = answer(client.post(http, token_endpoint, &form).send().await?).await?;
    if status != 200 || body["access_token"].as_str().is_none() {
        return Err(oauth_error(status, &body));
    }
    Ok(body)
}

/// The device authorization grant (RFC 8628): shows where to sign in, then polls.
pub async fn device_login(
    http: &reqwest::Client,
    issuer: &str,
    client: &Client,
    mut show: impl FnMut(&str, &str),
) -> Result<Value, BoxError> {
    let discovery = discover(http, issuer).await?;
    let device_endpoint = discovery["device_authorization_endpoint"]
        .as_str()
        .ok_or("the IdP does not offer the device grant")?;
    let token_endpoint = discovery["token_endpoint"]
        .as_str()
        .ok_or("the IdP has no token_endpoint")?;
    let (status, device) = answer(
        client
            .post(
                http,
                device_endpoint,
                &[("scope", "openid profile offline_access")],
            )
            .send()
            .await?,
    )
    .await?;
    let device_code = device["device_code"]
        .as_str()
        .ok_or_else(|| oauth_error(status, &device))?;
    let uri = device["verification_uri_complete"]
        .as_str()
        .or(device["verification_uri"].as_str())
        .unwrap_or_default();
    show(uri, device["user_code"].as_str().unwrap_or_default());
    let mut interval = Duration::from_secs(device["interval"].as_u64().unwrap_or(5).max(1));
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(device["expires_in"].as_u64().unwrap_or(600));
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() > deadline {
            return Err("the device code expired before the sign-in".into());
        }
        let form = [("grant_type", DEVICE_GRANT), ("device_code", device_code)];
        let (status, body) = answer(client.post(http, token_endpoint, &form).send().await?).await?;
        if status == 200 && body["access_token"].is_string() {
            return Ok(body);
        }
        match body["error"].as_str() {
            Some("authorization_pending") => {}
            Some("slow_down") => interval += Duration::from_secs(5),
            _ => return Err(oauth_error(status, &body)),
        }
    }
}
