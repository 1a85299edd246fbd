//! Comments, cached as one list per article.

use cache_runtime::{Cache, cached, invalidates};
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::db::now_iso;

/// A comment without its author's profile (composed per request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommentRow {
    pub id: i64,
    pub article_id: i64,
    pub author_id: i64,
    pub body: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug)]
pub struct Comments {
    pub cache: Cache,
    pub pool: AnyPool,
}

const COLUMNS: &str = "id, article_id, author_id, body, created_at, updated_at";

fn comment(row: &sqlx::any::AnyRow) -> CommentRow {
    CommentRow {
        id: row.get("id"),
        article_id: row.get("article_id"),
        author_id: row.get("author_id"),
        body: row.get("body"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

impl Comments {
    /// An article's comments, newest first.
    #[cached(cache = self.cache, key = "comments:{article_id}", ttl = "10m")]
    pub async fn list(&self, article_id: i64) -> Result<Vec<CommentRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM comments WHERE article_id = $1 ORDER BY id DESC"
        ))
        .bind(article_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(comment).collect())
    }

    pub async fn by_id(&self, id: i64) -> Result<Option<CommentRow>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM comments WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(comment))
    }

    #[invalidates(cache = self.cache, keys = ["comments:{article_id}"])]
    pub async fn add(
        &self,
        article_id: i64,
        author_id: i64,
        body: &str,
    ) -> Result<CommentRow, sqlx::Error> {
        let now = now_iso();
        let row = sqlx::query(&format!(
            "INSERT INTO comments (article_id, author_id, body, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        ))
        .bind(article_id)
        .bind(author_id)
        .bind(body)
        .bind(&now)
        .bind(&now)
        .fetch_one(&self.pool)
        .await?;
        Ok(comment(&row))
    }

    #[invalidates(cache = self.cache, keys = ["comments:{article_id}"])]
    pub async fn delete(&self, article_id: i64, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM comments WHERE id = $1 AND article_id = $2")
            .bind(id)
            .bind(article_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
