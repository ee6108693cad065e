//! [`RouteTable`]: builds the API's axum router and, in the same calls, the list of its routes
//! ([`ApiRoute`]).
//!
//! axum cannot list a router's routes, and a list kept by hand beside the router drifts from
//! it. So the router under `/api/v1` is built only through [`RouteTable::route`] with this
//! module's [`get`], [`post`], [`put`] and [`delete`], which record each method and path as
//! they register it. The OpenAPI check (a test that every route is documented) walks that
//! record: a route added to the router is checked without anyone listing it again.

use std::convert::Infallible;

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;

/// One route the server serves: a method on a full path, with parameters as axum writes them
/// (`/api/v1/downloads/{content_id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRoute {
    /// The HTTP method.
    pub method: Method,
    /// The full path, prefix included.
    pub path: String,
}

/// The handlers of one path, by method, and which methods they are.
pub struct Endpoint<S> {
    methods: Vec<Method>,
    router: MethodRouter<S, Infallible>,
}

macro_rules! method_fns {
    ($($name:ident => $method:ident),* $(,)?) => {
        $(
            #[doc = concat!("Routes `", stringify!($method), "` to `handler`, like `axum::routing::", stringify!($name), "`.")]
            pub fn $name<H, T, S>(handler: H) -> Endpoint<S>
            where
                H: Handler<T, S>,
                T: 'static,
                S: Clone + Send + Sync + 'static,
            {
                Endpoint {
                    methods: vec![Method::$method],
                    router: axum::routing::$name(handler),
                }
            }
        )*

        impl<S: Clone + Send + Sync + 'static> Endpoint<S> {
            $(
                #[doc = concat!("Also routes `", stringify!($method), "` to `handler`.")]
                pub fn $name<H, T>(mut self, handler: H) -> Self
                where
                    H: Handler<T, S>,
                    T: 'static,
                {
                    self.methods.push(Method::$method);
                    self.router = self.router.$name(handler);
                    self
                }
            )*
        }
    };
}

method_fns!(get => GET, post => POST, put => PUT, delete => DELETE);

/// A router under construction and the routes registered on it so far.
pub struct RouteTable<S> {
    router: Router<S>,
    /// Where the router will be nested: recorded paths start with it.
    prefix: &'static str,
    routes: Vec<ApiRoute>,
}

impl<S: Clone + Send + Sync + 'static> RouteTable<S> {
    /// No routes; the router will be nested at `prefix` (`""` for the root).
    pub fn new(prefix: &'static str) -> Self {
        Self {
            router: Router::new(),
            prefix,
            routes: Vec::new(),
        }
    }

    /// Adds `endpoint`'s handlers at `path` (panics, as axum does, on a path given twice).
    pub fn route(mut self, path: &'static str, endpoint: Endpoint<S>) -> Self {
        self.routes
            .extend(endpoint.methods.into_iter().map(|method| ApiRoute {
                method,
                path: format!("{}{path}", self.prefix),
            }));
        self.router = self.router.route(path, endpoint.router);
        self
    }

    /// The router and every route registered on it.
    pub fn into_parts(self) -> (Router<S>, Vec<ApiRoute>) {
        (self.router, self.routes)
    }
}
