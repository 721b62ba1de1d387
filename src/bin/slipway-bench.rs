//! Page benchmark: seeds a SQLite database with 50 pipelines × 5 stages ×
//! 2,000 releases (with deployments), starts the real server, and prints
//! p50/p99 latency and requests/s for the board, a pipeline's history page 1
//! and page 50, and a release page.
//!
//! `cargo run --release --bin slipway-bench [-- --pipelines N --releases N --requests N]`

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::Context;
use slipway::app::{self, Application};
use slipway::config::Settings;
use slipway::domain::DeploymentState;
use slipway::engine::pipelines;
use slipway::storage::{self, Db, NewArtifact, NewDeployment, NewRelease, ReleaseFilter};
use slipway::web;

struct Options {
    pipelines: usize,
    releases: usize,
    requests: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        pipelines: 50,
        releases: 2000,
        requests: 300,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .with_context(|| format!("{} needs a value", args[i]))?
            .parse::<usize>()
            .with_context(|| format!("{} needs a number", args[i]))?;
        match args[i].as_str() {
            "--pipelines" => o.pipelines = value,
            "--releases" => o.releases = value,
            "--requests" => o.requests = value,
            other => anyhow::bail!("unknown option {other}"),
        }
        i += 2;
    }
    Ok(o)
}

const STAGES: [&str; 5] = ["dev", "test", "preprod", "production", "dr"];

fn definition(name: &str) -> String {
    format!(
        r#"pipeline: {name}
source: {{ repo: /srv/git/{name}, branch: main }}
version: "1.0.{{build}}"
stages:
  - name: dev
    trigger: {{ after: build }}
  - name: test
    trigger: {{ schedule: {{ cron: "0 0 3 * * *", timezone: "America/Los_Angeles" }} }}
  - name: preprod
    trigger: manual
  - name: production
    trigger: {{ after: preprod }}
  - name: dr
    trigger: manual
"#
    )
}

fn seed(db: &Db, o: &Options) -> anyhow::Result<()> {
    let mut conn = db.get()?;
    for p in 0..o.pipelines {
        let name = format!("pipeline-{p:02}");
        let def = pipelines::parse(&definition(&name), "bench")?;
        pipelines::import(&mut conn, def, None, "bench", None)?;
        let row = storage::find_pipeline(&mut conn, &name)?.context("pipeline")?;
        let revision = storage::current_revision(&mut conn, row.id)?;
        storage::write_transaction::<_, anyhow::Error, _>(&mut conn, |conn| {
            for n in 1..=o.releases {
                let release = storage::insert_release(
                    conn,
                    &NewRelease {
                        pipeline_id: row.id,
                        version: format!("1.0.{n}"),
                        build_id: None,
                        revision_id: revision.id,
                        commit_sha: format!("{:040x}", n * 7919 + p),
                        branch: if n % 4 == 0 {
                            "feature/x".into()
                        } else {
                            "main".into()
                        },
                        message: format!("change {n}"),
                        author: "bench".into(),
                        fixes_release_id: None,
                    },
                    &[NewArtifact {
                        path: "dist/app.js".into(),
                        sha256: format!("{:064x}", n),
                        size: 4096,
                    }],
                )?;
                // Older releases went further down the pipeline.
                let reached = match o.releases - n {
                    0 => 1,
                    1..=2 => 2,
                    3..=9 => 3,
                    _ => 5,
                };
                for (i, stage) in STAGES.iter().take(reached).enumerate() {
                    let state = if n % 17 == 0 && i == reached - 1 {
                        DeploymentState::Failed
                    } else {
                        DeploymentState::Succeeded
                    };
                    storage::insert_deployment(
                        conn,
                        &NewDeployment {
                            pipeline_id: row.id,
                            release_id: release.id,
                            stage: (*stage).into(),
                            state,
                            trigger: "manual".into(),
                            requested_by: "bench".into(),
                            reason: None,
                        },
                    )?;
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

struct Figures {
    p50: Duration,
    p99: Duration,
    rps: f64,
}

fn measure(client: &reqwest::blocking::Client, url: &str, n: usize) -> anyhow::Result<Figures> {
    for _ in 0..20 {
        let res = client.get(url).send()?;
        anyhow::ensure!(res.status().is_success(), "{url}: {}", res.status());
        res.bytes()?;
    }
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let res = client.get(url).send()?;
        res.bytes()?;
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Ok(Figures {
        p50: at(0.50),
        p99: at(0.99),
        rps: n as f64 / total.as_secs_f64(),
    })
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let dir = tempfile_dir()?;
    let url = format!("sqlite://{}/bench.db", dir.display());
    let db = Db::connect(&url, 8)?;
    db.run_migrations()?;
    let t = Instant::now();
    seed(&db, &o)?;
    println!(
        "seeded {} pipelines × {} stages × {} releases in {:.1?}",
        o.pipelines,
        STAGES.len(),
        o.releases,
        t.elapsed()
    );

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let settings = Settings {
        listen: addr,
        data_dir: dir.clone(),
        database_url: url,
        public_url: format!("http://{addr}"),
        oidc: None,
        router: Default::default(),
    };
    let app_options = app::Options {
        listener: Some(listener),
        secret_key: Some(std::sync::Arc::new(
            slipway::engine::secrets::SecretKey::generate()?,
        )),
        ..app::Options::default()
    };
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let _slipway = Application::spawn(settings, app_options, threads)?;

    let pipeline = format!("pipeline-{:02}", o.pipelines / 2);
    let page50_before = {
        let mut conn = db.get()?;
        let row = storage::find_pipeline(&mut conn, &pipeline)?.context("pipeline")?;
        let size = web::pages::releases::PAGE_SIZE;
        let skipped = storage::list_releases(
            &mut conn,
            row.id,
            &ReleaseFilter {
                limit: size * 49,
                ..ReleaseFilter::default()
            },
        )?;
        skipped
            .last()
            .map(|r| r.id)
            .context("not enough releases for page 50")?
    };
    // Every page needs a signed-in user: read them with a viewer's API
    // token, and never follow a redirect (to /login) as if it were the page.
    let token = {
        let mut conn = db.get()?;
        slipway::engine::users::create_user(
            &mut conn,
            slipway::engine::users::NewLocalUser {
                username: "bench",
                role: slipway::domain::Role::Viewer,
                groups: &[],
                password: "a long bench password",
            },
            "bench",
        )?;
        slipway::engine::users::create_token(&mut conn, "bench", "bench", "bench")?
    };
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let client = reqwest::blocking::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = format!("http://{addr}");
    // Wait for the server to answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(format!("{base}/healthz")).send().is_err() {
        anyhow::ensure!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let targets = [
        ("board /".to_string(), "/".to_string()),
        (
            "history page 1".to_string(),
            format!("/pipelines/{pipeline}/releases"),
        ),
        (
            "history page 50".to_string(),
            format!("/pipelines/{pipeline}/releases?before={page50_before}"),
        ),
        (
            "release page".to_string(),
            format!("/pipelines/{pipeline}/releases/1.0.{}", o.releases / 2),
        ),
    ];
    println!("{:<18} {:>10} {:>10} {:>10}", "page", "p50", "p99", "req/s");
    for (label, path) in targets {
        let f = measure(&client, &format!("{base}{path}"), o.requests)?;
        println!(
            "{:<18} {:>8.2}ms {:>8.2}ms {:>10.0}",
            label,
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.rps
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("slipway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
