//! Users and profiles: registration, login and the current user; following
//! and the feed.

use super::*;

pub(super) async fn register_login_and_the_current_user(backend: Backend) {
    let api = Api::new(backend).await;
    let token = api.register("ada").await;

    let (status, body) = api.get("/user", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["username"], "ada");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["token"], token.as_str());
    assert_eq!(api.get("/user", None).await.0, 401);
    assert_eq!(api.get("/user", Some("not.a.token")).await.0, 401);
    let (status, _) = api.call(Method::GET, "/user", None, None).await;
    assert_eq!(status, 401);

    // Taken names and addresses, blank fields, malformed bodies: 422.
    let (status, body) = api
        .post(
            "/users",
            None,
            json!({"user": {"username": "ada", "email": "other@example.com", "password": "x"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["username"][0].as_str()),
        (422, Some("has already been taken"))
    );
    let (status, body) = api
        .post(
            "/users",
            None,
            json!({"user": {"username": "other", "email": "ada@example.com", "password": "x"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["email"][0].as_str()),
        (422, Some("has already been taken"))
    );
    let (status, body) = api
        .post(
            "/users",
            None,
            json!({"user": {"username": "", "email": "e@example.com", "password": "x"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["username"][0].as_str()),
        (422, Some("can't be blank"))
    );
    let (status, body) = api.post("/users", None, json!({"nothing": 1})).await;
    assert_eq!(status, 422);
    assert!(body["errors"]["body"].is_array(), "{body}");

    // Login.
    let (status, body) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "ada@example.com", "password": "secret-ada"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let login_token = body["user"]["token"].as_str().unwrap().to_string();
    assert_eq!(api.get("/user", Some(&login_token)).await.0, 200);
    let (status, _) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "ada@example.com", "password": "wrong"}}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "nobody@example.com", "password": "x"}}),
        )
        .await;
    assert_eq!(status, 401);

    // Update: the profile under the old name goes, the new one appears.
    assert_eq!(api.get("/profiles/ada", None).await.0, 200);
    assert_eq!(api.get("/profiles/lovelace", None).await.0, 404); // cached as None
    let (status, body) = api
        .put(
            "/user",
            Some(&token),
            json!({"user": {"username": "lovelace", "bio": "Notes on notes", "image": "https://example.com/a.png", "password": "new-secret"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "lovelace");
    assert_eq!(body["user"]["bio"], "Notes on notes");
    assert_eq!(api.get("/profiles/ada", None).await.0, 404);
    let (status, body) = api.get("/profiles/lovelace", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["profile"]["bio"], "Notes on notes");
    assert_eq!(body["profile"]["image"], "https://example.com/a.png");
    assert_eq!(body["profile"]["following"], false);
    let (status, _) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "ada@example.com", "password": "new-secret"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.put("/user", None, json!({"user": {"bio": "x"}}))
            .await
            .0,
        401
    );
    let (status, body) = api.put("/user", Some(&token), json!({"user": {}})).await;
    assert_eq!(status, 422, "{body}");
    api.register("grace").await;
    let (status, body) = api
        .put(
            "/user",
            Some(&token),
            json!({"user": {"username": "grace"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["username"][0].as_str()),
        (422, Some("has already been taken"))
    );
}

pub(super) async fn profiles_follow_and_the_feed(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    let grace = api.register("grace").await;
    api.create_article(&ada, "By Ada", &[]).await;
    api.create_article(&grace, "By Grace", &[]).await;

    let (status, body) = api.get("/profiles/ada", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["profile"],
        json!({"username": "ada", "bio": "", "image": "", "following": false})
    );
    assert_eq!(api.get("/profiles/nobody", None).await.0, 404);

    // The feed is empty until grace follows someone.
    assert_eq!(api.get("/articles/feed", None).await.0, 401);
    let (status, body) = api.get("/articles/feed", Some(&grace)).await;
    assert_eq!(status, 200);
    assert_eq!(body["articlesCount"], 0);

    assert_eq!(
        api.post("/profiles/ada/follow", None, json!({})).await.0,
        401
    );
    assert_eq!(
        api.post("/profiles/nobody/follow", Some(&grace), json!({}))
            .await
            .0,
        404
    );
    let (status, body) = api
        .post("/profiles/ada/follow", Some(&grace), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["profile"]["following"], true);
    assert_eq!(
        api.get("/profiles/ada", Some(&grace)).await.1["profile"]["following"],
        true
    );
    assert_eq!(
        api.get("/profiles/ada", None).await.1["profile"]["following"],
        false
    );
    assert_eq!(
        api.get("/profiles/ada", Some(&ada)).await.1["profile"]["following"],
        false
    );
    let (_, body) = api.get("/articles/by-ada", Some(&grace)).await;
    assert_eq!(body["article"]["author"]["following"], true);
    let (_, body) = api.get("/articles/by-ada", None).await;
    assert_eq!(body["article"]["author"]["following"], false);

    let (_, body) = api.get("/articles/feed", Some(&grace)).await;
    assert_eq!(slugs(&body), ["by-ada"]);
    assert_eq!(body["articles"][0]["author"]["following"], true);
    // A followed author's new article is in the feed at once; so is its deletion.
    api.create_article(&ada, "Ada Again", &[]).await;
    let (_, body) = api.get("/articles/feed", Some(&grace)).await;
    assert_eq!(slugs(&body), ["ada-again", "by-ada"]);
    let (_, body) = api.get("/articles/feed?limit=1", Some(&grace)).await;
    assert_eq!(
        (slugs(&body), body["articlesCount"].as_i64()),
        (vec!["ada-again".to_string()], Some(2))
    );
    api.delete("/articles/ada-again", Some(&ada)).await;
    let (_, body) = api.get("/articles/feed", Some(&grace)).await;
    assert_eq!(slugs(&body), ["by-ada"]);

    let (status, body) = api.delete("/profiles/ada/follow", Some(&grace)).await;
    assert_eq!(status, 200);
    assert_eq!(body["profile"]["following"], false);
    assert_eq!(
        api.get("/profiles/ada", Some(&grace)).await.1["profile"]["following"],
        false
    );
    assert_eq!(
        api.get("/articles/feed", Some(&grace)).await.1["articlesCount"],
        0
    );
    assert_eq!(api.delete("/profiles/ada/follow", None).await.0, 401);
}
