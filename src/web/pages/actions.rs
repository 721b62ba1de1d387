//! Forms that change something from the pages: Build now, cancel or retry
//! a build, set a secret. Each needs a signed-in user with the right role and the
//! session's CSRF token, calls one engine function, and redirects.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::authz::Action;
use crate::engine::builds::{BuildRequest, QueueOutcome};
use crate::engine::secrets;
use crate::web::auth::CurrentUser;
use crate::web::pages::{next_or, see_other};
use crate::web::session::{check_csrf, set_flash};
use crate::web::{State, WebError, urls};

#[derive(Debug, Deserialize)]
pub struct BuildNowForm {
    #[serde(default)]
    pub branch: String,
    #[serde(default)]
    pub commit: String,
    #[serde(default)]
    pub csrf: String,
}

/// `POST /pipelines/{p}/builds`: queue a build of a branch or commit.
pub async fn build_now(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<String>,
    form: web::Form<BuildNowForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let user = user.require_action(Action::Build)?;
    let pipeline = path.into_inner();
    let blank = |s: &str| {
        let t = s.trim();
        (!t.is_empty()).then(|| t.to_string())
    };
    let outcome = state
        .engine
        .queue(BuildRequest {
            pipeline: pipeline.clone(),
            branch: blank(&form.branch),
            commit: blank(&form.commit),
            trigger: "manual".into(),
            requested_by: user.username.clone(),
        })
        .await?;
    match outcome {
        QueueOutcome::Queued(build) => Ok(see_other(urls::build(&pipeline, build.number))),
        QueueOutcome::Filtered { branch } => Err(WebError::Unprocessable(format!(
            "The pipeline's branch filter excludes `{branch}`."
        ))),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /pipelines/{p}/builds/{n}/cancel`
pub async fn cancel_build(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<(String, i64)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let user = user.require_action(Action::Build)?;
    let (pipeline, number) = path.into_inner();
    state
        .engine
        .cancel(&pipeline, number, &user.username)
        .await?;
    Ok(see_other(urls::build(&pipeline, number)))
}

/// The Retry form of a failed build: its CSRF token and, from the board,
/// where to go back to.
#[derive(Debug, Deserialize)]
pub struct RetryForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub next: Option<String>,
}

/// `POST /pipelines/{p}/builds/{n}/retry`: queue a build of the same branch
/// and commit again; shows the new build, or goes back to `next` with a
/// message.
pub async fn retry_build(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<(String, i64)>,
    form: web::Form<RetryForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let user = user.require_action(Action::Build)?;
    let (pipeline, number) = path.into_inner();
    let outcome = state
        .engine
        .retry(&pipeline, number, &user.username)
        .await?;
    match outcome {
        QueueOutcome::Queued(build) => {
            set_flash(
                &session,
                format!(
                    "Build #{number} is retried as build #{} (queued).",
                    build.number
                ),
            );
            Ok(see_other(next_or(
                form.next.as_deref(),
                urls::build(&pipeline, build.number),
            )))
        }
        QueueOutcome::Filtered { branch } => Err(WebError::Unprocessable(format!(
            "The pipeline's branch filter excludes `{branch}`."
        ))),
    }
}

#[derive(Debug, Deserialize)]
pub struct SecretForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub csrf: String,
}

/// `POST /pipelines/{p}/secrets`: set a secret's value (never shown again).
pub async fn set_secret(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<String>,
    form: web::Form<SecretForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::ManageSecrets)?.username.clone();
    let pipeline = path.into_inner();
    let form = form.into_inner();
    let key = state.secret_key.clone();
    let target = pipeline.clone();
    state
        .with_conn::<_, WebError, _>(move |conn| {
            let value = SecretString::from(form.value);
            Ok(secrets::set_secret(
                conn,
                &key,
                &target,
                form.name.trim(),
                &value,
                &actor,
            )?)
        })
        .await?;
    Ok(see_other(format!("{}#secrets", urls::pipeline(&pipeline))))
}
