//! Articles, their lists, tags and favorites.

use cache_runtime::{Cache, cached, in_transaction, invalidates};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyArguments;
use sqlx::query::QueryScalar;
use sqlx::{Any, AnyConnection, AnyPool, Row};

use crate::db::now_iso;

/// An article as every viewer sees it: no `favorited`, no favorites count
/// (a separate entry, so favoriting does not rewrite the article), and the
/// author by id (the profile is its own entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArticleRow {
    pub id: i64,
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
    /// Sorted.
    pub tag_list: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub author_id: i64,
}

/// One page of a list: the slugs, newest first, and the total before paging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub slugs: Vec<String>,
    pub total: i64,
}

/// The fields of a new article.
#[derive(Clone, Debug)]
pub struct NewArticle {
    pub title: String,
    pub description: String,
    pub body: String,
    pub tag_list: Vec<String>,
}

/// What a list is filtered by (all `None`: every article).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub tag: Option<String>,
    pub author_id: Option<i64>,
    pub favorited_by: Option<i64>,
    pub feed_of: Option<i64>,
}

/// Pages of the global list at offsets below this are cached.
pub const CACHED_GLOBAL_OFFSETS: i64 = 100;

#[derive(Clone, Debug)]
pub struct Articles {
    pub cache: Cache,
    pub pool: AnyPool,
}

const COLUMNS: &str = "id, slug, title, description, body, created_at, updated_at, author_id";

fn article(row: &sqlx::any::AnyRow, tag_list: Vec<String>) -> ArticleRow {
    ArticleRow {
        id: row.get("id"),
        slug: row.get("slug"),
        title: row.get("title"),
        description: row.get("description"),
        body: row.get("body"),
        tag_list,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        author_id: row.get("author_id"),
    }
}

async fn tags_of(conn: &mut AnyConnection, article_id: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT tag FROM article_tags WHERE article_id = $1 ORDER BY tag")
        .bind(article_id)
        .fetch_all(conn)
        .await
}

/// A value bound to a list query.
enum Arg {
    Text(String),
    Int(i64),
}

/// `FROM ... WHERE ...` for `filter`, with `$1`-style parameters (the
/// `Any` driver's `QueryBuilder` writes `?`, which PostgreSQL rejects), and
/// the values to bind in order.
fn filter_sql(filter: &Filter) -> (String, Vec<Arg>) {
    let mut sql = String::from(" FROM articles a WHERE 1 = 1");
    let mut args = Vec::new();
    let mut push = |sql: &mut String, before: &str, arg: Arg, after: &str| {
        args.push(arg);
        sql.push_str(&format!("{before}${}{after}", args.len()));
    };
    if let Some(tag) = &filter.tag {
        push(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM article_tags t WHERE t.article_id = a.id AND t.tag = ",
            Arg::Text(tag.clone()),
            ")",
        );
    }
    if let Some(author) = filter.author_id {
        push(&mut sql, " AND a.author_id = ", Arg::Int(author), "");
    }
    if let Some(user) = filter.favorited_by {
        push(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM favorites f WHERE f.article_id = a.id AND f.user_id = ",
            Arg::Int(user),
            ")",
        );
    }
    if let Some(user) = filter.feed_of {
        push(
            &mut sql,
            " AND a.author_id IN (SELECT followee_id FROM follows WHERE follower_id = ",
            Arg::Int(user),
            ")",
        );
    }
    (sql, args)
}

fn bind_all<'q, O>(
    mut query: QueryScalar<'q, Any, O, AnyArguments<'q>>,
    args: &'q [Arg],
) -> QueryScalar<'q, Any, O, AnyArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text.as_str()),
            Arg::Int(int) => query.bind(*int),
        };
    }
    query
}

/// Turns a title into a slug: lower-case ASCII words joined by `-`.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for word in title
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.extend(word.chars().flat_map(char::to_lowercase));
    }
    if slug.is_empty() {
        slug.push_str("article");
    }
    slug
}

impl Articles {
    /// One page of a (possibly filtered) list, from the database.
    pub async fn query_page(
        &self,
        filter: &Filter,
        limit: i64,
        offset: i64,
    ) -> Result<Page, sqlx::Error> {
        let (from, args) = filter_sql(filter);
        let count = format!("SELECT COUNT(*){from}");
        let total: i64 = bind_all(sqlx::query_scalar(&count), &args)
            .fetch_one(&self.pool)
            .await?;
        let n = args.len();
        let page = format!(
            "SELECT a.slug{from} ORDER BY a.id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let slugs = bind_all(sqlx::query_scalar(&page), &args)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        Ok(Page { slugs, total })
    }

    /// Fail-safe: if the database fails once the entry expired, the last
    /// copy answers (for up to an hour past its TTL) rather than an error
    /// page; a write still removes it at once. A query slower than 250 ms
    /// is answered with that copy too, and goes on to refresh the entry.
    #[cached(cache = self.cache, key = "article:{slug}", ttl = "10m", cache_none = "30s", fail_safe = "1h", soft_timeout = "250ms")]
    pub async fn by_slug(&self, slug: &str) -> Result<Option<ArticleRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let Some(row) = sqlx::query(&format!("SELECT {COLUMNS} FROM articles WHERE slug = $1"))
            .bind(slug)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let tags = tags_of(&mut conn, row.get("id")).await?;
        Ok(Some(article(&row, tags)))
    }

