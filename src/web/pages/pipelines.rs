//! `/pipelines/{pipeline}`: the pipeline overview with an SVG drawing of
//! its stages and the triggers between them.

use actix_web::{HttpResponse, web};
use askama::Template;
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::render;
use crate::domain::{Approvals, Environment, Gates, PipelineDefinition, Stage, Trigger, Upstream};
use crate::engine::pipelines::{self, LoadedPipeline};
use crate::storage::{self, ReleaseRow};
use crate::web::session::Nav;
use crate::web::views::{sha7, time};
use crate::web::{State, WebError, urls};

/// Geometry of the drawing, in SVG user units.
const BOX_W: i64 = 154;
const BOX_H: i64 = 96;
const GAP: i64 = 124;
const MARGIN: i64 = 16;

/// One box of the drawing.
pub struct Node {
    pub x: i64,
    pub title: String,
    pub url: Option<String>,
    /// Short lines under the title (environment, approvals, gates).
    pub lines: Vec<String>,
}

/// The arrow into a node, with what triggers it.
pub struct Edge {
    pub x1: i64,
    pub x2: i64,
    pub mid: i64,
    /// `continuous`, `scheduled` or `manual`: the line style (and words).
    pub kind: &'static str,
    pub label: String,
    /// Up to two short lines under the arrow.
    pub details: Vec<String>,
}

pub struct Drawing {
    pub width: i64,
    pub height: i64,
    pub box_w: i64,
    pub box_h: i64,
    pub top: i64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// A text alternative for screen readers.
    pub description: String,
}

/// A schedule in words: "daily 03:00 (America/Los_Angeles)" when the cron
/// is a plain daily time, else the cron text with its zone.
pub fn schedule_words(trigger: &Trigger) -> Option<String> {
    let Trigger::Schedule(s) = trigger else {
        return None;
    };
    Some(format!("{} ({})", schedule_when(s), s.timezone.name()))
}

/// "daily 03:00" for a plain daily time, else "cron <expression>".
fn schedule_when(s: &crate::domain::Schedule) -> String {
    let cron = s.cron.as_str();
    let f: Vec<&str> = cron.split_whitespace().collect();
    let numeric = |t: &str| t.chars().all(|c| c.is_ascii_digit());
    if f.len() == 6
        && numeric(f[0])
        && numeric(f[1])
        && numeric(f[2])
        && f[3] == "*"
        && f[4] == "*"
        && (f[5] == "*" || f[5] == "?")
    {
        let h: u32 = f[2].parse().unwrap_or(0);
        let m: u32 = f[1].parse().unwrap_or(0);
        format!("daily {h:02}:{m:02}")
    } else {
        format!("cron {cron}")
    }
}

/// The arrow into a stage: line style, label, and lines under it. `stored`
/// is the scheduler's `next_fire_at` of the stage, used while it is ahead.
fn trigger_edge(
    stage: &Stage,
    previous: &str,
    stored: Option<DateTime<Utc>>,
) -> (&'static str, String, Vec<String>) {
    match &stage.trigger {
        Trigger::Manual => ("manual", "manual".into(), vec!["a person deploys".into()]),
        Trigger::After { upstream, .. } => {
            let from = match upstream {
                Upstream::Build => "build".to_string(),
                Upstream::Stage(s) => s.as_str().to_string(),
            };
            let label = if from == previous {
                "continuous".to_string()
            } else {
                format!("after {from}")
            };
            ("continuous", label, vec![format!("after {from}")])
        }
        Trigger::Schedule(s) => {
            let now = Utc::now();
            let next = stored
                .filter(|t| *t > now)
                .or_else(|| s.next_fire(now))
                .map(|t| {
                    format!(
                        "next {}",
                        t.with_timezone(&s.timezone).format("%a %H:%M %Z")
                    )
                })
                .unwrap_or_else(|| "never fires".into());
            (
                "scheduled",
                schedule_when(s),
                vec![s.timezone.name().to_string(), next],
            )
        }
    }
}

