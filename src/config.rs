//! Typed settings, layered: defaults < config file < `SLIPWAY_*` environment < flags.
//!
//! clap reads a flag and its `SLIPWAY_*` variable into the same `Option`
//! (a flag wins over the variable); the config file fills what both left
//! unset, and the defaults fill the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// Default address of the web server (`--listen`, `SLIPWAY_LISTEN`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory (`--data-dir`, `SLIPWAY_DATA_DIR`).
pub const DEFAULT_DATA_DIR: &str = "./slipway-data";
/// Default ID token claim that lists a person's groups (`SLIPWAY_OIDC_GROUPS_CLAIM`).
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

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
    /// Session cookies are `Secure` when it is https; the SSO redirect URI is
    /// `{public_url}/auth/oidc/callback`.
    pub public_url: String,
    /// Single sign-on through OpenID Connect; `None` (the default) offers
    /// only local accounts. Set by `SLIPWAY_OIDC_ISSUER`,
    /// `SLIPWAY_OIDC_CLIENT_ID` and `SLIPWAY_OIDC_CLIENT_SECRET` together.
    pub oidc: Option<OidcSettings>,
    /// The slot router (`--router-listen`, `--router-domain`).
    pub router: RouterSettings,
}

/// Default address of the slot router (`--router-listen`, `SLIPWAY_ROUTER_LISTEN`).
pub const DEFAULT_ROUTER_LISTEN: &str = "127.0.0.1:8081";
/// Default domain of slot host names (`--router-domain`, `SLIPWAY_ROUTER_DOMAIN`).
pub const DEFAULT_ROUTER_DOMAIN: &str = "localhost";

/// The slot router: a reverse proxy to the apps' slots by `Host:` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSettings {
    /// Where it listens (`--router-listen`, `SLIPWAY_ROUTER_LISTEN`, or
    /// `router_listen` in the config file; default `127.0.0.1:8081`; port 0
    /// picks a free port).
    pub listen: SocketAddr,
    /// Slot `S` of app `A` answers to `A-S.<domain>`, the production slot
    /// also to `A.<domain>` (`--router-domain`, `SLIPWAY_ROUTER_DOMAIN`, or
    /// `router_domain` in the config file; default `localhost`).
    pub domain: String,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            domain: DEFAULT_ROUTER_DOMAIN.to_string(),
        }
    }
}

impl RouterSettings {
    /// Sets what is given (`origin` names where it came from, for errors).
    pub fn apply(
        &mut self,
        listen: Option<String>,
        domain: Option<String>,
        origin: &str,
    ) -> Result<(), ConfigError> {
        if let Some(text) = listen {
            self.listen =
                text.trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| ConfigError::BadRouter {
                        origin: origin.to_string(),
                        field: "router_listen",
                        value: text.clone(),
                    })?;
        }
        if let Some(text) = domain {
            let domain = text.trim().trim_matches('.').to_ascii_lowercase();
            let valid = !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(ConfigError::BadRouter {
                    origin: origin.to_string(),
                    field: "router_domain",
                    value: text,
                });
            }
            self.domain = domain;
        }
        Ok(())
    }
}

/// How Slipway signs people in through an OpenID Connect provider.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer URL; its discovery document is
    /// `{issuer}/.well-known/openid-configuration` (`SLIPWAY_OIDC_ISSUER`,
    /// or `oidc_issuer` in the config file).
    pub issuer: String,
    /// Slipway's client id at the provider (`SLIPWAY_OIDC_CLIENT_ID`, or
    /// `oidc_client_id` in the config file).
    pub client_id: String,
    /// Slipway's client secret at the provider (`SLIPWAY_OIDC_CLIENT_SECRET`
    /// only: never in a config file, never logged).
    pub client_secret: SecretString,
    /// The ID token claim with the person's groups (`SLIPWAY_OIDC_GROUPS_CLAIM`,
    /// or `oidc_groups_claim` in the config file; default `groups`).
    pub groups_claim: String,
}

impl OidcSettings {
    /// The redirect URI to register at the provider.
    pub fn redirect_uri(public_url: &str) -> String {
        format!("{}/auth/oidc/callback", public_url.trim_end_matches('/'))
    }
}

/// Values as they come from flags and environment, before layering.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub config: Option<PathBuf>,
    /// `SLIPWAY_OIDC_ISSUER`
    pub oidc_issuer: Option<String>,
    /// `SLIPWAY_OIDC_CLIENT_ID`
    pub oidc_client_id: Option<String>,
    /// `SLIPWAY_OIDC_CLIENT_SECRET`
    pub oidc_client_secret: Option<SecretString>,
    /// `SLIPWAY_OIDC_GROUPS_CLAIM`
    pub oidc_groups_claim: Option<String>,
}

