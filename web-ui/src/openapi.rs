//! The OpenAPI document's shared parts: the responses every route can give and the bearer
//! security scheme ([`CommonResponses`]), and [`undocumented`], the check that a document
//! describes every route a router serves.
//!
//! The document itself is derived in [`crate::server`] from the handlers' `#[utoipa::path]`
//! annotations and the [`crate::model`] types' `ToSchema` derives, so it follows the code;
//! [`crate::server::openapi`] returns it.

use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, PathItem, Ref, RefOr, ResponseBuilder};

use crate::routes::ApiRoute;

/// The name of the bearer-key security scheme in the document.
pub const BEARER_SCHEME: &str = "api_key";

/// Adds to every operation the error responses the middleware in front of every handler can
/// give (401 without the right key, 403 for a foreign Host header, 408 for a body too slow,
/// 413 for one too large) and those a node can answer on any route (500, 503), each with an
/// `ErrorBody`; and declares the bearer key as the document's security scheme.
pub struct CommonResponses;

/// Responses every route can give: status and when.
const COMMON: [(&str, &str); 6] = [
    (
        "401",
        "No API key, or the wrong one (`WWW-Authenticate: Bearer`).",
    ),
    (
        "403",
        "The Host header does not name this node (DNS rebinding defence).",
    ),
    (
        "408",
        "The request body did not arrive within 10 s of its headers.",
    ),
    ("413", "The request body is larger than 64 KiB."),
    ("500", "A fault in the node."),
    ("503", "The node cannot answer now (starting or stopping)."),
];

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The node's API key: `tally api-key` prints it."))
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            BEARER_SCHEME,
            Vec::<String>::new(),
        )]);
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_mut(item) {
                for (status, why) in COMMON {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(why)
                                    .content(
                                        "application/json",
                                        utoipa::openapi::ContentBuilder::new()
                                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

fn operations_mut(
    item: &mut PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The operation of `document` for `method` on `path` (the document's full path, e.g.
/// `/api/v1/downloads/{content_id}`), if it has one.
pub fn operation<'a>(
    document: &'a OpenApi,
    method: &axum::http::Method,
    path: &str,
) -> Option<&'a utoipa::openapi::path::Operation> {
    let item = document.paths.paths.get(path)?;
    match method.as_str() {
        "GET" => item.get.as_ref(),
        "PUT" => item.put.as_ref(),
        "POST" => item.post.as_ref(),
        "DELETE" => item.delete.as_ref(),
        "PATCH" => item.patch.as_ref(),
        _ => None,
    }
}

/// Every route of `routes` that `document` does not describe, as `METHOD /path`, and every operation `document` describes that is not among `routes`.
/// Both empty means the document and the router agree.
pub fn undocumented(routes: &[ApiRoute], document: &OpenApi) -> (Vec<String>, Vec<String>) {
    let missing = routes
        .iter()
        .filter(|route| operation(document, &route.method, &route.path).is_none())
        .map(|route| format!("{} {}", route.method, route.path))
        .collect();
    let mut extra = Vec::new();
    for (path, item) in &document.paths.paths {
        for (method, present) in [
            ("GET", item.get.is_some()),
            ("PUT", item.put.is_some()),
            ("POST", item.post.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PATCH", item.patch.is_some()),
        ] {
            let routed = routes
                .iter()
                .any(|route| route.method.as_str() == method && route.path == *path);
            if present && !routed {
                extra.push(format!("{method} {path}"));
            }
        }
    }
    (missing, extra)
}

/// A self-contained JSON Schema (draft 2020-12, which OpenAPI 3.1 uses) of the JSON body that
/// `document` says `method` on `path` answers with `status`: the response's schema, with the
/// document's components beside it so its `#/components/schemas/...` references resolve.
/// `None` if the document has no such response or it has no JSON body.
pub fn response_schema(
    document: &OpenApi,
    method: &axum::http::Method,
    path: &str,
    status: u16,
) -> Option<serde_json::Value> {
    let response = operation(document, method, path)?
        .responses
        .responses
        .get(&status.to_string())?;
    let RefOr::T(response) = response else {
        return None;
    };
    let schema = response
        .content
        .iter()
        .find(|(media, _)| media.as_str() == "application/json")
        .and_then(|(_, content)| match content {
            RefOr::T(content) => content.schema.as_ref(),
            RefOr::Ref(_) => None,
        })?;
    let components = serde_json::to_value(document.components.as_ref()?).ok()?;
    Some(serde_json::json!({
        "components": components,
        "allOf": [serde_json::to_value(schema).ok()?],
    }))
}
