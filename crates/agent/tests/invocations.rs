//! `POST /invocations` end to end: the agent in-process against the real identity service,
//! the scripted LLM server and loopback resource and token servers (see `common`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_client::UserIdentifier;
use serde_json::{Value, json};

mod common;
use common::{
    AlbKey, LLM_API_KEY, Options, PROVIDER, SIGNER, names, now, of, oidc_issuer, read_until, start,
    start_with, urlencoding,
};

#[tokio::test]
async fn no_verified_user_no_model_call_no_tool() {
    let stack = start("unauth", "openai").await;
    let body = json!({"sessionId": "s1", "message": "use:github_profile {}"});
    let now = now();
    let forger = AlbKey::generate(&stack.key.kid);
    let good = stack.key.token("alice", 120);
    let (h, p, _) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    let alg_none = format!(
        "{}.{p}.",
        URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"alg": "none", "kid": stack.key.kid, "signer": SIGNER}))
                .unwrap()
        )
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("unsigned", Some(format!("{h}.{p}."))),
        ("forged", Some(forger.token("alice", 120))),
        ("expired", Some(stack.key.token("alice", -600))),
        ("alg-none", Some(alg_none)),
        ("garbage", Some("not-a-token".into())),
        (
            "wrong-signer",
            Some(stack.key.sign_raw(
                &json!({"kid": stack.key.kid, "alg": "ES256", "signer": "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/other/1", "exp": now + 60}),
                &json!({"sub": "alice", "exp": now + 60}),
            )),
        ),
    ];
    for (case, header) in cases {
        let response = stack.invoke_raw(header.as_deref(), body.clone()).await;
        assert_eq!(response.status(), 401, "{case}");
        let out: Value = response.json().await.unwrap();
        assert_eq!(out["code"], "unauthorized", "{case}");
    }
    // Two headers, even two valid ones.
    let response = stack
        .http
        .post(format!("{}/invocations", stack.agent_url))
        .header("x-amzn-oidc-data", &good)
        .header("x-amzn-oidc-data", &good)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A bearer token is not accepted when no OIDC source is configured.
    let response = stack
        .http
        .post(format!("{}/invocations", stack.agent_url))
        .bearer_auth("x.y.z")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    assert!(
        stack.llm_requests().await.is_empty(),
        "the model was called"
    );
    assert!(
        stack.recorder.lock().unwrap().calls.is_empty(),
        "a tool ran"
    );
    assert!(stack.stored_files().is_empty(), "a conversation was stored");

    // Bad bodies from a signed-in user: 400 JSON before any stream.
    for bad in [
        json!({"sessionId": "s1"}),
        json!({"sessionId": "../etc", "message": "hi"}),
        json!({"sessionId": "", "message": "hi"}),
        json!({"sessionId": "s1", "message": ""}),
        json!({"sessionId": "s1", "message": "hi", "extra": 1}),
        json!({"sessionId": "s1", "message": "x".repeat(20_000)}),
    ] {
        let response = stack.invoke_raw(Some(&good), bad.clone()).await;
        assert_eq!(response.status(), 400, "{bad}");
        let out: Value = response.json().await.unwrap();
        assert_eq!(out["code"], "invalid_request", "{bad}");
    }
    let response = stack
        .invoke_raw(
            Some(&good),
            json!({"sessionId": "s1", "message": "x".repeat(100_000)}),
        )
        .await;
    assert_eq!(response.status(), 413);
    assert!(stack.llm_requests().await.is_empty());

    // The runtime contract and the docs.
    let ping: Value = stack
        .http
        .get(format!("{}/ping", stack.agent_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping, json!({"status": "Healthy"}));
    let openapi: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.agent_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/invocations"]["post"].is_object());
    let docs = stack
        .http
        .get(format!("{}/docs/", stack.agent_url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    assert!(
        !html.contains("https://"),
        "the docs page loads remote assets"
    );
}

#[tokio::test]
async fn consent_flow_least_privilege_and_isolation() {
    let stack = start("flow", "openai").await;

    // (2) A plain message: text, usage, done; the conversation is stored.
    let (events, _) = stack.invoke("alice", "chat-1", "hello there").await;
    let text: String = of(&events, "text_delta")
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: hello there");
    let usage = of(&events, "usage");
    assert_eq!(usage.len(), 1);
    assert!(usage[0].data["inputTokens"].as_u64().unwrap() > 0);
    assert!(usage[0].data["outputTokens"].as_u64().unwrap() > 0);
    assert_eq!(events.last().unwrap().data["stopReason"], "end_turn");
    assert_eq!(stack.stored_files().len(), 1);

    // (3) A tool without a grant: authorization_required, no resource call.
    let (events, _) = stack
        .invoke("alice", "chat-1", "use:github_profile {}")
        .await;
    assert_eq!(
        names(&events),
        vec![
            "tool_call",
            "authorization_required",
            "text_delta",
            "usage",
            "done"
        ],
        "{events:?}"
    );
    let auth = of(&events, "authorization_required")[0].data.clone();
    assert_eq!(auth["tool"], "github_profile");
    assert_eq!(auth["provider"], PROVIDER);
    assert_eq!(auth["scopes"], json!(["read:user"]));
    assert!(
        auth["authorizationUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "{}/identities/oauth2/authorize",
                stack.identity.url
            ))
    );
    assert!(
        auth["sessionUri"]
            .as_str()
            .unwrap()
            .starts_with("urn:ietf:params:oauth:request_uri:")
    );
    assert_eq!(
        events.last().unwrap().data["stopReason"],
        "authorization_required"
    );
    assert!(stack.recorder.lock().unwrap().calls.is_empty());

    // (6) Bob with Alice's session id: a fresh conversation (no pending tool call).
    let (events, _) = stack.invoke("bob", "chat-1", "who am i").await;
    assert!(of(&events, "tool_call").is_empty(), "{events:?}");
    let text: String = of(&events, "text_delta")
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: who am i");
    let requests = stack.llm_requests().await;
    let bob_request = requests.last().unwrap().to_string();
    assert!(
        !bob_request.contains("hello there"),
        "bob saw alice's conversation"
    );
    assert_eq!(stack.stored_files().len(), 2);

    // (4) Alice consents; her next message runs the pending tool with the token.
    stack.consent(&auth, "alice").await;
    let (events, stream_a) = stack.invoke("alice", "chat-1", "done, go on").await;
    let call = of(&events, "tool_call");
    assert_eq!(call.len(), 1, "{events:?}");
    assert_eq!(call[0].data["name"], "github_profile");
    let result = of(&events, "tool_result");
    assert_eq!(result.len(), 1, "{events:?}");
    assert_eq!(result[0].data["ok"], true, "{events:?}");
    assert!(
        result[0].data["content"]
            .as_str()
            .unwrap()
            .contains("octo-alice")
    );
    assert!(!of(&events, "text_delta").is_empty());
    assert_eq!(events.last().unwrap().data["stopReason"], "end_turn");
    let token = {
        let r = stack.recorder.lock().unwrap();
        assert_eq!(r.issued.len(), 1);
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].0, "/user");
        assert_eq!(
            r.calls[0].1, r.issued[0],
            "the resource API did not see the token"
        );
        r.issued[0].clone()
    };
    // The model got the tool result, never the token.
    let requests = stack.llm_requests().await;
    let all_requests = serde_json::to_string(&requests).unwrap();
    assert!(all_requests.contains("octo-alice"));
    assert!(!all_requests.contains(&token));

    // A new conversation uses the vaulted token without consent.
    let (events, stream_b) = stack
        .invoke("alice", "chat-2", "use:github_profile {}")
        .await;
    assert!(
        of(&events, "authorization_required").is_empty(),
        "{events:?}"
    );
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true);
    let text: String = of(&events, "text_delta")
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert!(text.starts_with("tool github_profile returned:"), "{text}");
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 2);

    // (5) The `repo` tool still needs its own consent.
    let (events, stream_c) = stack
        .invoke(
            "alice",
            "chat-2",
            "use:github_repositories {\"per_page\": 5}",
        )
        .await;
    let auth = of(&events, "authorization_required");
    assert_eq!(auth.len(), 1, "{events:?}");
    assert_eq!(auth[0].data["tool"], "github_repositories");
    assert_eq!(auth[0].data["scopes"], json!(["repo"]));
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 2);
    assert_eq!(stack.recorder.lock().unwrap().exchanges, 1);

    // (8) The token never appears in the streams, the agent's log or the stored files.
    for stream in [&stream_a, &stream_b, &stream_c] {
        assert!(!stream.contains(&token), "token in the SSE stream");
    }
    let log = stack.log.text();
    // The log names the user, the tool, the provider and the scopes of each call.
    assert!(
        log.lines().any(|l| l.contains("tool ran")
            && l.contains("alice")
            && l.contains("github_profile")
            && l.contains("read:user")),
        "{log}"
    );
    assert!(!log.contains(&token), "token in the agent's log");
    assert!(!log.contains(LLM_API_KEY), "LLM key in the agent's log");
    let files = stack.stored_files();
    assert_eq!(files.len(), 3);
    for file in files {
        let stored = std::fs::read_to_string(&file).unwrap();
        assert!(!stored.contains(&token), "token in {}", file.display());
    }
}

