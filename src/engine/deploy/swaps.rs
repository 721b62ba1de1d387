//! Swaps and rollbacks of slots that a person asks for (the environments
//! page, the API), as the pipeline sees them (issue 13, `docs/slots.md`):
//!
//! - [`review`] says what a swap would change — the releases before and
//!   after in both slots, the settings that move, the stage the target slot
//!   belongs to with its approvals and gates, and whether it is a rollback —
//!   for the confirmation page and for [`request`].
//! - [`request`] turns it into a deployment of the stage that owns the
//!   target slot (trigger `swap` or `rollback`, the swap as its one task),
//!   which waits for the stage's approvals and gates unless a release
//!   manager overrides them with a reason. A slot no stage owns is swapped
//!   directly ([`SwapRoute::Direct`]).

use crate::domain::slot_ops::{self, SlotOperation};
use crate::storage::slots as store;
use crate::storage::{self, DbConn};

use crate::engine::deploy::requests::DeployRequest;
use crate::engine::slots::{SlotSettings, parse_settings, swapped_settings};
use crate::engine::{EngineError, pipelines};

/// A setting of the target slot that the swap changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingChange {
    pub name: String,
    /// As written (secret references, never secret values); `None`: unset.
    pub before: Option<String>,
    pub after: Option<String>,
}

/// What a swap of `from` into `to` would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapReview {
    pub pipeline: String,
    pub app: String,
    pub from: String,
    pub to: String,
    /// The release that goes into `to` (what `from` runs).
    pub incoming: String,
    /// The release `to` runs now, which goes into `from`.
    pub outgoing: Option<String>,
    /// The settings of `to` that change (sticky ones stay).
    pub settings: Vec<SettingChange>,
    /// The stage `to` belongs to: the swap is a deployment of it.
    pub stage: Option<String>,
    /// That stage's approvals and gates, in words.
    pub guards: Vec<String>,
    /// The stage `from` belongs to (its live release changes too).
    pub source_stage: Option<String>,
    /// Swapping puts back the release `to` ran before the last swap, an
    /// older one: a rollback, which needs a reason.
    pub rollback: bool,
    /// The app's swap with preview waiting for confirmation: (from, to).
    pub pending: Option<(String, String)>,
}

impl SwapReview {
    /// Whether the swap waiting for confirmation is this one.
    pub fn confirms_preview(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|(f, t)| *f == self.from && *t == self.to)
    }
}

fn changes(before: &SlotSettings, after: &SlotSettings) -> Vec<SettingChange> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, a) = (
                before.get(name).map(|s| s.value.clone()),
                after.get(name).map(|s| s.value.clone()),
            );
            (b != a).then(|| SettingChange {
                name: name.clone(),
                before: b,
                after: a,
            })
        })
        .collect()
}

/// What swapping `from` into `to` of `app` would change. Unknown app or
/// slot → `NotFound`; the same slot twice → `Invalid`; `from` running
/// nothing → `Conflict`.
pub fn review(
    conn: &mut DbConn,
    app: &str,
    from: &str,
    to: &str,
) -> Result<SwapReview, EngineError> {
    if from == to {
        return Err(EngineError::Invalid(format!(
            "A slot cannot be swapped with itself ({from})."
        )));
    }
    let (app_row, pipeline) = store::find_app(conn, app)?
        .ok_or_else(|| EngineError::NotFound(format!("There is no app named `{app}`.")))?;
    let find = |conn: &mut DbConn, name: &str| {
        store::find_slot(conn, app_row.id, name)?.ok_or_else(|| {
            EngineError::NotFound(format!("The app {app} has no slot named `{name}`."))
        })
    };
    let from_row = find(conn, from)?;
    let to_row = find(conn, to)?;
    let version = |conn: &mut DbConn, id: Option<i64>| -> Result<Option<String>, EngineError> {
        Ok(match id {
            Some(id) => storage::find_release_by_id(conn, id)?.map(|r| r.version),
            None => None,
        })
    };
    let Some(incoming) = version(conn, from_row.release_id)? else {
        return Err(EngineError::Conflict(format!(
            "The slot {from} of {app} runs nothing, so there is nothing to swap into {to}."
        )));
    };
    let outgoing = version(conn, to_row.release_id)?;
    let loaded = pipelines::load(conn, &pipeline)?;
    let owner = slot_ops::slot_owner(&loaded.definition, app, to);
    let before = parse_settings(&to_row.settings);
    let after = swapped_settings(&before, &parse_settings(&from_row.settings));
    let pending = store::find_pending_swap(conn, app_row.id)?;
    Ok(SwapReview {
        app: app.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        incoming,
        outgoing,
        settings: changes(&before, &after),
        stage: owner.map(|s| s.name.as_str().to_string()),
        guards: owner.map(slot_ops::guards_in_words).unwrap_or_default(),
        source_stage: slot_ops::slot_owner(&loaded.definition, app, from)
            .map(|s| s.name.as_str().to_string()),
        rollback: slot_ops::is_rollback(
            to_row.release_id,
            from_row.release_id,
            to_row.previous_release_id,
        ),
        pending: pending.map(|p| (p.from_slot, p.to_slot)),
        pipeline: loaded.name,
    })
}

