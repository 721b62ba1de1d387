//! Storage against both backends: every test runs on a fresh SQLite file and,
//! when the server is reachable, on a fresh PostgreSQL database (mandatory
//! under `CI=true`; see `slipway::storage::testing`).
#![expect(clippy::unwrap_used, reason = "tests")]

use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use slipway::domain::{BuildState, DeploymentState, Role};
use slipway::storage::schema::{audit_events, slots, stages};
use slipway::storage::*;

/// Runs `test` once per backend, each time on a new, migrated database.
fn on_each_backend(test: impl Fn(&str, &Db)) {
    for (label, test_db) in test_databases() {
        let db = test_db
            .connect()
            .unwrap_or_else(|e| panic!("{label}: cannot open the test database: {e}"));
        test(&label, &db);
        drop(db);
    }
}

fn stage(name: &str, position: i32, kind: &str, spec: &str) -> NewStage {
    NewStage {
        name: name.into(),
        position,
        trigger_kind: kind.into(),
        trigger_spec: spec.into(),
    }
}

fn standard_stages() -> Vec<NewStage> {
    vec![
        stage("dev", 0, "after", "after build"),
        stage("test", 1, "schedule", "0 0 3 * * * America/Los_Angeles"),
        stage("preprod", 2, "manual", "manual"),
        stage("production", 3, "after", "after preprod"),
        stage("hotfix", 4, "manual", "manual"),
    ]
}

/// A pipeline with one revision; returns `(pipeline_id, revision_id)`.
fn pipeline(conn: &mut DbConn, name: &str) -> (i64, i64) {
    let saved = save_definition(
        conn,
        name,
        &format!("pipeline: {name}\n"),
        &standard_stages(),
        &[],
        "tester",
        None,
    )
    .unwrap();
    let revision = current_revision(conn, saved.pipeline_id).unwrap();
    (saved.pipeline_id, revision.id)
}

fn new_release(pipeline_id: i64, revision_id: i64, version: &str, branch: &str) -> NewRelease {
    NewRelease {
        pipeline_id,
        version: version.into(),
        build_id: None,
        revision_id,
        commit_sha: format!("{:0>40}", version.replace('.', "")),
        branch: branch.into(),
        message: format!("commit for {version}"),
        author: "Ada <ada@example.com>".into(),
        fixes_release_id: None,
    }
}

fn deploy(
    conn: &mut DbConn,
    release: &ReleaseRow,
    stage: &str,
    state: DeploymentState,
) -> DeploymentRow {
    insert_deployment(
        conn,
        &NewDeployment {
            pipeline_id: release.pipeline_id,
            release_id: release.id,
            stage: stage.into(),
            state,
            trigger: "manual".into(),
            requested_by: "tester".into(),
            reason: None,
        },
    )
    .unwrap()
}

#[test]
fn migrations_apply_once_and_nothing_stays_pending() {
    on_each_backend(|label, db| {
        assert_eq!(db.backend().as_str(), label);
        assert_eq!(db.run_migrations().unwrap(), 0, "{label}: second run");
        assert_eq!(db.pending_migrations().unwrap(), 0, "{label}");
        db.ping().unwrap();
        let (connections, idle) = db.pool_state();
        assert!(connections >= 1 && idle <= connections, "{label}");
        let mut conn = db.get().unwrap();
        assert_eq!(conn.backend().as_str(), label);
        assert_eq!(run_migrations(&mut conn).unwrap(), 0, "{label}");
        assert!(list_pipelines(&mut conn).unwrap().is_empty());
    });
}

#[test]
fn a_second_pool_on_a_migrated_database_finds_nothing_to_do() {
    for (label, test_db) in test_databases() {
        let first = Db::connect(&test_db.url, 2).unwrap();
        assert!(first.pending_migrations().unwrap() > 0, "{label}: fresh");
        assert!(first.run_migrations().unwrap() > 0, "{label}");
        let second = Db::connect(&test_db.url, 2).unwrap();
        assert_eq!(second.run_migrations().unwrap(), 0, "{label}");
        assert_eq!(second.pending_migrations().unwrap(), 0, "{label}");
    }
}