/// A tool round trip through each provider's wire protocol.
async fn provider_round_trip(provider: &str) {
    let stack = start(&format!("rt-{provider}"), provider).await;
    let (events, _) = stack.invoke("carol", "rt", "use:github_profile {}").await;
    let auth = of(&events, "authorization_required")[0].data.clone();
    stack.consent(&auth, "carol").await;
    let (events, _) = stack.invoke("carol", "rt-2", "use:github_profile {}").await;
    assert_eq!(
        names(&events)[..3],
        ["tool_call", "tool_result", "text_delta"],
        "{events:?}"
    );
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true);
    let text: String = of(&events, "text_delta")
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert!(text.starts_with("tool github_profile returned:"), "{text}");
    assert!(text.contains("octo-alice"), "{text}");
    let usage = of(&events, "usage")[0].data.clone();
    assert!(usage["inputTokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(events.last().unwrap().data["stopReason"], "end_turn");
    let requests = stack.llm_requests().await;
    assert!(requests.len() >= 3, "{requests:?}");
}

#[tokio::test]
async fn openai_tool_round_trip() {
    provider_round_trip("openai").await;
}

#[tokio::test]
async fn anthropic_tool_round_trip() {
    provider_round_trip("anthropic").await;
}

#[tokio::test]
async fn bedrock_tool_round_trip() {
    provider_round_trip("bedrock").await;
}

#[tokio::test]
async fn consent_wait_continues_the_turn_and_stops_when_the_client_leaves() {
    let stack = start_with(
        "wait",
        "openai",
        Options {
            consent_wait_seconds: 30,
            ..Options::default()
        },
    )
    .await;

    // The turn waits for the consent and then runs the tool, in one stream.
    let mut response = stack
        .invoke_raw(
            Some(&stack.key.token("dave", 120)),
            json!({"sessionId": "w1", "message": "use:github_profile {}"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut buffer = String::new();
    let first = read_until(&mut response, &mut buffer, "authorization_required").await;
    let auth = first.last().unwrap().data.clone();
    assert_eq!(auth["tool"], "github_profile");
    assert!(
        auth["message"]
            .as_str()
            .unwrap()
            .contains("waits up to 30 seconds")
    );
    stack.consent(&auth, "dave").await;
    let rest = read_until(&mut response, &mut buffer, "done").await;
    let rest_names = names(&rest);
    assert_eq!(rest_names.first(), Some(&"tool_result"), "{rest:?}");
    assert!(rest_names.contains(&"text_delta"), "{rest:?}");
    assert_eq!(
        rest_names[rest_names.len() - 2..],
        ["usage", "done"],
        "{rest:?}"
    );
    assert_eq!(of(&rest, "tool_result")[0].data["ok"], true, "{rest:?}");
    assert_eq!(rest.last().unwrap().data["stopReason"], "end_turn");
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 1);

    // A client that leaves while the agent waits: the wait stops, the call stays pending.
    let mut response = stack
        .invoke_raw(
            Some(&stack.key.token("dave", 120)),
            json!({"sessionId": "w2", "message": "use:github_repositories {}"}),
        )
        .await;
    let mut buffer = String::new();
    let first = read_until(&mut response, &mut buffer, "authorization_required").await;
    let auth = first.last().unwrap().data.clone();
    assert_eq!(auth["scopes"], json!(["repo"]));
    drop(response);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = stack.log.text();
        if log.contains("the client went away while waiting for consent") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consent wait did not stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // After consent, the next message runs the pending call.
    stack.consent(&auth, "dave").await;
    let (events, _) = stack.invoke("dave", "w2", "approved").await;
    assert_eq!(
        names(&events)[..2],
        ["tool_call", "tool_result"],
        "{events:?}"
    );
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true);
    assert_eq!(
        stack.recorder.lock().unwrap().calls.last().unwrap().0,
        "/user/repos?per_page=10&sort=updated"
    );
}

#[tokio::test]
async fn consent_wait_ends_the_turn_at_its_deadline() {
    let stack = start_with(
        "wait-deadline",
        "anthropic",
        Options {
            consent_wait_seconds: 1,
            ..Options::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let (events, _) = stack.invoke("gina", "d1", "use:github_profile {}").await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        names(&events),
        vec![
            "tool_call",
            "authorization_required",
            "text_delta",
            "usage",
            "done"
        ],
        "{events:?}"
    );
    assert_eq!(
        events.last().unwrap().data["stopReason"],
        "authorization_required"
    );
    // A message while the consent is still missing: the call waits again, and the
    // message is kept, not dropped.
    let (events, _) = stack.invoke("gina", "d1", "are you still there?").await;
    assert_eq!(
        events.last().unwrap().data["stopReason"],
        "authorization_required",
        "{events:?}"
    );
    // The call is pending: after the consent, the next message runs it, and the model
    // reads both messages with the tool's result.
    let auth = of(&events, "authorization_required")[0].data.clone();
    stack.consent(&auth, "gina").await;
    let (events, _) = stack.invoke("gina", "d1", "ok").await;
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true, "{events:?}");
    let requests = stack.llm_requests().await;
    let last = requests.last().unwrap().to_string();
    assert!(
        last.contains("are you still there?") && last.contains("\"ok\""),
        "the model did not get both messages: {last}"
    );
}

#[tokio::test]
async fn a_tool_declared_in_configuration_runs_with_its_own_scopes() {
    let stack = start_with(
        "config-tool",
        "openai",
        Options {
            max_tool_iterations: Some(4),
            system_prompt: Some("You are a test agent."),
            tools_toml: Some(
                r#"
            [[tools]]
            name = "repo_info"
            description = "One repository's facts"
            provider = "github"
            scopes = ["repo:status"]
            method = "GET"
            url = "{GITHUB}/repos/{owner}/{repo}"
            parameters = { type = "object", properties = { owner = { type = "string" }, repo = { type = "string" } }, required = ["owner", "repo"] }
            "#,
            ),
            ..Options::default()
        },
    )
    .await;
    let (events, _) = stack
        .invoke(
            "erin",
            "c1",
            r#"use:repo_info {"owner": "a b", "repo": "x/y"}"#,
        )
        .await;
    let auth = of(&events, "authorization_required");
    assert_eq!(auth.len(), 1, "{events:?}");
    assert_eq!(auth[0].data["tool"], "repo_info");
    assert_eq!(auth[0].data["scopes"], json!(["repo:status"]));
    let auth = auth[0].data.clone();
    stack.consent(&auth, "erin").await;
    let (events, _) = stack.invoke("erin", "c1", "ok").await;
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true, "{events:?}");
    {
        let r = stack.recorder.lock().unwrap();
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].0, "/repos/a%20b/x%2Fy");
        assert_eq!(r.calls[0].1, r.issued[0]);
    }
    // The model saw the tool's schema and the system prompt from the file.
    let requests = stack.llm_requests().await;
    let first = &requests[0]["body"];
    assert!(
        first.to_string().contains("You are a test agent."),
        "{first}"
    );
    assert!(first.to_string().contains("repo_info"), "{first}");
}

