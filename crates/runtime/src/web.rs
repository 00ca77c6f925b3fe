//! What a port serves besides gRPC: the web chat page from `web.static_dir`
//! (when set) and `/web-config.json`, which tells the page where
//! send-service is. Requests that look like gRPC are never answered with a
//! file: an unknown method stays UNIMPLEMENTED; other unknown paths are 404.

use axum::{
    Json, Router,
    extract::Request,
    response::{IntoResponse, Response},
    routing::get,
};
use tonic::{
    Status,
    codegen::http::{StatusCode, header},
};
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

use crate::config::WebConfig;

/// The routes `web` asks for, to which the gRPC services are then added.
#[must_use]
pub fn routes(web: &WebConfig) -> tonic::service::Routes {
    let Some(dir) = web.static_dir.clone() else {
        return tonic::service::Routes::from(Router::new().fallback(
            |request: Request| async move {
                if is_grpc(&request) {
                    unimplemented(&request)
                } else {
                    (StatusCode::NOT_FOUND, "no such path\n").into_response()
                }
            },
        ));
    };
    let page_config = serde_json::json!({ "send_url": web.send_url });
    let files = ServeDir::new(&dir).append_index_html_on_directories(true);
    let page = ServeFile::new(dir.join("index.html"));
    let router = Router::new()
        .route(
            "/web-config.json",
            get(move || {
                let page_config = page_config.clone();
                async move { Json(page_config) }
            }),
        )
        .fallback(move |request: Request| {
            let (files, page) = (files.clone(), page.clone());
            async move {
                if is_grpc(&request) {
                    return unimplemented(&request);
                }
                // A file (`/app.js`) is that file or 404; any other path
                // (`/`, a deep link such as `/rooms/general`) is the page.
                let is_file = request
                    .uri()
                    .path()
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.contains('.'));
                let served = if is_file {
                    files.oneshot(request).await
                } else {
                    page.oneshot(request).await
                };
                match served {
                    Ok(response) => response.into_response(),
                    Err(infallible) => match infallible {},
                }
            }
        });
    tonic::service::Routes::from(router)
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn unimplemented(request: &Request) -> Response {
    Status::unimplemented(format!("no such method: {}", request.uri().path()))
        .into_http::<axum::body::Body>()
        .into_response()
}
