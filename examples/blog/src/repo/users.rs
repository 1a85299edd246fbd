//! Users, profiles and follows.

use std::collections::HashMap;

use cache_runtime::{Cache, cached, invalidates};
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

/// The public part of a user: what every viewer sees (without `following`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileRow {
    pub id: i64,
    pub username: String,
    pub bio: String,
    pub image: String,
}

/// The whole row, for authentication and the current user (never cached:
/// it holds the password hash).
#[derive(Clone, Debug)]
pub struct Account {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub bio: String,
    pub image: String,
}

/// The fields `PUT /api/user` may change (`None`: unchanged).
#[derive(Clone, Debug, Default)]
pub struct UserChanges {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub bio: Option<String>,
    pub image: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Users {
    pub cache: Cache,
    pub pool: AnyPool,
}

const ACCOUNT: &str = "SELECT id, username, email, password_hash, bio, image FROM users";

fn account(row: &sqlx::any::AnyRow) -> Account {
    Account {
        id: row.get("id"),
        username: row.get("username"),
        email: row.get("email"),
        password_hash: row.get("password_hash"),
        bio: row.get("bio"),
        image: row.get("image"),
    }
}

fn profile(row: &sqlx::any::AnyRow) -> ProfileRow {
    ProfileRow {
        id: row.get("id"),
        username: row.get("username"),
        bio: row.get("bio"),
        image: row.get("image"),
    }
}

impl Users {
    #[cached(cache = self.cache, key = "user:{id}", ttl = "10m", cache_none = "30s")]
    pub async fn profile_by_id(&self, id: i64) -> Result<Option<ProfileRow>, sqlx::Error> {
        let row = sqlx::query("SELECT id, username, bio, image FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(profile))
    }

    /// Several profiles at once (the authors of a page of articles, of a
    /// thread of comments): each id is the entry `profile_by_id` reads, so
    /// one `MGET` answers the cached ones and one query loads the rest.
    /// Ids with no user are left out (and remembered for 30 s).
    #[cached(batch, cache = self.cache, key = "user:{id}", ttl = "10m", cache_none = "30s")]
    pub async fn profiles_by_id(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, ProfileRow>, sqlx::Error> {
        let places: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, username, bio, image FROM users WHERE id IN ({})",
            places.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(profile).map(|p| (p.id, p)).collect())
    }

    #[cached(cache = self.cache, key = "profile:{username}", ttl = "10m", cache_none = "30s")]
    pub async fn profile_by_username(
        &self,
        username: &str,
    ) -> Result<Option<ProfileRow>, sqlx::Error> {
        let row = sqlx::query("SELECT id, username, bio, image FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(profile))
    }

    pub async fn account_by_id(&self, id: i64) -> Result<Option<Account>, sqlx::Error> {
        let row = sqlx::query(&format!("{ACCOUNT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account))
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<Account>, sqlx::Error> {
        let row = sqlx::query(&format!("{ACCOUNT} WHERE email = $1"))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account))
    }

    /// Registers a user. Removes the `None` a lookup of this name may have
    /// cached.
    #[invalidates(cache = self.cache, keys = ["profile:{username}", "user:{ret.id}"])]
    pub async fn create(
        &self,
        username: &str,
        email: &str,
        password_hash: &str,
    ) -> Result<Account, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3) \
             RETURNING id, username, email, password_hash, bio, image",
        )
        .bind(username)
        .bind(email)
        .bind(password_hash)
        .fetch_one(&self.pool)
        .await?;
        Ok(account(&row))
    }

    /// Updates the current user: their profile by id, under the old name
    /// and under the new one (which may hold a cached `None`).
    #[invalidates(
        cache = self.cache,
        keys = ["user:{id}", "profile:{old_username}", "profile:{ret.username}"],
        publish = "user:updated"
    )]
    pub async fn update(
        &self,
        id: i64,
        old_username: &str,
        changes: &UserChanges,
    ) -> Result<Account, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE users SET username = COALESCE($1, username), email = COALESCE($2, email), \
             password_hash = COALESCE($3, password_hash), bio = COALESCE($4, bio), \
             image = COALESCE($5, image) WHERE id = $6 \
             RETURNING id, username, email, password_hash, bio, image",
        )
        .bind(&changes.username)
        .bind(&changes.email)
        .bind(&changes.password_hash)
        .bind(&changes.bio)
        .bind(&changes.image)
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(account(&row))
    }

    /// Whether `follower` follows `followee` (cached per pair). There is one
    /// such flag per viewer and author, read only while the viewer browses:
    /// one unread for 2 minutes leaves the cache.
    #[cached(cache = self.cache, key = "follows:{follower}:{followee}", ttl = "10m", idle = "2m")]
    pub async fn is_following(&self, follower: i64, followee: i64) -> Result<bool, sqlx::Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM follows WHERE follower_id = $1 AND followee_id = $2")
                .bind(follower)
                .bind(followee)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// The pair's flag and the follower's feed change.
    #[invalidates(cache = self.cache, keys = ["follows:{follower}:{followee}"], tags = ["feed:{follower}"])]
    pub async fn follow(&self, follower: i64, followee: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(follower)
        .bind(followee)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[invalidates(cache = self.cache, keys = ["follows:{follower}:{followee}"], tags = ["feed:{follower}"])]
    pub async fn unfollow(&self, follower: i64, followee: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2")
            .bind(follower)
            .bind(followee)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