#[test]
fn connection_errors_are_the_drivers_own() {
    let error = Db::connect("postgres://postgres@127.0.0.1:1/nothing", 1).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StorageError::Connection(_)), "{message}");
    assert!(!message.contains("multiconnection"), "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");

    let file = std::env::temp_dir().join(format!("slipway-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, "a file, not a directory").unwrap();
    let error = Db::connect(&format!("sqlite://{}/sub/x.db", file.display()), 1).unwrap_err();
    assert!(matches!(error, StorageError::Connection(_)), "{error}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn sqlite_creates_the_parent_directory_and_uses_wal() {
    let dir = std::env::temp_dir().join(format!("slipway-parent-{}", uuid::Uuid::new_v4()));
    let path = dir.join("nested/deeper/slipway.db");
    for url in [
        format!("sqlite://{}", path.display()),
        format!("sqlite:{}", path.display()),
    ] {
        let db = Db::connect(&url, 2).unwrap();
        assert_eq!(db.backend(), Backend::Sqlite);
        db.run_migrations().unwrap();
        #[derive(QueryableByName)]
        struct Mode {
            #[diesel(sql_type = diesel::sql_types::Text)]
            journal_mode: String,
        }
        let mut conn = db.get().unwrap();
        let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
            .get_result(&mut *conn)
            .unwrap();
        assert_eq!(mode.journal_mode, "wal");
    }
    assert!(path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn definitions_become_revisions_that_are_never_lost() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        let apps = vec![(
            "space-game".to_string(),
            vec!["dev".to_string(), "test".to_string()],
        )];
        let first = save_definition(
            &mut conn,
            "space-game-web",
            "v: 1\n",
            &standard_stages(),
            &apps,
            "alice",
            Some("first import"),
        )
        .unwrap();
        assert!(first.created && !first.unchanged, "{label}");
        assert_eq!(first.revision, 1);

        let same = save_definition(
            &mut conn,
            "space-game-web",
            "v: 1\n",
            &standard_stages(),
            &apps,
            "bob",
            None,
        )
        .unwrap();
        assert_eq!(
            same,
            SavedRevision {
                pipeline_id: first.pipeline_id,
                revision: 1,
                created: false,
                unchanged: true
            },
            "{label}"
        );

        // The scheduler has computed the next fire time of `test`.
        let fire_at = NaiveDate::from_ymd_opt(2030, 3, 10)
            .unwrap()
            .and_hms_micro_opt(10, 0, 0, 123_456)
            .unwrap();
        diesel::update(
            stages::table
                .filter(stages::pipeline_id.eq(first.pipeline_id))
                .filter(stages::name.eq("test")),
        )
        .set(stages::next_fire_at.eq(fire_at))
        .execute(&mut *conn)
        .unwrap();

        // Revision 2: `hotfix` goes, `test` is unchanged, `canary` is new.
        let mut second_stages = standard_stages();
        second_stages.retain(|s| s.name != "hotfix");
        second_stages.push(stage("canary", 9, "manual", "manual"));
        let second = save_definition(
            &mut conn,
            "space-game-web",
            "v: 2\n",
            &second_stages,
            &apps,
            "bob",
            Some("second"),
        )
        .unwrap();
        assert!(!second.created && !second.unchanged);
        assert_eq!(second.revision, 2);
        assert_eq!(second.pipeline_id, first.pipeline_id);

        let rows = list_stages(&mut conn, first.pipeline_id).unwrap();
        let names: Vec<&str> = rows.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "test", "preprod", "production", "canary"],
            "{label}"
        );
        let test = rows.iter().find(|s| s.name == "test").unwrap();
        assert_eq!(test.next_fire_at, Some(fire_at), "{label}: kept");

        // Revision 3: the schedule of `test` changes, so its next fire time is reset.
        let mut third_stages = second_stages.clone();
        third_stages[1].trigger_spec = "0 0 4 * * * Europe/Berlin".into();
        save_definition(
            &mut conn,
            "space-game-web",
            "v: 3\n",
            &third_stages,
            &apps,
            "carol",
            None,
        )
        .unwrap();
        let rows = list_stages(&mut conn, first.pipeline_id).unwrap();
        let test = rows.iter().find(|s| s.name == "test").unwrap();
        assert_eq!(test.next_fire_at, None, "{label}: reset");

        let revisions = list_revisions(&mut conn, first.pipeline_id).unwrap();
        let numbers: Vec<i32> = revisions.iter().map(|r| r.revision).collect();
        assert_eq!(numbers, [3, 2, 1], "{label}");
        assert_eq!(revisions[2].yaml, "v: 1\n");
        assert_eq!(revisions[2].created_by, "alice");
        assert_eq!(revisions[2].comment.as_deref(), Some("first import"));
        let current = current_revision(&mut conn, first.pipeline_id).unwrap();
        assert_eq!(current.revision, 3);
        assert_eq!(current.yaml, "v: 3\n");
        assert_eq!(
            revision_by_id(&mut conn, revisions[1].id).unwrap().yaml,
            "v: 2\n"
        );
        assert!(matches!(
            revision_by_id(&mut conn, 999_999),
            Err(StorageError::NotFound)
        ));

        let row = find_pipeline(&mut conn, "space-game-web").unwrap().unwrap();
        assert_eq!(row.current_revision, 3);
        assert!(find_pipeline(&mut conn, "nope").unwrap().is_none());
        assert_eq!(list_pipelines(&mut conn).unwrap().len(), 1);
        let (other, _) = pipeline(&mut conn, "another");
        let all_stages = stages_of_pipelines(&mut conn, &[other, first.pipeline_id]).unwrap();
        let (mine, theirs): (Vec<_>, Vec<_>) = all_stages
            .iter()
            .partition(|s| s.pipeline_id == first.pipeline_id);
        assert_eq!(mine.len(), 5, "{label}");
        assert_eq!(theirs.len(), 5, "{label}");
        assert!(stages_of_pipelines(&mut conn, &[]).unwrap().is_empty());

        // Three changes, three audit records (the unchanged save wrote none).
        let audit = list_audit(&mut conn, None, 10).unwrap();
        let actions: Vec<(&str, &str)> = audit
            .iter()
            .map(|a| (a.action.as_str(), a.subject.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("pipeline.created", "pipeline:another"),
                ("pipeline.updated", "pipeline:space-game-web"),
                ("pipeline.updated", "pipeline:space-game-web"),
                ("pipeline.created", "pipeline:space-game-web")
            ],
            "{label}"
        );
        verify_audit_chain(&mut conn).unwrap();
    });
}