/// Two tools with the same scopes: `repo_issues` and `echo` (reflects the credential).
const CONFINEMENT_TOOLS: &str = r#"
            [[tools]]
            name = "repo_issues"
            description = "A repository's issues"
            provider = "github"
            scopes = ["repo"]
            url = "{GITHUB}/repos/{owner}/{repo}/issues"
            parameters = { type = "object", properties = { owner = { type = "string" }, repo = { type = "string" } }, required = ["owner", "repo"] }

            [[tools]]
            name = "echo"
            description = "A resource that reflects the request"
            provider = "github"
            scopes = ["repo"]
            url = "{GITHUB}/echo/{id}"
            parameters = { type = "object", properties = { id = { type = "string" } }, required = ["id"] }
            "#;

#[tokio::test]
async fn tool_arguments_stay_in_their_template() {
    let stack = start_with(
        "tool-confinement",
        "openai",
        Options {
            tools_toml: Some(CONFINEMENT_TOOLS),
            ..Options::default()
        },
    )
    .await;
    // Consent once (both tools have the same scopes), with a plain call.
    let (events, _) = stack
        .invoke(
            "ivan",
            "t1",
            r#"use:repo_issues {"owner": "o", "repo": "r"}"#,
        )
        .await;
    let auth = of(&events, "authorization_required")[0].data.clone();
    stack.consent(&auth, "ivan").await;
    let (events, _) = stack.invoke("ivan", "t1", "ok").await;
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true, "{events:?}");

    // Hostile arguments, one call per line.
    let hostile = [
        r#"{"owner": "..", "repo": "r"}"#,
        r#"{"owner": "%2e%2e", "repo": "r"}"#,
        r#"{"owner": ".", "repo": "r"}"#,
        r#"{"owner": "", "repo": "r"}"#,
        r#"{"owner": "a/b", "repo": "r"}"#,
        r#"{"owner": "a?x=1", "repo": "r"}"#,
        r#"{"owner": "a#f", "repo": "r"}"#,
        r#"{"owner": "../../user", "repo": "r"}"#,
        r#"{"owner": "é😀", "repo": "r"}"#,
    ];
    let message: Vec<String> = hostile
        .iter()
        .map(|args| format!("use:repo_issues {args}"))
        .collect();
    let (events, _) = stack.invoke("ivan", "t2", &message.join("\n")).await;
    let results = of(&events, "tool_result");
    assert_eq!(results.len(), hostile.len(), "{events:?}");
    for (i, result) in results.iter().enumerate() {
        let refused = i < 4;
        assert_eq!(result.data["ok"], !refused, "{}: {result:?}", hostile[i]);
        if refused {
            let content = result.data["content"].as_str().unwrap();
            assert!(
                content.contains("argument `owner` must not be empty, `.` or `..`"),
                "{content}"
            );
        }
    }
    let paths: Vec<String> = {
        let r = stack.recorder.lock().unwrap();
        r.calls.iter().map(|(path, _)| path.clone()).collect()
    };
    assert_eq!(
        paths,
        [
            "/repos/o/r/issues",
            "/repos/a%2Fb/r/issues",
            "/repos/a%3Fx%3D1/r/issues",
            "/repos/a%23f/r/issues",
            "/repos/..%2F..%2Fuser/r/issues",
            "/repos/%C3%A9%F0%9F%98%80/r/issues",
        ]
    );
}

