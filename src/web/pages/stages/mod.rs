//! `/pipelines/{p}/stages/{s}/configure`: a stage's configuration form
//! (trigger with a preview of the next fire times, tasks, variables, queue,
//! approvals and gates with their checks), its schedule's state and recent
//! fires, a summary of the stored approvals and gates, and the pipeline's
//! revision history with a diff of each revision. The stage's overview
//! (`/pipelines/{p}/stages/{s}`, what is live, the queue, Deploy) is
//! `stage_overview`; it shows the configuration read-only with the helpers
//! here.
//!
//! `POST` (to `/configure`, or to the overview's URL where the form posted
//! before it had its own page) saves (release manager) or previews
//! (`action=preview`, nothing is stored). Form fields are parsed into domain values here; an error is
//! shown next to its field (422, the input kept). A save stores a new
//! revision through `engine::pipelines::stages::edit_stage`.

mod fields;
mod form;
mod gates;
mod parse;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod views;

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

pub use form::{ApprovalForm, FieldErrors, StageForm};
pub use gates::{CHECK_KINDS, CheckErrors, CheckForm, GateErrors, GateForm};
pub use views::*;

use super::pipelines::trigger_text;
use crate::domain::authz::Action;
use crate::domain::{PipelineDefinition, Trigger};
use crate::engine::pipelines::schedules::{self as sched, FireRecord};
use crate::engine::pipelines::stages as edit;
use crate::engine::{EngineError, pipelines};
use crate::storage::schedules as store;
use crate::storage::{self, DefinitionRevisionRow};
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::pages::see_other;
use crate::web::session::check_csrf;
use crate::web::{State, WebError, urls};
use form::form_of;
use parse::{parse_form, parse_schedule, place_errors};

/// How many fire times the page lists.
pub const FIRE_TIMES: usize = 5;

/// How many revisions the history shows (with their diffs).
pub const REVISIONS: usize = 20;

/// How many recent fires of a schedule the page lists.
const RECENT_FIRES: i64 = 10;

#[derive(Template)]
#[template(path = "pages/stage.html")]
pub struct StagePage {
    pub nav: Nav,
    pub pipeline: String,
    pub pipeline_url: String,
    pub form_url: String,
    pub stage: String,
    pub position: usize,
    pub previous: String,
    pub revision: i32,
    /// Release managers may save; everyone else sees the form read-only.
    pub can_edit: bool,
    /// A message after saving ("Saved as revision 2.") or "nothing changed".
    pub notice: Option<String>,
    pub form: StageForm,
    pub errors: FieldErrors,
    /// Stages before this one (for `after: <stage>`).
    pub earlier_stages: Vec<String>,
    pub timezones: Vec<&'static str>,
    /// Fire times of the cron and zone typed in the form (the preview).
    pub preview: Option<Vec<FireTime>>,
    pub preview_zone: String,
    /// The stored trigger in words.
    pub trigger: String,
    /// The stored schedule, if the stage has one.
    pub timezone: Option<String>,
    pub fire_times: Vec<FireTime>,
    pub next_fire: Option<FireTime>,
    pub last_fired: Option<FireTime>,
    pub fires: Vec<FireView>,
    pub catch_up: bool,
    pub environment: String,
    pub approvals: Vec<ApprovalView>,
    pub gates: Vec<GateView>,
    pub deployers: String,
    pub revisions: Vec<RevisionView>,
    pub more_revisions: usize,
    /// The stage's overview (what is live, Deploy).
    pub overview_url: String,
}

/// Everything the page shows besides the form.
struct Loaded {
    name: String,
    revision: i32,
    definition: PipelineDefinition,
    index: usize,
    stage_row: Option<storage::StageRow>,
    fires: Vec<FireRecord>,
    revisions: Vec<DefinitionRevisionRow>,
}

