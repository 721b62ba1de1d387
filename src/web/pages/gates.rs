//! `/gates`: every gate being evaluated now (pipeline, release, stage,
//! phase, time left), each check with its last result and an SVG strip of
//! its recent samples (pass ●, fail ✕, inconclusive ? — shapes as well as
//! colours, each with a `<title>`), and the recently finished runs.
//! `/gates/{id}` is the stable page of one run with every sample; release
//! managers get Re-evaluate and Bypass forms there and on `/gates`, and the
//! stage's approvers an Answer form when the run asks a question.
//!
//! [`gate_evidence`] builds the evidence of a deployment's gates (each run
//! with its checks and samples) for `templates/partials/gate_evidence.html`,
//! which the deployment page and the approval inbox include.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::render;
use super::see_other;
use crate::domain::authz::Action;
use crate::domain::gate_eval::Verdict;
use crate::domain::{GateRunState, Role};
use crate::engine::deploy::gates::questions::{Answerer, GateAnswer};
use crate::engine::deploy::gates::{self, GateRunView, RunEvidence};
use crate::storage::{DbConn, GateSampleRow};
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::session::check_csrf;
use crate::web::views::time;
use crate::web::{State, WebError, urls};

/// One check of a run on the page.
pub struct CheckRow {
    pub name: String,
    /// Symbol and word of the last verdict (`—` before the first sample).
    pub symbol: &'static str,
    pub verdict: String,
    pub class: &'static str,
    pub value: String,
    /// The inline SVG strip of its recent samples (our own markup).
    pub strip: String,
}

/// A gate run on the page.
pub struct RunView {
    pub id: i64,
    pub url: String,
    pub pipeline: String,
    pub pipeline_url: String,
    pub release: String,
    pub release_url: String,
    pub deployment_url: String,
    pub stage: String,
    pub phase: String,
    pub state: String,
    pub state_symbol: &'static str,
    pub started: String,
    pub time_left: String,
    /// The deadline in seconds since the epoch (a script counts down to it).
    pub deadline_epoch: i64,
    pub rounds: i32,
    /// "1 round", "3 rounds".
    pub rounds_label: String,
    /// "1 sample", "4 samples": every check's, so far.
    pub samples_label: String,
    /// While evaluating: how long every check has been green of the
    /// steady time ("green for 5s of 10s"), or that some check is not.
    pub green: Option<String>,
    pub reason: Option<String>,
    pub question: Option<String>,
    pub finished: Option<String>,
    pub evaluating: bool,
    pub checks: Vec<CheckRow>,
    pub reevaluate_url: String,
    pub bypass_url: String,
    pub answer_url: String,
}