#[tokio::test]
async fn a_token_reflected_by_the_resource_is_redacted() {
    let stack = start_with(
        "tool-echo",
        "openai",
        Options {
            tools_toml: Some(CONFINEMENT_TOOLS),
            ..Options::default()
        },
    )
    .await;
    let (events, stream_a) = stack.invoke("ivan", "t3", r#"use:echo {"id": "1"}"#).await;
    let auth = of(&events, "authorization_required")[0].data.clone();
    stack.consent(&auth, "ivan").await;
    // A resource that reflects the token: redacted before the model, the stream and the
    // stored conversation see the result.
    let (events, stream_c) = stack.invoke("ivan", "t3", "ok").await;
    let result = of(&events, "tool_result")[0].data.clone();
    assert_eq!(result["ok"], true, "{events:?}");
    let content = result["content"].as_str().unwrap();
    assert!(content.contains("Bearer [REDACTED]"), "{content}");
    let token = {
        let r = stack.recorder.lock().unwrap();
        assert_eq!(r.calls.last().unwrap().0, "/echo/1");
        assert_eq!(r.calls.len(), 1, "{:?}", r.calls);
        r.issued[0].clone()
    };
    let forms = [
        token.clone(),
        STANDARD.encode(format!("user:{token}")),
        STANDARD.encode(format!("Bearer {token}")),
        urlencoding(&token),
    ];
    let model_saw = serde_json::to_string(&stack.llm_requests().await).unwrap();
    assert!(
        model_saw.contains("[REDACTED]"),
        "the model did not get the result"
    );
    let stored: String = stack
        .stored_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(stored.contains("[REDACTED]"));
    for form in &forms {
        for (where_, text) in [
            ("stream", &stream_a),
            ("stream", &stream_c),
            ("model requests", &model_saw),
            ("stored conversations", &stored),
        ] {
            assert!(!text.contains(form.as_str()), "{form} in the {where_}");
        }
    }
}

#[tokio::test]
async fn a_bearer_id_token_user_gets_a_wat_for_jwt() {
    let user_key = AlbKey::generate("oidc-key-1");
    let issuer = oidc_issuer(&user_key).await;
    let stack = start_with(
        "oidc",
        "openai",
        Options {
            // The identity service trusts the issuer too (for the WAT "for JWT").
            oidc: Some((issuer.clone(), "agent-app".into())),
            ..Options::default()
        },
    )
    .await;
    // Wrong audience, wrong key: 401 and no model call.
    for bad in [
        user_key.id_token(&issuer, "other-app", "frank"),
        AlbKey::generate("oidc-key-1").id_token(&issuer, "agent-app", "frank"),
    ] {
        let response = stack
            .http
            .post(format!("{}/invocations", stack.agent_url))
            .bearer_auth(&bad)
            .json(&json!({"sessionId": "o1", "message": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    assert!(stack.llm_requests().await.is_empty());

    let token = user_key.id_token(&issuer, "agent-app", "frank");
    let (events, _) = stack
        .invoke_bearer(&token, "o1", "use:github_profile {}")
        .await;
    let auth = of(&events, "authorization_required");
    assert_eq!(auth.len(), 1, "{events:?}");
    let auth = auth[0].data.clone();
    // The binding service would complete with the user's own token.
    stack
        .consent_as(
            &auth,
            UserIdentifier::UserToken(latchkey_client::SecretString::from(token.clone())),
        )
        .await;
    let (events, _) = stack.invoke_bearer(&token, "o1", "ok").await;
    assert_eq!(of(&events, "tool_result")[0].data["ok"], true, "{events:?}");
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 1);
    // Via the ALB header the agent asks for a WAT for the *user id* frank: for the token
    // vault that is another user than frank at the OIDC issuer (issue 12 item 2), so it
    // is asked for its own consent and never handed the token user's grant.
    let (events, _) = stack.invoke("frank", "o1", "use:github_profile {}").await;
    assert_eq!(of(&events, "authorization_required").len(), 1, "{events:?}");
    assert!(
        of(&events, "tool_result")
            .iter()
            .all(|e| e.data["ok"] != true),
        "{events:?}"
    );
    assert_eq!(stack.recorder.lock().unwrap().calls.len(), 1);
}

#[tokio::test]
async fn a_turn_without_a_workload_access_token_says_why_in_the_stream() {
    let stack = start_with(
        "no-user-id-trust",
        "openai",
        Options {
            without_user_id_trust: true,
            ..Options::default()
        },
    )
    .await;
    let (events, _) = stack.invoke("hana", "w1", "use:github_profile {}").await;
    let result = of(&events, "tool_result");
    assert_eq!(result.len(), 1, "{events:?}");
    assert_eq!(result[0].data["ok"], false);
    let content = result[0].data["content"].as_str().unwrap();
    assert!(
        content.starts_with("the agent could not get a workload access token for this user: ")
            && content.contains("latchkey:allow-user-id"),
        "the stream does not say why: {content}"
    );
    assert!(stack.recorder.lock().unwrap().calls.is_empty());
}