#[test]
fn slots_with_a_release_survive_and_apps_belong_to_one_pipeline() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        let slots_of = |names: &[&str]| -> Vec<(String, Vec<String>)> {
            vec![(
                "space-game".to_string(),
                names.iter().map(|s| s.to_string()).collect(),
            )]
        };
        let saved = save_definition(
            &mut conn,
            "web",
            "v: 1\n",
            &[],
            &slots_of(&["dev", "test", "staging"]),
            "alice",
            None,
        )
        .unwrap();
        let revision = current_revision(&mut conn, saved.pipeline_id).unwrap();
        let release = insert_release(
            &mut conn,
            &new_release(saved.pipeline_id, revision.id, "1.0.1", "main"),
            &[],
        )
        .unwrap();
        let app = &list_apps(&mut conn, saved.pipeline_id).unwrap()[0];
        diesel::update(
            slots::table
                .filter(slots::app_id.eq(app.id))
                .filter(slots::name.eq("test")),
        )
        .set(slots::release_id.eq(release.id))
        .execute(&mut *conn)
        .unwrap();

        save_definition(
            &mut conn,
            "web",
            "v: 2\n",
            &[],
            &slots_of(&["dev", "production"]),
            "alice",
            None,
        )
        .unwrap();
        let names: Vec<String> = list_slots(&mut conn, app.id)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["dev", "production", "test"], "{label}");

        // Dropping the app keeps it while a slot still holds a release.
        save_definition(&mut conn, "web", "v: 3\n", &[], &[], "alice", None).unwrap();
        let left = list_slots(&mut conn, app.id).unwrap();
        assert_eq!(left.len(), 1, "{label}");
        assert_eq!(left[0].release_id, Some(release.id));

        let clash = save_definition(
            &mut conn,
            "other",
            "v: 1\n",
            &[],
            &slots_of(&["dev"]),
            "alice",
            None,
        );
        match clash {
            Err(StorageError::Conflict(message)) => {
                assert!(message.contains("space-game"), "{message}")
            }
            other => panic!("{label}: expected a conflict, got {other:?}"),
        }
        // The failed save left nothing behind.
        assert!(
            find_pipeline(&mut conn, "other").unwrap().is_none(),
            "{label}"
        );
    });
}

