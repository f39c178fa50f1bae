//! The tools the model may call. Each declares its name, description, the JSON Schema of
//! its arguments (generated from a Rust type with `schemars`, or given in configuration),
//! the credential provider it needs and the scopes **that tool** needs: the agent asks the
//! identity service for exactly those scopes before each call (least privilege).
//!
//! Built in: `github_profile` (`GET {github_base_url}/user`, scope `read:user`) and
//! `github_repositories` (`GET {github_base_url}/user/repos?per_page=N&sort=updated`,
//! scope `repo`: GitHub has no read-only scope for private repositories). Others are
//! declared in `[[agent.tools]]` as HTTP calls with a URL template ([`crate::template`]:
//! literal origin, each argument one encoded path segment or query value).
//!
//! A tool gets the access token as an argument and returns text for the model; the token
//! never appears in what it returns, even when the resource API echoes it
//! ([`crate::redact`]).

use std::time::Duration;

use latchkey_llm::ToolSpec;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{HttpMethod, HttpToolConfig};
use crate::redact::Redactor;
use crate::template::{TemplateError, UrlTemplate};

/// Names of the built-in tools.
pub const BUILTIN_TOOL_NAMES: &[&str] = &["github_profile", "github_repositories"];
/// Most text of a tool result sent back to the model.
pub const MAX_MODEL_RESULT_BYTES: usize = 32 * 1024;
/// `User-Agent` of every tool call (GitHub requires one).
pub const TOOL_USER_AGENT: &str = concat!("latchkey-agent/", env!("CARGO_PKG_VERSION"));

/// Arguments of `github_profile`: none.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubProfileArgs {}

/// Arguments of `github_repositories`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubRepositoriesArgs {
    /// How many repositories, most recently updated first (1 to 100, default 10).
    #[schemars(range(min = 1, max = 100))]
    pub per_page: Option<u32>,
}

/// What a tool does when called.
#[derive(Debug, Clone)]
enum ToolKind {
    GithubProfile,
    GithubRepositories,
    Http {
        method: HttpMethod,
        url: UrlTemplate,
    },
}

/// One tool: what the model sees, and what it needs.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Name, description and arguments schema (what the model sees).
    pub spec: ToolSpec,
    /// The credential provider.
    pub provider: String,
    /// Exactly the scopes this tool asks for.
    pub scopes: Vec<String>,
    kind: ToolKind,
}

/// What a tool call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// Success (2xx from the resource).
    pub ok: bool,
    /// The text for the model.
    pub content: String,
}

impl ToolOutcome {
    fn failed(content: impl Into<String>) -> Self {
        Self {
            ok: false,
            content: content.into(),
        }
    }
}

/// The JSON Schema of `T`, as the model's `input_schema`.
pub fn schema_of<T: JsonSchema>() -> Value {
    let mut value = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("$schema");
        map.remove("title");
        map.entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
    }
    value
}

