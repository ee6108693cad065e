//! # tally-web
//!
//! Owns the node's local HTTP surface: the versioned REST API under `/api/v1` and its
//! protection, the live event stream, `/metrics`, the OpenAPI document, and the dashboard whose
//! static files are compiled into the binary.
//!
//! Layout:
//! - [`model`]: the JSON types, shared by the server and by clients (the CLI's client in
//!   `tally-node` uses them too), and [`HexId`], the 32-byte id as 64 lowercase hex.
//! - [`api`]: [`NodeApi`], the trait the server serves — what a node answers.
//! - [`error`]: [`ApiError`], rendered as `{"status", "code", "message"}` JSON, and
//!   [`ApiJson`], the body extractor whose rejections are `ApiError`s.
//! - [`events`]: the live event stream's types and its server-sent-events handler.
//! - [`metrics`]: `GET /metrics`, the node's figures in the Prometheus text format.
//! - [`server`]: [`router`] (routes, API-key auth, Host check against DNS rebinding, body
//!   limit, a tracing span per request) and [`serve`] (connection cap, graceful shutdown); also
//!   the handlers' OpenAPI annotations and [`server::openapi`], the document they make.
//! - [`routes`]: [`routes::RouteTable`], which builds the router and records its routes, so
//!   a test can check that the OpenAPI document describes every one.
//! - [`openapi`]: the document's common error responses and security scheme, and
//!   [`openapi::undocumented`], the router-versus-document check.
//! - [`session`]: the dashboard's login — session cookie and CSRF token in place of the key.
//! - [`dashboard`]: the dashboard's static files (`web-ui/assets/`), compiled in, served at `/`.
//!
//! What it must not do: know anything of QUIC, the wire protocol, the receipt store or the
//! ledger's types — `tally-node` implements [`NodeApi`] and maps its own types onto the
//! [`model`]; the server only checks the shape of inputs (ids, `PEERID@HOST:PORT`) and leaves
//! meaning to the node. It never logs headers or the API key, answers every error as JSON (never
//! axum's plain text), and answers bad input with 4xx, never 5xx.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod session;

pub use api::NodeApi;
pub use error::{ApiError, ApiJson};
pub use model::HexId;
pub use server::{ApiAuth, router, serve};