    /// The global list's first pages (see [`CACHED_GLOBAL_OFFSETS`]).
    #[cached(cache = self.cache, key = "articles:all:{limit}:{offset}", ttl = "5m", tags = ["list:all"])]
    pub async fn list_all(&self, limit: i64, offset: i64) -> Result<Page, sqlx::Error> {
        self.query_page(&Filter::default(), limit, offset).await
    }

    #[cached(
        cache = self.cache,
        key = "articles:author:{author_id}:{limit}:{offset}",
        ttl = "10m",
        tags = ["list:author:{author_id}"]
    )]
    pub async fn list_by_author(
        &self,
        author_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<Page, sqlx::Error> {
        let filter = Filter {
            author_id: Some(author_id),
            ..Filter::default()
        };
        self.query_page(&filter, limit, offset).await
    }

    #[cached(
        cache = self.cache,
        key = "articles:tag:{tag}:{limit}:{offset}",
        ttl = "10m",
        tags = ["list:tag:{tag}"]
    )]
    pub async fn list_by_tag(
        &self,
        tag: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page, sqlx::Error> {
        let filter = Filter {
            tag: Some(tag.to_string()),
            ..Filter::default()
        };
        self.query_page(&filter, limit, offset).await
    }

    #[cached(
        cache = self.cache,
        key = "articles:favorited:{user_id}:{limit}:{offset}",
        ttl = "10m",
        tags = ["list:favorited:{user_id}"]
    )]
    pub async fn list_favorited_by(
        &self,
        user_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<Page, sqlx::Error> {
        let filter = Filter {
            favorited_by: Some(user_id),
            ..Filter::default()
        };
        self.query_page(&filter, limit, offset).await
    }

    /// Articles by the authors `user_id` follows.
    #[cached(cache = self.cache, key = "feed:{user_id}:{limit}:{offset}", ttl = "5m", tags = ["feed:{user_id}"])]
    pub async fn feed(&self, user_id: i64, limit: i64, offset: i64) -> Result<Page, sqlx::Error> {
        let filter = Filter {
            feed_of: Some(user_id),
            ..Filter::default()
        };
        self.query_page(&filter, limit, offset).await
    }

    /// Every tag in use, sorted; past its TTL, a slow or failing query is
    /// answered with the last list.
    #[cached(cache = self.cache, key = "tags", ttl = "10m", fail_safe = "1d", soft_timeout = "250ms")]
    pub async fn tags(&self) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT DISTINCT tag FROM article_tags ORDER BY tag")
            .fetch_all(&self.pool)
            .await
    }

    #[cached(cache = self.cache, key = "favcount:{article_id}", ttl = "10m")]
    pub async fn favorites_count(&self, article_id: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM favorites WHERE article_id = $1")
            .bind(article_id)
            .fetch_one(&self.pool)
            .await
    }

    /// Whether `user_id` favorited the article (cached per pair; like
    /// `Users::is_following`, kept only while read).
    #[cached(cache = self.cache, key = "fav:{user_id}:{article_id}", ttl = "10m", idle = "2m")]
    pub async fn is_favorited(&self, user_id: i64, article_id: i64) -> Result<bool, sqlx::Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM favorites WHERE user_id = $1 AND article_id = $2")
                .bind(user_id)
                .bind(article_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    #[invalidates(
        cache = self.cache,
        keys = ["fav:{user_id}:{article_id}", "favcount:{article_id}"],
        tags = ["list:favorited:{user_id}"]
    )]
    pub async fn favorite(&self, user_id: i64, article_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO favorites (user_id, article_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(article_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[invalidates(
        cache = self.cache,
        keys = ["fav:{user_id}:{article_id}", "favcount:{article_id}"],
        tags = ["list:favorited:{user_id}"]
    )]
    pub async fn unfavorite(&self, user_id: i64, article_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM favorites WHERE user_id = $1 AND article_id = $2")
            .bind(user_id)
            .bind(article_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Creates an article with its tags in one transaction; the entries it
    /// changes are invalidated after the commit.
    pub async fn create(
        &self,
        author_id: i64,
        new: &NewArticle,
    ) -> Result<ArticleRow, sqlx::Error> {
        in_transaction(async {
            let mut tx = self.pool.begin().await?;
            let created = self.insert_in(&mut tx, author_id, new).await?;
            for tag in &created.tag_list {
                self.tag_list_changed(tag).await?;
            }
            for follower in followers_of(&mut tx, author_id).await? {
                self.feed_changed(follower).await?;
            }
            tx.commit().await?;
            Ok(created)
        })
        .await
    }

    /// The new article's key (it may hold a cached `None`), announced as
    /// `article:created`; and the lists it joins: the tag list, the global
    /// list and the author's list. Both in one step, after the commit.
    #[invalidates(cache = self.cache, keys = ["article:{ret.slug}"], publish = "article:created")]
    #[invalidates(cache = self.cache, keys = ["tags"], tags = ["list:all", "list:author:{author_id}"])]
    async fn insert_in(
        &self,
        tx: &mut AnyConnection,
        author_id: i64,
        new: &NewArticle,
    ) -> Result<ArticleRow, sqlx::Error> {
        let base = slugify(&new.title);
        let mut slug = base.clone();
        while sqlx::query_scalar::<_, i64>("SELECT 1 FROM articles WHERE slug = $1")
            .bind(&slug)
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            let mut suffix = [0u8; 3];
            getrandom::fill(&mut suffix).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            slug = format!("{base}-{:02x}{:02x}{:02x}", suffix[0], suffix[1], suffix[2]);
        }
        let now = now_iso();
        let row = sqlx::query(&format!(
            "INSERT INTO articles (slug, title, description, body, author_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        ))
        .bind(&slug)
        .bind(&new.title)
        .bind(&new.description)
        .bind(&new.body)
        .bind(author_id)
        .bind(&now)
        .bind(&now)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.get("id");
        for tag in &new.tag_list {
            sqlx::query(
                "INSERT INTO article_tags (article_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        }
        let tags = tags_of(tx, id).await?;
        Ok(article(&row, tags))
    }

    /// Changes title, description or body. The slug stays, so lists (which
    /// hold slugs) are unchanged: only the article's entry goes.
    #[invalidates(cache = self.cache, keys = ["article:{slug}"], publish = "article:updated")]
    pub async fn update(
        &self,
        slug: &str,
        title: Option<&str>,
        description: Option<&str>,
        body: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE articles SET title = COALESCE($1, title), description = COALESCE($2, description), \
             body = COALESCE($3, body), updated_at = $4 WHERE slug = $5",
        )
        .bind(title)
        .bind(description)
        .bind(body)
        .bind(now_iso())
        .bind(slug)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes an article with its tags, favorites and comments in one
    /// transaction; invalidates, after the commit, every list it was in.
    pub async fn delete(&self, article: &ArticleRow) -> Result<(), sqlx::Error> {
        in_transaction(async {
            let mut tx = self.pool.begin().await?;
            let favoriters: Vec<i64> =
                sqlx::query_scalar("SELECT user_id FROM favorites WHERE article_id = $1")
                    .bind(article.id)
                    .fetch_all(&mut *tx)
                    .await?;
            self.delete_in(&mut tx, article).await?;
            for tag in &article.tag_list {
                self.tag_list_changed(tag).await?;
            }
            for user in favoriters {
                self.favorite_dropped(user, article.id).await?;
            }
            for follower in followers_of(&mut tx, article.author_id).await? {
                self.feed_changed(follower).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    #[invalidates(
        cache = self.cache,
        keys = ["article:{article.slug}", "tags", "comments:{article.id}", "favcount:{article.id}"],
        tags = ["list:all", "list:author:{article.author_id}"],
        publish = "article:deleted"
    )]
    async fn delete_in(
        &self,
        tx: &mut AnyConnection,
        article: &ArticleRow,
    ) -> Result<(), sqlx::Error> {
        for statement in [
            "DELETE FROM article_tags WHERE article_id = $1",
            "DELETE FROM favorites WHERE article_id = $1",
            "DELETE FROM comments WHERE article_id = $1",
            "DELETE FROM articles WHERE id = $1",
        ] {
            sqlx::query(statement)
                .bind(article.id)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    // One invalidation per element of a collection: the attributes take
    // templates, not lists, so these carry no work of their own. Inside
    // `in_transaction` they are held until the commit like the others.

    #[invalidates(cache = self.cache, tags = ["list:tag:{tag}"])]
    async fn tag_list_changed(&self, tag: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }

    #[invalidates(cache = self.cache, tags = ["feed:{user_id}"])]
    async fn feed_changed(&self, user_id: i64) -> Result<(), sqlx::Error> {
        Ok(())
    }

    #[invalidates(cache = self.cache, keys = ["fav:{user_id}:{article_id}"], tags = ["list:favorited:{user_id}"])]
    async fn favorite_dropped(&self, user_id: i64, article_id: i64) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

async fn followers_of(conn: &mut AnyConnection, author_id: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT follower_id FROM follows WHERE followee_id = $1")
        .bind(author_id)
        .fetch_all(conn)
        .await
}