#[test]
fn a_version_is_unique_within_its_pipeline() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        let (pipeline_id, revision_id) = pipeline(&mut conn, "web");
        let (other_id, other_revision) = pipeline(&mut conn, "api");
        let artifacts = [
            NewArtifact {
                path: "dist/app.js".into(),
                sha256: "a".repeat(64),
                size: 1234,
            },
            NewArtifact {
                path: "dist/index.html".into(),
                sha256: "b".repeat(64),
                size: 56,
            },
        ];
        let release = insert_release(
            &mut conn,
            &new_release(pipeline_id, revision_id, "1.0.1", "main"),
            &artifacts,
        )
        .unwrap();
        assert_eq!(
            find_release(&mut conn, pipeline_id, "1.0.1").unwrap(),
            Some(release.clone()),
            "{label}"
        );
        assert_eq!(
            find_release_by_id(&mut conn, release.id).unwrap(),
            Some(release.clone())
        );
        let stored = list_artifacts(&mut conn, release.id).unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].path, "dist/app.js");
        assert_eq!(stored[0].size, 1234);
        let other_release = insert_release(
            &mut conn,
            &new_release(pipeline_id, revision_id, "1.0.0", "main"),
            &artifacts[1..],
        )
        .unwrap();
        let both = artifacts_for_releases(&mut conn, &[release.id, other_release.id]).unwrap();
        let pairs: Vec<(i64, &str)> = both
            .iter()
            .map(|a| (a.release_id, a.path.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (release.id, "dist/app.js"),
                (release.id, "dist/index.html"),
                (other_release.id, "dist/index.html")
            ],
            "{label}"
        );
        assert!(artifacts_for_releases(&mut conn, &[]).unwrap().is_empty());

        let again = insert_release(
            &mut conn,
            &new_release(pipeline_id, revision_id, "1.0.1", "main"),
            &[],
        );
        assert!(
            matches!(&again, Err(StorageError::Conflict(m)) if m.contains("1.0.1")),
            "{label}: {again:?}"
        );
        // The same version in another pipeline is fine.
        insert_release(
            &mut conn,
            &new_release(other_id, other_revision, "1.0.1", "main"),
            &[],
        )
        .unwrap();

        // A failing artifact rolls the whole release back.
        let twice = [artifacts[0].clone(), artifacts[0].clone()];
        let failed = insert_release(
            &mut conn,
            &new_release(pipeline_id, revision_id, "1.0.2", "main"),
            &twice,
        );
        assert!(matches!(failed, Err(StorageError::Conflict(_))), "{label}");
        assert!(
            find_release(&mut conn, pipeline_id, "1.0.2")
                .unwrap()
                .is_none()
        );
    });
}

