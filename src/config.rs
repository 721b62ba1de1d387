//! Typed settings, layered: defaults < config file < `SLIPWAY_*` environment < flags.
//!
//! clap reads a flag and its `SLIPWAY_*` variable into the same `Option`
//! (a flag wins over the variable); the config file fills what both left
//! unset, and the defaults fill the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default address of the web server (`--listen`, `SLIPWAY_LISTEN`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory (`--data-dir`, `SLIPWAY_DATA_DIR`).
pub const DEFAULT_DATA_DIR: &str = "./slipway-data";

/// The settings every subcommand runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address the web server binds (`--listen`, `SLIPWAY_LISTEN`, default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Where Slipway keeps its files (`--data-dir`, `SLIPWAY_DATA_DIR`, default `./slipway-data`).
    pub data_dir: PathBuf,
    /// Database URL (`--database-url`, `SLIPWAY_DATABASE_URL`, default `sqlite://<data-dir>/slipway.db`).
    pub database_url: String,
    /// The URL people reach Slipway at (`SLIPWAY_PUBLIC_URL`, default `http://<listen>`).
    pub public_url: String,
}

/// Values as they come from flags and environment, before layering.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub config: Option<PathBuf>,
}

/// The optional YAML config file (`--config FILE`, `SLIPWAY_CONFIG`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    public_url: Option<String>,
}

/// A setting that cannot be used, with where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Unreadable {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: listen: `{value}` is not an address like 127.0.0.1:8080")]
    BadListen { origin: String, value: String },
}

impl Settings {
    /// Layers the overrides over the config file over the defaults.
    pub fn load(overrides: Overrides) -> Result<Settings, ConfigError> {
        let (file, file_name) = match &overrides.config {
            Some(path) => (read_file(path)?, path.display().to_string()),
            None => (FileSettings::default(), String::new()),
        };
        let (listen_text, listen_origin) = match (overrides.listen, file.listen) {
            (Some(v), _) => (v, "--listen / SLIPWAY_LISTEN".to_string()),
            (None, Some(v)) => (v, file_name.clone()),
            (None, None) => (DEFAULT_LISTEN.to_string(), "default".to_string()),
        };
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::BadListen {
                origin: listen_origin,
                value: listen_text.clone(),
            })?;
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let database_url = overrides
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| default_database_url(&data_dir));
        let public_url = overrides
            .public_url
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        Ok(Settings {
            listen,
            data_dir,
            database_url,
            public_url,
        })
    }
}

/// `sqlite://<data-dir>/slipway.db`
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("slipway.db").display())
}

fn read_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        file: file.clone(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(FileSettings::default());
    }
    yaml_serde::from_str(&text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        ConfigError::Invalid {
            file,
            line,
            column,
            message: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = Settings::load(Overrides::default()).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(s.database_url, "sqlite://./slipway-data/slipway.db");
        assert_eq!(s.public_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn file_fills_what_flags_left_unset_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slipway.yaml");
        std::fs::write(&path, "listen: 127.0.0.1:9000\ndata_dir: /srv/slipway\n").unwrap();
        let s = Settings::load(Overrides {
            config: Some(path),
            data_dir: Some(PathBuf::from("/flag")),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.data_dir, PathBuf::from("/flag"));
        assert_eq!(s.database_url, "sqlite:///flag/slipway.db");
    }

    #[test]
    fn bad_file_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slipway.yaml");
        std::fs::write(&path, "listen: 127.0.0.1:9000\nlisten_port: 3\n").unwrap();
        let err = Settings::load(Overrides {
            config: Some(path.clone()),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with(&format!("{}:2:", path.display())), "{err}");
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn bad_listen_is_refused() {
        let err = Settings::load(Overrides {
            listen: Some("nowhere".into()),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`nowhere`"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Settings::load(Overrides {
            config: Some(PathBuf::from("/nonexistent/slipway.yaml")),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("/nonexistent/slipway.yaml: cannot read"),
            "{err}"
        );
    }
}
