//! The OpenAPI document, generated from the handlers and types with utoipa. It is
//! committed as `docs/openapi/agent.json` (regenerate with
//! `latchkey serve agent --print-openapi > docs/openapi/agent.json`).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::events::{
    AuthorizationRequired, Done, ErrorEvent, ErrorResponse, InvocationRequest, PingResponse,
    StreamEvent, TextDelta, ToolCall, ToolResult, Usage,
};

/// The agent's API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Latchkey agent",
        description = "The agent workload: send a message, receive the answer as typed Server-Sent Events. The user is the `sub` of a verified `x-amzn-oidc-data` header (ALB) or of a bearer OIDC ID token; tools call third-party APIs as that user with per-tool scopes, after the user's consent.",
        license(name = "Apache-2.0")
    ),
    paths(crate::app::invocations, crate::app::ping),
    components(schemas(
        InvocationRequest,
        ErrorResponse,
        PingResponse,
        StreamEvent,
        TextDelta,
        ToolCall,
        ToolResult,
        AuthorizationRequired,
        Usage,
        ErrorEvent,
        Done
    )),
    modifiers(&Security),
    tags((name = "agent", description = "Agent invocations"))
)]
pub struct ApiDoc;

#[derive(Debug)]
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "alb",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-amzn-oidc-data",
                "The load balancer's signed claims (ES256 JWS); the user is its `sub`.",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The user's OIDC ID token."))
                    .build(),
            ),
        );
    }
}