fn load(conn: &mut storage::DbConn, name: &str, stage: &str) -> Result<Loaded, WebError> {
    let loaded = pipelines::load(conn, name)?;
    let Some(index) = loaded.definition.stage_index(stage) else {
        return Err(WebError::NotFound(format!(
            "{} has no stage named `{stage}`.",
            loaded.name
        )));
    };
    let stage_row = store::find_stage(conn, loaded.id, stage)?;
    let runs = store::recent_trigger_runs(conn, loaded.id, stage, RECENT_FIRES)?;
    let fires = sched::fire_records(conn, runs)?;
    let revisions = storage::list_revisions(conn, loaded.id)?;
    Ok(Loaded {
        name: loaded.name,
        revision: loaded.revision,
        definition: loaded.definition,
        index,
        stage_row,
        fires,
        revisions,
    })
}

/// Builds the page; `form` is the user's input (or the stored stage's).
fn page(
    nav: Nav,
    can_edit: bool,
    l: &Loaded,
    form: StageForm,
    errors: FieldErrors,
    preview: bool,
    notice: Option<String>,
) -> StagePage {
    let mut form = form;
    form.gates_before.for_page();
    form.gates_after.for_page();
    let def = &l.definition;
    let stage = &def.stages[l.index];
    let (timezone, fire_times_now, tz) = match &stage.trigger {
        Trigger::Schedule(s) => (
            Some(s.timezone.name().to_string()),
            fire_times(s),
            s.timezone,
        ),
        _ => (None, Vec::new(), chrono_tz::UTC),
    };
    let preview_times = if preview {
        let mut scratch = FieldErrors::default();
        parse_schedule(&form, &mut scratch).map(|s| fire_times(&s))
    } else {
        None
    };
    let (approvals, gates) = guard_views(stage);
    let row = l.stage_row.as_ref();
    StagePage {
        nav,
        pipeline: l.name.clone(),
        pipeline_url: urls::pipeline(&l.name),
        form_url: urls::stage_configure(&l.name, stage.name.as_str()),
        overview_url: urls::stage(&l.name, stage.name.as_str()),
        stage: stage.name.as_str().to_string(),
        position: l.index + 1,
        previous: l
            .index
            .checked_sub(1)
            .and_then(|i| def.stages.get(i))
            .map(|p| format!("stage {}", p.name))
            .unwrap_or_else(|| "the build".into()),
        revision: l.revision,
        can_edit,
        notice,
        preview_zone: form.timezone.trim().to_string(),
        form,
        errors,
        earlier_stages: def.stages[..l.index]
            .iter()
            .map(|s| s.name.as_str().to_string())
            .collect(),
        timezones: chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect(),
        preview: preview_times,
        trigger: trigger_text(&stage.trigger),
        next_fire: timezone.as_ref().and_then(|_| {
            row.and_then(|r| r.next_fire_at)
                .map(|t| fire_time(t.and_utc(), tz))
        }),
        last_fired: timezone.as_ref().and_then(|_| {
            row.and_then(|r| r.last_fired_at)
                .map(|t| fire_time(t.and_utc(), tz))
        }),
        timezone,
        fire_times: fire_times_now,
        fires: l.fires.iter().map(|f| fire_view(&l.name, f, tz)).collect(),
        catch_up: stage.catch_up,
        environment: environment_text(stage),
        approvals,
        gates,
        deployers: deployers_text(stage),
        revisions: revision_views(&l.revisions, l.revision),
        more_revisions: l.revisions.len().saturating_sub(REVISIONS),
    }
}

