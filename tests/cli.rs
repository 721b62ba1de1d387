//! The `slipway` binary, run as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GOOD: &str = r#"pipeline: hello-web
source: { repo: ./hello-web, branch: main }
version: "{date}.{build}"
stages:
  - name: dev
    trigger: { after: build }
  - name: test
    trigger: { schedule: { cron: "0 0 3 * * *", timezone: "Europe/Berlin" } }
"#;

fn slipway(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.arg("--data-dir").arg(data_dir);
    cmd.env_remove("SLIPWAY_DATABASE_URL")
        .env_remove("SLIPWAY_LISTEN")
        .env_remove("SLIPWAY_CONFIG");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run slipway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn import_export_round_trip_and_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("hello.yaml");
    std::fs::write(&file, GOOD).unwrap();

    let (code, out, err) = run(slipway(&data).args(["pipeline", "import"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "created pipeline hello-web (revision 1)");

    let (code, exported, err) = run(slipway(&data).args(["pipeline", "export", "hello-web"]));
    assert_eq!(code, 0, "{err}");
    // The relative repository path was resolved against the file's directory.
    let repo = std::path::absolute(dir.path().join("hello-web")).unwrap();
    assert!(exported.contains(&repo.display().to_string()), "{exported}");

    let file2 = dir.path().join("exported.yaml");
    std::fs::write(&file2, &exported).unwrap();
    let (code, out, _) = run(slipway(&data).args(["pipeline", "import"]).arg(&file2));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "pipeline hello-web is unchanged (revision 1)");
    let (_, again, _) = run(slipway(&data).args(["pipeline", "export", "hello-web"]));
    assert_eq!(
        exported, again,
        "export → import → export is byte-identical"
    );

    // A broken file names file, line, column and field, and changes nothing.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        GOOD.replace("0 0 3 * * *", "0 0 25 * * *")
            .replace("{date}", "{nope}"),
    )
    .unwrap();
    let (code, out, err) = run(slipway(&data).args(["pipeline", "import"]).arg(&broken));
    assert_eq!(code, 1, "{out}");
    let expected_prefix = format!("error: {}:", broken.display());
    assert!(err.starts_with(&expected_prefix), "{err}");
    let (_, after, _) = run(slipway(&data).args(["pipeline", "export", "hello-web"]));
    assert_eq!(after, exported);

    let (code, _, err) = run(slipway(&data)
        .args(["pipeline", "import"])
        .arg(dir.path().join("missing.yaml")));
    assert_eq!(code, 1);
    assert!(err.contains("missing.yaml: cannot read the file"), "{err}");

    let (code, _, err) = run(slipway(&data).args(["pipeline", "export", "nope"]));
    assert_eq!(code, 1);
    assert!(err.contains("there is no pipeline `nope`"), "{err}");
}

#[test]
fn unknown_flags_and_bad_config_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(slipway(dir.path()).args(["serve", "--bogus"]));
    assert_eq!(code, 2);
    assert!(err.contains("--bogus"), "{err}");
    let config = dir.path().join("slipway.yaml");
    std::fs::write(&config, "listen: 127.0.0.1:0\nlisten_on: 1\n").unwrap();
    let (code, _, err) = run(slipway(dir.path())
        .arg("migrate")
        .arg("--config")
        .arg(&config));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:2:", config.display())), "{err}");
    let (code, _, err) = run(slipway(dir.path()).args(["serve", "--listen", "nowhere"]));
    assert_eq!(code, 1);
    assert!(err.contains("`nowhere`"), "{err}");
}

