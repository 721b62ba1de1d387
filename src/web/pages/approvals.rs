//! The approval inbox (`/approvals`) and the page of one approval
//! (`/approvals/{id}`).
//!
//! The inbox lists everything waiting for the signed-in user (named
//! directly or through a group, not yet approved or rejected by them),
//! oldest first: pipeline, release, stage, phase, requester, age, deadline,
//! who is still needed, the commits the release adds over the one in the
//! stage, the gate evidence so far and earlier decisions, with Approve,
//! Reject (a comment is required) and Defer (to a UTC time) forms. Approvals
//! the user deferred wait in their own section until the time comes. A
//! checkbox per approval and "Approve selected" (`POST /approvals/batch`)
//! decide several at once, each on its own; the page then says which
//! succeeded and which failed and why. `?tab=history` lists the user's own
//! decisions (keyset pagination by decision id).
//!
//! Decisions post to `POST /approvals/{id}` (`decision`, `comment`,
//! `until`), CSRF checked, and come back (303) with a one-time message; a
//! refused decision renders the page again with the message next to the
//! forms (422 for a rejection without a comment). A stage asking for a
//! fresh SSO sign-in sends the person to the provider (`max_age`) and back
//! to the page.
//!
//! [`approvals_of_deployment`] builds the approvals section of the
//! deployment page (`templates/partials/approvals_of_deployment.html`).

use std::collections::HashSet;

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use super::gates::{GateRunEvidence, gate_evidence};
use crate::domain::approval::is_listed;
use crate::domain::authz::Action;
use crate::domain::{ApprovalState, Decision};
use crate::engine::deploy::approvals::{self, ApprovalItem, DecideError, Decided, DecisionInput};
use crate::engine::deploy::gates::questions::{self, OpenQuestion};
use crate::storage::{ApprovalDecisionRow, DbConn};
use crate::web::api::approvals::person;
use crate::web::auth::{AuthUser, CurrentUser};
use crate::web::nav::Nav;
use crate::web::oidc::fresh_sign_in_url;
use crate::web::pages::see_other;
use crate::web::session::check_csrf;
use crate::web::views::{iso, time};
use crate::web::{State, WebError, urls};

/// Decisions per page of the history tab.
const HISTORY_PAGE: i64 = 50;
/// The session key of the one-time message shown after a decision.
const FLASH: &str = "approvals_flash";

/// A commit the release adds over the one in the stage.
pub struct CommitRow {
    pub sha: String,
    pub short: String,
    pub subject: String,
    pub author: String,
}

/// One person's decision.
pub struct DecisionRow {
    pub user: String,
    /// `approved`, `rejected`, `deferred`.
    pub decision: String,
    pub at: String,
    pub at_iso: String,
    pub comment: Option<String>,
    /// For a defer: until when.
    pub until: Option<String>,
}

/// How an approval's state is shown: a symbol and a word, never colour
/// alone.
pub struct StateMark {
    pub class: &'static str,
    pub symbol: &'static str,
    pub label: &'static str,
}

impl StateMark {
    pub fn of(state: ApprovalState) -> StateMark {
        let (class, symbol) = match state {
            ApprovalState::Pending => ("waiting", "⚑"),
            ApprovalState::Approved => ("ok", "✔"),
            ApprovalState::Rejected => ("bad", "✗"),
            ApprovalState::TimedOut => ("bad", "⌛"),
            ApprovalState::Superseded => ("muted", "⤼"),
            ApprovalState::Canceled => ("muted", "⊘"),
        };
        StateMark {
            class,
            symbol,
            label: state.label(),
        }
    }
}

