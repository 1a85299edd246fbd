//! `cargo run -p blog`: the Conduit API on 127.0.0.1:3000 (`BLOG_ADDR`),
//! SQLite in `blog.db` (`BLOG_DB`) or the database `DATABASE_URL` names
//! (`sqlite://...`, `postgres://...`), the in-process cache or
//! Redis with an in-process tier (`REDIS_URL`).

use blog::{Config, app, start};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = Config::from_env();
    if std::env::var_os("JWT_SECRET").is_none() {
        eprintln!("JWT_SECRET is not set: tokens are signed with a development secret");
    }
    let state = start(&config).await?;
    let listener = tokio::net::TcpListener::bind(&config.addr).await?;
    let addr = listener.local_addr()?;
    let cache = match &config.redis_url {
        Some(url) if config.local_ttl.is_zero() => format!("Redis at {url}"),
        Some(url) => format!(
            "Redis at {url} with an in-process tier ({}s)",
            config.local_ttl.as_secs()
        ),
        None => "in-process store".to_string(),
    };
    println!("Conduit API listening on http://{addr}/api");
    println!("  database: {}; cache: {cache}", config.database_url);
    println!("  try: curl -s http://{addr}/api/articles?limit=2");
    println!(
        "  log in: curl -s -X POST http://{addr}/api/users/login -H 'Content-Type: application/json' \
         -d '{{\"user\":{{\"email\":\"ada@example.com\",\"password\":\"password\"}}}}'"
    );
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}
