//! Control plane: OAuth2 credential providers (placeholder until the config module lands).
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use crate::auth::Admin;
use crate::http_error::HttpResult;
use crate::state::AppState;

pub async fn create_oauth2_provider(State(_s): State<AppState>, _r: Admin<Value>) -> HttpResult<Response> { todo_err() }
pub async fn get_oauth2_provider(State(_s): State<AppState>, _r: Admin<Value>) -> HttpResult<Response> { todo_err() }
pub async fn update_oauth2_provider(State(_s): State<AppState>, _r: Admin<Value>) -> HttpResult<Response> { todo_err() }
pub async fn delete_oauth2_provider(State(_s): State<AppState>, _r: Admin<Value>) -> HttpResult<Response> { todo_err() }
pub async fn list_oauth2_providers(State(_s): State<AppState>, _r: Admin<Value>) -> HttpResult<Response> { todo_err() }
fn todo_err() -> HttpResult<Response> { Err(latchkey_core::ApiError::internal("pending").into()) }