/// One approval as the inbox and its page show it.
pub struct ItemView {
    pub id: i64,
    pub url: String,
    pub pipeline: String,
    pub pipeline_url: String,
    pub release: String,
    pub release_url: String,
    pub deployment_id: i64,
    pub deployment_url: String,
    pub stage: String,
    pub stage_url: String,
    pub phase: String,
    pub requested_by: String,
    pub created: String,
    pub created_iso: String,
    /// "waiting 3 h"
    pub age: String,
    pub deadline: String,
    pub deadline_iso: String,
    pub approvers: String,
    pub policy_words: String,
    pub needed: Option<String>,
    /// "15m", when the stage asks for a fresh SSO sign-in.
    pub fresh_sign_in: Option<String>,
    /// The stage asks for a fresh sign-in this person does not have now.
    pub needs_sign_in: bool,
    pub base_release: Option<String>,
    pub commits: Vec<CommitRow>,
    pub evidence: Vec<GateRunEvidence>,
    pub decisions: Vec<DecisionRow>,
    pub state: StateMark,
    pub reason: Option<String>,
    pub closed: Option<String>,
    /// Still pending, with its deployment waiting.
    pub open: bool,
    /// The viewer may decide now (open, listed, not decided yet).
    pub can_decide: bool,
    /// Why the viewer may not approve (requester, commit author, …).
    pub cannot_approve: Option<String>,
    /// Why the viewer has no forms on an open approval.
    pub not_yours: Option<String>,
    /// The viewer's defer, while it lasts.
    pub deferred_until: Option<String>,
    pub deferred_until_iso: Option<String>,
    /// A refused decision's message, next to the forms.
    pub error: Option<String>,
    /// What the person typed, kept when the page comes back with an error.
    pub comment: String,
}

impl ItemView {
    /// Whether the checkbox of "Approve selected" is offered (not for
    /// deferred approvals).
    pub fn selectable(&self) -> bool {
        self.can_decide && self.cannot_approve.is_none() && self.deferred_until.is_none()
    }
}

/// A gate question the viewer may answer.
pub struct QuestionView {
    pub url: String,
    pub pipeline: String,
    pub release: String,
    pub release_url: String,
    pub stage: String,
    pub phase: String,
    pub question: String,
}

/// One of the viewer's past decisions.
pub struct HistoryRow {
    pub at: String,
    pub at_iso: String,
    pub decision: String,
    pub comment: Option<String>,
    pub until: Option<String>,
    pub url: String,
    pub id: i64,
    pub pipeline: String,
    pub release: String,
    pub release_url: String,
    pub stage: String,
    pub phase: String,
    pub outcome: StateMark,
    pub reason: Option<String>,
}

