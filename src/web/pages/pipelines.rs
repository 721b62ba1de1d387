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
use crate::web::nav::Nav;
use crate::web::views::{sha7, time};
use crate::web::{State, WebError, urls};

/// Geometry of the drawing, in SVG user units. Boxes and gaps are as wide
/// as their words need (see [`text_width`]), never narrower than these.
const MIN_BOX_W: i64 = 154;
const MIN_BOX_H: i64 = 96;
const MIN_GAP: i64 = 124;
const MARGIN: i64 = 16;
/// Space between a box's edge and its text.
const PAD: i64 = 12;

/// The widest advance of a character, in SVG units, for each font of the
/// drawing (system-ui, which is DejaVu Sans on a bare Linux, the widest of
/// the usual faces): the layout is measured from these, so a label never
/// runs out of its box. `tests/it/phone.rs` checks it in Chromium.
const TITLE_EM: f64 = 15.0 * 0.68;
const LINE_EM: f64 = 12.0 * 0.62;
const EDGE_LABEL_EM: f64 = 12.0 * 0.68;
const EDGE_DETAIL_EM: f64 = 11.0 * 0.62;

/// How wide `text` is drawn with `per_char` units per character.
fn text_width(text: &str, per_char: f64) -> i64 {
    (text.chars().count() as f64 * per_char).ceil() as i64
}

/// One line of a box: its words and its style (`node-line`, or the state
/// of the stage's newest deployment: `node-state state-ok` …).
pub struct NodeLine {
    pub text: String,
    pub class: String,
}