/// What a person asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapAsk {
    pub app: String,
    pub from: String,
    pub to: String,
    pub actor: String,
    /// The person means a rollback (the Roll back action): refused when
    /// the swap would not put an older release back.
    pub rollback: bool,
    /// Why (required for a rollback).
    pub reason: Option<String>,
    /// A release manager skips the stage's approvals and gates, and why.
    pub override_reason: Option<String>,
    /// Confirms the swap with preview of `from` into `to` that waits.
    pub confirm: bool,
}

/// How a swap goes ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapRoute {
    /// As a deployment of the stage that owns the target slot.
    Deployment(Box<DeployRequest>),
    /// Directly: no stage owns the target slot.
    Direct { reason: Option<String> },
}

/// Checks a person's swap against what [`review`] found and says how it
/// goes ahead.
pub fn request(review: &SwapReview, ask: &SwapAsk) -> Result<SwapRoute, EngineError> {
    match &review.pending {
        Some((f, t)) if !ask.confirm => {
            return Err(EngineError::Conflict(format!(
                "A swap of {f} into {t} waits for confirmation; confirm or cancel it first."
            )));
        }
        None if ask.confirm => {
            return Err(EngineError::Conflict(format!(
                "No swap of {} into {} waits for confirmation.",
                review.from, review.to
            )));
        }
        _ if ask.confirm && !review.confirms_preview() => {
            return Err(EngineError::Conflict(format!(
                "The swap waiting for confirmation is not {} into {}.",
                review.from, review.to
            )));
        }
        _ => {}
    }
    let what = if ask.rollback {
        "A rollback"
    } else {
        "This swap"
    };
    if ask.rollback && !review.rollback {
        return Err(EngineError::Refused(format!(
            "Swapping {} into {} puts {} in {}, which is not the older release {} ran before; that is no rollback.",
            review.from, review.to, review.incoming, review.to, review.to
        )));
    }
    let reason = match &ask.reason {
        Some(text) if !text.trim().is_empty() => Some(
            slot_ops::reason_text(Some(text), what)
                .map_err(|e| EngineError::Invalid(e.to_string()))?,
        ),
        _ if ask.rollback => {
            return Err(EngineError::Invalid(format!(
                "A rollback of {} to {} needs a reason.",
                review.to, review.incoming
            )));
        }
        _ => None,
    };
    let override_reason = ask
        .override_reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let Some(stage) = &review.stage else {
        if override_reason.is_some() {
            return Err(EngineError::Invalid(format!(
                "No stage owns the slot {}, so there are no approvals or gates to override.",
                review.to
            )));
        }
        return Ok(SwapRoute::Direct { reason });
    };
    Ok(SwapRoute::Deployment(Box::new(DeployRequest {
        pipeline: review.pipeline.clone(),
        release: review.incoming.clone(),
        stage: stage.clone(),
        trigger: if ask.rollback { "rollback" } else { "swap" }.into(),
        requested_by: ask.actor.clone(),
        reason,
        operation: Some(SlotOperation {
            app: review.app.clone(),
            from: review.from.clone(),
            to: review.to.clone(),
            preview: ask.confirm,
        }),
        override_reason,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review() -> SwapReview {
        SwapReview {
            pipeline: "web".into(),
            app: "shop".into(),
            from: "staging".into(),
            to: "production".into(),
            incoming: "1.0.1".into(),
            outgoing: Some("1.0.2".into()),
            settings: Vec::new(),
            stage: Some("production".into()),
            guards: vec!["approval before the deployment by group:management".into()],
            source_stage: Some("preprod".into()),
            rollback: true,
            pending: None,
        }
    }

    fn ask() -> SwapAsk {
        SwapAsk {
            app: "shop".into(),
            from: "staging".into(),
            to: "production".into(),
            actor: "rita".into(),
            ..SwapAsk::default()
        }
    }

    #[test]
    fn a_swap_into_an_owned_slot_is_a_deployment_of_its_stage() {
        let SwapRoute::Deployment(req) = request(&review(), &ask()).unwrap() else {
            panic!("not a deployment");
        };
        assert_eq!(req.stage, "production");
        assert_eq!(req.release, "1.0.1");
        assert_eq!(req.trigger, "swap");
        assert_eq!(req.override_reason, None);
        let op = req.operation.unwrap();
        assert_eq!(
            (op.from.as_str(), op.to.as_str()),
            ("staging", "production")
        );
    }

    #[test]
    fn a_rollback_needs_a_reason_and_an_older_release() {
        let rollback = SwapAsk {
            rollback: true,
            ..ask()
        };
        let err = request(&review(), &rollback).unwrap_err();
        assert_eq!(
            err.to_string(),
            "A rollback of production to 1.0.1 needs a reason."
        );
        let with_reason = SwapAsk {
            reason: Some(" checkout broke ".into()),
            ..rollback.clone()
        };
        let SwapRoute::Deployment(req) = request(&review(), &with_reason).unwrap() else {
            panic!("not a deployment");
        };
        assert_eq!(req.trigger, "rollback");
        assert_eq!(req.reason.as_deref(), Some("checkout broke"));
        // Not older: no rollback.
        let newer = SwapReview {
            rollback: false,
            ..review()
        };
        assert!(matches!(
            request(&newer, &with_reason),
            Err(EngineError::Refused(_))
        ));
    }

    #[test]
    fn a_slot_no_stage_owns_is_swapped_directly_and_has_nothing_to_override() {
        let free = SwapReview {
            stage: None,
            guards: Vec::new(),
            ..review()
        };
        assert_eq!(
            request(&free, &ask()).unwrap(),
            SwapRoute::Direct { reason: None }
        );
        let overriding = SwapAsk {
            override_reason: Some("hotfix".into()),
            ..ask()
        };
        assert!(matches!(
            request(&free, &overriding),
            Err(EngineError::Invalid(_))
        ));
        let SwapRoute::Deployment(req) = request(&review(), &overriding).unwrap() else {
            panic!("not a deployment");
        };
        assert_eq!(req.override_reason.as_deref(), Some("hotfix"));
    }

    #[test]
    fn a_pending_preview_is_confirmed_only_on_purpose() {
        let pending = SwapReview {
            pending: Some(("staging".into(), "production".into())),
            ..review()
        };
        // A plain swap while a preview waits: refused.
        assert!(matches!(
            request(&pending, &ask()),
            Err(EngineError::Conflict(_))
        ));
        let confirm = SwapAsk {
            confirm: true,
            ..ask()
        };
        let SwapRoute::Deployment(req) = request(&pending, &confirm).unwrap() else {
            panic!("not a deployment");
        };
        assert!(req.operation.unwrap().preview);
        // Nothing waits, or another swap waits: nothing to confirm.
        assert!(matches!(
            request(&review(), &confirm),
            Err(EngineError::Conflict(_))
        ));
        let other = SwapReview {
            pending: Some(("dev".into(), "production".into())),
            ..review()
        };
        assert!(matches!(
            request(&other, &confirm),
            Err(EngineError::Conflict(_))
        ));
    }

    #[test]
    fn settings_that_move_are_listed() {
        use crate::engine::slots::SlotSetting;
        let s = |v: &str, sticky| SlotSetting {
            value: v.into(),
            sticky,
        };
        let before: SlotSettings = [("A".to_string(), s("1", false)), ("B".into(), s("x", true))]
            .into_iter()
            .collect();
        let after: SlotSettings = [("A".to_string(), s("2", false)), ("B".into(), s("x", true))]
            .into_iter()
            .collect();
        assert_eq!(
            changes(&before, &after),
            vec![SettingChange {
                name: "A".into(),
                before: Some("1".into()),
                after: Some("2".into()),
            }]
        );
    }
}