/// Renders the page with `status`.
fn respond(status: StatusCode, page: &StagePage) -> Result<HttpResponse, WebError> {
    let body = page.render().map_err(WebError::internal)?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// Whether the signed-in user may save the form (`domain::authz` decides);
/// everyone else sees it read-only.
fn can_edit(user: &CurrentUser) -> bool {
    user.0
        .as_ref()
        .is_some_and(|u| u.allowed(Action::ConfigureStage))
}

/// The definition revision the form was made from, as posted; a field that
/// is not a revision number is refused (never replaced by the current one,
/// which would overwrite a change made meanwhile unseen).
fn base_revision(form: &StageForm) -> Result<i32, WebError> {
    let text = form.revision.trim();
    text.parse::<i32>().map_err(|_| {
        WebError::BadRequest(format!(
            "The form's revision `{text}` is not a revision number; reload the page and save again."
        ))
    })
}

#[derive(Debug, Deserialize)]
pub struct StageQuery {
    /// Set after a save: the revision it made.
    saved: Option<i32>,
}

pub async fn config(
    state: State,
    nav: Nav,
    user: CurrentUser,
    path: web::Path<(String, String)>,
    query: web::Query<StageQuery>,
) -> Result<HttpResponse, WebError> {
    let (name, stage) = path.into_inner();
    let l = state
        .with_conn::<_, WebError, _>(move |conn| load(conn, &name, &stage))
        .await?;
    let form = form_of(&l.definition.stages[l.index], l.revision);
    let notice = query
        .saved
        .map(|r| format!("Saved as revision {r} of {}.", l.name));
    let page = page(
        nav,
        can_edit(&user),
        &l,
        form,
        FieldErrors::default(),
        false,
        notice,
    );
    respond(StatusCode::OK, &page)
}

/// `POST /pipelines/{p}/stages/{s}`: preview the fire times of the typed
/// schedule, or save the form as a new revision.
pub async fn save(
    state: State,
    nav: Nav,
    user: CurrentUser,
    session: Session,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let (name, stage) = path.into_inner();
    let text = std::str::from_utf8(&body)
        .map_err(|_| WebError::BadRequest("The form must be sent as UTF-8.".into()))?;
    let form = StageForm::from_body(text)
        .map_err(|e| WebError::BadRequest(format!("The form could not be read: {e}")))?;
    check_csrf(&session, &form.csrf)?;
    let editor = can_edit(&user);
    let (lname, lstage) = (name.clone(), stage.clone());
    let l = state
        .with_conn::<_, WebError, _>(move |conn| load(conn, &lname, &lstage))
        .await?;
    if form.action == "preview" {
        let mut errors = FieldErrors::default();
        let status = match parse_schedule(&form, &mut errors) {
            Some(_) => StatusCode::OK,
            None => StatusCode::UNPROCESSABLE_ENTITY,
        };
        return respond(status, &page(nav, editor, &l, form, errors, true, None));
    }
    let actor = user
        .require_action(Action::ConfigureStage)?
        .username
        .clone();
    let base = base_revision(&form)?;
    let edit = match parse_form(&l.definition, l.index, &form) {
        Ok(edit) => edit,
        Err(errors) => {
            let page = page(nav, editor, &l, form, *errors, false, None);
            return respond(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let (sname, sstage) = (name.clone(), stage.clone());
    let saved = state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok(edit::edit_stage(conn, &sname, &sstage, base, edit, &actor))
        })
        .await?;
    match saved {
        Ok(outcome) if outcome.unchanged => {
            let notice = Some(format!(
                "Nothing changed: {} stays at revision {}.",
                l.name, outcome.revision
            ));
            respond(
                StatusCode::OK,
                &page(nav, editor, &l, form, FieldErrors::default(), false, notice),
            )
        }
        Ok(outcome) => {
            let location = format!(
                "{}?saved={}",
                urls::stage_configure(&l.name, &stage),
                outcome.revision
            );
            Ok(see_other(location))
        }
        Err(EngineError::Definition(errors)) => {
            let errors = place_errors(&errors, l.index, &form);
            let page = page(nav, editor, &l, form, errors, false, None);
            respond(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(EngineError::Conflict(message)) => {
            // Show the current configuration's revision number but keep the input.
            let l = state
                .with_conn::<_, WebError, _>(move |conn| load(conn, &name, &stage))
                .await?;
            let errors = FieldErrors {
                general: vec![message],
                ..FieldErrors::default()
            };
            let mut form = form;
            form.revision = l.revision.to_string();
            let page = page(nav, editor, &l, form, errors, false, None);
            respond(StatusCode::CONFLICT, &page)
        }
        Err(other) => Err(other.into()),
    }
}
