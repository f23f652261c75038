//! `http:webhook {url, method, headers, body}`: one HTTP call (reqwest). 2xx is success; 5xx,
//! 408, 429, timeouts and connection errors are retried; any other answer (4xx, and 3xx: redirects
//! are never followed) ends the job as dead at once. Only hosts in
//! `jobqueue.webhook.allowed_hosts` may be called (`host`: any port, `host:port`: that port), http
//! or https only; with an empty list the type is disabled. Header values are shown as `"***"`.
//! The result is the answer: `{status, headers, body}` — response headers whose names suggest
//! a secret (cookies, auth, tokens, keys) shown as `"***"`, and the first 4 KB of the body.

use super::{JobContext, JobError, JobType};
use cacheserver_config::WebhookSettings;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What replaces every header value wherever a job is shown.
pub const REDACTED: &str = "***";
/// Bytes of the answer's body kept in the result.
pub const RESULT_BODY_BYTES: usize = 4 * 1024;

/// The result of `http:webhook`: the answer it got.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct WebhookResult {
    #[schema(example = 200)]
    pub status: u16,
    /// Response headers; the values of those that may carry secrets are `"***"`.
    pub headers: BTreeMap<String, String>,
    /// The first 4 KB of the body (invalid UTF-8 replaced).
    pub body: String,
    /// Whether the body was longer than what is kept.
    pub body_truncated: bool,
}

pub struct Webhook {
    /// `None` when disabled (no allowed host) or when the client could not be built.
    client: Option<reqwest::Client>,
    allowed: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    #[default]
    Post,
    Put,
    Patch,
}

/// The payload of `http:webhook`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPayload {
    /// `http://` or `https://`, host in `jobqueue.webhook.allowed_hosts` (a 400 names a host
    /// that is not; with none allowed the type is disabled).
    #[schema(
        example = "https://hooks.example.com/orders",
        format = "uri",
        pattern = "^[hH][tT][tT][pP][sS]?://"
    )]
    pub url: String,
    /// POST (default), PUT or PATCH.
    #[serde(default)]
    pub method: WebhookMethod,
    #[serde(default)]
    #[schema(schema_with = headers_schema)]
    pub headers: BTreeMap<String, String>,
    /// Sent as JSON (any JSON value); absent or `null`: no body.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub body: Option<Value>,
}

/// What `http` accepts as a header name (a token, any case) and value (no control character but
/// tab): the payload schema's check, so `headers()` never fails on a registered job.
const HEADER_NAME_PATTERN: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
const HEADER_VALUE_PATTERN: &str = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F]*$";

/// `headers` in the spec: a map whose names and values carry the patterns `http` enforces.
fn headers_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    let text = |pattern: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Sent as given; values are shown as `\"***\"` wherever the job is shown or logged.",
        ))
        .property_names(Some(text(HEADER_NAME_PATTERN)))
        .additional_properties(Some(text(HEADER_VALUE_PATTERN)))
        .build()
}

impl Webhook {
    pub fn new(settings: &WebhookSettings) -> Self {
        let client = (!settings.allowed_hosts.is_empty())
            .then(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(settings.timeout)
                    .build()
                    .map_err(|e| tracing::error!(error = %e, "webhook client unavailable"))
                    .ok()
            })
            .flatten();
        Self {
            client,
            allowed: settings.allowed_hosts.clone(),
        }
    }

    /// The URL if it is http(s) to an allowed host.
    fn check_url(&self, url: &str) -> Result<Url, String> {
        if self.allowed.is_empty() {
            return Err(
                "webhook jobs are disabled (jobqueue.webhook.allowed_hosts is empty)".into(),
            );
        }
        let url = Url::parse(url).map_err(|e| format!("url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("url must be http or https".into());
        }
        let host = url
            .host_str()
            .ok_or("url has no host")?
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0);
        let with_port = format!("{host}:{port}");
        if !self.allowed.iter().any(|a| *a == host || *a == with_port) {
            return Err(format!(
                "url host {with_port} is not in jobqueue.webhook.allowed_hosts"
            ));
        }
        Ok(url)
    }
}

