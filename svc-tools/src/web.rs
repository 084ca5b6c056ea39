//! The first-party web tools: web_fetch, web_search (SearXNG JSON API, Brave Search API) and
//! weather (an Open-Meteo-compatible API). Every request goes through [`NetGuard`]. The results
//! are text for the model; failures are [`ToolFailure`]s the model sees.

use reqwest::Url;
use serde_json::{Value, json};

use crate::netguard::{NetError, NetGuard, Request};

/// Longest text handed back to the model.
pub const MAX_TEXT_CHARS: usize = 40_000;

/// A tool that ran and failed: the message goes to the model as the tool's (error) result.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ToolFailure(pub String);

impl From<NetError> for ToolFailure {
    fn from(err: NetError) -> Self {
        Self(err.to_string())
    }
}

fn arg_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, ToolFailure> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ToolFailure(format!(
                "argument {name:?} (a non-empty string) is required"
            ))
        })
}

fn cut(text: &str, max_chars: usize) -> (String, bool) {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => (text[..at].to_string(), true),
        None => (text.to_string(), false),
    }
}

/// Parameter schemas (JSON Schema), as the model sees them.
pub fn web_fetch_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "url": { "type": "string", "description": "An http or https URL" }
        },
        "required": ["url"],
        "additionalProperties": false
    })
}

pub fn web_search_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": { "type": "string" },
            "count": { "type": "integer", "minimum": 1, "maximum": 10 }
        },
        "required": ["query"],
        "additionalProperties": false
    })
}

pub fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "location": { "type": "string", "description": "A place name, e.g. \"Oslo\"" },
            "latitude": { "type": "number" },
            "longitude": { "type": "number" }
        },
        "additionalProperties": false
    })
}

/// web_fetch: the page at `url` as readable text.
pub async fn web_fetch(guard: &NetGuard, args: &Value) -> Result<String, ToolFailure> {
    let raw = arg_str(args, "url")?;
    let url = Url::parse(raw).map_err(|e| ToolFailure(format!("invalid URL: {e}")))?;
    let fetched = guard.send(Request::get(url)).await?;
    let mime = fetched
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let text = if mime == "text/html" || mime == "application/xhtml+xml" || mime.is_empty() {
        html2text::from_read(fetched.body.as_slice(), 100)
            .map_err(|e| ToolFailure(format!("the page could not be read: {e}")))?
    } else if mime.starts_with("text/")
        || mime == "application/json"
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || mime == "application/xml"
    {
        String::from_utf8_lossy(&fetched.body).into_owned()
    } else {
        return Err(ToolFailure(format!(
            "{} is {mime}, which web_fetch does not read (HTML and text only)",
            fetched.url
        )));
    };
    let (text, cut_short) = cut(text.trim(), MAX_TEXT_CHARS);
    let mut out = format!("URL: {}\nStatus: {}\n\n{text}", fetched.url, fetched.status);
    if cut_short || fetched.truncated {
        out.push_str("\n\n[truncated]");
    }
    if fetched.status >= 400 {
        return Err(ToolFailure(out));
    }
    Ok(out)
}

/// Which search API an integration speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchApi {
    Searxng,
    Brave,
    Tavily,
}

pub struct SearchConfig<'a> {
    pub api: SearchApi,
    pub base_url: &'a str,
    pub api_key: Option<&'a str>,
}

struct Hit {
    title: String,
    url: String,
    snippet: String,
}

fn base(url: &str, path: &str) -> Result<Url, ToolFailure> {
    let base = Url::parse(url.trim_end_matches('/'))
        .map_err(|e| ToolFailure(format!("the integration's base URL is invalid: {e}")))?;
    let joined = format!("{}{path}", base.as_str().trim_end_matches('/'));
    Url::parse(&joined).map_err(|e| ToolFailure(format!("invalid URL: {e}")))
}

async fn get_json(
    guard: &NetGuard,
    url: Url,
    headers: Vec<(String, String)>,
) -> Result<Value, ToolFailure> {
    call_json(guard, url, headers, None).await
}

async fn call_json(
    guard: &NetGuard,
    url: Url,
    headers: Vec<(String, String)>,
    json: Option<Value>,
) -> Result<Value, ToolFailure> {
    let fetched = guard.send(Request { url, headers, json }).await?;
    if fetched.status >= 400 {
        return Err(ToolFailure(format!(
            "the API answered HTTP {}",
            fetched.status
        )));
    }
    serde_json::from_slice(&fetched.body)
        .map_err(|_| ToolFailure("the API's answer is not JSON".into()))
}

