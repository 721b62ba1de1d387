//! `/pipelines/{p}/releases` (history, keyset-paginated, filterable) and
//! `/pipelines/{p}/releases/{version}` (one release).

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::board::{CellAction, Row, history_explainer, latest_by_release_and_stage, release_row};
use super::render;
use crate::domain::DeploymentState;
use crate::domain::rules::{self, Offer, OfferFacts, ReleaseRef};
use crate::engine::pipelines;
use crate::storage::{self, ReleaseFilter, StageRow};
use crate::web::auth::{AuthUser, CurrentUser, permission};
use crate::web::session::Nav;
use crate::web::views::{StateBadge, sha7, size, time};
use crate::web::{State, WebError, urls};

/// Releases per history page.
pub const PAGE_SIZE: i64 = 25;

/// The history page's query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Show releases older than this one (its id, from the "Older" link).
    pub before: Option<i64>,
    pub branch: Option<String>,
    /// A deployment state: releases with a deployment in that state.
    pub state: Option<String>,
    /// With `state`: only deployments to this stage.
    pub stage: Option<String>,
}

/// A validated history filter; shared with the API.
pub fn release_filter(
    query: &HistoryQuery,
    stages: &[StageRow],
    limit: i64,
) -> Result<ReleaseFilter, WebError> {
    let clean = |v: &Option<String>| {
        v.as_ref()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let state = match clean(&query.state) {
        None => None,
        Some(s) => Some(s.parse::<DeploymentState>().map_err(|_| {
            WebError::BadRequest(format!(
                "`{s}` is not a deployment state; use one of {}",
                DeploymentState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    let stage = clean(&query.stage);
    if let Some(name) = &stage
        && !stages.iter().any(|s| &s.name == name)
    {
        return Err(WebError::BadRequest(format!(
            "this pipeline has no stage `{name}`"
        )));
    }
    if query.before.is_some_and(|before| before < 1) {
        return Err(WebError::BadRequest(
            "`before` must be a positive release id".into(),
        ));
    }
    Ok(ReleaseFilter {
        before: query.before,
        branch: clean(&query.branch),
        state,
        stage,
        limit,
    })
}

pub struct StateOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub struct StageOption {
    pub name: String,
    pub url: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "pages/releases.html")]
pub struct HistoryPage {
    pub nav: crate::web::session::Nav,
    pub pipeline: String,
    pub pipeline_url: String,
    pub stages: Vec<StageOption>,
    pub rows: Vec<Row>,
    pub branch: String,
    pub states: Vec<StateOption>,
    pub filtered: bool,
    pub first_url: Option<String>,
    pub older_url: Option<String>,
}

pub async fn history(
    state: State,
    nav: Nav,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, WebError> {
    let name = path.into_inner();
    let query = query.into_inner();
    let page = state
        .with_conn::<_, WebError, _>(move |conn| {
            let pipeline = crate::engine::pipelines::find(conn, &name)?;
            let stages = storage::stages_of_pipelines(conn, &[pipeline.id])?;
            let mut filter = release_filter(&query, &stages, PAGE_SIZE + 1)?;
            let mut releases = storage::list_releases(conn, pipeline.id, &filter)?;
            let more = releases.len() as i64 > PAGE_SIZE;
            releases.truncate(PAGE_SIZE as usize);
            filter.limit = PAGE_SIZE;
            let ids: Vec<i64> = releases.iter().map(|r| r.id).collect();
            let deployments = storage::deployments_for_releases(conn, &ids)?;
            let latest = latest_by_release_and_stage(&deployments);
            let stage_refs: Vec<&StageRow> = stages.iter().collect();
            let mut explain = history_explainer(conn, pipeline.id, &stage_refs, &deployments)?;
            explain.live = super::board::live_of(conn, &pipeline);
            let rows = releases
                .iter()
                .map(|r| release_row(&pipeline.name, r, &stage_refs, &latest, &explain))
                .collect();
            let branch = filter.branch.clone().unwrap_or_default();
            let state_value = filter.state.map(|s| s.as_str()).unwrap_or_default();
            let stage_value = filter.stage.clone().unwrap_or_default();
            let base = urls::releases(&pipeline.name);
            let older_url = if more {
                releases.last().map(|r| {
                    let before = r.id.to_string();
                    format!(
                        "{base}{}",
                        urls::query(&[
                            ("before", &before),
                            ("branch", &branch),
                            ("state", state_value),
                            ("stage", &stage_value),
                        ])
                    )
                })
            } else {
                None
            };
            let first_url = filter.before.map(|_| {
                format!(
                    "{base}{}",
                    urls::query(&[
                        ("branch", &branch),
                        ("state", state_value),
                        ("stage", &stage_value)
                    ])
                )
            });
            Ok(HistoryPage {
                nav,
                pipeline_url: urls::pipeline(&pipeline.name),
                stages: stages
                    .iter()
                    .map(|s| StageOption {
                        name: s.name.clone(),
                        url: urls::stage(&pipeline.name, &s.name),
                        selected: s.name == stage_value,
                    })
                    .collect(),
                rows,
                filtered: filter.branch.is_some() || filter.state.is_some(),
                branch,
                states: DeploymentState::ALL
                    .iter()
                    .map(|s| StateOption {
                        value: s.as_str(),
                        label: s.label(),
                        selected: s.as_str() == state_value,
                    })
                    .collect(),
                first_url,
                older_url,
                pipeline: pipeline.name,
            })
        })
        .await?;
    render(&page)
}

pub struct ArtifactView {
    pub url: String,
    pub path: String,
    pub sha256: String,
    pub size: String,
}

pub struct DeploymentView {
    pub id: i64,
    pub url: String,
    pub attempt: i32,
    pub badge: StateBadge,
    pub trigger: String,
    pub requested_by: String,
    pub created: String,
    pub finished: Option<String>,
    pub reason: Option<String>,
    /// Who overrode the stage's approvals and gates, and why.
    pub overridden: Option<String>,
}

pub struct StageView {
    pub name: String,
    pub url: String,
    pub deployments: Vec<DeploymentView>,
    /// "Promote to test" / "Deploy to dev" / "Retry test", or why not.
    pub action: Option<CellAction>,
    /// This release is the stage's live one.
    pub live: bool,
    /// The stage's live release when it is another one: (version, page).
    pub live_other: Option<(String, String)>,
}

pub struct Lineage {
    pub version: String,
    pub url: String,
}

#[derive(Template)]
#[template(path = "pages/release.html")]
pub struct ReleasePage {
    pub nav: crate::web::session::Nav,
    pub pipeline: String,
    pub pipeline_url: String,
    pub releases_url: String,
    pub version: String,
    pub commit: String,
    pub sha7: String,
    pub branch: String,
    pub message: String,
    pub author: String,
    pub created: String,
    pub revision: i32,
    pub build: Option<Lineage>,
    pub fixes: Option<Lineage>,
    pub artifacts: Vec<ArtifactView>,
    pub stages: Vec<StageView>,
    /// The stages where this release is live, in the pipeline's order.
    pub live_in: Vec<String>,
}

/// The release's action in each stage of the current definition, by stage
/// name: the stage rules (`domain::rules::offer`) on its deployments and
/// what is live, then the person's rights.
fn stage_actions(
    conn: &mut crate::storage::DbConn,
    pipeline: &str,
    pipeline_id: i64,
    release: &crate::storage::ReleaseRow,
    deployments: &[crate::storage::DeploymentRow],
    user: Option<&AuthUser>,
) -> Result<Vec<(String, CellAction)>, WebError> {
    let current = pipelines::load(conn, pipeline)?.definition;
    let live = crate::engine::deploy::live::live_of(conn, pipeline_id, pipeline, &current)?;
    let mut actions = Vec::new();
    for (i, stage) in current.stages.iter().enumerate() {
        let name = stage.name.as_str();
        let previous = i
            .checked_sub(1)
            .and_then(|p| current.stages.get(p))
            .map(|p| p.name.as_str());
        let latest = deployments
            .iter()
            .filter(|d| d.stage == name)
            .max_by_key(|d| d.id);
        let offer = rules::offer(&OfferFacts {
            stage: name,
            previous_stage: previous,
            release: ReleaseRef {
                id: release.id,
                version: &release.version,
            },
            succeeded_in_previous: previous.is_none_or(|p| {
                deployments
                    .iter()
                    .any(|d| d.stage == p && d.state == DeploymentState::Succeeded)
            }),
            current: live.get(name).map(|l| ReleaseRef {
                id: l.release_id,
                version: &l.version,
            }),
            latest_here: latest.map(|d| d.state),
            permission: permission(user, stage),
        });
        let action = match offer {
            Offer::Nothing => continue,
            Offer::Deploy { promote } => CellAction {
                url: Some(urls::stage_deploy(pipeline, name)),
                label: format!("{} to {name}", if promote { "Promote" } else { "Deploy" }),
                release: Some(release.version.clone()),
                reason: None,
            },
            Offer::Retry => match latest {
                Some(d) => CellAction {
                    url: Some(urls::deployment_redeploy(pipeline, &release.version, d.id)),
                    label: format!("Retry {name}"),
                    release: None,
                    reason: None,
                },
                None => continue,
            },
            Offer::Refused(reason) => CellAction {
                url: None,
                label: String::new(),
                release: None,
                reason: Some(reason),
            },
        };
        actions.push((name.to_string(), action));
    }
    Ok(actions)
}

pub async fn detail(
    state: State,
    nav: Nav,
    user: CurrentUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let (name, version) = path.into_inner();
    let page = state
        .with_conn::<_, WebError, _>(move |conn| {
            let pipeline = crate::engine::pipelines::find(conn, &name)?;
            let release = crate::engine::pipelines::find_release(conn, &pipeline, &version)?;
            let revision = storage::revision_by_id(conn, release.revision_id)?;
            let definition =
                pipelines::parse_stored(&revision.yaml, &pipeline.name, revision.revision)?;
            let artifacts = storage::list_artifacts(conn, release.id)?;
            let deployments = storage::deployments_of_release(conn, release.id)?;
            let loaded = crate::engine::pipelines::load(conn, &pipeline.name)?;
            let live = crate::engine::deploy::live::live_of(
                conn,
                loaded.id,
                &loaded.name,
                &loaded.definition,
            )?;
            let live_in =
                crate::engine::deploy::live::stages_where(&live, &loaded.definition, release.id);
            let fixes = match release.fixes_release_id {
                Some(id) => storage::find_release_by_id(conn, id)?.map(|r| Lineage {
                    url: urls::release(&pipeline.name, &r.version),
                    version: r.version,
                }),
                None => None,
            };
            let mut actions = stage_actions(
                conn,
                &pipeline.name,
                pipeline.id,
                &release,
                &deployments,
                user.0.as_ref(),
            )?;
            let build = match release.build_id {
                Some(id) => storage::find_build(conn, id)?.map(|b| Lineage {
                    url: urls::build(&pipeline.name, b.number),
                    version: format!("#{}", b.number),
                }),
                None => None,
            };
            let stages = definition
                .stages
                .iter()
                .map(|s| StageView {
                    live: live
                        .get(s.name.as_str())
                        .is_some_and(|l| l.release_id == release.id),
                    live_other: live
                        .get(s.name.as_str())
                        .filter(|l| l.release_id != release.id)
                        .map(|l| (l.version.clone(), urls::release(&pipeline.name, &l.version))),
                    name: s.name.as_str().to_string(),
                    url: urls::stage(&pipeline.name, s.name.as_str()),
                    deployments: deployments
                        .iter()
                        .filter(|d| d.stage == s.name.as_str())
                        .map(|d| DeploymentView {
                            id: d.id,
                            url: urls::deployment(&pipeline.name, &release.version, d.id),
                            attempt: d.attempt,
                            badge: StateBadge::of(d.state),
                            trigger: crate::web::views::trigger_words(&d.trigger),
                            requested_by: d.requested_by.clone(),
                            created: time(&d.created_at),
                            finished: d.finished_at.as_ref().map(time),
                            reason: d.reason.clone(),
                            overridden: d.override_by.as_ref().map(|by| {
                                format!(
                                    "approvals and gates overridden by {by}: {}",
                                    d.override_reason.as_deref().unwrap_or("")
                                )
                            }),
                        })
                        .collect(),
                    action: actions
                        .iter()
                        .position(|(n, _)| n == s.name.as_str())
                        .map(|i| actions.swap_remove(i).1),
                })
                .collect();
            Ok(ReleasePage {
                nav,
                pipeline_url: urls::pipeline(&pipeline.name),
                releases_url: urls::releases(&pipeline.name),
                version: release.version.clone(),
                sha7: sha7(&release.commit_sha),
                commit: release.commit_sha.clone(),
                branch: release.branch.clone(),
                message: release.message.clone(),
                author: release.author.clone(),
                created: time(&release.created_at),
                revision: revision.revision,
                build,
                fixes,
                artifacts: artifacts
                    .into_iter()
                    .map(|a| ArtifactView {
                        url: urls::artifact(&pipeline.name, &release.version, &a.path),
                        path: a.path,
                        sha256: a.sha256,
                        size: size(a.size),
                    })
                    .collect(),
                stages,
                live_in,
                pipeline: pipeline.name,
            })
        })
        .await?;
    render(&page)
}

/// `Content-Disposition` for a download: the file's base name with anything
/// outside a safe set replaced, plus the exact name in RFC 5987 form.
pub fn content_disposition(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or("artifact");
    let ascii: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ascii = if ascii.trim_matches('.').is_empty() {
        "artifact".to_string()
    } else {
        ascii
    };
    let encoded = percent_encoding::utf8_percent_encode(base, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// `/pipelines/{p}/releases/{v}/artifacts/{path}`: the artifact's bytes,
/// with `ETag` = its sha256 (a matching `If-None-Match` answers 304).
pub async fn artifact(
    state: State,
    req: actix_web::HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, WebError> {
    let (name, version, file) = path.into_inner();
    let data_dir = state.settings.data_dir.clone();
    let (row, store_path) = state
        .with_conn::<_, WebError, _>(move |conn| {
            let pipeline = crate::engine::pipelines::find(conn, &name)?;
            let release = crate::engine::pipelines::find_release(conn, &pipeline, &version)?;
            let row = storage::list_artifacts(conn, release.id)?
                .into_iter()
                .find(|a| a.path == file)
                .ok_or_else(|| {
                    WebError::NotFound(format!("Release {version} has no artifact `{file}`."))
                })?;
            let store_path =
                crate::engine::builds::artifacts::artifact_path(&data_dir, &row.sha256)
                    .ok_or_else(|| {
                        WebError::internal(anyhow::anyhow!("stored digest is malformed"))
                    })?;
            Ok((row, store_path))
        })
        .await?;
    let etag = format!("\"{}\"", row.sha256);
    let matches = req
        .headers()
        .get(actix_web::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok(HttpResponse::NotModified()
            .insert_header((actix_web::http::header::ETAG, etag))
            .finish());
    }
    let bytes = actix_web::web::block(move || std::fs::read(&store_path))
        .await?
        .map_err(|e| WebError::internal(anyhow::anyhow!("cannot read the artifact: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((actix_web::http::header::ETAG, etag))
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            content_disposition(&row.path),
        ))
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(bytes))
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn downloads_have_safe_names() {
        assert_eq!(
            content_disposition("dist/app.js"),
            "attachment; filename=\"app.js\"; filename*=UTF-8''app%2Ejs"
        );
        let d = content_disposition("dist/a\"b;c\r\n.txt");
        assert!(d.starts_with("attachment; filename=\"a_b_c__.txt\""), "{d}");
        assert!(!d.contains('\r') && !d.contains('\n'));
        assert!(content_disposition("dist/..").starts_with("attachment; filename=\"artifact\""));
    }
}