fn headers(given: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in given {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("headers: {name:?} is not a header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("headers: the value of {name} is not a header value"))?;
        map.insert(name, value);
    }
    Ok(map)
}

impl JobType for Webhook {
    const NAME: &'static str = "http:webhook";
    type Payload = WebhookPayload;
    type Output = WebhookResult;

    /// Only the allowed hosts (settings): the schema has checked the rest, header names and
    /// values included (its patterns are what `http` accepts).
    fn validate(&self, payload: &WebhookPayload) -> Result<(), String> {
        self.check_url(&payload.url).map(|_| ())
    }

    /// The target `host:port`: the queue's per-key limits (the default queue's `key_rate_limit`
    /// defaults to `jobqueue.webhook.per_host_rate_limit`) count calls per receiver.
    fn limit_key(&self, payload: &WebhookPayload) -> Option<String> {
        let url = Url::parse(&payload.url).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        Some(format!("{host}:{}", url.port_or_known_default()?))
    }

    fn redact(&self, payload: &mut Value) {
        if let Some(headers) = payload.get_mut("headers").and_then(Value::as_object_mut) {
            for value in headers.values_mut() {
                *value = Value::String(REDACTED.into());
            }
        }
    }

    async fn run(
        &self,
        payload: WebhookPayload,
        _ctx: &JobContext,
    ) -> Result<WebhookResult, JobError> {
        // Checked again: the allowed hosts may have changed since the job was registered.
        let url = self.check_url(&payload.url).map_err(JobError::fatal)?;
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| JobError::fatal("webhook jobs are disabled"))?;
        let method = match payload.method {
            WebhookMethod::Post => Method::POST,
            WebhookMethod::Put => Method::PUT,
            WebhookMethod::Patch => Method::PATCH,
        };
        let mut request = client
            .request(method, url)
            .headers(headers(&payload.headers).map_err(JobError::fatal)?);
        if let Some(body) = &payload.body {
            request = request.json(body);
        }
        // The error text of reqwest names the URL, never the headers.
        let mut response = request
            .send()
            .await
            .map_err(|e| JobError::retry(format!("webhook call failed: {}", e.without_url())))?;
        outcome(response.status())?;
        let status = response.status().as_u16();
        let headers = response_headers(response.headers());
        let mut body = Vec::new();
        let mut body_truncated = false;
        // Read no more than is kept: a huge answer costs neither memory nor time.
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            JobError::retry(format!("webhook answer broke off: {}", e.without_url()))
        })? {
            body.extend_from_slice(&chunk);
            if body.len() > RESULT_BODY_BYTES {
                body.truncate(RESULT_BODY_BYTES);
                body_truncated = true;
                break;
            }
        }
        Ok(WebhookResult {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            body_truncated,
        })
    }
}

/// The answer's headers, secrets hidden (several values of one name joined by `, `).
fn response_headers(given: &HeaderMap) -> BTreeMap<String, String> {
    const SECRET: [&str; 6] = ["cookie", "auth", "token", "key", "secret", "signature"];
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in given {
        let name = name.as_str();
        let value = if SECRET.iter().any(|s| name.contains(s)) {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        out.entry(name.to_owned())
            .and_modify(|v| {
                if value != REDACTED {
                    v.push_str(", ");
                    v.push_str(&value);
                }
            })
            .or_insert(value);
    }
    out
}

/// 2xx ok; 5xx, 408 and 429 are worth a retry; anything else is final.
fn outcome(status: StatusCode) -> Result<(), JobError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!("webhook answered {status}");
    let retryable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    Err(if retryable {
        JobError::retry(message)
    } else if status.is_redirection() {
        JobError::fatal(format!("{message} (redirects are not followed)"))
    } else {
        JobError::fatal(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hook(allowed: &[&str]) -> Webhook {
        Webhook::new(&WebhookSettings {
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(1),
            per_host_rate_limit: None,
        })
    }

    #[test]
    fn only_allowed_hosts_over_http_or_https() {
        let h = hook(&["hooks.example.com", "127.0.0.1:9000"]);
        assert!(h.check_url("https://hooks.example.com/x").is_ok());
        assert!(h.check_url("http://hooks.example.com:8443/x").is_ok());
        assert!(h.check_url("http://127.0.0.1:9000/").is_ok());
        assert!(h.check_url("http://127.0.0.1:9001/").is_err());
        assert!(h.check_url("ftp://hooks.example.com/").is_err());
        assert!(h.check_url("https://evil.example.com/").is_err());
        let off = hook(&[])
            .check_url("https://hooks.example.com/")
            .unwrap_err();
        assert!(off.contains("webhook jobs are disabled"), "{off}");
    }

    #[test]
    fn the_schema_checks_headers_as_http_does() {
        let registry = crate::jobs::Registry::empty().with(hook(&["h"]));
        let cases = [
            ("x-ok", "tab\tand é"),
            ("Bad name", "v"),
            ("x", "\u{1}"),
            ("x", "\u{7f}"),
            ("x", "line\nbreak"),
        ];
        for (name, value) in cases {
            let payload = serde_json::json!({"url": "https://h/", "headers": {name: value}});
            let by_schema = registry.validate(Webhook::NAME, &payload).is_ok();
            let given = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            assert_eq!(by_schema, headers(&given).is_ok(), "{name:?}: {value:?}");
        }
    }

    #[test]
    fn secret_response_headers_are_hidden() {
        let mut given = HeaderMap::new();
        for (name, value) in [
            ("content-type", "text/plain"),
            ("set-cookie", "session=1"),
            ("x-api-key", "k"),
            ("authorization", "Bearer t"),
        ] {
            given.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let shown = response_headers(&given);
        assert_eq!(shown["content-type"], "text/plain");
        for name in ["set-cookie", "x-api-key", "authorization"] {
            assert_eq!(shown[name], REDACTED, "{name}");
        }
    }

    #[test]
    fn statuses_decide_retry_or_dead() {
        assert!(outcome(StatusCode::NO_CONTENT).is_ok());
        for s in [500, 503, 408, 429] {
            assert!(
                outcome(StatusCode::from_u16(s).unwrap_or_default())
                    .unwrap_err()
                    .retryable
            );
        }
        for s in [400, 404, 410, 302] {
            assert!(
                !outcome(StatusCode::from_u16(s).unwrap_or_default())
                    .unwrap_err()
                    .retryable
            );
        }
    }
}
