//! The `runtad` binary: parse flags, set up logging, run the daemon.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cfg = runtad::Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log that cannot be written (full disk, closed pipe) must never take the
    // daemon down: the line is dropped instead.
    if cfg.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .log_internal_errors(false)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .log_internal_errors(false)
            .init();
    }
    if let Err(e) = runtad::run(cfg).await {
        eprintln!("runtad: {e}");
        std::process::exit(1);
    }
}
