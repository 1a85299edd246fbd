//! Schema, connection and seed data.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        bio TEXT NOT NULL DEFAULT '',
        image TEXT NOT NULL DEFAULT ''
    )",
    "CREATE TABLE IF NOT EXISTS follows (
        follower_id INTEGER NOT NULL REFERENCES users(id),
        followee_id INTEGER NOT NULL REFERENCES users(id),
        PRIMARY KEY (follower_id, followee_id)
    )",
    "CREATE TABLE IF NOT EXISTS articles (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        slug TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        description TEXT NOT NULL,
        body TEXT NOT NULL,
        author_id INTEGER NOT NULL REFERENCES users(id),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS articles_author ON articles(author_id)",
    "CREATE TABLE IF NOT EXISTS article_tags (
        article_id INTEGER NOT NULL REFERENCES articles(id),
        tag TEXT NOT NULL,
        PRIMARY KEY (article_id, tag)
    )",
    "CREATE INDEX IF NOT EXISTS article_tags_tag ON article_tags(tag)",
    "CREATE TABLE IF NOT EXISTS favorites (
        user_id INTEGER NOT NULL REFERENCES users(id),
        article_id INTEGER NOT NULL REFERENCES articles(id),
        PRIMARY KEY (user_id, article_id)
    )",
    "CREATE INDEX IF NOT EXISTS favorites_article ON favorites(article_id)",
    "CREATE TABLE IF NOT EXISTS comments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        article_id INTEGER NOT NULL REFERENCES articles(id),
        author_id INTEGER NOT NULL REFERENCES users(id),
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS comments_article ON comments(article_id)",
];

/// Opens (creating it if needed) the SQLite database at `url`
/// (`sqlite://blog.db`, `sqlite::memory:`, ...).
pub async fn connect(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
}

/// Creates the tables that do not exist yet.
pub async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    for statement in SCHEMA {
        sqlx::query(statement).execute(pool).await?;
    }
    Ok(())
}

/// The current time as an ISO 8601 date-time in UTC, with milliseconds.
pub fn now_iso() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    iso_from_millis(since.as_millis() as i64)
}

/// `1970-01-01T00:00:00.000Z` from Unix milliseconds.
pub fn iso_from_millis(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Fills an empty database with a few authors, articles, follows, favorites
/// and comments, through the repositories (so the cache stays coherent).
pub async fn seed(state: &crate::AppState) -> Result<bool, sqlx::Error> {
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&state.pool)
        .await?;
    if users > 0 {
        return Ok(false);
    }
    let mut ids = Vec::new();
    for (name, bio) in [
        ("ada", "Writes about engines, analytical and otherwise."),
        ("grace", "Compilers, COBOL and nanoseconds."),
        ("linus", "Kernels and version control."),
    ] {
        let hash = crate::auth::hash_password("password");
        let account = state
            .users
            .create(name, &format!("{name}@example.com"), &hash)
            .await?;
        let changes = crate::repo::UserChanges {
            bio: Some(bio.into()),
            ..Default::default()
        };
        state.users.update(account.id, name, &changes).await?;
        ids.push(account.id);
    }
    let posts = [
        (
            0,
            "Notes on the Analytical Engine",
            "What a machine can compute",
            &["history", "computing"][..],
        ),
        (
            1,
            "A Nanosecond Explained",
            "Why wires are slow",
            &["hardware", "history"][..],
        ),
        (
            1,
            "Writing Your First Compiler",
            "From tokens to machine code",
            &["compilers", "rust"][..],
        ),
        (
            2,
            "Caching Without Tears",
            "Invalidate after commit, never before",
            &["rust", "caching"][..],
        ),
    ];
    let mut articles = Vec::new();
    for (author, title, description, tags) in posts {
        let new = crate::repo::NewArticle {
            title: title.into(),
            description: description.into(),
            body: format!("# {title}\n\n{description}. This is a seeded article."),
            tag_list: tags.iter().map(|t| t.to_string()).collect(),
        };
        articles.push(state.articles.create(ids[author], &new).await?);
    }
    state.users.follow(ids[0], ids[1]).await?;
    state.users.follow(ids[2], ids[0]).await?;
    state.articles.favorite(ids[0], articles[3].id).await?;
    state.articles.favorite(ids[1], articles[3].id).await?;
    state
        .comments
        .add(
            articles[3].id,
            ids[0],
            "Tags and keys, after the commit: lovely.",
        )
        .await?;
    Ok(true)
}