/// One sample in the full list of a run.
pub struct SampleRow {
    pub check: String,
    pub round: i32,
    pub at: String,
    pub duration_ms: i64,
    pub request: String,
    pub value: String,
    pub symbol: &'static str,
    pub verdict: String,
    pub class: &'static str,
    pub body: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/gates.html")]
pub struct GatesPage {
    pub nav: Nav,
    pub evaluating: Vec<RunView>,
    pub recent: Vec<RunView>,
    pub can_act: bool,
}

#[derive(Template)]
#[template(path = "pages/gate_run.html")]
pub struct GateRunPage {
    pub nav: Nav,
    pub run: RunView,
    pub samples: Vec<SampleRow>,
    pub can_act: bool,
    /// The signed-in user may answer the run's question.
    pub can_answer: bool,
    pub answers: [&'static str; 3],
}

fn verdict_mark(verdict: Option<&str>) -> (&'static str, &'static str) {
    match verdict.and_then(Verdict::parse) {
        Some(v @ Verdict::Pass) => (v.symbol(), "ok"),
        Some(v @ Verdict::Fail) => (v.symbol(), "bad"),
        Some(v @ Verdict::Inconclusive) => (v.symbol(), "waiting"),
        None => ("—", "muted"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG strip of samples: a filled circle for pass, a cross for fail,
/// a question mark for inconclusive, each with a `<title>`.
pub fn strip(name: &str, samples: &[GateSampleRow]) -> String {
    const STEP: usize = 14;
    let width = (samples.len().max(1)) * STEP;
    let mut svg = format!(
        r#"<svg class="gate-strip" role="img" width="{width}" height="14" viewBox="0 0 {width} 14" aria-label="{} recent samples of {}">"#,
        samples.len(),
        escape(name)
    );
    for (i, s) in samples.iter().enumerate() {
        let x = i * STEP + 7;
        let title = format!(
            "{} {} — {} ({} ms)",
            time_secs(&s.sampled_at),
            s.verdict,
            s.value,
            s.duration_ms
        );
        let shape = match Verdict::parse(&s.verdict) {
            Some(Verdict::Pass) => {
                format!(r#"<circle class="pass" cx="{x}" cy="7" r="5"/>"#)
            }
            Some(Verdict::Fail) => format!(
                r#"<path class="fail" d="M{} 2 L{} 12 M{} 2 L{} 12" stroke-width="2.5"/>"#,
                x - 5,
                x + 5,
                x + 5,
                x - 5
            ),
            _ => format!(
                r#"<text class="inconclusive" x="{x}" y="12" text-anchor="middle">?</text>"#
            ),
        };
        svg.push_str(&format!("<g><title>{}</title>{shape}</g>", escape(&title)));
    }
    svg.push_str("</svg>");
    svg
}

fn time_secs(t: &chrono::NaiveDateTime) -> String {
    t.format("%H:%M:%S").to_string()
}

fn left(seconds: i64) -> String {
    if seconds <= 0 {
        return "—".into();
    }
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// `n` with its noun, singular or plural: "1 round", "2 rounds".
fn counted(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A span of time as the gate pages write it: "45s", "2m 5s", "5m", "1h 10m".
fn span(seconds: i64) -> String {
    if seconds <= 0 {
        "0s".into()
    } else if seconds % 60 == 0 && seconds < 3600 {
        format!("{}m", seconds / 60)
    } else {
        left(seconds)
    }
}

/// "green for 5s of 10s" while every check is green; what is missing
/// otherwise.
fn green_text(v: &GateRunView, now: chrono::NaiveDateTime) -> String {
    match (v.green_for(now), v.steady) {
        (Some(green), Some(steady)) => format!(
            "green for {} of {}",
            span(green.num_seconds()),
            span(steady.num_seconds())
        ),
        (Some(green), None) => format!("green for {}", span(green.num_seconds())),
        (None, Some(steady)) if v.run.round == 0 => format!(
            "not sampled yet; must stay green for {}",
            span(steady.num_seconds())
        ),
        (None, Some(steady)) => format!(
            "not all green yet; must stay green for {}",
            span(steady.num_seconds())
        ),
        (None, None) => "not all green yet".into(),
    }
}

fn run_view(v: &GateRunView) -> RunView {
    let r = &v.run;
    let now = crate::storage::now();
    let evaluating = r.state == GateRunState::Evaluating;
    let state_symbol = match r.state {
        GateRunState::Evaluating => "◐",
        GateRunState::Passed => "●",
        GateRunState::Bypassed => "↷",
        GateRunState::Failed => "✕",
        GateRunState::Canceled => "■",
    };
    let seconds = (r.deadline_at - now).num_seconds();
    RunView {
        id: r.id,
        url: urls::gate_run(r.id),
        pipeline: r.pipeline.clone(),
        pipeline_url: urls::pipeline(&r.pipeline),
        release: r.release_version.clone(),
        release_url: urls::release(&r.pipeline, &r.release_version),
        deployment_url: urls::deployment(&r.pipeline, &r.release_version, r.deployment_id),
        stage: r.stage.clone(),
        phase: r.phase.to_string(),
        state: r.state.to_string(),
        state_symbol,
        started: time(&r.started_at),
        time_left: if evaluating {
            left(seconds)
        } else {
            "—".into()
        },
        deadline_epoch: r.deadline_at.and_utc().timestamp(),
        rounds: r.round,
        rounds_label: counted(i64::from(r.round), "round", "rounds"),
        samples_label: counted(v.samples_taken, "sample", "samples"),
        green: evaluating.then(|| green_text(v, now)),
        reason: r.reason.clone(),
        question: r.question.clone(),
        finished: r
            .finished_at
            .as_ref()
            .map(|t| format!("{} by {}", time(t), r.finished_by.as_deref().unwrap_or("-"))),
        evaluating,
        checks: v
            .checks
            .iter()
            .map(|c| {
                let verdict = c.last.as_ref().and_then(|l| l.verdict.clone());
                let (symbol, class) = verdict_mark(verdict.as_deref());
                CheckRow {
                    name: c.name.clone(),
                    symbol,
                    verdict: verdict.unwrap_or_else(|| "not sampled yet".into()),
                    class,
                    value: c
                        .last
                        .as_ref()
                        .and_then(|l| l.value.clone())
                        .unwrap_or_default(),
                    strip: strip(&c.name, &c.samples),
                }
            })
            .collect(),
        reevaluate_url: format!("{}/reevaluate", urls::gate_run(r.id)),
        bypass_url: format!("{}/bypass", urls::gate_run(r.id)),
        answer_url: format!("{}/answer", urls::gate_run(r.id)),
    }
}

fn sample_row(s: &GateSampleRow) -> SampleRow {
    let (symbol, class) = verdict_mark(Some(&s.verdict));
    SampleRow {
        check: s.check_name.clone(),
        round: s.round,
        at: format!(
            "{} {}",
            s.sampled_at.format("%Y-%m-%d"),
            time_secs(&s.sampled_at)
        ),
        duration_ms: s.duration_ms,
        request: s.request.clone(),
        value: s.value.clone(),
        symbol,
        verdict: s.verdict.clone(),
        class,
        body: s.body.clone(),
    }
}

/// The evidence of one gate run, for `partials/gate_evidence.html`.
pub struct GateRunEvidence {
    /// The run with its checks (last result and SVG strip each).
    pub run: RunView,
    /// Its newest samples, newest first.
    pub samples: Vec<SampleRow>,
    /// How many samples the run has in all (more than shown: its page).
    pub total: i64,
}

impl GateRunEvidence {
    /// Whether some samples are only on the run's page.
    pub fn truncated(&self) -> bool {
        self.total > i64::try_from(self.samples.len()).unwrap_or(i64::MAX)
    }
}

/// Samples of each run shown with a deployment or an approval.
pub const EVIDENCE_SAMPLES: i64 = 50;

/// The evidence of a deployment's gates (every run, oldest first, with its
/// [`EVIDENCE_SAMPLES`] newest samples), ready for
/// `templates/partials/gate_evidence.html`: in a page template,
/// `{% let evidence = … %}{% include "partials/gate_evidence.html" %}`.
/// Request summaries were masked when stored (secret values are `***`).
pub fn gate_evidence(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<GateRunEvidence>, WebError> {
    Ok(
        gates::evidence_of_deployment(conn, deployment_id, EVIDENCE_SAMPLES)?
            .iter()
            .map(evidence_view)
            .collect(),
    )
}

/// [`gate_evidence`] of one run already read (e.g. an open question's).
pub fn evidence_view(e: &RunEvidence) -> GateRunEvidence {
    GateRunEvidence {
        run: run_view(&e.view),
        samples: e.samples.iter().map(sample_row).collect(),
        total: e.total_samples,
    }
}

fn can_act(nav: &Nav) -> bool {
    matches!(nav.role, Some(r) if r == Role::ReleaseManager.label() || r == Role::Admin.label())
}

/// `GET /gates`
pub async fn index(state: State, nav: Nav) -> Result<HttpResponse, WebError> {
    let overview = state
        .with_conn::<_, WebError, _>(|conn| Ok(gates::overview(conn, 20)?))
        .await?;
    render(&GatesPage {
        can_act: can_act(&nav),
        nav,
        evaluating: overview.evaluating.iter().map(run_view).collect(),
        recent: overview.recent.iter().map(run_view).collect(),
    })
}

/// `GET /gates/{id}`
pub async fn show(
    state: State,
    nav: Nav,
    user: CurrentUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    let id = path.into_inner();
    let who = user.0.as_ref().map(answerer);
    let (view, samples, can_answer) = state
        .with_conn::<_, WebError, _>(move |conn| {
            let view = gates::gate_run(conn, id)?;
            let samples = crate::storage::gates::samples_of_run(conn, id, 500)?;
            let can_answer = match &who {
                Some(who) => gates::questions::can_answer(conn, id, who)?,
                None => false,
            };
            Ok((view, samples, can_answer))
        })
        .await?;
    let samples = samples.iter().rev().map(sample_row).collect();
    render(&GateRunPage {
        can_act: can_act(&nav),
        can_answer,
        answers: GateAnswer::ALL.map(GateAnswer::as_str),
        nav,
        run: run_view(&view),
        samples,
    })
}

fn answerer(user: &crate::web::auth::AuthUser) -> Answerer {
    Answerer {
        username: user.username.clone(),
        role: user.role,
        groups: user.groups.clone(),
    }
}

#[derive(Debug, Deserialize)]
pub struct AnswerForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub answer: String,
    #[serde(default)]
    pub comment: String,
}

/// `POST /gates/{id}/answer` (the stage's approvers; see
/// `engine::deploy::gates::questions`)
pub async fn answer(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<i64>,
    form: web::Form<AnswerForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let who = answerer(user.require_action(Action::Read)?);
    let id = path.into_inner();
    let answer = GateAnswer::parse(&form.answer)?;
    state
        .engine
        .gates()
        .answer(id, who, answer, &form.comment)
        .await?;
    Ok(see_other(urls::gate_run(id)))
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub reason: String,
}

/// `POST /gates/{id}/reevaluate` (release manager)
pub async fn reevaluate(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<i64>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::OverrideGates)?.username.clone();
    let id = path.into_inner();
    state.engine.gates().reevaluate(id, &actor).await?;
    Ok(see_other(urls::gate_run(id)))
}

/// `POST /gates/{id}/bypass` (release manager, with a reason)
pub async fn bypass(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<i64>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::OverrideGates)?.username.clone();
    let id = path.into_inner();
    if form.reason.trim().is_empty() {
        return Err(WebError::Unprocessable(
            "Say why the gate is bypassed.".into(),
        ));
    }
    state
        .engine
        .gates()
        .bypass(id, &actor, &form.reason)
        .await?;
    Ok(see_other(urls::gate_run(id)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::domain::Phase;

    #[test]
    fn progress_reads_in_words_with_plurals_right() {
        assert_eq!(counted(1, "round", "rounds"), "1 round");
        assert_eq!(counted(0, "round", "rounds"), "0 rounds");
        assert_eq!(counted(3, "sample", "samples"), "3 samples");
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc();
        let mut view = GateRunView {
            run: crate::storage::GateRunRow {
                id: 1,
                deployment_id: 1,
                pipeline: "web".into(),
                release_version: "1.0.1".into(),
                stage: "prod".into(),
                phase: Phase::Before,
                state: GateRunState::Evaluating,
                started_at: at,
                deadline_at: at + chrono::TimeDelta::minutes(10),
                next_at: None,
                round: 0,
                green_since: None,
                progress: "{}".into(),
                last_results: "[]".into(),
                reason: None,
                question: None,
                finished_by: None,
                finished_at: None,
                created_at: at,
                updated_at: at,
            },
            checks: Vec::new(),
            samples_taken: 0,
            steady: Some(chrono::TimeDelta::seconds(10)),
        };
        let later = at + chrono::TimeDelta::seconds(65);
        assert_eq!(
            green_text(&view, later),
            "not sampled yet; must stay green for 10s"
        );
        view.run.round = 2;
        assert_eq!(
            green_text(&view, later),
            "not all green yet; must stay green for 10s"
        );
        view.run.green_since = Some(at + chrono::TimeDelta::seconds(60));
        assert_eq!(green_text(&view, later), "green for 5s of 10s");
        // Never more than the steady time (the pass is a round away).
        assert_eq!(
            green_text(&view, later + chrono::TimeDelta::minutes(2)),
            "green for 10s of 10s"
        );
        view.steady = Some(chrono::TimeDelta::minutes(5));
        assert_eq!(green_text(&view, later), "green for 5s of 5m");
    }

    #[test]
    fn the_strip_differs_by_shape() {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc();
        let sample = |verdict: &str| GateSampleRow {
            id: 1,
            deployment_id: 1,
            phase: Phase::Before,
            round: 1,
            check_name: "health".into(),
            sampled_at: at,
            duration_ms: 3,
            request: "GET /".into(),
            value: "<200>".into(),
            verdict: verdict.into(),
            created_at: at,
            gate_run_id: Some(1),
            body: None,
            scheduled_at: None,
        };
        let svg = strip(
            "health",
            &[sample("pass"), sample("fail"), sample("inconclusive")],
        );
        assert!(svg.contains("<circle class=\"pass\""));
        assert!(svg.contains("<path class=\"fail\""));
        assert!(svg.contains(">?</text>"));
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("&lt;200&gt;"));
    }
}