#[test]
fn release_history_pages_by_keyset_with_filters() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        let (pipeline_id, revision_id) = pipeline(&mut conn, "web");
        let mut all = Vec::new();
        for n in 1..=120 {
            let branch = if n % 3 == 0 { "feature" } else { "main" };
            let release = insert_release(
                &mut conn,
                &new_release(pipeline_id, revision_id, &format!("1.0.{n}"), branch),
                &[],
            )
            .unwrap();
            deploy(&mut conn, &release, "dev", DeploymentState::Succeeded);
            if n % 5 == 0 {
                deploy(&mut conn, &release, "test", DeploymentState::Failed);
            }
            all.push(release);
        }

        let page = |conn: &mut DbConn, filter: ReleaseFilter| -> Vec<ReleaseRow> {
            let mut seen = Vec::new();
            let mut filter = filter;
            loop {
                let rows = list_releases(conn, pipeline_id, &filter).unwrap();
                assert!(rows.len() as i64 <= filter.limit);
                let Some(last) = rows.last() else { break };
                filter.before = Some(last.id);
                seen.extend(rows);
            }
            seen
        };

        // Pages of 25: newest first, no overlap, nothing missing.
        let first = list_releases(
            &mut conn,
            pipeline_id,
            &ReleaseFilter {
                limit: 25,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(first.len(), 25);
        assert_eq!(first[0].version, "1.0.120", "{label}");
        let everything = page(
            &mut conn,
            ReleaseFilter {
                limit: 25,
                ..Default::default()
            },
        );
        assert_eq!(everything.len(), 120, "{label}");
        assert!(everything.windows(2).all(|w| w[0].id > w[1].id), "{label}");
        let expected: Vec<i64> = all.iter().rev().map(|r| r.id).collect();
        let ids: Vec<i64> = everything.iter().map(|r| r.id).collect();
        assert_eq!(ids, expected);

        // `before` starts after the given id.
        let after_100 = list_releases(
            &mut conn,
            pipeline_id,
            &ReleaseFilter {
                before: Some(all[99].id),
                limit: 3,
                ..Default::default()
            },
        )
        .unwrap();
        let versions: Vec<&str> = after_100.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(versions, ["1.0.99", "1.0.98", "1.0.97"], "{label}");

        let feature = page(
            &mut conn,
            ReleaseFilter {
                branch: Some("feature".into()),
                limit: 7,
                ..Default::default()
            },
        );
        assert_eq!(feature.len(), 40, "{label}");
        assert!(feature.iter().all(|r| r.branch == "feature"));
        assert!(feature.windows(2).all(|w| w[0].id > w[1].id));

        let failed = page(
            &mut conn,
            ReleaseFilter {
                state: Some(DeploymentState::Failed),
                limit: 10,
                ..Default::default()
            },
        );
        assert_eq!(failed.len(), 24, "{label}");
        assert_eq!(failed[0].version, "1.0.120");
        let failed_in_test = page(
            &mut conn,
            ReleaseFilter {
                state: Some(DeploymentState::Failed),
                stage: Some("test".into()),
                limit: 10,
                ..Default::default()
            },
        );
        assert_eq!(failed_in_test, failed, "{label}");
        let failed_in_dev = page(
            &mut conn,
            ReleaseFilter {
                state: Some(DeploymentState::Failed),
                stage: Some("dev".into()),
                limit: 10,
                ..Default::default()
            },
        );
        assert!(failed_in_dev.is_empty(), "{label}");
        // Both filters: multiples of 15 (feature and failed).
        let both = page(
            &mut conn,
            ReleaseFilter {
                branch: Some("feature".into()),
                state: Some(DeploymentState::Failed),
                limit: 3,
                ..Default::default()
            },
        );
        let versions: Vec<&str> = both.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(
            versions,
            [
                "1.0.120", "1.0.105", "1.0.90", "1.0.75", "1.0.60", "1.0.45", "1.0.30", "1.0.15"
            ],
            "{label}"
        );
    });
}