/// `^[a-zA-Z0-9_-]{1,64}$`.
pub fn is_tool_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Tool {
    /// The built-in GitHub tools for `provider`.
    pub fn github(provider: &str) -> Vec<Tool> {
        vec![
            Tool {
                spec: ToolSpec {
                    name: "github_profile".into(),
                    description: "The signed-in user's GitHub profile (login, name, public repository count…).".into(),
                    input_schema: schema_of::<GithubProfileArgs>(),
                },
                provider: provider.to_string(),
                scopes: vec!["read:user".into()],
                kind: ToolKind::GithubProfile,
            },
            Tool {
                spec: ToolSpec {
                    name: "github_repositories".into(),
                    description: "The signed-in user's GitHub repositories (private ones included), most recently updated first.".into(),
                    input_schema: schema_of::<GithubRepositoriesArgs>(),
                },
                provider: provider.to_string(),
                scopes: vec!["repo".into()],
                kind: ToolKind::GithubRepositories,
            },
        ]
    }

    /// A tool declared in configuration; `Err` when its URL template is refused.
    pub fn http(config: &HttpToolConfig) -> Result<Tool, TemplateError> {
        let url = UrlTemplate::parse(&config.url)?;
        let input_schema = config
            .parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
        Ok(Tool {
            spec: ToolSpec {
                name: config.name.clone(),
                description: config.description.clone(),
                input_schema,
            },
            provider: config.provider.clone(),
            scopes: config.scopes.clone(),
            kind: ToolKind::Http {
                method: config.method,
                url,
            },
        })
    }

    /// Check the arguments before any token is asked for; `Err` is a message for the model.
    pub fn check_arguments(&self, arguments: &Value) -> Result<(), String> {
        if !arguments.is_object() {
            return Err("the arguments must be a JSON object".into());
        }
        match &self.kind {
            ToolKind::GithubProfile => {
                serde_json::from_value::<GithubProfileArgs>(arguments.clone())
                    .map(|_| ())
                    .map_err(|e| format!("invalid arguments: {e}"))
            }
            ToolKind::GithubRepositories => {
                let args = serde_json::from_value::<GithubRepositoriesArgs>(arguments.clone())
                    .map_err(|e| format!("invalid arguments: {e}"))?;
                match args.per_page {
                    Some(n) if !(1..=100).contains(&n) => {
                        Err("per_page must be between 1 and 100".into())
                    }
                    _ => Ok(()),
                }
            }
            ToolKind::Http { url, .. } => {
                url.fill(arguments).map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }

    /// Run the tool with the user's access token. The result never contains the token:
    /// every form of it the resource API may echo is replaced (see [`crate::redact`]).
    pub async fn run(
        &self,
        http: &reqwest::Client,
        github_base_url: &str,
        max_response_bytes: usize,
        arguments: &Value,
        token: &SecretString,
    ) -> ToolOutcome {
        let redactor = Redactor::new(token);
        // Every early `return` below ends this block, not `run`: its outcome is redacted too.
        let outcome = async {
            let base = github_base_url.trim_end_matches('/');
            let (method, url, body, github) = match &self.kind {
                ToolKind::GithubProfile => (HttpMethod::Get, format!("{base}/user"), None, true),
                ToolKind::GithubRepositories => {
                    let per_page = arguments
                        .get("per_page")
                        .and_then(Value::as_u64)
                        .unwrap_or(10)
                        .clamp(1, 100);
                    (
                        HttpMethod::Get,
                        format!("{base}/user/repos?per_page={per_page}&sort=updated"),
                        None,
                        true,
                    )
                }
                ToolKind::Http { method, url } => match url.fill(arguments) {
                    Ok(filled) => {
                        let body = matches!(
                            method,
                            HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
                        )
                        .then_some(Value::Object(filled.rest));
                        (*method, filled.url.into(), body, false)
                    }
                    Err(e) => return ToolOutcome::failed(e.to_string()),
                },
            };
            let mut headers = HeaderMap::new();
            headers.insert(USER_AGENT, HeaderValue::from_static(TOOL_USER_AGENT));
            if github {
                headers.insert(
                    ACCEPT,
                    HeaderValue::from_static("application/vnd.github+json"),
                );
                headers.insert(
                    "x-github-api-version",
                    HeaderValue::from_static("2022-11-28"),
                );
            } else {
                headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            }
            let Ok(mut authorization) =
                HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            else {
                return ToolOutcome::failed("the access token cannot be sent in a header");
            };
            authorization.set_sensitive(true);
            headers.insert(AUTHORIZATION, authorization);
            let method = match method {
                HttpMethod::Get => reqwest::Method::GET,
                HttpMethod::Post => reqwest::Method::POST,
                HttpMethod::Put => reqwest::Method::PUT,
                HttpMethod::Patch => reqwest::Method::PATCH,
                HttpMethod::Delete => reqwest::Method::DELETE,
            };
            let mut request = http.request(method, &url).headers(headers);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let mut response = match request.send().await {
                Ok(r) => r,
                Err(e) if e.is_timeout() => {
                    return ToolOutcome::failed("the resource API timed out");
                }
                Err(e) => {
                    return ToolOutcome::failed(format!(
                        "the resource API could not be reached: {}",
                        without_url(&e)
                    ));
                }
            };
            let status = response.status();
            let mut bytes = Vec::new();
            let mut cut = false;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = max_response_bytes.saturating_sub(bytes.len());
                        if chunk.len() > room {
                            bytes.extend_from_slice(&chunk[..room]);
                            cut = true;
                            break;
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) if e.is_timeout() => {
                        return ToolOutcome::failed("the resource API timed out");
                    }
                    Err(_) => return ToolOutcome::failed("the resource API's answer broke off"),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            // Redacted before any cut below, so no cut can leave part of the token behind.
            let mut text = if cut {
                redactor.redact(redactor.trim_partial_tail(&text))
            } else {
                redactor.redact(&text)
            };
            if cut {
                text.push_str("… [response truncated]");
            }
            let text = crate::events::truncate(&text, MAX_MODEL_RESULT_BYTES);
            if status.is_success() {
                ToolOutcome {
                    ok: true,
                    content: text,
                }
            } else {
                ToolOutcome::failed(format!("HTTP {}: {text}", status.as_u16()))
            }
        }
        .await;
        ToolOutcome {
            ok: outcome.ok,
            content: redactor.redact(&outcome.content),
        }
    }
}

/// A transport error's text without its URL (which could carry arguments).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection failed".into()
    } else {
        "transport error".into()
    }
}

