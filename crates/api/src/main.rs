//! The `api` binary: load settings, start logging, build the application, serve.

use anyhow::Context;
use cacheserver_api::{startup::Application, telemetry};
use cacheserver_config::Settings;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("cannot load settings")?;
    let metrics = telemetry::init(&settings.logging)?;
    let app = Application::build(settings, metrics)
        .await
        .context("cannot start the api")?;
    tracing::info!(addr = %app.addr(), "cacheserver api listening");
    app.run_until_stopped().await.context("api server failed")
}
