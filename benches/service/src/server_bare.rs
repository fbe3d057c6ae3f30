//! The service with telemetry compiled out: no telemetry crate, layer or
//! middleware; the handlers' `tracing` spans and events go to a bare
//! `tracing_subscriber::registry()`, which keeps span data and exports
//! nothing (the floor every other build is compared with).

use actix_web::{App, HttpServer};
use tracing_subscriber::prelude::*;

use crate::Error;
use crate::app::{self, AppState, Order};

/// Nothing to record with.
#[derive(Clone)]
pub struct Instruments;

impl Instruments {
    /// No `traceparent`.
    pub fn inject(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
    }

    /// No event, no count.
    pub async fn order_placed(&self, _order: &Order) {}
}

fn subscriber() -> Result<(), Error> {
    tracing_subscriber::registry().try_init()?;
    Ok(())
}

pub fn run_axum(port: u16) -> Result<(), Error> {
    subscriber()?;
    app::axum_runtime()?.block_on(async {
        let router = app::axum_routes(AppState::new(port, Instruments));
        let listener = app::axum_listener(port).await?;
        axum::serve(listener, router)
            .with_graceful_shutdown(app::terminated())
            .await?;
        Ok(())
    })
}

pub fn run_actix(port: u16) -> Result<(), Error> {
    subscriber()?;
    actix_web::rt::System::new().block_on(async {
        HttpServer::new(move || {
            App::new()
                .app_data(app::actix_state(port, Instruments))
                .configure(app::actix_routes)
        })
        .workers(app::WORKERS)
        .bind(app::actix_address(port))?
        .run()
        .await?;
        Ok(())
    })
}
