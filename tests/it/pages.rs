//! The pages, as a person sees them (HTML parsed with scraper).

use slipway::domain::DeploymentState::{self, *};

use crate::helpers::{SPEC_PIPELINE, attrs, each_backend, seed_releases, texts};

#[test]
fn empty_board_tells_a_new_user_what_to_do() {
    each_backend(|app| {
        let html = app.page("/");
        assert_eq!(texts(&html, "h1"), vec!["Release board"]);
        let empty = texts(&html, "section.empty").join(" ");
        assert!(empty.contains("No pipelines yet"), "{empty}");
        assert!(empty.contains("slipway pipeline import"), "{empty}");
    });
}

#[test]
fn board_shows_pipelines_stages_and_newest_releases_with_states() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        // Before any release: the stages in order and what to do next.
        let html = app.page("/");
        let hint = texts(&html, "section.pipeline p.empty").join(" ");
        assert!(hint.contains("No releases yet"), "{hint}");
        assert!(hint.contains("dev › test › preprod › production"), "{hint}");

        seed_releases(
            app,
            "space-game-web",
            7,
            |_| "main".into(),
            |n| match n {
                7 => vec![("dev", Running)],
                6 => vec![("dev", Succeeded), ("test", Failed)],
                _ => vec![("dev", Succeeded), ("test", Succeeded)],
            },
        );
        let html = app.page("/");
        let heads = texts(&html, "table.board thead th");
        assert_eq!(heads[0], "Release");
        assert!(heads[1].starts_with("dev"), "{heads:?}");
        assert!(heads[1].contains("continuous"), "{heads:?}");
        assert!(heads[2].starts_with("test") && heads[2].contains("scheduled"));
        assert!(heads[3].starts_with("preprod") && heads[3].contains("manual"));
        assert!(heads[4].starts_with("production"));
        // Newest first, five rows.
        let versions = texts(&html, "table.board tbody th a");
        assert_eq!(versions, vec!["1.0.7", "1.0.6", "1.0.5", "1.0.4", "1.0.3"]);
        // Each cell says the state in words, not just colour.
        let first_row = texts(&html, "table.board tbody tr:first-child td");
        assert_eq!(first_row[0], "▶ Running");
        assert!(first_row[1].contains("not deployed"), "{first_row:?}");
        let second_row = texts(&html, "table.board tbody tr:nth-child(2) td");
        // Succeeded, but dev's slot serves nothing (the rows were made
        // without the slots): not live there, so it could go in again.
        assert_eq!(
            second_row[0], "✔ Succeeded a viewer may not deploy",
            "{second_row:?}"
        );
        assert!(second_row[1].starts_with("✖ Failed"), "{second_row:?}");
        // What may be done there, or why not: this viewer may not retry.
        assert!(
            second_row[1].ends_with("a viewer may not deploy"),
            "{second_row:?}"
        );
        // Cells link to the deployment, rows to the release.
        let links = attrs(&html, "table.board tbody tr:first-child th a", "href");
        assert_eq!(links, vec!["/pipelines/space-game-web/releases/1.0.7"]);
    });
}

#[test]
fn pipeline_page_draws_stages_and_triggers() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let html = app.page("/pipelines/space-game-web");
        assert_eq!(texts(&html, "h1"), vec!["space-game-web"]);
        let titles = texts(&html, "svg.drawing .node-title");
        assert_eq!(
            titles,
            vec!["build", "dev", "test", "preprod", "production"]
        );
        let labels = texts(&html, "svg.drawing .edge-label");
        assert_eq!(
            labels,
            vec!["continuous", "daily 03:00", "manual", "continuous"]
        );
        // Line style follows the trigger kind, and a legend says so in words.
        let kinds = attrs(&html, "svg.drawing g.edge", "class");
        assert_eq!(
            kinds,
            vec![
                "edge edge-continuous",
                "edge edge-scheduled",
                "edge edge-manual",
                "edge edge-continuous"
            ]
        );
        let details = texts(&html, "svg.drawing .edge-detail").join(" | ");
        assert!(details.contains("America/Los_Angeles | next "), "{details}");
        assert!(details.contains("after build"), "{details}");
        // Approvals and gates are marked on their stage.
        let lines = texts(&html, "svg.drawing .node-line").join(" | ");
        assert!(lines.contains("⚑ approval before"), "{lines}");
        assert!(lines.contains("◐ gate before (1 check)"), "{lines}");
        // The drawing has a text alternative and links to the stages.
        let desc = texts(&html, "svg.drawing desc").join("");
        assert!(desc.contains("then production"), "{desc}");
        let hrefs = attrs(&html, "svg.drawing a", "href");
        assert_eq!(hrefs[0], "/pipelines/space-game-web/stages/dev");
    });
}

