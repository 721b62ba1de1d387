//! `/pipelines/{p}/builds` and `/pipelines/{p}/builds/{n}`: builds with
//! their tasks and logs (live while running), and the "Build now" form.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::render;
use crate::domain::BuildState;
use crate::engine::builds::{self, BuildDetail};
use crate::storage::TaskRunRow;
use crate::web::nav::Nav;
use crate::web::views::{StateBadge, sha7, time};
use crate::web::{State, WebError, urls};

/// Builds per page of the list.
pub const PAGE_SIZE: i64 = 25;

pub struct BuildSummary {
    pub number: i64,
    pub url: String,
    pub badge: StateBadge,
    pub branch: String,
    pub commit: String,
    pub trigger: String,
    pub requested_by: String,
    pub created: String,
    pub release: Option<(String, String)>,
    pub error: Option<String>,
    /// Where its Retry form posts: it failed or was interrupted (pages
    /// show the form to people who may build).
    pub retry_url: Option<String>,
}

/// A build in a table row.
pub fn summary(d: &BuildDetail) -> BuildSummary {
    let b = &d.build;
    BuildSummary {
        number: b.number,
        url: urls::build(&d.pipeline, b.number),
        badge: StateBadge::build(b.state),
        branch: b.branch.clone().unwrap_or_default(),
        commit: b.commit_sha.as_deref().map(sha7).unwrap_or_default(),
        trigger: crate::web::views::trigger_words(&b.trigger),
        requested_by: b.requested_by.clone(),
        created: time(&b.created_at),
        release: d
            .release
            .as_ref()
            .map(|v| (v.clone(), urls::release(&d.pipeline, v))),
        error: b.error.clone(),
        retry_url: matches!(b.state, BuildState::Failed | BuildState::Interrupted)
            .then(|| urls::build_retry(&d.pipeline, b.number)),
    }
}

#[derive(Template)]
#[template(path = "pages/builds.html")]
pub struct BuildsPage {
    pub nav: Nav,
    pub pipeline: String,
    pub pipeline_url: String,
    pub builds: Vec<BuildSummary>,
    pub older_url: Option<String>,
    pub live: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub before: Option<i64>,
}

pub async fn list(
    state: State,
    nav: Nav,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, WebError> {
    let name = path.into_inner();
    let before = query.before;
    let details = state
        .with_conn::<_, WebError, _>({
            let name = name.clone();
            move |conn| Ok(builds::list_builds(conn, &name, before, PAGE_SIZE + 1)?)
        })
        .await?;
    let more = details.len() as i64 > PAGE_SIZE;
    let shown: Vec<&BuildDetail> = details.iter().take(PAGE_SIZE as usize).collect();
    let older_url = if more {
        shown.last().map(|d| {
            format!(
                "{}{}",
                urls::builds(&name),
                urls::query(&[("before", &d.build.number.to_string())])
            )
        })
    } else {
        None
    };
    render(&BuildsPage {
        nav,
        pipeline_url: urls::pipeline(&name),
        live: shown.iter().any(|d| !d.build.state.is_terminal()),
        builds: shown.into_iter().map(summary).collect(),
        older_url,
        pipeline: name,
    })
}

pub struct TaskView {
    pub position: i32,
    pub name: String,
    pub badge: StateBadge,
    pub exit_code: Option<i32>,
    pub lines: Vec<LogLine>,
}

pub struct LogLine {
    pub stream: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "pages/build.html")]
pub struct BuildPage {
    pub nav: Nav,
    pub pipeline: String,
    pub pipeline_url: String,
    pub builds_url: String,
    pub build: BuildSummary,
    pub message: Option<String>,
    pub author: Option<String>,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub tasks: Vec<TaskView>,
    /// The last log sequence number shown, for live tailing.
    pub last_seq: i64,
    pub running: bool,
    pub log_url: String,
    pub cancel_url: String,
}

/// Groups log chunks under their task, as lines (build and deployment
/// pages); `part` reads a chunk's task position, stream and text.
pub(super) fn task_views<C>(
    tasks: &[TaskRunRow],
    chunks: &[C],
    part: impl Fn(&C) -> (i32, &str, &str),
) -> Vec<TaskView> {
    tasks
        .iter()
        .map(|t| TaskView {
            position: t.position,
            name: t.name.clone(),
            badge: StateBadge::task(t.state),
            exit_code: t.exit_code,
            lines: chunks
                .iter()
                .map(&part)
                .filter(|(position, _, _)| *position == t.position)
                .flat_map(|(_, stream, text)| {
                    text.lines().map(|l| LogLine {
                        stream: stream.to_string(),
                        text: l.to_string(),
                    })
                })
                .collect(),
        })
        .collect()
}

/// How many log chunks a build page shows at once (the rest: the log API).
const LOG_CHUNKS: i64 = 5000;

pub async fn detail(
    state: State,
    nav: Nav,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, WebError> {
    let (name, number) = path.into_inner();
    let (detail, log) = state
        .with_conn::<_, WebError, _>({
            let name = name.clone();
            move |conn| {
                let detail = builds::build_detail(conn, &name, number)?;
                let log = builds::build_log(conn, &name, number, 0, LOG_CHUNKS)?;
                Ok((detail, log))
            }
        })
        .await?;
    let b = &detail.build;
    render(&BuildPage {
        nav,
        pipeline_url: urls::pipeline(&name),
        builds_url: urls::builds(&name),
        message: b.message.clone(),
        author: b.author.clone(),
        started: b.started_at.as_ref().map(time),
        finished: b.finished_at.as_ref().map(time),
        tasks: task_views(&detail.tasks, &log.chunks, |c| {
            (c.task_position, c.stream.as_str(), c.text.as_str())
        }),
        last_seq: log.chunks.last().map(|c| c.seq).unwrap_or(0),
        running: !b.state.is_terminal(),
        log_url: format!("/api/v1/pipelines/{name}/builds/{number}/log"),
        cancel_url: format!("{}/cancel", urls::build(&name, number)),
        build: summary(&detail),
        pipeline: name,
    })
}