#[test]
fn the_board_loads_releases_and_their_deployments_in_two_queries() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        let (pipeline_id, revision_id) = pipeline(&mut conn, "web");
        let mut releases = Vec::new();
        for n in 1..=12 {
            let release = insert_release(
                &mut conn,
                &new_release(pipeline_id, revision_id, &format!("2.0.{n}"), "main"),
                &[],
            )
            .unwrap();
            deploy(&mut conn, &release, "dev", DeploymentState::Succeeded);
            if n <= 10 {
                deploy(&mut conn, &release, "test", DeploymentState::Succeeded);
            }
            releases.push(release);
        }
        let retry = deploy(&mut conn, &releases[11], "dev", DeploymentState::Queued);
        assert_eq!(retry.attempt, 2, "{label}");

        let board = board_releases(&mut conn, pipeline_id, 5).unwrap();
        let versions: Vec<&str> = board.iter().map(|r| r.version.as_str()).collect();
        assert_eq!(
            versions,
            ["2.0.12", "2.0.11", "2.0.10", "2.0.9", "2.0.8"],
            "{label}"
        );
        let ids: Vec<i64> = board.iter().map(|r| r.id).collect();
        let cells = deployments_for_releases(&mut conn, &ids).unwrap();
        assert_eq!(cells.len(), 2 + 1 + 2 + 2 + 2, "{label}");
        assert!(cells.iter().all(|d| ids.contains(&d.release_id)));
        assert_eq!(
            cells
                .iter()
                .filter(|d| d.state == DeploymentState::Queued)
                .count(),
            1
        );
        assert!(deployments_for_releases(&mut conn, &[]).unwrap().is_empty());

        let of_last = deployments_of_release(&mut conn, releases[11].id).unwrap();
        assert_eq!(of_last.len(), 2);
        assert_eq!(
            find_deployment(&mut conn, retry.id).unwrap(),
            Some(retry.clone())
        );
        assert!(find_deployment(&mut conn, 999_999).unwrap().is_none());
        // Many at once (the approval inbox), missing ids left out.
        let mut many = find_deployments(&mut conn, &[retry.id, of_last[0].id, 999_999]).unwrap();
        many.sort_by_key(|d| d.id);
        let mut expected = vec![retry.clone(), of_last[0].clone()];
        expected.sort_by_key(|d| d.id);
        expected.dedup_by_key(|d| d.id);
        assert_eq!(many, expected, "{label}");
        assert!(find_deployments(&mut conn, &[]).unwrap().is_empty());
        let versions: Vec<String> =
            find_releases_by_ids(&mut conn, &[releases[11].id, releases[9].id, 999_999])
                .unwrap()
                .into_iter()
                .map(|r| r.version)
                .collect();
        assert_eq!(versions.len(), 2, "{label}");
        assert!(
            versions.contains(&releases[11].version) && versions.contains(&releases[9].version)
        );
        assert!(find_releases_by_ids(&mut conn, &[]).unwrap().is_empty());

        // What runs where: the newest success per stage.
        let current = latest_deployment_per_stage(&mut conn, pipeline_id).unwrap();
        let summary: Vec<(&str, i64)> = current
            .iter()
            .map(|d| (d.stage.as_str(), d.release_id))
            .collect();
        assert_eq!(
            summary,
            [("dev", releases[11].id), ("test", releases[9].id)],
            "{label}"
        );
    });
}

#[test]
fn builds_are_numbered_per_pipeline() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        let (web, _) = pipeline(&mut conn, "web");
        let (api, _) = pipeline(&mut conn, "api");
        assert_eq!(next_build_number(&mut conn, web).unwrap(), 1);
        let build = |pipeline_id| NewBuild {
            pipeline_id,
            state: BuildState::Queued,
            branch: Some("main".into()),
            commit_sha: None,
            message: None,
            author: None,
            requested_by: "webhook".into(),
            trigger: "push".into(),
        };
        let first = insert_build(&mut conn, &build(web)).unwrap();
        let second = insert_build(&mut conn, &build(web)).unwrap();
        let other = insert_build(&mut conn, &build(api)).unwrap();
        assert_eq!(
            (first.number, second.number, other.number),
            (1, 2, 1),
            "{label}"
        );
        assert_eq!(next_build_number(&mut conn, web).unwrap(), 3);
        assert_eq!(
            find_build(&mut conn, second.id).unwrap(),
            Some(second.clone())
        );
        assert_eq!(
            find_build_by_number(&mut conn, web, 2).unwrap(),
            Some(second)
        );
        assert!(matches!(
            insert_build(&mut conn, &build(424_242)),
            Err(StorageError::NotFound)
        ));
    });
}