/// One box of the drawing.
pub struct Node {
    pub x: i64,
    /// Its width, from its longest line.
    pub w: i64,
    pub title: String,
    pub url: Option<String>,
    /// Lines under the title: the live release, the newest deployment,
    /// the environment, approvals and gates.
    pub lines: Vec<NodeLine>,
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

/// What a stage of the drawing has now: its live release and its newest
/// deployment (state and version).
#[derive(Debug, Clone, Default)]
pub struct StageNow {
    pub live: Option<String>,
    pub newest: Option<(crate::domain::DeploymentState, String)>,
}

pub struct Drawing {
    pub width: i64,
    pub height: i64,
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

/// "⚑ approval before: group:management" (who signs off, in words).
fn approval_words(approvals: &Approvals) -> Vec<String> {
    approvals
        .by_phase()
        .into_iter()
        .filter_map(|(phase, policy)| {
            let policy = policy?;
            let who = policy
                .approvers
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Some(format!("⚑ approval {phase}: {who}"))
        })
        .collect()
}

fn gate_words(gates: &Gates) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(g) = &gates.before {
        out.push(format!(
            "◐ gate before ({})",
            crate::web::views::plural(g.checks.len(), "check", "checks")
        ));
    }
    if let Some(g) = &gates.after {
        out.push(format!(
            "◐ gate after ({})",
            crate::web::views::plural(g.checks.len(), "check", "checks")
        ));
    }
    out
}

/// The lines of a stage's box: what is live, the newest deployment (symbol
/// and word, never colour alone), where it deploys, approvals and gates.
fn stage_lines(stage: &Stage, now: &StageNow, one_app: bool) -> Vec<NodeLine> {
    let line = |text: String| NodeLine {
        text,
        class: "node-line".into(),
    };
    let mut lines = vec![NodeLine {
        text: match &now.live {
            Some(v) => format!("live: {v}"),
            None => "nothing live yet".into(),
        },
        class: "node-live".into(),
    }];
    if let Some((state, version)) = &now.newest {
        let badge = crate::web::views::StateBadge::of(*state);
        lines.push(NodeLine {
            text: format!("{} {version}: {}", badge.symbol, badge.label),
            class: format!("node-state state-{}", badge.class),
        });
    }
    if let Some(env) = environment_words(&stage.environment, one_app) {
        lines.push(line(env));
    }
    lines.extend(approval_words(&stage.approvals).into_iter().map(line));
    lines.extend(gate_words(&stage.gates).into_iter().map(line));
    lines
}

/// How wide a box must be for its title and lines.
fn box_width(title: &str, lines: &[NodeLine]) -> i64 {
    let widest = lines
        .iter()
        .map(|l| text_width(&l.text, LINE_EM))
        .chain([text_width(title, TITLE_EM)])
        .max()
        .unwrap_or(0);
    (widest + 2 * PAD).max(MIN_BOX_W)
}

/// Lays out the build and the stages left to right, each box and gap as
/// wide as its words. `next_fires` holds the stored next fire instant of
/// schedule stages, `now` what each stage has now, both by stage name.
pub fn drawing(
    pipeline: &str,
    def: &PipelineDefinition,
    next_fires: &HashMap<String, DateTime<Utc>>,
    now: &HashMap<String, StageNow>,
) -> Drawing {
    let top = 40;
    let build_lines: Vec<NodeLine> = [
        crate::web::views::plural(def.build.tasks.len(), "task", "tasks"),
        format!("branch {}", def.source.branch),
    ]
    .into_iter()
    .map(|text| NodeLine {
        text,
        class: "node-line".into(),
    })
    .collect();
    let mut nodes = vec![Node {
        x: MARGIN,
        w: box_width("build", &build_lines),
        title: "build".into(),
        url: None,
        lines: build_lines,
    }];
    let mut edges = Vec::new();
    let mut description = format!("{pipeline}: build");
    let mut previous = "build".to_string();
    let one_app = def.apps.len() == 1;
    let nothing = StageNow::default();
    for stage in &def.stages {
        let name = stage.name.as_str();
        let stage_now = now.get(name).unwrap_or(&nothing);
        let lines = stage_lines(stage, stage_now, one_app);
        let stored = next_fires.get(name).copied();
        let (kind, label, details) = trigger_edge(stage, &previous, stored);
        let gap = details
            .iter()
            .map(|d| text_width(d, EDGE_DETAIL_EM))
            .chain([text_width(&label, EDGE_LABEL_EM)])
            .max()
            .map_or(MIN_GAP, |w| (w + 2 * PAD).max(MIN_GAP));
        let left = nodes.last().map_or(MARGIN, |n| n.x + n.w);
        let x = left + gap;
        description.push_str(&format!(
            ", then {name} ({label}, {}; {})",
            details.join(", "),
            lines
                .iter()
                .map(|l| l.text.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        edges.push(Edge {
            x1: left,
            x2: x - 6,
            mid: left + gap / 2,
            kind,
            label,
            details,
        });
        nodes.push(Node {
            x,
            w: box_width(name, &lines),
            title: name.to_string(),
            url: Some(urls::stage(pipeline, name)),
            lines,
        });
        previous = name.to_string();
    }
    let most_lines = nodes
        .iter()
        .map(|n| n.lines.len() as i64)
        .max()
        .unwrap_or(0);
    let box_h = (44 + 16 * most_lines).max(MIN_BOX_H);
    let legend = text_width(LEGEND, EDGE_DETAIL_EM) + 2 * MARGIN;
    let right = nodes.last().map_or(0, |n| n.x + n.w) + MARGIN;
    Drawing {
        width: right.max(legend),
        height: top + box_h + 40,
        box_h,
        top,
        nodes,
        edges,
        description,
    }
}

/// The legend under the drawing.
pub const LEGEND: &str = "Arrows: solid = continuous, dashed = scheduled, dotted = manual";

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
    pub nav: crate::web::nav::Nav,
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
    /// What each stage has now (live release, newest deployment).
    pub now: HashMap<String, StageNow>,
}

/// The live release and the newest deployment of each stage.
fn stages_now(
    conn: &mut crate::storage::DbConn,
    loaded: &LoadedPipeline,
) -> Result<HashMap<String, StageNow>, WebError> {
    let live =
        crate::engine::deploy::live::live_of(conn, loaded.id, &loaded.name, &loaded.definition)?;
    let newest = storage::deployments::newest_deployment_per_stage(conn, loaded.id)?;
    let ids: Vec<i64> = newest.iter().map(|d| d.release_id).collect();
    let versions: HashMap<i64, String> = storage::find_releases_by_ids(conn, &ids)?
        .into_iter()
        .map(|r| (r.id, r.version))
        .collect();
    let mut now: HashMap<String, StageNow> = live
        .into_iter()
        .map(|(stage, l)| {
            (
                stage,
                StageNow {
                    live: Some(l.version),
                    newest: None,
                },
            )
        })
        .collect();
    for d in newest {
        if let Some(version) = versions.get(&d.release_id) {
            now.entry(d.stage.clone()).or_default().newest = Some((d.state, version.clone()));
        }
    }
    Ok(now)
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
        drawing: drawing(&loaded.name, def, &extras.next_fires, &extras.now),
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
            let now = stages_now(conn, &loaded)?;
            Ok((
                loaded,
                Extras {
                    recent,
                    builds,
                    secrets,
                    next_fires,
                    now,
                },
            ))
        })
        .await?;
    render(&page(nav, loaded, extras))
}