/// web_search: numbered results (title, URL, snippet).
pub async fn web_search(
    guard: &NetGuard,
    config: &SearchConfig<'_>,
    args: &Value,
) -> Result<String, ToolFailure> {
    let query = arg_str(args, "query")?;
    let count = args
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(5)
        .clamp(1, 10) as usize;
    let hits: Vec<Hit> = match config.api {
        SearchApi::Searxng => {
            let mut url = base(config.base_url, "/search")?;
            url.query_pairs_mut()
                .append_pair("q", query)
                .append_pair("format", "json");
            let answer = get_json(guard, url, Vec::new()).await?;
            answer["results"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|r| Hit {
                            title: r["title"].as_str().unwrap_or("").to_string(),
                            url: r["url"].as_str().unwrap_or("").to_string(),
                            snippet: r["content"].as_str().unwrap_or("").to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        SearchApi::Brave => {
            let key = config
                .api_key
                .ok_or_else(|| ToolFailure("the search integration has no api_key".into()))?;
            let mut url = base(config.base_url, "/res/v1/web/search")?;
            url.query_pairs_mut()
                .append_pair("q", query)
                .append_pair("count", &count.to_string());
            let headers = vec![
                ("accept".to_string(), "application/json".to_string()),
                ("x-subscription-token".to_string(), key.to_string()),
            ];
            let answer = get_json(guard, url, headers).await?;
            answer["web"]["results"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|r| Hit {
                            title: r["title"].as_str().unwrap_or("").to_string(),
                            url: r["url"].as_str().unwrap_or("").to_string(),
                            snippet: r["description"].as_str().unwrap_or("").to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        SearchApi::Tavily => {
            let key = config
                .api_key
                .ok_or_else(|| ToolFailure("the search integration has no api_key".into()))?;
            let url = base(config.base_url, "/search")?;
            let headers = vec![("authorization".to_string(), format!("Bearer {key}"))];
            let body = json!({ "query": query, "max_results": count });
            let answer = call_json(guard, url, headers, Some(body)).await?;
            answer["results"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|r| Hit {
                            title: r["title"].as_str().unwrap_or("").to_string(),
                            url: r["url"].as_str().unwrap_or("").to_string(),
                            snippet: r["content"].as_str().unwrap_or("").to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    if hits.is_empty() {
        return Ok(format!("No results for {query:?}."));
    }
    let mut out = format!("Results for {query:?}:\n");
    for (i, hit) in hits.iter().take(count).enumerate() {
        out.push_str(&format!(
            "{}. {}\n   {}\n   {}\n",
            i + 1,
            hit.title.trim(),
            hit.url.trim(),
            cut(hit.snippet.trim(), 500).0
        ));
    }
    Ok(out)
}

pub struct WeatherConfig<'a> {
    pub forecast_url: &'a str,
    pub geocoding_url: &'a str,
}

pub const OPEN_METEO_FORECAST: &str = "https://api.open-meteo.com";
pub const OPEN_METEO_GEOCODING: &str = "https://geocoding-api.open-meteo.com";
pub const BRAVE_API: &str = "https://api.search.brave.com";
pub const TAVILY_API: &str = "https://api.tavily.com";

/// weather: current conditions and a 3-day outlook for a place or coordinates.
pub async fn weather(
    guard: &NetGuard,
    config: &WeatherConfig<'_>,
    args: &Value,
) -> Result<String, ToolFailure> {
    let (lat, lon, place) = match (
        args.get("latitude").and_then(Value::as_f64),
        args.get("longitude").and_then(Value::as_f64),
    ) {
        (Some(lat), Some(lon)) => {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(ToolFailure("latitude/longitude out of range".into()));
            }
            (lat, lon, format!("{lat:.4}, {lon:.4}"))
        }
        _ => {
            let name = arg_str(args, "location")
                .map_err(|_| ToolFailure("give a location, or latitude and longitude".into()))?;
            let mut url = base(config.geocoding_url, "/v1/search")?;
            url.query_pairs_mut()
                .append_pair("name", name)
                .append_pair("count", "1")
                .append_pair("format", "json");
            let found = get_json(guard, url, Vec::new()).await?;
            let first = found["results"]
                .as_array()
                .and_then(|r| r.first())
                .ok_or_else(|| ToolFailure(format!("no place called {name:?} was found")))?;
            let (Some(lat), Some(lon)) = (first["latitude"].as_f64(), first["longitude"].as_f64())
            else {
                return Err(ToolFailure(
                    "the geocoding answer has no coordinates".into(),
                ));
            };
            let label = [first["name"].as_str(), first["country"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            (lat, lon, label)
        }
    };
    let mut url = base(config.forecast_url, "/v1/forecast")?;
    url.query_pairs_mut()
        .append_pair("latitude", &lat.to_string())
        .append_pair("longitude", &lon.to_string())
        .append_pair(
            "current",
            "temperature_2m,relative_humidity_2m,wind_speed_10m,weather_code",
        )
        .append_pair(
            "daily",
            "temperature_2m_max,temperature_2m_min,precipitation_sum",
        )
        .append_pair("forecast_days", "3")
        .append_pair("timezone", "auto");
    let forecast = get_json(guard, url, Vec::new()).await?;
    let current = &forecast["current"];
    let units = &forecast["current_units"];
    let unit = |k: &str| units[k].as_str().unwrap_or("").to_string();
    let mut out = format!("Weather for {place}:\n");
    if current.is_object() {
        out.push_str(&format!(
            "Now: {}{}, humidity {}{}, wind {}{}, weather code {}\n",
            current["temperature_2m"],
            unit("temperature_2m"),
            current["relative_humidity_2m"],
            unit("relative_humidity_2m"),
            current["wind_speed_10m"],
            unit("wind_speed_10m"),
            current["weather_code"],
        ));
    }
    let daily = &forecast["daily"];
    if let Some(days) = daily["time"].as_array() {
        let dunits = &forecast["daily_units"];
        for (i, day) in days.iter().enumerate() {
            out.push_str(&format!(
                "{}: min {}{}, max {}{}, precipitation {}{}\n",
                day.as_str().unwrap_or("?"),
                daily["temperature_2m_min"][i],
                dunits["temperature_2m_min"].as_str().unwrap_or(""),
                daily["temperature_2m_max"][i],
                dunits["temperature_2m_max"].as_str().unwrap_or(""),
                daily["precipitation_sum"][i],
                dunits["precipitation_sum"].as_str().unwrap_or(""),
            ));
        }
    }
    if !current.is_object() && daily["time"].as_array().is_none() {
        return Err(ToolFailure("the forecast answer holds no weather".into()));
    }
    Ok(out)
}