fn environment_words(env: &Option<Environment>, one_app: bool) -> Option<String> {
    match env {
        None => None,
        Some(Environment::Host) => Some("Slipway host".into()),
        Some(Environment::Agent { name }) => Some(format!("agent {name}")),
        Some(Environment::Slot { name, .. }) if one_app => Some(format!("slot {name}")),
        Some(Environment::Slot { app, name }) => Some(format!("{app}/{name}")),
    }
}

fn approval_words(approvals: &Approvals) -> Vec<String> {
    let mut out = Vec::new();
    if approvals.before.is_some() {
        out.push("⚑ approval before".to_string());
    }
    if approvals.after.is_some() {
        out.push("⚑ approval after".to_string());
    }
    out
}

fn gate_words(gates: &Gates) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(g) = &gates.before {
        out.push(format!(
            "◐ gate before ({} check{})",
            g.checks.len(),
            if g.checks.len() == 1 { "" } else { "s" }
        ));
    }
    if let Some(g) = &gates.after {
        out.push(format!(
            "◐ gate after ({} check{})",
            g.checks.len(),
            if g.checks.len() == 1 { "" } else { "s" }
        ));
    }
    out
}

/// Lays out the build and the stages left to right. `next_fires` holds the
/// stored next fire instant of schedule stages, by stage name.
pub fn drawing(
    pipeline: &str,
    def: &PipelineDefinition,
    next_fires: &HashMap<String, DateTime<Utc>>,
) -> Drawing {
    let top = 40;
    let mut nodes = vec![Node {
        x: MARGIN,
        title: "build".into(),
        url: None,
        lines: vec![
            format!(
                "{} task{}",
                def.build.tasks.len(),
                if def.build.tasks.len() == 1 { "" } else { "s" }
            ),
            format!("branch {}", def.source.branch),
        ],
    }];
    let mut edges = Vec::new();
    let mut description = format!("{pipeline}: build");
    let mut previous = "build".to_string();
    for (i, stage) in def.stages.iter().enumerate() {
        let x = MARGIN + (i as i64 + 1) * (BOX_W + GAP);
        let mut lines = Vec::new();
        if let Some(env) = environment_words(&stage.environment, def.apps.len() == 1) {
            lines.push(env);
        }
        lines.extend(approval_words(&stage.approvals));
        lines.extend(gate_words(&stage.gates));
        let stored = next_fires.get(stage.name.as_str()).copied();
        let (kind, label, details) = trigger_edge(stage, &previous, stored);
        description.push_str(&format!(
            ", then {} ({label}, {})",
            stage.name,
            details.join(", ")
        ));
        edges.push(Edge {
            x1: x - GAP,
            x2: x - 6,
            mid: x - GAP / 2,
            kind,
            label,
            details,
        });
        nodes.push(Node {
            x,
            title: stage.name.as_str().to_string(),
            url: Some(urls::stage(pipeline, stage.name.as_str())),
            lines,
        });
        previous = stage.name.as_str().to_string();
    }
    let width = MARGIN * 2 + nodes.len() as i64 * BOX_W + (nodes.len() as i64 - 1) * GAP;
    Drawing {
        width,
        height: top + BOX_H + 40,
        box_w: BOX_W,
        box_h: BOX_H,
        top,
        nodes,
        edges,
        description,
    }
}

pub struct StageSummary {
    pub name: String,
    pub url: String,
    pub trigger: String,
}

pub struct AppSummary {
    pub name: String,
    pub slots: String,
    pub start: String,
    pub health: String,
}

pub struct RecentRelease {
    pub version: String,
    pub url: String,
    pub branch: String,
    pub sha7: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "pages/pipeline.html")]
pub struct PipelinePage {
    pub nav: crate::web::session::Nav,
    pub name: String,
    pub description: Option<String>,
    pub repo: String,
    pub branch: String,
    pub version_template: String,
    pub revision: i32,
    pub revision_by: String,
    pub revision_at: String,
    pub drawing: Drawing,
    pub stages: Vec<StageSummary>,
    pub apps: Vec<AppSummary>,
    pub recent: Vec<RecentRelease>,
    pub releases_url: String,
    pub export_url: String,
    pub builds: Vec<super::builds::BuildSummary>,
    pub builds_url: String,
    pub builds_live: bool,
    pub build_url: String,
    pub secrets: Vec<(String, String)>,
    pub secrets_url: String,
}