#[test]
fn unknown_pages_answer_404_pages() {
    each_backend(|app| {
        for path in [
            "/pipelines/nope",
            "/pipelines/nope/releases",
            "/pipelines/nope/stages/dev",
            "/no/such/page",
        ] {
            let res = app.get(path);
            assert_eq!(res.status(), 404, "{path}");
            assert!(
                res.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
            let body = res.text().unwrap();
            assert!(body.contains("<h1>Not found</h1>"), "{path}: {body}");
        }
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        assert_eq!(app.get("/pipelines/space-game-web/stages/qa").status(), 404);
        assert_eq!(
            app.get("/pipelines/space-game-web/releases/9.9.9").status(),
            404
        );
    });
}

#[test]
fn history_is_newest_first_keyset_paginated_and_filterable() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        seed_releases(
            app,
            "space-game-web",
            120,
            |n| {
                if n % 3 == 0 {
                    "feature/x".into()
                } else {
                    "main".into()
                }
            },
            |n| {
                if n % 10 == 0 {
                    vec![("dev", Succeeded), ("test", Failed)]
                } else {
                    vec![("dev", Succeeded)]
                }
            },
        );
        let mut seen = Vec::new();
        let mut path = "/pipelines/space-game-web/releases".to_string();
        let mut pages = 0;
        loop {
            let html = app.page(&path);
            pages += 1;
            seen.extend(texts(&html, "table.board tbody th a"));
            match attrs(&html, "a[rel=next]", "href").first() {
                Some(next) => path = next.clone(),
                None => break,
            }
        }
        assert_eq!(pages, 5);
        let expected: Vec<String> = (1..=120).rev().map(|n| format!("1.0.{n}")).collect();
        assert_eq!(seen, expected, "every release once, newest first");

        // Filters: branch, and a state in a stage; the pager keeps them.
        let html = app.page("/pipelines/space-game-web/releases?branch=feature%2Fx");
        let versions = texts(&html, "table.board tbody th a");
        let expected: Vec<String> = (1..=40).rev().map(|n| format!("1.0.{}", n * 3)).collect();
        assert_eq!(versions, expected[..25]);
        let older = attrs(&html, "a[rel=next]", "href");
        assert_eq!(older.len(), 1);
        assert!(older[0].contains("branch=feature%2Fx"), "{older:?}");
        let html = app.page(&older[0]);
        assert_eq!(texts(&html, "table.board tbody th a"), expected[25..]);
        assert!(attrs(&html, "a[rel=next]", "href").is_empty());
        assert_eq!(attrs(&html, "a[rel=first]", "href").len(), 1);
        let html = app.page("/pipelines/space-game-web/releases?state=failed&stage=test");
        let versions = texts(&html, "table.board tbody th a");
        let expected: Vec<String> = (1..=12).rev().map(|n| format!("1.0.{}", n * 10)).collect();
        assert_eq!(versions, expected);
        assert_eq!(
            attrs(&html, "select#state option[selected]", "value"),
            vec!["failed"]
        );
        let html = app.page("/pipelines/space-game-web/releases?state=failed&stage=dev");
        assert_eq!(
            texts(&html, "p.empty"),
            vec!["No release matches these filters."]
        );
        // Bad filters are a 400 with a message, never a 500.
        let res = app.get("/pipelines/space-game-web/releases?state=exploded");
        assert_eq!(res.status(), 400);
        assert!(res.text().unwrap().contains("is not a deployment state"));
        assert_eq!(
            app.get("/pipelines/space-game-web/releases?before=abc")
                .status(),
            400
        );
        assert_eq!(
            app.get("/pipelines/space-game-web/releases?stage=qa&state=failed")
                .status(),
            400
        );
        // Every label of the filter form belongs to a field.
        let html = app.page("/pipelines/space-game-web/releases");
        for id in attrs(&html, "form.filters label", "for") {
            assert_eq!(attrs(&html, &format!("#{id}"), "id").len(), 1, "{id}");
        }
    });
}