/// What one approval of a batch came to.
pub struct BatchLine {
    pub id: String,
    pub url: Option<String>,
    pub label: String,
    pub ok: bool,
    pub message: String,
    /// Where to sign in again, when a fresh SSO sign-in is what is missing.
    pub sign_in_url: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/approvals.html")]
pub struct InboxPage {
    pub nav: Nav,
    pub history_tab: bool,
    pub from_inbox: bool,
    pub waiting: Vec<ItemView>,
    pub deferred: Vec<ItemView>,
    pub questions: Vec<QuestionView>,
    pub history: Vec<HistoryRow>,
    pub next_page: Option<String>,
    pub flash: Option<String>,
    pub error: Option<String>,
    pub batch: Vec<BatchLine>,
    pub inbox_url: String,
    pub history_url: String,
    pub batch_url: String,
}

impl InboxPage {
    pub fn batch_failed(&self) -> usize {
        self.batch.iter().filter(|b| !b.ok).count()
    }
}

#[derive(Template)]
#[template(path = "pages/approval.html")]
pub struct ApprovalPage {
    pub nav: Nav,
    pub from_inbox: bool,
    pub item: ItemView,
    pub flash: Option<String>,
}

/// The approvals of one deployment, for its page.
pub struct ApprovalSummary {
    pub id: i64,
    pub url: String,
    pub phase: String,
    pub state: StateMark,
    pub approvers: String,
    pub policy_words: String,
    pub needed: Option<String>,
    pub requested_by: String,
    pub deadline: String,
    pub deadline_iso: String,
    pub reason: Option<String>,
    pub decisions: Vec<DecisionRow>,
}

/// The approvals of deployment `deployment_id`, oldest first, for
/// `templates/partials/approvals_of_deployment.html` (needs `approvals`
/// in scope).
pub fn approvals_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<ApprovalSummary>, WebError> {
    Ok(approvals::of_deployment(conn, deployment_id)?
        .iter()
        .map(|item| {
            let a = &item.approval;
            ApprovalSummary {
                id: a.id,
                url: urls::approval(a.id),
                phase: a.phase.to_string(),
                state: StateMark::of(item.state),
                approvers: item.approvers.join(", "),
                policy_words: item.policy_words.clone(),
                needed: item.needed.clone(),
                requested_by: a.requested_by.clone(),
                deadline: time(&a.deadline),
                deadline_iso: iso(&a.deadline),
                reason: a.reason.clone(),
                decisions: item.decisions.iter().map(decision_row).collect(),
            }
        })
        .collect())
}

fn decision_row(d: &ApprovalDecisionRow) -> DecisionRow {
    DecisionRow {
        user: d.user_name.clone(),
        decision: d
            .decision
            .parse::<Decision>()
            .map(|x| x.past().to_string())
            .unwrap_or_else(|_| d.decision.clone()),
        at: time(&d.created_at),
        at_iso: iso(&d.created_at),
        comment: d.comment.clone(),
        until: d.defer_until.as_ref().map(time),
    }
}

/// "waiting 3 h"
pub fn waiting_words(since: &NaiveDateTime, now: DateTime<Utc>) -> String {
    let secs = (now.naive_utc() - *since).num_seconds().max(0);
    match secs {
        0..60 => "waiting less than a minute".into(),
        60..3600 => format!("waiting {} min", secs / 60),
        3600..86400 => format!("waiting {} h", secs / 3600),
        _ => format!("waiting {} d", secs / 86400),
    }
}

fn item_view(
    item: &ApprovalItem,
    evidence: Vec<GateRunEvidence>,
    me: &AuthUser,
    now: DateTime<Utc>,
) -> ItemView {
    let a = &item.approval;
    let d = &item.deployment;
    let open =
        item.state.is_open() && d.state == crate::domain::DeploymentState::WaitingForApproval;
    let listed = approvals::terms(a)
        .map(|t| is_listed(&t.approvers, &me.username, &me.groups))
        .unwrap_or(false);
    let decided = item
        .decisions
        .iter()
        .any(|x| x.user_name == me.username && x.decision != Decision::Defer.as_str());
    let can_decide = open && listed && !decided;
    let not_yours = match (open, listed, decided) {
        (true, false, _) => Some(format!(
            "You are not among its approvers ({}).",
            item.approvers.join(", ")
        )),
        (true, true, true) => Some("You have decided on it already.".to_string()),
        _ => None,
    };
    // Whether they may approve apart from a fresh sign-in, which the
    // decision itself asks for (by sending them to the provider).
    let mut who = person(me);
    who.sso_at = Some(now);
    let cannot_approve = if can_decide {
        item.may_approve(&who).err()
    } else {
        None
    };
    let needs_sign_in = item
        .fresh_sign_in
        .is_some_and(|max| !me.sso_within(max.into()));
    let deferred = item.deferred_until(&me.username, now.naive_utc());
    ItemView {
        id: a.id,
        url: urls::approval(a.id),
        pipeline_url: urls::pipeline(&item.pipeline),
        release_url: urls::release(&item.pipeline, &item.release),
        deployment_id: d.id,
        deployment_url: urls::deployment(&item.pipeline, &item.release, d.id),
        stage: d.stage.clone(),
        stage_url: urls::stage(&item.pipeline, &d.stage),
        pipeline: item.pipeline.clone(),
        release: item.release.clone(),
        phase: a.phase.to_string(),
        requested_by: a.requested_by.clone(),
        created: time(&a.created_at),
        created_iso: iso(&a.created_at),
        age: waiting_words(&a.created_at, now),
        deadline: time(&a.deadline),
        deadline_iso: iso(&a.deadline),
        approvers: item.approvers.join(", "),
        policy_words: item.policy_words.clone(),
        needed: item.needed.clone(),
        fresh_sign_in: item.fresh_sign_in.map(|f| f.to_string()),
        needs_sign_in,
        base_release: a.base_release.clone(),
        commits: item
            .commits
            .iter()
            .map(|c| CommitRow {
                sha: c.sha.clone(),
                short: c.short().to_string(),
                subject: c.subject.clone(),
                author: c.author.clone(),
            })
            .collect(),
        evidence,
        decisions: item.decisions.iter().map(decision_row).collect(),
        state: StateMark::of(item.state),
        reason: a.reason.clone(),
        closed: a.closed_at.as_ref().map(|t| {
            format!(
                "{} by {}",
                time(t),
                a.closed_by.as_deref().unwrap_or("Slipway")
            )
        }),
        open,
        can_decide,
        cannot_approve,
        not_yours,
        deferred_until: deferred.as_ref().map(time),
        deferred_until_iso: deferred.as_ref().map(iso),
        error: None,
        comment: String::new(),
    }
}

/// What the inbox reads in one go.
struct Inbox {
    waiting: Vec<(ApprovalItem, Vec<GateRunEvidence>)>,
    questions: Vec<OpenQuestion>,
}

fn read_inbox(conn: &mut DbConn, me: &AuthUser) -> Result<Inbox, WebError> {
    let items = approvals::waiting_for(conn, &me.username, &me.groups)?;
    let mut waiting = Vec::with_capacity(items.len());
    for item in items {
        let evidence = gate_evidence(conn, item.deployment.id)?;
        waiting.push((item, evidence));
    }
    let questions = questions::open_questions_for(conn, &me.username, &me.groups)?;
    Ok(Inbox { waiting, questions })
}

fn empty_inbox(nav: Nav) -> InboxPage {
    InboxPage {
        nav,
        history_tab: false,
        from_inbox: true,
        waiting: Vec::new(),
        deferred: Vec::new(),
        questions: Vec::new(),
        history: Vec::new(),
        next_page: None,
        flash: None,
        error: None,
        batch: Vec::new(),
        inbox_url: urls::approvals(),
        history_url: format!("{}?tab=history", urls::approvals()),
        batch_url: format!("{}/batch", urls::approvals()),
    }
}

/// The inbox tab; `error` goes next to the forms of approval `id` (or at
/// the top when that approval is not in the inbox any more).
async fn inbox_page(
    state: &State,
    nav: Nav,
    me: &AuthUser,
    error: Option<(i64, String, String)>,
) -> Result<InboxPage, WebError> {
    let who = me.clone();
    let inbox = state
        .with_conn::<_, WebError, _>(move |conn| read_inbox(conn, &who))
        .await?;
    let now = Utc::now();
    let mut page = empty_inbox(nav);
    for (item, evidence) in inbox.waiting {
        let mut view = item_view(&item, evidence, me, now);
        if let Some((id, message, comment)) = &error
            && *id == view.id
        {
            view.error = Some(message.clone());
            view.comment = comment.clone();
        }
        if view.deferred_until.is_some() {
            page.deferred.push(view);
        } else {
            page.waiting.push(view);
        }
    }
    if let Some((id, message, _)) = error
        && !page
            .waiting
            .iter()
            .chain(page.deferred.iter())
            .any(|v| v.id == id)
    {
        page.error = Some(format!("Approval #{id}: {message}"));
    }
    page.questions = inbox
        .questions
        .iter()
        .map(|q| QuestionView {
            url: format!("{}#answer", urls::gate_run(q.run_id)),
            release_url: urls::release(&q.pipeline, &q.release),
            pipeline: q.pipeline.clone(),
            release: q.release.clone(),
            stage: q.stage.clone(),
            phase: q.phase.to_string(),
            question: q.question.clone(),
        })
        .collect();
    Ok(page)
}

fn with_status<T: Template>(page: &T, status: StatusCode) -> Result<HttpResponse, WebError> {
    let body = page.render().map_err(WebError::internal)?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

fn take_flash(session: &Session) -> Option<String> {
    session.remove_as::<String>(FLASH).and_then(Result::ok)
}

#[derive(Debug, Deserialize)]
pub struct InboxQuery {
    #[serde(default)]
    pub tab: Option<String>,
    #[serde(default)]
    pub before: Option<i64>,
}

/// `GET /approvals` (and `?tab=history`)
pub async fn index(
    state: State,
    nav: Nav,
    session: Session,
    user: CurrentUser,
    query: web::Query<InboxQuery>,
) -> Result<HttpResponse, WebError> {
    let me = user.require_action(Action::Read)?.clone();
    let flash = take_flash(&session);
    match query.tab.as_deref() {
        None | Some("") | Some("inbox") => {
            let mut page = inbox_page(&state, nav, &me, None).await?;
            page.flash = flash;
            super::render(&page)
        }
        Some("history") => {
            let before = query.before;
            let name = me.username.clone();
            let rows = state
                .with_conn::<_, WebError, _>(move |conn| {
                    Ok(approvals::history_of(conn, &name, before, HISTORY_PAGE)?)
                })
                .await?;
            let mut page = empty_inbox(nav);
            page.history_tab = true;
            page.flash = flash;
            if rows.len() == usize::try_from(HISTORY_PAGE).unwrap_or(usize::MAX)
                && let Some((last, _)) = rows.last()
            {
                page.next_page = Some(format!(
                    "{}?tab=history&before={}",
                    urls::approvals(),
                    last.id
                ));
            }
            page.history = rows
                .iter()
                .map(|(d, item)| {
                    let row = decision_row(d);
                    HistoryRow {
                        at: row.at,
                        at_iso: row.at_iso,
                        decision: row.decision,
                        comment: row.comment,
                        until: row.until,
                        url: urls::approval(item.approval.id),
                        id: item.approval.id,
                        release_url: urls::release(&item.pipeline, &item.release),
                        pipeline: item.pipeline.clone(),
                        release: item.release.clone(),
                        stage: item.deployment.stage.clone(),
                        phase: item.approval.phase.to_string(),
                        outcome: StateMark::of(item.state),
                        reason: item.approval.reason.clone(),
                    }
                })
                .collect();
            super::render(&page)
        }
        Some(other) => Err(WebError::BadRequest(format!(
            "`tab` is `inbox` or `history`, not `{other}`."
        ))),
    }
}

async fn approval_page(
    state: &State,
    nav: Nav,
    me: &AuthUser,
    id: i64,
) -> Result<ApprovalPage, WebError> {
    let (item, evidence) = state
        .with_conn::<_, WebError, _>(move |conn| {
            let item = approvals::find_item(conn, id)?;
            let evidence = gate_evidence(conn, item.deployment.id)?;
            Ok((item, evidence))
        })
        .await?;
    Ok(ApprovalPage {
        nav,
        from_inbox: false,
        item: item_view(&item, evidence, me, Utc::now()),
        flash: None,
    })
}

/// `GET /approvals/{id}`: the stable page of one approval, open or closed.
pub async fn show(
    state: State,
    nav: Nav,
    session: Session,
    user: CurrentUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, WebError> {
    let me = user.require_action(Action::Read)?.clone();
    let mut page = approval_page(&state, nav, &me, path.into_inner()).await?;
    page.flash = take_flash(&session);
    super::render(&page)
}

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub decision: String,
    #[serde(default)]
    pub comment: String,
    /// For `defer`: a `datetime-local` value in UTC (or RFC 3339).
    #[serde(default)]
    pub until: String,
    /// `inbox` when the form was on the inbox (go back there).
    #[serde(default)]
    pub from: String,
}

/// A `datetime-local` value (`2026-11-27T09:30`, seconds optional) read as
/// UTC, or an RFC 3339 time.
pub fn parse_until(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("Say until when to defer (a date and time in UTC).".into());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{text}` is not a date and time; use YYYY-MM-DDTHH:MM (UTC)."))
}

fn decision_of(form: &DecisionForm) -> Result<DecisionInput, String> {
    let decision: Decision = form
        .decision
        .trim()
        .parse()
        .map_err(|_| "Choose Approve, Reject or Defer (field `decision`).".to_string())?;
    let comment = Some(form.comment.clone()).filter(|c| !c.trim().is_empty());
    if decision == Decision::Reject && comment.is_none() {
        return Err("A rejection needs a comment saying why.".into());
    }
    let until = match decision {
        Decision::Defer => Some(parse_until(&form.until)?),
        _ => None,
    };
    Ok(DecisionInput {
        decision,
        comment,
        until,
    })
}

/// What a decision came to, in words.
fn decided_words(d: &Decided, decision: Decision, label: &str) -> String {
    match decision {
        Decision::Defer => format!(
            "You deferred approval #{} ({label}); it leaves your inbox until then. Its deadline still applies.",
            d.approval.id
        ),
        _ => {
            let outcome = match d.state {
                ApprovalState::Approved => "it is approved and the deployment goes on".to_string(),
                ApprovalState::Rejected => "it is rejected and the deployment stops".to_string(),
                ApprovalState::Pending => match &d.needed {
                    Some(n) => format!("it still needs {n}"),
                    None => "it is still waiting".to_string(),
                },
                other => format!("it is {}", other.label().to_lowercase()),
            };
            format!(
                "You {} approval #{} ({label}); {outcome}.",
                decision.past(),
                d.approval.id
            )
        }
    }
}

async fn label_of(state: &State, id: i64) -> String {
    state
        .with_conn::<_, WebError, _>(move |conn| {
            let item = approvals::find_item(conn, id)?;
            Ok(format!(
                "{} {} → {}",
                item.pipeline, item.release, item.deployment.stage
            ))
        })
        .await
        .unwrap_or_else(|_| format!("approval #{id}"))
}

/// Where a refused decision sends the person: the SSO provider for a
/// fresh sign-in when single sign-on is configured, else a message.
enum Refused {
    SignIn(String),
    Message(WebError),
}

fn refused(state: &State, e: DecideError, back: &str) -> Refused {
    match e {
        DecideError::FreshSignIn { max_age, message } => {
            if state.sso.get().is_some() {
                Refused::SignIn(fresh_sign_in_url(back, max_age.into()))
            } else {
                Refused::Message(WebError::Forbidden(format!(
                    "{message} Single sign-on is not configured here, so this approval cannot be given."
                )))
            }
        }
        DecideError::Engine(e) => Refused::Message(e.into()),
    }
}

/// `POST /approvals/{id}`: approve, reject (with a comment) or defer.
pub async fn decide(
    state: State,
    nav: Nav,
    session: Session,
    user: CurrentUser,
    path: web::Path<i64>,
    form: web::Form<DecisionForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let me = user.require_action(Action::Approve)?.clone();
    let id = path.into_inner();
    let from_inbox = form.from == "inbox";
    let back = if from_inbox {
        urls::approvals()
    } else {
        urls::approval(id)
    };
    let outcome = match decision_of(&form) {
        Ok(input) => {
            let decision = input.decision;
            match state.engine.decide_approval(id, person(&me), input).await {
                Ok(d) => Ok((d, decision)),
                Err(e) => match refused(&state, e, &back) {
                    Refused::SignIn(url) => return Ok(see_other(&url)),
                    Refused::Message(e) => Err(e),
                },
            }
        }
        Err(message) => Err(WebError::Unprocessable(message)),
    };
    match outcome {
        Ok((decided, decision)) => {
            let label = label_of(&state, id).await;
            let _ = session.insert(FLASH, decided_words(&decided, decision, &label));
            Ok(see_other(&back))
        }
        Err(e @ (WebError::NotFound(_) | WebError::Internal(_))) => Err(e),
        Err(e) => {
            let status = actix_web::ResponseError::status_code(&e);
            let message = e.to_string();
            let comment = form.comment.clone();
            if from_inbox {
                let page = inbox_page(&state, nav, &me, Some((id, message, comment))).await?;
                with_status(&page, status)
            } else {
                match approval_page(&state, nav, &me, id).await {
                    Ok(mut page) => {
                        page.item.error = Some(message);
                        page.item.comment = comment;
                        with_status(&page, status)
                    }
                    // No such approval: the refusal itself is the answer.
                    Err(WebError::NotFound(_)) => Err(e),
                    Err(other) => Err(other),
                }
            }
        }
    }
}

/// The most approvals one batch decides.
const MAX_BATCH: usize = 100;

/// `POST /approvals/batch` (`ids` repeated): approves each selected
/// approval on its own and shows what each came to.
pub async fn batch(
    state: State,
    nav: Nav,
    session: Session,
    user: CurrentUser,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, WebError> {
    let fields = form.into_inner();
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    check_csrf(&session, csrf)?;
    let me = user.require_action(Action::Approve)?.clone();
    let ids: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k == "ids")
        .map(|(_, v)| v.as_str())
        .collect();
    if ids.is_empty() || ids.len() > MAX_BATCH {
        let mut page = inbox_page(&state, nav, &me, None).await?;
        page.error = Some(if ids.is_empty() {
            "Select at least one approval to approve.".into()
        } else {
            format!("Approve at most {MAX_BATCH} approvals at once.")
        });
        return with_status(&page, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let mut lines = Vec::with_capacity(ids.len());
    let mut seen: HashSet<i64> = HashSet::new();
    for raw in ids {
        let Ok(id) = raw.trim().parse::<i64>() else {
            lines.push(BatchLine {
                id: raw.to_string(),
                url: None,
                label: format!("`{raw}`"),
                ok: false,
                message: "not an approval id".into(),
                sign_in_url: None,
            });
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let input = DecisionInput {
            decision: Decision::Approve,
            comment: None,
            until: None,
        };
        let label = label_of(&state, id).await;
        let line = match state.engine.decide_approval(id, person(&me), input).await {
            Ok(d) => BatchLine {
                id: id.to_string(),
                url: Some(urls::approval(id)),
                message: decided_words(&d, Decision::Approve, &label),
                label,
                ok: true,
                sign_in_url: None,
            },
            Err(e) => {
                let (message, sign_in_url) = match refused(&state, e, &urls::approvals()) {
                    Refused::SignIn(url) => (
                        "the stage asks for a fresh sign-in through SSO first".to_string(),
                        Some(url),
                    ),
                    Refused::Message(e) => (e.public_message(), None),
                };
                BatchLine {
                    id: id.to_string(),
                    url: Some(urls::approval(id)),
                    label,
                    ok: false,
                    message,
                    sign_in_url,
                }
            }
        };
        lines.push(line);
    }
    let mut page = inbox_page(&state, nav, &me, None).await?;
    page.batch = lines;
    super::render(&page)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defer_times_are_utc() {
        assert_eq!(
            parse_until("2026-11-27T09:30").unwrap().to_rfc3339(),
            "2026-11-27T09:30:00+00:00"
        );
        assert_eq!(
            parse_until("2026-11-27T09:30:15").unwrap().to_rfc3339(),
            "2026-11-27T09:30:15+00:00"
        );
        assert_eq!(
            parse_until("2026-11-27T10:30:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-27T09:30:00+00:00"
        );
        assert!(parse_until("").is_err());
        assert!(parse_until("tomorrow").unwrap_err().contains("tomorrow"));
    }

    #[test]
    fn ages_read_as_waiting() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |secs: i64| (now - chrono::Duration::seconds(secs)).naive_utc();
        assert_eq!(waiting_words(&at(5), now), "waiting less than a minute");
        assert_eq!(waiting_words(&at(600), now), "waiting 10 min");
        assert_eq!(waiting_words(&at(3 * 3600 + 5), now), "waiting 3 h");
        assert_eq!(waiting_words(&at(2 * 86400), now), "waiting 2 d");
    }
}