pub fn trigger_text(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Manual => "manual: a person deploys".into(),
        Trigger::After { upstream, .. } => match upstream {
            Upstream::Build => "continuous: after each successful build".into(),
            Upstream::Stage(s) => format!("continuous: after {s} succeeds"),
        },
        Trigger::Schedule(_) => {
            format!("scheduled: {}", schedule_words(trigger).unwrap_or_default())
        }
    }
}

/// What the pipeline page shows besides the definition.
pub struct Extras {
    pub recent: Vec<ReleaseRow>,
    pub builds: Vec<crate::engine::builds::BuildDetail>,
    pub secrets: Vec<crate::storage::secrets::SecretName>,
    /// The stored next fire instant of each schedule stage.
    pub next_fires: HashMap<String, DateTime<Utc>>,
}

fn page(nav: Nav, loaded: LoadedPipeline, extras: Extras) -> PipelinePage {
    let def = &loaded.definition;
    let recent = extras.recent;
    PipelinePage {
        nav,
        builds_live: extras.builds.iter().any(|b| !b.build.state.is_terminal()),
        builds: extras.builds.iter().map(super::builds::summary).collect(),
        builds_url: urls::builds(&loaded.name),
        build_url: urls::builds(&loaded.name),
        secrets: extras
            .secrets
            .iter()
            .map(|s| (s.name.clone(), time(&s.updated_at)))
            .collect(),
        secrets_url: format!("{}/secrets", urls::pipeline(&loaded.name)),
        drawing: drawing(&loaded.name, def, &extras.next_fires),
        description: def.description.clone(),
        repo: def.source.repo.clone(),
        branch: def.source.branch.clone(),
        version_template: def.version.as_str().to_string(),
        revision: loaded.revision,
        revision_by: loaded.revision_by.clone(),
        revision_at: time(&loaded.revision_at),
        stages: def
            .stages
            .iter()
            .map(|s| StageSummary {
                name: s.name.as_str().to_string(),
                url: urls::stage(&loaded.name, s.name.as_str()),
                trigger: trigger_text(&s.trigger),
            })
            .collect(),
        apps: def
            .apps
            .iter()
            .map(|a| AppSummary {
                name: a.name.as_str().to_string(),
                slots: a
                    .slots
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                start: a.start.clone(),
                health: a.health.clone(),
            })
            .collect(),
        recent: recent
            .iter()
            .map(|r| RecentRelease {
                version: r.version.clone(),
                url: urls::release(&loaded.name, &r.version),
                branch: r.branch.clone(),
                sha7: sha7(&r.commit_sha),
                created: time(&r.created_at),
            })
            .collect(),
        releases_url: urls::releases(&loaded.name),
        export_url: format!("/api/v1/pipelines/{}/export", loaded.name),
        name: loaded.name,
    }
}

pub async fn overview(
    state: State,
    nav: Nav,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let name = path.into_inner();
    let (loaded, extras) = state
        .with_conn::<_, WebError, _>(move |conn| {
            let loaded = pipelines::load(conn, &name)?;
            let recent = storage::board_releases(conn, loaded.id, 5)?;
            let builds = crate::engine::builds::list_builds(conn, &name, None, 5)?;
            let secrets = crate::engine::secrets::list_secret_names(conn, loaded.id)?;
            let next_fires = storage::list_stages(conn, loaded.id)?
                .into_iter()
                .filter_map(|s| s.next_fire_at.map(|t| (s.name, t.and_utc())))
                .collect();
            Ok((
                loaded,
                Extras {
                    recent,
                    builds,
                    secrets,
                    next_fires,
                },
            ))
        })
        .await?;
    render(&page(nav, loaded, extras))
}