/// The optional YAML config file (`--config FILE`, `SLIPWAY_CONFIG`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    public_url: Option<String>,
    router_listen: Option<String>,
    router_domain: Option<String>,
    oidc_issuer: Option<String>,
    oidc_client_id: Option<String>,
    oidc_groups_claim: Option<String>,
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
    #[error(
        "{origin}: {field}: `{value}` is not {}",
        if *field == "router_listen" { "an address like 127.0.0.1:8081" } else { "a domain like localhost" }
    )]
    BadRouter {
        origin: String,
        field: &'static str,
        value: String,
    },
    #[error(
        "single sign-on needs {missing} too (SLIPWAY_OIDC_ISSUER, SLIPWAY_OIDC_CLIENT_ID and SLIPWAY_OIDC_CLIENT_SECRET go together)"
    )]
    IncompleteOidc { missing: String },
    #[error("{field}: `{value}` is not an http(s) URL")]
    BadUrl { field: &'static str, value: String },
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
        if !public_url.starts_with("http://") && !public_url.starts_with("https://") {
            return Err(ConfigError::BadUrl {
                field: "SLIPWAY_PUBLIC_URL",
                value: public_url,
            });
        }
        let oidc = oidc_settings(
            overrides.oidc_issuer.or(file.oidc_issuer),
            overrides.oidc_client_id.or(file.oidc_client_id),
            overrides.oidc_client_secret,
            overrides.oidc_groups_claim.or(file.oidc_groups_claim),
        )?;
        let mut router = RouterSettings::default();
        router.apply(file.router_listen, file.router_domain, &file_name)?;
        Ok(Settings {
            listen,
            data_dir,
            database_url,
            public_url,
            oidc,
            router,
        })
    }
}

/// SSO is on when issuer, client id and secret are all set; some but not
/// all of them is an error, so a typo never silently turns SSO off.
fn oidc_settings(
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    groups_claim: Option<String>,
) -> Result<Option<OidcSettings>, ConfigError> {
    let blank = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let (issuer, client_id) = (blank(issuer), blank(client_id));
    let client_secret =
        client_secret.filter(|s| !secrecy::ExposeSecret::expose_secret(s).is_empty());
    match (issuer, client_id, client_secret) {
        (None, None, None) => Ok(None),
        (Some(issuer), Some(client_id), Some(client_secret)) => {
            if !issuer.starts_with("http://") && !issuer.starts_with("https://") {
                return Err(ConfigError::BadUrl {
                    field: "SLIPWAY_OIDC_ISSUER",
                    value: issuer,
                });
            }
            Ok(Some(OidcSettings {
                // As given: it must equal the `issuer` of the discovery
                // document, trailing slash and all.
                issuer,
                client_id,
                client_secret,
                groups_claim: blank(groups_claim)
                    .unwrap_or_else(|| DEFAULT_GROUPS_CLAIM.to_string()),
            }))
        }
        (issuer, client_id, secret) => {
            let missing: Vec<&str> = [
                (issuer.is_none(), "SLIPWAY_OIDC_ISSUER"),
                (client_id.is_none(), "SLIPWAY_OIDC_CLIENT_ID"),
                (secret.is_none(), "SLIPWAY_OIDC_CLIENT_SECRET"),
            ]
            .into_iter()
            .filter(|(m, _)| *m)
            .map(|(_, name)| name)
            .collect();
            Err(ConfigError::IncompleteOidc {
                missing: missing.join(" and "),
            })
        }
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
    fn sso_settings_go_together() {
        let s = Settings::load(Overrides {
            oidc_issuer: Some("https://id.example/".into()),
            oidc_client_id: Some("slipway".into()),
            oidc_client_secret: Some(SecretString::from("s3cret")),
            public_url: Some("https://slipway.example/".into()),
            ..Overrides::default()
        })
        .unwrap();
        let oidc = s.oidc.unwrap();
        assert_eq!(oidc.issuer, "https://id.example/");
        assert_eq!(oidc.groups_claim, "groups");
        assert!(
            !format!("{oidc:?}").contains("s3cret"),
            "the secret is never printed"
        );
        assert_eq!(
            OidcSettings::redirect_uri(&s.public_url),
            "https://slipway.example/auth/oidc/callback"
        );

        let err = Settings::load(Overrides {
            oidc_issuer: Some("https://id.example".into()),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SLIPWAY_OIDC_CLIENT_ID and SLIPWAY_OIDC_CLIENT_SECRET"),
            "{err}"
        );
        let err = Settings::load(Overrides {
            oidc_issuer: Some("id.example".into()),
            oidc_client_id: Some("slipway".into()),
            oidc_client_secret: Some(SecretString::from("s3cret")),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("SLIPWAY_OIDC_ISSUER: `id.example`"), "{err}");
        assert!(Settings::load(Overrides::default()).unwrap().oidc.is_none());
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