#[test]
fn users_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = slipway(dir.path());
    cmd.args([
        "user",
        "add",
        "mara",
        "--role",
        "release_manager",
        "--group",
        "qa",
        "--password-stdin",
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a very long password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "added user mara (release_manager)"
    );

    let (code, _, err) = run(slipway(dir.path()).args(["user", "add", "mara"]));
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run(slipway(dir.path()).args(["user", "add", "x", "--role", "boss"]));
    assert_eq!(code, 2, "{err}");

    let (code, token, err) =
        run(slipway(dir.path()).args(["token", "create", "mara", "--name", "laptop"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        token.trim().starts_with("slw_") && token.trim().len() > 30,
        "{token}"
    );
    let (code, _, err) = run(slipway(dir.path()).args(["token", "create", "nobody"]));
    assert_eq!(code, 1);
    assert!(err.contains("no user `nobody`"), "{err}");
}

/// A `slipway serve` child, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on a free port and waits for its `listening on` line.
fn serve(data: &std::path::Path, extra: &[&str]) -> (Server, String) {
    let mut server = Server(
        slipway(data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = server.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = String::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return (server, rest.trim().to_string());
            }
        }
    }
    panic!("serve did not start: {log}");
}

#[test]
fn serve_starts_creates_the_first_admin_and_the_demo_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, addr) = serve(&data, &["--demo"]);
    let password_file = data.join("initial-admin-password");
    let password = std::fs::read_to_string(&password_file).unwrap();
    assert!(password.trim().len() >= 20);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Every page asks for a sign-in first; the first admin's password works.
    let browser = sign_in(&addr, "admin", password.trim());
    let board = browser
        .get(format!("http://{addr}/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(board.contains("space-game-web"), "{board}");
    let drawing = browser
        .get(format!("http://{addr}/pipelines/space-game-web"))
        .send()
        .unwrap();
    assert_eq!(drawing.status(), 200);
    let drawing = drawing.text().unwrap();
    for stage in ["dev", "test", "preprod", "production"] {
        assert!(
            drawing.contains(&format!("class=\"node-title\">{stage}<")),
            "{stage}"
        );
    }
    // The demo repository is a real git repository with the sample app.
    let repo = data.join("demo/space-game-web");
    let log = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["log", "--oneline"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("Space Game website"));
    assert!(repo.join("build.sh").exists() && repo.join("run.sh").exists());

    // SIGTERM stops it cleanly, ending the live pages' event streams
    // rather than waiting the graceful stop's 10 s for them.
    #[cfg(unix)]
    {
        let mut events =
            BufReader::new(browser.get(format!("http://{addr}/events")).send().unwrap());
        let mut hello = String::new();
        while !hello.contains("event: hello") {
            assert_ne!(events.read_line(&mut hello).unwrap(), 0, "{hello}");
        }
        let (ended, stream_end) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rest = String::new();
            while events.read_line(&mut rest).unwrap_or(0) > 0 {}
            let _ = ended.send(());
        });
        let signaled = Instant::now();
        let pid = server.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut server = server;
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = server.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
        assert!(
            signaled.elapsed() < Duration::from_secs(8),
            "serve took {:?} to stop with a live page open",
            signaled.elapsed()
        );
        stream_end
            .recv_timeout(Duration::from_secs(5))
            .expect("the event stream ended");
    }

    // A second start keeps the admin password and does not repeat the demo.
    let (_server, addr) = serve(&data, &["--demo"]);
    assert_eq!(std::fs::read_to_string(&password_file).unwrap(), password);
    // The session key is kept in the data dir: still signed in.
    let api: serde_json::Value = browser
        .get(format!("http://{addr}/api/v1/pipelines/space-game-web"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(api["revision"], 1);
}

/// Signs in through the login form, as a browser does; returns the browser.
fn sign_in(addr: &str, username: &str, password: &str) -> reqwest::blocking::Client {
    let browser = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = browser.get(format!("http://{addr}/")).send().unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login?next=%2F");
    let login = browser
        .get(format!("http://{addr}/login?next=%2F"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let html = scraper::Html::parse_document(&login);
    let selector = scraper::Selector::parse("input[name=csrf]").unwrap();
    let csrf = html
        .select(&selector)
        .next()
        .and_then(|e| e.value().attr("value"))
        .unwrap()
        .to_string();
    let res = browser
        .post(format!("http://{addr}/login"))
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf", csrf.as_str()),
            ("next", "/"),
        ])
        .send()
        .unwrap();
    assert_eq!(res.status(), 303, "signed in as {username}");
    browser
}

#[test]
fn migrate_reports_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(slipway(dir.path()).arg("migrate"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied"), "{out}");
    let (code, out, _) = run(slipway(dir.path()).arg("migrate"));
    assert_eq!(code, 0);
    assert!(out.contains("applied 0 migrations"), "{out}");
    assert!(dir.path().join("slipway.db").exists());
}

#[test]
fn secret_set_reads_stdin_and_never_prints_the_value() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("hello.yaml");
    std::fs::write(
        &file,
        GOOD.replace(
            "branch: main }",
            "branch: main, webhook_secret: \"${{ secrets.HOOK }}\" }",
        ),
    )
    .unwrap();
    let (code, _, err) = run(slipway(&data).args(["pipeline", "import"]).arg(&file));
    assert_eq!(code, 0, "{err}");

    let secret = |args: &[&str], stdin: &str, env_key: Option<&str>| {
        let mut cmd = slipway(&data);
        cmd.arg("secret")
            .args(args)
            .env_remove("SLIPWAY_SECRET_KEY");
        if let Some(k) = env_key {
            cmd.env("SLIPWAY_SECRET_KEY", k);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that fails before reading may have closed its stdin.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let value = "v4lue-only-on-stdin";
    let (code, out, err) = secret(&["set", "hello-web", "HOOK"], &format!("{value}\n"), None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "set secret HOOK of hello-web\n");
    assert!(!err.contains(value), "{err}");

    // The key file was generated, private to its owner.
    let key_file = data.join("secret.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The database holds no plaintext.
    let db = std::fs::read(data.join("slipway.db")).unwrap();
    assert!(!db.windows(value.len()).any(|w| w == value.as_bytes()));

    let (code, out, _) = secret(&["list", "hello-web"], "", None);
    assert_eq!(code, 0);
    assert_eq!(out, "HOOK\n");

    let (_, exported, _) = run(slipway(&data).args(["pipeline", "export", "hello-web"]));
    assert!(exported.contains("${{ secrets.HOOK }}"), "{exported}");
    assert!(!exported.contains(value));

    // Bad input exits 1 with a message, and never echoes the value.
    let (code, _, err) = secret(&["set", "hello-web", "EMPTY"], "\n", None);
    assert_eq!(code, 1);
    assert!(err.contains("empty"), "{err}");
    let (code, _, err) = secret(&["set", "hello-web", "bad-name"], value, None);
    assert_eq!(code, 1);
    assert!(err.contains("bad-name") && !err.contains(value), "{err}");
    let (code, _, err) = secret(&["set", "nope", "HOOK"], value, None);
    assert_eq!(code, 1);
    assert!(err.contains("nope") && !err.contains(value), "{err}");
    let (code, _, err) = secret(&["set", "hello-web", "HOOK"], value, Some("short"));
    assert_eq!(code, 1);
    assert!(err.contains("SLIPWAY_SECRET_KEY"), "{err}");

    let (code, out, err) = secret(&["delete", "hello-web", "HOOK"], "", None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "deleted secret HOOK of hello-web\n");
    let (_, out, _) = secret(&["list", "hello-web"], "", None);
    assert_eq!(out, "");
}

/// Issue 12 (11): the data directory is 0700 and the database with its
/// `-wal` 0600, whether they are new or were left open by an older version.
#[test]
fn the_data_directory_and_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = run(slipway(&data).arg("migrate"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&data), 0o700);
    let db = data.join("slipway.db");
    assert_eq!(mode(&db), 0o600);
    // Opened by another version with a loose umask: made private again.
    // (The `-wal` file, which SQLite removes when the last connection
    // closes, is checked while open in `storage::conn`'s tests.)
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run(slipway(&data).arg("migrate"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
}
