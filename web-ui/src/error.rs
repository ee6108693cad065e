//! [`ApiError`]: what every failed request answers, as JSON
//! `{"status": 400, "code": "bad_request", "message": "..."}`, and [`ApiJson`], the JSON body
//! extractor whose rejections are [`ApiError`]s rather than axum's plain text.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::model::ErrorBody;

/// An error the API answers: an HTTP status, a stable machine-readable code and a message for
/// humans. [`crate::NodeApi`] implementations return it; the server renders it as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({status} {code})")]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
}

impl ApiError {
    /// An error with any status and code. Prefer the named constructors.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 `bad_request`: the request is malformed (bad JSON, unknown field, bad id).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`: no API key, or the wrong one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `host_not_allowed`: the Host header is not one of the node's addresses (a DNS
    /// rebinding attempt, or a missing `allowed_hosts` setting).
    pub fn host_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "host_not_allowed", message)
    }

    /// 404 `not_found`: no such route, download, or other thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405 `method_not_allowed`: the route exists but not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 409 `conflict`: the request clashes with the node's state (e.g. a download to a path
    /// that another download writes).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413 `payload_too_large`: the body exceeds [`crate::server::MAX_BODY_BYTES`].
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 415 `unsupported_media_type`: a body that is not `Content-Type: application/json`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 422 `unprocessable`: well-formed, but the node cannot act on it (e.g. a file to share
    /// that does not exist).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", message)
    }

    /// 503 `unavailable`: the node cannot answer now (starting, stopping, overloaded).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 `internal`: a fault in the node; the message is logged as well as returned.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message for humans.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body this error renders as.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            status: self.status.as_u16(),
            code: self.code.clone().into_owned(),
            message: self.message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let text = rejection.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(format!(
                "the request body is larger than {} bytes",
                crate::server::MAX_BODY_BYTES
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::unsupported_media_type(format!(
                "{text}; send the body as `Content-Type: application/json`"
            )),
            // Syntax errors (400) and valid JSON of the wrong shape — unknown or missing field,
            // bad id — (422 in axum) are both malformed requests here.
            _ if status.is_client_error() => Self::bad_request(text),
            // axum answers 5xx only if it cannot read the body from the connection.
            _ => Self::bad_request(format!("cannot read the request body: {text}")),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

/// A JSON request body, like [`axum::Json`], but a body that is missing, too large, not JSON,
/// not a JSON object, or of the wrong shape is rejected with an [`ApiError`] (4xx JSON), never
/// with plain text. Every request body of the API is an object: serde would also accept an array
/// for a struct whose fields all have defaults, so anything else is refused before serde sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::unsupported_media_type(
                "expected a JSON body: send it as `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ApiError::from(JsonRejection::from(rejection)))?;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            None => return Err(ApiError::bad_request("the request body is empty")),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the request body must be a JSON object",
                ));
            }
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

/// Whether the Content-Type is `application/json` or `application/*+json`, parameters allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_as_json_with_status_and_code() {
        let response = ApiError::conflict("busy").into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            ErrorBody {
                status: 409,
                code: "conflict".into(),
                message: "busy".into()
            }
        );
    }
}
