//! The service under test, the same in every build: its routes, its
//! handlers and their per-request work, in axum and in actix-web. What the
//! build records goes through `crate::instr::Instruments` (this crate's, the
//! OpenTelemetry stack's, or nothing); the middleware and the process's
//! start and shutdown are in each `server_*` module.
//!
//! Per `POST /orders` (see [`place_order`]): a handler span with three log
//! lines; a client span around `GET /inventory` on this same server, with
//! `traceparent` injected (that route's middleware continues the trace); a
//! spawned background task with its own span, a child of the handler's; an
//! `Order` event and an `orders.placed` count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tracing::Instrument;

use crate::instr::Instruments;

/// Worker threads of either server: actix-web's workers, or the Tokio
/// runtime's under axum.
pub const WORKERS: usize = 2;

/// An order, as the handler records it (the `Order` event's attributes).
#[cfg_attr(not(any(feature = "nr", feature = "otel")), allow(dead_code))]
pub struct Order {
    pub id: u64,
    pub items: u64,
    pub amount: f64,
    pub currency: &'static str,
    pub customer_tier: &'static str,
    pub payload_bytes: u64,
}

/// What a handler needs: the HTTP client for the downstream call (pooled;
/// one per actix-web worker, one for the axum runtime) and the
/// instrumentation.
#[derive(Clone)]
pub struct AppState {
    http: reqwest::Client,
    inventory_url: String,
    pub instr: Instruments,
}

impl AppState {
    pub fn new(port: u16, instr: Instruments) -> AppState {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with no TLS settings builds");
        AppState {
            http,
            inventory_url: format!("http://127.0.0.1:{port}/inventory"),
            instr,
        }
    }
}

/// `POST /orders`: the per-request work, whatever the framework. An error
/// is the downstream call's (the caller answers 502).
pub async fn place_order(state: &AppState, body: &[u8]) -> Result<String, String> {
    static NEXT_ORDER: AtomicU64 = AtomicU64::new(1);
    const TIERS: [&str; 3] = ["bronze", "silver", "gold"];
    let id = NEXT_ORDER.fetch_add(1, Ordering::Relaxed);
    let order = Order {
        id,
        items: 1 + id % 5,
        amount: 10.0 + (id % 100) as f64 * 0.25,
        currency: "EUR",
        customer_tier: TIERS[(id % 3) as usize],
        payload_bytes: body.len() as u64,
    };
    let span = tracing::info_span!("place order", order.id = id);
    async {
        tracing::info!(order.id = id, items = order.items, "order received");

        let call = tracing::info_span!(
            "inventory call",
            otel.name = "GET /inventory",
            otel.kind = "client",
            http.request.method = "GET",
        );
        let stock = reserve_stock(state).instrument(call).await?;
        tracing::info!(order.id = id, stock, "stock reserved");

        // Work the response does not wait for, in its own span.
        let background = tracing::info_span!("send confirmation", order.id = id);
        tokio::spawn(send_confirmation(id).instrument(background));

        state.instr.order_placed(&order).await;
        tracing::info!(order.id = id, amount = order.amount, "order placed");
        Ok(format!("order {id}\n"))
    }
    .instrument(span)
    .await
}

/// The downstream call, inside the client span: `traceparent` from the
/// current span.
async fn reserve_stock(state: &AppState) -> Result<u64, String> {
    let request = state.instr.inject(state.http.get(&state.inventory_url));
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("inventory answered {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    text.trim()
        .parse()
        .map_err(|_| format!("inventory answered {text:?}"))
}

/// `GET /inventory`: the downstream service (its server span is the
/// middleware's, continuing the caller's trace).
pub fn inventory() -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let stock = 1000 - CALLS.fetch_add(1, Ordering::Relaxed) % 1000;
    format!("{stock}\n")
}

/// The background worker's job: a little work, across a yield.
async fn send_confirmation(order_id: u64) {
    let digest = std::hint::black_box(order_id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    tokio::task::yield_now().await;
    std::hint::black_box(digest);
}

// --- axum ---

/// The routes, with their state; the build's middleware is layered on top.
pub fn axum_routes(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(axum_place_order))
        .route("/inventory", get(|| async { inventory() }))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn axum_place_order(State(state): State<AppState>, body: Bytes) -> (StatusCode, String) {
    match place_order(&state, &body).await {
        Ok(text) => (StatusCode::CREATED, text),
        Err(e) => (StatusCode::BAD_GATEWAY, e),
    }
}

/// The axum service's runtime: Tokio's multi-thread runtime with
/// [`WORKERS`] workers.
pub fn axum_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
}

/// The axum service's listener on 127.0.0.1.
pub async fn axum_listener(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("axum listening on http://{}", listener.local_addr()?);
    Ok(listener)
}

/// Completes on SIGTERM or SIGINT (for the builds without this crate's
/// `shutdown_signal`).
#[cfg_attr(feature = "nr", allow(dead_code))]
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

// --- actix-web ---

/// The routes; the build's middleware wraps the `App` around them.
pub fn actix_routes(config: &mut actix_web::web::ServiceConfig) {
    use actix_web::web;
    config
        .route("/orders", web::post().to(actix_place_order))
        .route("/inventory", web::get().to(|| async { inventory() }))
        .route("/health", web::get().to(|| async { "ok\n" }));
}

async fn actix_place_order(
    state: actix_web::web::Data<AppState>,
    body: actix_web::web::Bytes,
) -> actix_web::HttpResponse {
    use actix_web::HttpResponse;
    match place_order(&state, &body).await {
        Ok(text) => HttpResponse::Created().body(text),
        Err(e) => HttpResponse::BadGateway().body(e),
    }
}

/// A worker's state: each actix-web worker (its own thread and
/// single-threaded runtime) gets its own HTTP client and pool.
pub fn actix_state(port: u16, instr: Instruments) -> actix_web::web::Data<AppState> {
    actix_web::web::Data::new(AppState::new(port, instr))
}

/// The actix-web server's address, for its `bind`.
pub fn actix_address(port: u16) -> (&'static str, u16) {
    println!("actix-web listening on http://127.0.0.1:{port}");
    ("127.0.0.1", port)
}
