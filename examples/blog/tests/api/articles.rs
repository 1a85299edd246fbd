//! Articles, favorites and comments: create, read, list, filter, page,
//! update and delete.

use super::*;

pub(super) async fn articles_create_get_list_filter_page_update_delete(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    let grace = api.register("grace").await;

    let first = api
        .create_article(&ada, "First Steps", &["rust", "beginners"])
        .await;
    assert_eq!(first["slug"], "first-steps");
    assert_eq!(
        first["tagList"],
        json!(["beginners", "rust"]),
        "tagList is sorted"
    );
    assert_eq!(first["author"]["username"], "ada");
    assert_eq!(first["favorited"], false);
    assert_eq!(first["favoritesCount"], 0);
    assert!(
        is_iso_datetime(first["createdAt"].as_str().unwrap()),
        "{first}"
    );
    assert!(
        is_iso_datetime(first["updatedAt"].as_str().unwrap()),
        "{first}"
    );
    let second = api
        .create_article(&grace, "Second Thoughts", &["rust"])
        .await;
    let third = api.create_article(&ada, "Third Time", &["caching"]).await;
    let again = api.create_article(&grace, "First Steps", &[]).await;
    assert_ne!(again["slug"], first["slug"], "slugs are unique");

    // Get.
    let (status, body) = api.get("/articles/first-steps", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["article"]["title"], "First Steps");
    assert_eq!(body["article"]["body"], "all of First Steps");
    assert_eq!(api.get("/articles/no-such-article", None).await.0, 404);

    // The global list: newest first, total before paging.
    let (status, body) = api.get("/articles", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["articlesCount"], 4);
    let newest_first = vec![
        again["slug"].as_str().unwrap().to_string(),
        "third-time".to_string(),
        "second-thoughts".to_string(),
        "first-steps".to_string(),
    ];
    assert_eq!(slugs(&body), newest_first);
    let (_, body) = api.get("/articles?limit=2&offset=1", None).await;
    assert_eq!(body["articlesCount"], 4);
    assert_eq!(slugs(&body), newest_first[1..3]);
    let (_, body) = api.get("/articles?limit=2&offset=10", None).await;
    assert_eq!(
        (body["articlesCount"].as_i64(), slugs(&body).len()),
        (Some(4), 0)
    );
    assert_eq!(api.get("/articles?limit=0", None).await.0, 422);
    assert_eq!(api.get("/articles?offset=-1", None).await.0, 422);

    // Filters.
    let (_, body) = api.get("/articles?tag=rust", None).await;
    assert_eq!(slugs(&body), ["second-thoughts", "first-steps"]);
    assert_eq!(body["articlesCount"], 2);
    let (_, body) = api.get("/articles?author=ada", None).await;
    assert_eq!(slugs(&body), ["third-time", "first-steps"]);
    let (_, body) = api.get("/articles?author=ada&tag=rust", None).await;
    assert_eq!(slugs(&body), ["first-steps"]);
    let (_, body) = api.get("/articles?author=nobody", None).await;
    assert_eq!(
        (body["articlesCount"].as_i64(), slugs(&body).len()),
        (Some(0), 0)
    );
    let (_, body) = api.get("/articles?tag=nothing", None).await;
    assert_eq!(body["articlesCount"], 0);

    // Tags.
    let (status, body) = api.get("/tags", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["tags"], json!(["beginners", "caching", "rust"]));

    // A new article shows up in the cached lists at once.
    api.create_article(&ada, "Fourth Wall", &["rust", "zen"])
        .await;
    let (_, body) = api.get("/articles?tag=rust", None).await;
    assert_eq!(
        slugs(&body),
        ["fourth-wall", "second-thoughts", "first-steps"]
    );
    let (_, body) = api.get("/articles?author=ada", None).await;
    assert_eq!(body["articlesCount"], 3);
    let (_, body) = api.get("/articles", None).await;
    assert_eq!(body["articlesCount"], 5);
    assert_eq!(
        api.get("/tags", None).await.1["tags"],
        json!(["beginners", "caching", "rust", "zen"])
    );

    // Create: auth and validation.
    let new = json!({"article": {"title": "T", "description": "D", "body": "B"}});
    assert_eq!(api.post("/articles", None, new.clone()).await.0, 401);
    let (status, body) = api
        .post(
            "/articles",
            Some(&ada),
            json!({"article": {"title": " ", "description": "D", "body": "B"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["title"][0].as_str()),
        (422, Some("can't be blank"))
    );
    let (status, body) = api
        .post("/articles", Some(&ada), json!({"article": {"title": "T"}}))
        .await;
    assert_eq!(
        (status, body["errors"]["description"][0].as_str()),
        (422, Some("can't be blank"))
    );

    // Update: the author only; readers see the change at once.
    let change = json!({"article": {"body": "rewritten", "title": "First Steps, Revised"}});
    assert_eq!(
        api.put("/articles/first-steps", None, change.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        api.put("/articles/first-steps", Some(&grace), change.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        api.put("/articles/no-such-article", Some(&ada), change.clone())
            .await
            .0,
        404
    );
    let (status, body) = api.put("/articles/first-steps", Some(&ada), change).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["article"]["body"], "rewritten");
    assert_eq!(body["article"]["title"], "First Steps, Revised");
    assert_eq!(
        api.get("/articles/first-steps", None).await.1["article"]["body"],
        "rewritten"
    );
    let (_, body) = api.get("/articles?tag=rust", None).await;
    assert_eq!(body["articles"][2]["title"], "First Steps, Revised");

    // Delete: the author only; gone from the article, the lists and the tags.
    assert_eq!(api.delete("/articles/third-time", None).await.0, 401);
    assert_eq!(
        api.delete("/articles/third-time", Some(&grace)).await.0,
        403
    );
    let (status, _) = api.delete("/articles/third-time", Some(&ada)).await;
    assert_eq!(status, 204);
    assert_eq!(api.get("/articles/third-time", None).await.0, 404);
    assert_eq!(api.delete("/articles/third-time", Some(&ada)).await.0, 404);
    let (_, body) = api.get("/articles?author=ada", None).await;
    assert_eq!(slugs(&body), ["fourth-wall", "first-steps"]);
    assert_eq!(api.get("/articles", None).await.1["articlesCount"], 4);
    assert_eq!(
        api.get("/articles?tag=caching", None).await.1["articlesCount"],
        0
    );
    assert_eq!(
        api.get("/tags", None).await.1["tags"],
        json!(["beginners", "rust", "zen"])
    );
    let _ = (second, third);
}

pub(super) async fn favorites_are_per_viewer_and_counted(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    let grace = api.register("grace").await;
    let linus = api.register("linus").await;
    api.create_article(&ada, "Popular", &["hits"]).await;
    api.create_article(&ada, "Quiet", &[]).await;

    assert_eq!(
        api.post("/articles/popular/favorite", None, json!({}))
            .await
            .0,
        401
    );
    assert_eq!(
        api.post("/articles/nothing/favorite", Some(&grace), json!({}))
            .await
            .0,
        404
    );
    let (status, body) = api
        .post("/articles/popular/favorite", Some(&grace), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["article"]["favorited"].as_bool(),
            body["article"]["favoritesCount"].as_i64()
        ),
        (Some(true), Some(1))
    );
    api.post("/articles/popular/favorite", Some(&linus), json!({}))
        .await;
    // Favoriting twice counts once.
    api.post("/articles/popular/favorite", Some(&linus), json!({}))
        .await;

    // The viewer's flag; the shared count.
    let (_, body) = api.get("/articles/popular", Some(&grace)).await;
    assert_eq!(
        (
            body["article"]["favorited"].as_bool(),
            body["article"]["favoritesCount"].as_i64()
        ),
        (Some(true), Some(2))
    );
    let (_, body) = api.get("/articles/popular", None).await;
    assert_eq!(
        (
            body["article"]["favorited"].as_bool(),
            body["article"]["favoritesCount"].as_i64()
        ),
        (Some(false), Some(2))
    );
    let (_, body) = api.get("/articles/popular", Some(&ada)).await;
    assert_eq!(body["article"]["favorited"], false);
    let (_, body) = api.get("/articles", Some(&grace)).await;
    assert_eq!(body["articles"][1]["favorited"], true);
    assert_eq!(body["articles"][0]["favorited"], false);
    let (_, body) = api.get("/articles", None).await;
    assert_eq!(body["articles"][1]["favorited"], false);

    // Filter by who favorited.
    let (_, body) = api.get("/articles?favorited=grace", None).await;
    assert_eq!(slugs(&body), ["popular"]);
    let (_, body) = api.get("/articles?favorited=ada", None).await;
    assert_eq!(body["articlesCount"], 0);
    api.post("/articles/quiet/favorite", Some(&grace), json!({}))
        .await;
    let (_, body) = api.get("/articles?favorited=grace", None).await;
    assert_eq!(slugs(&body), ["quiet", "popular"]);

    // Unfavorite.
    let (status, body) = api.delete("/articles/popular/favorite", Some(&grace)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            body["article"]["favorited"].as_bool(),
            body["article"]["favoritesCount"].as_i64()
        ),
        (Some(false), Some(1))
    );
    let (_, body) = api.get("/articles?favorited=grace", None).await;
    assert_eq!(slugs(&body), ["quiet"]);
    assert_eq!(api.delete("/articles/popular/favorite", None).await.0, 401);

    // Deleting an article drops it from its favoriters' lists.
    api.delete("/articles/quiet", Some(&ada)).await;
    let (_, body) = api.get("/articles?favorited=grace", None).await;
    assert_eq!(body["articlesCount"], 0);
}

pub(super) async fn comments_add_list_delete(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    let grace = api.register("grace").await;
    api.create_article(&ada, "Talk", &[]).await;

    let (status, body) = api.get("/articles/talk/comments", None).await;
    assert_eq!((status, body), (200, json!({"comments": []})));
    assert_eq!(api.get("/articles/nothing/comments", None).await.0, 404);

    let comment = json!({"comment": {"body": "Nice one"}});
    assert_eq!(
        api.post("/articles/talk/comments", None, comment.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        api.post("/articles/nothing/comments", Some(&grace), comment.clone())
            .await
            .0,
        404
    );
    let (status, body) = api
        .post(
            "/articles/talk/comments",
            Some(&grace),
            json!({"comment": {"body": ""}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["body"][0].as_str()),
        (422, Some("can't be blank"))
    );
    let (status, body) = api
        .post("/articles/talk/comments", Some(&grace), comment)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["comment"]["body"], "Nice one");
    assert_eq!(body["comment"]["author"]["username"], "grace");
    assert!(is_iso_datetime(
        body["comment"]["createdAt"].as_str().unwrap()
    ));
    let first_id = body["comment"]["id"].as_i64().unwrap();
    let (_, body) = api
        .post(
            "/articles/talk/comments",
            Some(&ada),
            json!({"comment": {"body": "Thanks"}}),
        )
        .await;
    let second_id = body["comment"]["id"].as_i64().unwrap();

    let (_, body) = api.get("/articles/talk/comments", Some(&ada)).await;
    let bodies: Vec<&str> = body["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["Thanks", "Nice one"]);

    // Only the comment's author deletes it.
    let path = format!("/articles/talk/comments/{first_id}");
    assert_eq!(api.delete(&path, None).await.0, 401);
    assert_eq!(api.delete(&path, Some(&ada)).await.0, 403);
    assert_eq!(
        api.delete("/articles/talk/comments/999999", Some(&grace))
            .await
            .0,
        404
    );
    assert_eq!(
        api.delete("/articles/talk/comments/abc", Some(&grace))
            .await
            .0,
        404
    );
    assert_eq!(api.delete(&path, Some(&grace)).await.0, 204);
    assert_eq!(api.delete(&path, Some(&grace)).await.0, 404);
    let (_, body) = api.get("/articles/talk/comments", None).await;
    assert_eq!(body["comments"].as_array().unwrap().len(), 1);
    assert_eq!(body["comments"][0]["id"], second_id);
}
