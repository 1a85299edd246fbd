//! Errors as the API reports them: 401, 403, 404 and 422 with
//! `{"errors": {"<field>": ["<message>"]}}`, 500 for the rest.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum AppError {
    Unauthorized,
    Forbidden,
    NotFound(&'static str),
    Unprocessable(String, String),
    Internal(String),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> AppError {
        AppError::Unprocessable(field.into(), message.into())
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> AppError {
        AppError::Internal(error.to_string())
    }
}

fn errors(field: &str, message: &str) -> serde_json::Value {
    json!({ "errors": { field: [message] } })
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                Json(errors("token", "is missing or invalid")),
            ),
            AppError::Forbidden => (
                StatusCode::FORBIDDEN,
                Json(errors("user", "is not the author")),
            ),
            AppError::NotFound(what) => (StatusCode::NOT_FOUND, Json(errors(what, "not found"))),
            AppError::Unprocessable(field, message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(errors(&field, &message)),
            ),
            AppError::Internal(message) => {
                eprintln!("internal error: {message}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(errors("server", "internal error")),
                )
            }
        }
        .into_response()
    }
}