#[test]
fn release_page_shows_commit_artifacts_and_deployments_by_stage() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        seed_releases(
            app,
            "space-game-web",
            2,
            |_| "main".into(),
            |n| {
                if n == 2 {
                    vec![
                        ("dev", Failed),
                        ("dev", Succeeded),
                        ("test", DeploymentState::Queued),
                    ]
                } else {
                    vec![]
                }
            },
        );
        let html = app.page("/pipelines/space-game-web/releases/1.0.2");
        assert_eq!(texts(&html, "h1"), vec!["space-game-web 1.0.2"]);
        let facts = texts(&html, "dl.facts dd").join(" | ");
        assert!(facts.contains("0000000 on main by Mara"), "{facts}");
        assert!(facts.contains("change number 2"), "{facts}");
        assert_eq!(
            texts(&html, "table td code.digest"),
            vec![format!("{:064x}", 2)]
        );
        assert_eq!(
            texts(&html, "section.stage-deployments h3"),
            vec!["dev", "test", "preprod", "production"]
        );
        let dev = texts(
            &html,
            "section.stage-deployments:nth-of-type(1) tbody tr td:nth-child(2)",
        );
        assert_eq!(dev, vec!["✖ Failed", "✔ Succeeded"]);
        let attempts = texts(
            &html,
            "section.stage-deployments:nth-of-type(1) tbody td:first-child a",
        );
        assert_eq!(attempts, vec!["#1", "#2"]);
        let preprod = texts(
            &html,
            "section.stage-deployments:nth-of-type(3) p:not(.stage-refusal)",
        );
        assert_eq!(preprod, vec!["Not deployed to preprod."]);
        let why = texts(
            &html,
            "section.stage-deployments:nth-of-type(3) .stage-refusal",
        );
        assert_eq!(
            why,
            vec!["Not deployable here now: needs test to succeed first."]
        );
    });
}

#[test]
fn stage_page_lists_next_fire_times_in_the_stage_time_zone() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let html = app.page("/pipelines/space-game-web/stages/test");
        assert_eq!(texts(&html, "h1"), vec!["Stage test"]);
        let times = texts(&html, "ol.fire-times li time");
        assert_eq!(times.len(), 5);
        for t in &times {
            assert!(
                t.contains(" 03:00:00 PST") || t.contains(" 03:00:00 PDT"),
                "{t}"
            );
        }
        let iso = attrs(&html, "ol.fire-times time", "datetime");
        let mut sorted = iso.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, iso, "strictly increasing");

        let html = app.page("/pipelines/space-game-web/stages/production");
        let text = texts(&html, "main").join(" ");
        assert!(text.contains("group:management"), "{text}");
        // The form is on the configuration page.
        assert!(texts(&html, "textarea#tasks").is_empty());
        let html = app.page("/pipelines/space-game-web/stages/production/configure");
        let text = texts(&html, "main").join(" ");
        assert!(text.contains("group:management"), "{text}");
        assert!(text.contains("within 15m"), "{text}");
        // Tasks are edited as YAML; the queue policy is a select.
        let tasks = texts(&html, "textarea#tasks").join(" ");
        assert!(
            tasks.contains("swap_slots") && tasks.contains("to: production"),
            "{tasks}"
        );
        assert_eq!(
            attrs(&html, "select#policy option[selected]", "value"),
            vec!["latest_only"]
        );
        assert!(texts(&html, "ol.fire-times li").is_empty());
        // Headings go in order: one h1, then h2s.
        assert_eq!(texts(&html, "h1").len(), 1);
    });
}

#[test]
fn pages_accept_a_bearer_token_and_refuse_a_bad_one() {
    each_backend(|app| {
        let token = app.token("amita", slipway::domain::Role::Viewer);
        assert_eq!(app.get_with_token("/", &token).status(), 200);
        let res = app.get_with_token("/", "slw_not_a_token");
        assert_eq!(res.status(), 401);
        assert!(res.text().unwrap().contains("unknown or revoked"));
    });
}
