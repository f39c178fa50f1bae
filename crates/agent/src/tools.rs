//! The tools the model may call. Each declares its name, description, the JSON Schema of
//! its arguments (generated from a Rust type with `schemars`, or given in configuration),
//! the credential provider it needs and the scopes **that tool** needs: the agent asks the
//! identity service for exactly those scopes before each call (least privilege).
//!
//! Built in: `github_profile` (`GET {github_base_url}/user`, scope `read:user`) and
//! `github_repositories` (`GET {github_base_url}/user/repos?per_page=N&sort=updated`,
//! scope `repo`: GitHub has no read-only scope for private repositories). Others are
//! declared in `[[agent.tools]]` as HTTP calls with a URL template.
//!
//! A tool gets the access token as an argument and returns text for the model; the token
//! never appears in what it returns.

use std::time::Duration;

use latchkey_llm::ToolSpec;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{HttpMethod, HttpToolConfig};

/// Names of the built-in tools.
pub const BUILTIN_TOOL_NAMES: &[&str] = &["github_profile", "github_repositories"];
/// Most text of a tool result sent back to the model.
pub const MAX_MODEL_RESULT_BYTES: usize = 32 * 1024;
/// `User-Agent` of every tool call (GitHub requires one).
pub const TOOL_USER_AGENT: &str = concat!("latchkey-agent/", env!("CARGO_PKG_VERSION"));

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const PATH_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
        url_template: String,
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

/// The `{param}` names of a URL template.
pub fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let mut rest = template;
    while let Some(start) = rest.find(['{', '}']) {
        if rest.as_bytes()[start] == b'}' {
            return Err("unbalanced `}` in the URL template".into());
        }
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or("unbalanced `{` in the URL template")?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("placeholder {{{name}}} must be [A-Za-z0-9_]+"));
        }
        out.push(name.to_string());
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Fill `{param}` from `arguments` (strings, numbers and booleans, percent-encoded); the
/// URL and the arguments not used.
pub fn fill_template(
    template: &str,
    arguments: &Value,
) -> Result<(String, Map<String, Value>), String> {
    let mut rest_args = arguments.as_object().cloned().unwrap_or_default();
    let mut url = template.to_string();
    for name in placeholders(template)? {
        let value = rest_args
            .remove(&name)
            .ok_or_else(|| format!("missing argument `{name}`"))?;
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(format!(
                    "argument `{name}` must be a string, number or boolean"
                ));
            }
        };
        url = url.replace(
            &format!("{{{name}}}"),
            &utf8_percent_encode(&text, PATH_VALUE).to_string(),
        );
    }
    Ok((url, rest_args))
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

    /// A tool declared in configuration (already validated).
    pub fn http(config: &HttpToolConfig) -> Tool {
        let input_schema = config
            .parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
        Tool {
            spec: ToolSpec {
                name: config.name.clone(),
                description: config.description.clone(),
                input_schema,
            },
            provider: config.provider.clone(),
            scopes: config.scopes.clone(),
            kind: ToolKind::Http {
                method: config.method,
                url_template: config.url.clone(),
            },
        }
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
            ToolKind::Http { url_template, .. } => {
                fill_template(url_template, arguments).map(|_| ())
            }
        }
    }

    /// Run the tool with the user's access token.
    pub async fn run(
        &self,
        http: &reqwest::Client,
        github_base_url: &str,
        max_response_bytes: usize,
        arguments: &Value,
        token: &SecretString,
    ) -> ToolOutcome {
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
            ToolKind::Http {
                method,
                url_template,
            } => match fill_template(url_template, arguments) {
                Ok((url, rest)) => {
                    let body = matches!(
                        method,
                        HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
                    )
                    .then_some(Value::Object(rest));
                    (*method, url, body, false)
                }
                Err(e) => return ToolOutcome::failed(e),
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
            Err(e) if e.is_timeout() => return ToolOutcome::failed("the resource API timed out"),
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
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
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
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates() {
        assert_eq!(
            placeholders("https://x/{owner}/{repo}/issues").unwrap_or_default(),
            vec!["owner".to_string(), "repo".to_string()]
        );
        assert!(placeholders("https://x/{owner").is_err());
        assert!(placeholders("https://x/}").is_err());
        assert!(placeholders("https://x/{a b}").is_err());
        let (url, rest) = fill_template(
            "https://x/repos/{owner}/{repo}?n={n}",
            &json!({"owner": "a/b", "repo": "c d", "n": 3, "title": "t"}),
        )
        .unwrap_or_default();
        assert_eq!(url, "https://x/repos/a%2Fb/c%20d?n=3");
        assert_eq!(rest.get("title"), Some(&json!("t")));
        assert!(fill_template("https://x/{owner}", &json!({})).is_err());
        assert!(fill_template("https://x/{owner}", &json!({"owner": {}})).is_err());
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