/// A client for tool calls: no redirects (a redirect must not carry the token elsewhere).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    const TOKEN: &str = "gho_UnitT0ken/with+chars=";

    /// A loopback resource API: records every request (method, path and query, the
    /// Authorization header) and echoes the header back in several encodings.
    async fn echo_server() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
        use axum::http::{HeaderMap, Uri};
        let seen = Arc::new(Mutex::new(vec![]));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let record = record.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                record.lock().unwrap().push((uri.to_string(), auth.clone()));
                let token = auth.strip_prefix("Bearer ").unwrap_or_default();
                axum::Json(json!({
                    "path": uri.path(),
                    "headers": {"authorization": auth},
                    "basic": STANDARD.encode(format!("x:{token}")),
                    "b64": STANDARD.encode(&auth),
                    "url": format!("https://x.test/cb?token={}",
                        percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)),
                }))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    fn http_tool(url: String, method: HttpMethod) -> Tool {
        Tool::http(&HttpToolConfig {
            name: "issues".into(),
            description: "d".into(),
            provider: "p".into(),
            scopes: vec![],
            method,
            url,
            parameters: None,
        })
        .unwrap()
    }

    async fn run(tool: &Tool, arguments: Value) -> ToolOutcome {
        let client = http_client(Duration::from_secs(5)).unwrap();
        tool.run(
            &client,
            "http://127.0.0.1:9",
            64 * 1024,
            &arguments,
            &SecretString::from(TOKEN.to_string()),
        )
        .await
    }

    #[tokio::test]
    async fn arguments_never_move_the_request_outside_the_template() {
        let (base, seen) = echo_server().await;
        let tool = http_tool(
            format!("{base}/api/repos/{{owner}}/{{repo}}/issues"),
            HttpMethod::Get,
        );
        for bad in ["..", ".", "", "%2e%2e", "%2E.", "%252e%252e"] {
            let arguments = json!({"owner": bad, "repo": "r"});
            let error = tool.check_arguments(&arguments).unwrap_err();
            assert!(error.contains("`owner`"), "{error}");
            let outcome = run(&tool, arguments).await;
            assert!(!outcome.ok, "{bad:?}");
            assert!(outcome.content.contains("must not be empty"), "{outcome:?}");
        }
        assert!(seen.lock().unwrap().is_empty(), "a request was sent");
        for (owner, expected) in [
            ("a/b", "/api/repos/a%2Fb/r/issues"),
            ("a?x=1", "/api/repos/a%3Fx%3D1/r/issues"),
            ("a#f", "/api/repos/a%23f/r/issues"),
            ("../../x", "/api/repos/..%2F..%2Fx/r/issues"),
            ("é", "/api/repos/%C3%A9/r/issues"),
            ("%2F", "/api/repos/%252F/r/issues"),
        ] {
            let outcome = run(&tool, json!({"owner": owner, "repo": "r"})).await;
            assert!(outcome.ok, "{owner}: {outcome:?}");
            let last = seen.lock().unwrap().last().unwrap().0.clone();
            assert_eq!(last, expected, "{owner}");
        }
        for (uri, _) in seen.lock().unwrap().iter() {
            assert!(
                uri.starts_with("/api/repos/") && uri.ends_with("/r/issues"),
                "{uri}"
            );
            assert_eq!(uri.matches('/').count(), 5, "{uri}");
        }
    }

    #[tokio::test]
    async fn the_calls_own_token_is_redacted_from_the_result() {
        let (base, seen) = echo_server().await;
        let tool = http_tool(format!("{base}/echo/{{id}}"), HttpMethod::Post);
        let outcome = run(&tool, json!({"id": "1", "note": "n"})).await;
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(seen.lock().unwrap()[0].1, format!("Bearer {TOKEN}"));
        let content = &outcome.content;
        assert!(content.contains("Bearer [REDACTED]"), "{content}");
        assert!(!content.contains("UnitT0ken"), "{content}");
        for form in [
            STANDARD.encode(format!("x:{TOKEN}")),
            STANDARD.encode(format!("Bearer {TOKEN}")),
        ] {
            assert!(!content.contains(&form[4..form.len() - 4]), "{content}");
        }
        assert!(!content.contains("gho_UnitT0ken%2F"), "{content}");
        assert!(content.contains("/echo/1"), "{content}");
    }

    #[tokio::test]
    async fn a_cut_response_keeps_no_part_of_the_token() {
        let (base, _) = echo_server().await;
        let tool = http_tool(format!("{base}/e"), HttpMethod::Get);
        let client = http_client(Duration::from_secs(5)).unwrap();
        // The raw answer, to cut it six bytes into the first copy of the token.
        let raw = client
            .get(format!("{base}/e"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let at = raw.find(TOKEN).unwrap() + 6;
        let outcome = tool
            .run(
                &client,
                "http://127.0.0.1:9",
                at,
                &json!({}),
                &SecretString::from(TOKEN.to_string()),
            )
            .await;
        assert!(
            outcome.content.ends_with("… [response truncated]"),
            "{outcome:?}"
        );
        assert!(!outcome.content.contains("gho_Un"), "{outcome:?}");
    }

    #[test]
    fn builtin_schemas_and_scopes() {
        let tools = Tool::github("github");
        assert_eq!(tools[0].scopes, vec!["read:user"]);
        assert_eq!(tools[1].scopes, vec!["repo"]);
        assert_eq!(tools[1].spec.input_schema["type"], "object");
        assert!(tools[1].spec.input_schema["properties"]["per_page"].is_object());
        assert!(tools[0].check_arguments(&json!({})).is_ok());
        assert!(tools[0].check_arguments(&json!({"x": 1})).is_err());
        assert!(tools[1].check_arguments(&json!({"per_page": 0})).is_err());
        assert!(tools[1].check_arguments(&json!({"per_page": 5})).is_ok());
    }
}