#[test]
fn users_groups_and_tokens() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        assert_eq!(count_users(&mut conn).unwrap(), 0);
        let new_user = NewUser {
            username: "alice".into(),
            display_name: "Alice".into(),
            role: Role::ReleaseManager,
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$salt$hash".into()),
            email: None,
            sso_subject: None,
        };
        let alice = insert_user(&mut conn, &new_user).unwrap();
        assert!(matches!(
            insert_user(&mut conn, &new_user),
            Err(StorageError::Conflict(m)) if m.contains("alice")
        ));
        assert_eq!(count_users(&mut conn).unwrap(), 1, "{label}");
        assert_eq!(
            find_user_by_name(&mut conn, "alice").unwrap(),
            Some(alice.clone())
        );
        assert_eq!(find_user(&mut conn, alice.id).unwrap(), Some(alice.clone()));
        assert_eq!(alice.role, Role::ReleaseManager);
        assert!(!alice.disabled);
        assert!(find_user_by_name(&mut conn, "bob").unwrap().is_none());

        add_user_to_group(&mut conn, alice.id, "qa").unwrap();
        add_user_to_group(&mut conn, alice.id, "management").unwrap();
        add_user_to_group(&mut conn, alice.id, "qa").unwrap();
        assert_eq!(
            user_groups(&mut conn, alice.id).unwrap(),
            ["management", "qa"],
            "{label}"
        );

        let token = insert_token(&mut conn, alice.id, "ci", &"f".repeat(64)).unwrap();
        assert!(insert_token(&mut conn, alice.id, "again", &"f".repeat(64)).is_err());
        let (user, used) = find_user_by_token_hash(&mut conn, &"f".repeat(64))
            .unwrap()
            .unwrap();
        assert_eq!(user, alice, "{label}");
        assert_eq!(used.id, token.id);
        let stored = list_tokens(&mut conn, alice.id).unwrap();
        assert_eq!(stored[0].last_used_at, used.last_used_at, "{label}");
        assert!(stored[0].last_used_at.is_some());
        assert!(
            find_user_by_token_hash(&mut conn, &"0".repeat(64))
                .unwrap()
                .is_none()
        );

        assert!(revoke_token(&mut conn, token.id).unwrap());
        assert!(!revoke_token(&mut conn, token.id).unwrap());
        assert!(
            find_user_by_token_hash(&mut conn, &"f".repeat(64))
                .unwrap()
                .is_none(),
            "{label}: revoked"
        );
    });
}

#[test]
fn the_audit_chain_verifies_and_reveals_tampering() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        verify_audit_chain(&mut conn).unwrap();
        let mut records = Vec::new();
        for n in 0..5 {
            let record = write_transaction(&mut conn, |conn| {
                append_audit(
                    conn,
                    "alice",
                    "deployment.approved",
                    &format!("deployment:{n}"),
                    "{}",
                )
            })
            .unwrap();
            records.push(record);
        }
        assert_eq!(records[0].prev_hash, "");
        assert!(records.windows(2).all(|w| w[1].prev_hash == w[0].hash));
        verify_audit_chain(&mut conn).unwrap();

        let page = list_audit(&mut conn, Some(records[3].id), 2).unwrap();
        let ids: Vec<i64> = page.iter().map(|r| r.id).collect();
        assert_eq!(ids, [records[2].id, records[1].id], "{label}");
        assert_eq!(page[0], records[2], "{label}: round trip");

        diesel::update(audit_events::table.find(records[2].id))
            .set(audit_events::detail.eq(r#"{"approved":false}"#))
            .execute(&mut *conn)
            .unwrap();
        match verify_audit_chain(&mut conn) {
            Err(AuditVerifyError::Broken(BrokenLink { id })) => {
                assert_eq!(id, records[2].id, "{label}")
            }
            other => panic!("{label}: expected a broken link, got {other:?}"),
        }
    });
}

#[test]
fn an_audit_record_rolls_back_with_its_transaction() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        append_audit(&mut conn, "alice", "first", "x", "").unwrap();
        let failed: Result<(), StorageError> = write_transaction(&mut conn, |conn| {
            append_audit(conn, "alice", "second", "x", "")?;
            Err(StorageError::Conflict("changed my mind".into()))
        });
        assert!(failed.is_err());
        let third = append_audit(&mut conn, "alice", "third", "x", "").unwrap();
        let all = list_audit(&mut conn, None, 10).unwrap();
        let actions: Vec<&str> = all.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, ["third", "first"], "{label}");
        assert_eq!(third.prev_hash, all[1].hash);
        verify_audit_chain(&mut conn).unwrap();
    });
}

