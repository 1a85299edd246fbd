//! The repositories: every read that is worth caching is a `#[cached]`
//! method here, and every write an `#[invalidates]` method naming exactly
//! the entries it changes. Cached values are viewer-independent; the
//! viewer's flags (`following`, `favorited`) are separate entries per
//! (viewer, target).

pub mod articles;
pub mod comments;
pub mod users;

pub use articles::{ArticleRow, Articles, NewArticle, Page};
pub use comments::{CommentRow, Comments};
pub use users::{Account, ProfileRow, UserChanges, Users};

/// Whether a database error is a UNIQUE constraint violation, and on which
/// column: `users.email` (SQLite's message), `users_email` (PostgreSQL's
/// constraint `users_email_key`), ...
pub fn unique_violation(error: &sqlx::Error) -> Option<String> {
    let db = error.as_database_error()?;
    if !db.is_unique_violation() {
        return None;
    }
    if let Some(constraint) = db.constraint() {
        return Some(constraint.trim_end_matches("_key").to_string());
    }
    Some(
        db.message()
            .rsplit(": ")
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}