#[test]
fn concurrent_appenders_never_fork_the_chain() {
    on_each_backend(|label, db| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for n in 0..15 {
                        let mut conn = db.get().unwrap();
                        write_transaction(&mut conn, |conn| {
                            // Read something first, as a real change does.
                            list_pipelines(conn)?;
                            append_audit(conn, &format!("t{t}"), "tick", &n.to_string(), "")
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let mut conn = db.get().unwrap();
        assert_eq!(
            list_audit(&mut conn, None, 100).unwrap().len(),
            60,
            "{label}"
        );
        verify_audit_chain(&mut conn).unwrap();
    });
}

#[test]
fn timestamps_round_trip_unchanged() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        let at = now();
        assert_eq!(at.and_utc().timestamp_subsec_nanos() % 1_000, 0);
        let (pipeline_id, revision_id) = pipeline(&mut conn, "web");
        let release = insert_release(
            &mut conn,
            &new_release(pipeline_id, revision_id, "1.0.0", "main"),
            &[],
        )
        .unwrap();
        let stored = find_release(&mut conn, pipeline_id, "1.0.0")
            .unwrap()
            .unwrap();
        assert_eq!(stored.created_at, release.created_at, "{label}");
        assert!(stored.created_at >= at);

        let samples: [NaiveDateTime; 3] = [
            NaiveDate::from_ymd_opt(2024, 3, 10)
                .unwrap()
                .and_hms_micro_opt(2, 30, 0, 1)
                .unwrap(),
            NaiveDate::from_ymd_opt(1999, 12, 31)
                .unwrap()
                .and_hms_opt(23, 59, 59)
                .unwrap(),
            NaiveDate::from_ymd_opt(2038, 1, 19)
                .unwrap()
                .and_hms_micro_opt(3, 14, 8, 999_999)
                .unwrap(),
        ];
        for sample in samples {
            diesel::update(stages::table.filter(stages::pipeline_id.eq(pipeline_id)))
                .set(stages::next_fire_at.eq(sample))
                .execute(&mut *conn)
                .unwrap();
            let rows = list_stages(&mut conn, pipeline_id).unwrap();
            assert!(
                rows.iter().all(|s| s.next_fire_at == Some(sample)),
                "{label}: {sample}"
            );
            // Ordering and comparison happen in SQL too.
            let due: i64 = stages::table
                .filter(stages::pipeline_id.eq(pipeline_id))
                .filter(stages::next_fire_at.le(sample))
                .count()
                .get_result(&mut *conn)
                .unwrap();
            assert_eq!(due, rows.len() as i64, "{label}");
        }
    });
}

#[test]
fn history_stays_fast_with_2000_releases_and_5_stages() {
    on_each_backend(|label, db| {
        let mut conn = db.get().unwrap();
        let (pipeline_id, revision_id) = pipeline(&mut conn, "big");
        let seeding = Instant::now();
        let stages = ["dev", "test", "preprod", "production", "hotfix"];
        write_transaction(&mut conn, |conn| -> Result<(), StorageError> {
            for n in 1..=2000 {
                let branch = if n % 10 == 0 { "release" } else { "main" };
                let release = insert_release(
                    conn,
                    &new_release(pipeline_id, revision_id, &format!("3.0.{n}"), branch),
                    &[],
                )?;
                for (i, stage) in stages.iter().enumerate() {
                    let state = if n % 97 == 0 && i == 3 {
                        DeploymentState::Failed
                    } else {
                        DeploymentState::Succeeded
                    };
                    deploy(conn, &release, stage, state);
                }
            }
            Ok(())
        })
        .unwrap();
        eprintln!(
            "{label}: seeded 2000 releases x 5 stages in {:?}",
            seeding.elapsed()
        );

        let filters = [
            ReleaseFilter {
                limit: 50,
                ..Default::default()
            },
            ReleaseFilter {
                branch: Some("release".into()),
                limit: 50,
                ..Default::default()
            },
            ReleaseFilter {
                state: Some(DeploymentState::Failed),
                stage: Some("production".into()),
                limit: 50,
                ..Default::default()
            },
            ReleaseFilter {
                state: Some(DeploymentState::Failed),
                limit: 50,
                ..Default::default()
            },
            ReleaseFilter {
                before: Some(1000),
                state: Some(DeploymentState::Succeeded),
                stage: Some("dev".into()),
                limit: 50,
                ..Default::default()
            },
        ];
        for filter in &filters {
            let started = Instant::now();
            let rows = list_releases(&mut conn, pipeline_id, filter).unwrap();
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            deployments_for_releases(&mut conn, &ids).unwrap();
            let took = started.elapsed();
            eprintln!("{label}: {filter:?}: {} rows in {took:?}", rows.len());
            assert!(
                took < Duration::from_millis(250),
                "{label}: {filter:?} took {took:?}"
            );
        }
        let started = Instant::now();
        assert_eq!(
            latest_deployment_per_stage(&mut conn, pipeline_id)
                .unwrap()
                .len(),
            5
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(250),
            "{label}: per stage took {took:?}"
        );
    });
}
