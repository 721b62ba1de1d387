//! Swapping two slots of an app, with or without preview: warm the
//! source, then exchange routes, releases and non-sticky settings at once.

use super::router::{Route, RouteTable};
use super::{
    Current, ReleaseRef, SlotSettings, Slots, SwapOutcome, first_line, key, lock, parse_settings,
    say, settings_json, swapped_settings,
};
use crate::domain::SlotProcessState;
use crate::engine::EngineError;
use crate::engine::blocking;
use crate::engine::jobs::runner::LogSender;
use crate::storage::slots::{self as store, SlotContent, SwapRecord};
use crate::storage::{self, AppRow, DbConn, SlotRow};

impl Slots {
    /// Swaps two slots of an app (see the module docs): warm `from`, then
    /// exchange routes, releases and non-sticky settings at once. Swapping
    /// back is the rollback.
    pub async fn swap(
        &self,
        app: &str,
        from: &str,
        to: &str,
        actor: &str,
        log: Option<&LogSender>,
    ) -> Result<SwapOutcome, EngineError> {
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        self.swap_locked(app, (from, to), actor, SwapCheck::default(), log)
            .await
    }

    /// [`Slots::swap`] for a deployment of `release`: refused (nothing
    /// changes) unless `from` runs that release, so the release the
    /// deployment records is the one that goes live. With `confirm`, it
    /// completes the app's pending swap with preview of `from` into `to`
    /// (refused when none waits).
    pub async fn swap_release(
        &self,
        (app, from, to): (&str, &str, &str),
        release: &str,
        confirm: bool,
        actor: &str,
        log: Option<&LogSender>,
    ) -> Result<SwapOutcome, EngineError> {
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        let pending_id = if confirm {
            let pending = self.pending_of(app).await?;
            if pending.from_slot != from || pending.to_slot != to {
                return Err(EngineError::Conflict(format!(
                    "The swap waiting for confirmation is {} into {}, not {from} into {to}.",
                    pending.from_slot, pending.to_slot
                )));
            }
            Some(pending.id)
        } else {
            None
        };
        let check = SwapCheck {
            pending_id,
            expected: Some(release),
        };
        self.swap_locked(app, (from, to), actor, check, log).await
    }

    pub(super) async fn swap_locked(
        &self,
        app: &str,
        (from, to): (&str, &str),
        actor: &str,
        check: SwapCheck<'_>,
        log: Option<&LogSender>,
    ) -> Result<SwapOutcome, EngineError> {
        let SwapCheck {
            pending_id,
            expected,
        } = check;
        if from == to {
            return Err(EngineError::Invalid(format!(
                "A slot cannot be swapped with itself ({from})."
            )));
        }
        let (app_name, from_name, to_name) = (app.to_string(), from.to_string(), to.to_string());
        let (app_row, from_row, to_row, pending) = blocking(&self.inner.db, move |conn| {
            let (app_row, _) = store::find_app(conn, &app_name)?.ok_or_else(|| {
                EngineError::NotFound(format!("There is no app named `{app_name}`."))
            })?;
            let find = |conn: &mut DbConn, name: &str| {
                store::find_slot(conn, app_row.id, name)?.ok_or_else(|| {
                    EngineError::NotFound(format!("The app {app_name} has no slot named `{name}`."))
                })
            };
            let from_row = find(conn, &from_name)?;
            let to_row = find(conn, &to_name)?;
            let pending = store::find_pending_swap(conn, app_row.id)?;
            Ok((app_row, from_row, to_row, pending))
        })
        .await?;
        if pending_id.is_none()
            && let Some(p) = &pending
        {
            return Err(EngineError::Conflict(format!(
                "A swap of {} into {} waits for confirmation; confirm or cancel it first.",
                p.from_slot, p.to_slot
            )));
        }
        let Some(source) = self.current(app, from) else {
            return Err(EngineError::Conflict(format!(
                "The slot {from} of {app} runs nothing, so there is nothing to swap into {to}."
            )));
        };
        if let Some(expected) = expected
            && source.version != expected
        {
            return Err(EngineError::Conflict(format!(
                "The slot {from} of {app} runs {}, not {expected}; deploy {expected} to {from} first, then swap.",
                source.version
            )));
        }
        let target = self.current(app, to);
        let from_settings = parse_settings(&from_row.settings);
        let to_settings = parse_settings(&to_row.settings);
        let new_to_settings = swapped_settings(&to_settings, &from_settings);
        let new_from_settings = swapped_settings(&from_settings, &to_settings);
        let detail = swap_detail(from, to, &source.version, target.as_ref(), false);
        let mut record = swap_record(
            app,
            &app_row,
            (from, &from_row),
            (to, &to_row),
            actor,
            detail,
        );
        record.pending_id = pending_id;
        // Warm the source: with the target's sticky settings it must run with.
        let restarted = source.settings != new_to_settings;
        let warm = if restarted {
            say(
                log,
                format!(
                    "starting {} again in {from} with {to}'s sticky settings",
                    source.version
                ),
            )
            .await;
            match self
                .relaunch(&app_row, &source, to, &new_to_settings, None)
                .await
            {
                Ok(warm) => warm,
                Err(e) => {
                    self.fail_swap(&record, &e.to_string()).await;
                    return Err(e);
                }
            }
        } else {
            source.clone()
        };
        let timeout = self.inner.config.health_timeout;
        if let Err(why) = self.warm(&warm, timeout, log).await {
            if restarted {
                warm.process.stop().await;
            }
            let message = format!(
                "{from} ({}) is not healthy, so it was not swapped into {to}; nothing changed: {why}",
                source.version
            );
            self.fail_swap(&record, &first_line(&message)).await;
            return Err(EngineError::Conflict(message));
        }
        let at = storage::now();
        record.to_content = SlotContent {
            release_id: Some(warm.release_id),
            workdir: Some(warm.workdir.display().to_string()),
            port: Some(i32::from(warm.process.port())),
            settings: settings_json(&new_to_settings),
            since: Some(at),
            process_state: SlotProcessState::Running,
        };
        record.from_content = match &target {
            Some(t) => SlotContent {
                release_id: Some(t.release_id),
                workdir: Some(t.workdir.display().to_string()),
                port: Some(i32::from(t.process.port())),
                settings: settings_json(&new_from_settings),
                since: Some(at),
                process_state: SlotProcessState::Running,
            },
            None => SlotContent {
                release_id: None,
                workdir: None,
                port: None,
                settings: settings_json(&new_from_settings),
                since: None,
                process_state: SlotProcessState::Stopped,
            },
        };
        let to_save = record.clone();
        let saved = blocking(&self.inner.db, move |conn| {
            Ok(store::record_swap(conn, &to_save)?)
        })
        .await;
        if let Err(e) = saved {
            if restarted {
                warm.process.stop().await;
            }
            self.fail_swap(&record, &e.to_string()).await;
            return Err(e);
        }
        // The switch: both host names move in one store of the table.
        {
            let mut running = lock(&self.inner.running);
            running.insert(key(app, to), warm.clone());
            match &target {
                Some(t) => running.insert(key(app, from), t.clone()),
                None => running.remove(&key(app, from)),
            };
            let (warm_backend, target_route) = (
                warm.process.backend(),
                match &target {
                    Some(t) => Route::Backend(t.process.backend()),
                    None => Route::Idle {
                        app: app.to_string(),
                        slot: from.to_string(),
                    },
                },
            );
            self.inner.routes.update(|map| {
                RouteTable::set(map, app, to, Route::Backend(warm_backend));
                RouteTable::set(map, app, from, target_route);
            });
        }
        say(
            log,
            format!(
                "swapped: {app}/{to} now serves {}{}",
                warm.version,
                target
                    .as_ref()
                    .map(|t| format!(", {app}/{from} serves {}", t.version))
                    .unwrap_or_default()
            ),
        )
        .await;
        if restarted {
            self.retire(source, log).await;
        }
        // The process that moved into `from` runs with `to`'s sticky
        // settings; give it `from`'s own (it no longer takes live traffic).
        if let Some(t) = &target
            && t.settings != new_from_settings
        {
            let replaced = match self
                .relaunch(&app_row, t, from, &new_from_settings, None)
                .await
            {
                Ok(fresh) => match self.warm(&fresh, timeout, log).await {
                    Ok(()) => Some(fresh),
                    Err(why) => {
                        fresh.process.stop().await;
                        tracing::warn!(app, slot = from, "{why}");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(app, slot = from, error = %e, "cannot restart a swapped slot with its own settings");
                    None
                }
            };
            if let Some(fresh) = replaced
                && let Some(old) = self.install(app, from, fresh)
            {
                self.retire(old, log).await;
            }
        }
        Ok(SwapOutcome {
            app: app.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            release: Some(warm.version.clone()),
            replaced: target.map(|t| t.version),
            pending: false,
        })
    }

    pub(super) async fn fail_swap(&self, record: &SwapRecord, error: &str) {
        let (record, error) = (record.clone(), error.to_string());
        let saved = blocking(&self.inner.db, move |conn| {
            Ok(store::record_swap_failure(conn, &record, &error)?)
        })
        .await;
        if let Err(e) = saved {
            tracing::error!(error = %e, "cannot record a failed swap");
        }
    }

    /// Starts the release `current` runs again, as slot `slot` with `settings`.
    pub(super) async fn relaunch(
        &self,
        app_row: &AppRow,
        current: &Current,
        slot: &str,
        settings: &SlotSettings,
        port: Option<u16>,
    ) -> Result<Current, EngineError> {
        let (app, slot_name, release_id) =
            (app_row.name.clone(), slot.to_string(), current.release_id);
        let (prepared, _) = blocking(&self.inner.db, move |conn| {
            Self::prepare(conn, &app, &slot_name, ReleaseRef::Id(release_id))
        })
        .await?;
        self.launch(&prepared, slot, &current.workdir, settings, port)
            .await
    }

    /// A swap with preview: `from` starts again with `to`'s sticky settings
    /// (reachable at its own host name), is health-checked, and the swap
    /// waits for [`Slots::confirm_swap`] or [`Slots::cancel_swap`].
    pub async fn swap_preview(
        &self,
        app: &str,
        from: &str,
        to: &str,
        actor: &str,
    ) -> Result<SwapOutcome, EngineError> {
        if from == to {
            return Err(EngineError::Invalid(format!(
                "A slot cannot be swapped with itself ({from})."
            )));
        }
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        let (app_name, from_name, to_name) = (app.to_string(), from.to_string(), to.to_string());
        let (app_row, from_row, to_row) = blocking(&self.inner.db, move |conn| {
            let (app_row, _) = store::find_app(conn, &app_name)?.ok_or_else(|| {
                EngineError::NotFound(format!("There is no app named `{app_name}`."))
            })?;
            let from_row = store::find_slot(conn, app_row.id, &from_name)?;
            let to_row = store::find_slot(conn, app_row.id, &to_name)?;
            match (from_row, to_row) {
                (Some(f), Some(t)) => Ok((app_row, f, t)),
                _ => Err(EngineError::NotFound(format!(
                    "The app {app_name} has no slot `{from_name}` or `{to_name}`."
                ))),
            }
        })
        .await?;
        let Some(source) = self.current(app, from) else {
            return Err(EngineError::Conflict(format!(
                "The slot {from} of {app} runs nothing, so there is nothing to swap into {to}."
            )));
        };
        let target = self.current(app, to);
        let preview_settings = swapped_settings(
            &parse_settings(&to_row.settings),
            &parse_settings(&from_row.settings),
        );
        let detail = swap_detail(from, to, &source.version, target.as_ref(), true);
        let record = swap_record(
            app,
            &app_row,
            (from, &from_row),
            (to, &to_row),
            actor,
            detail,
        );
        let pending = blocking(&self.inner.db, {
            let record = record.clone();
            move |conn| Ok(store::insert_pending_swap(conn, &record)?)
        })
        .await?;
        if source.settings != preview_settings {
            let attempt = async {
                let fresh = self
                    .relaunch(&app_row, &source, from, &preview_settings, None)
                    .await?;
                if let Err(why) = self
                    .warm(&fresh, self.inner.config.health_timeout, None)
                    .await
                {
                    fresh.process.stop().await;
                    return Err(EngineError::Conflict(format!(
                        "{from} did not become healthy with {to}'s settings; the swap was not prepared: {why}"
                    )));
                }
                Ok(fresh)
            };
            match attempt.await {
                Ok(fresh) => {
                    if let Some(old) = self.install(app, from, fresh) {
                        self.retire(old, None).await;
                    }
                }
                Err(e) => {
                    let mut failed = record.clone();
                    failed.pending_id = Some(pending.id);
                    self.fail_swap(&failed, &first_line(&e.to_string())).await;
                    return Err(e);
                }
            }
        }
        Ok(SwapOutcome {
            app: app.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            release: Some(source.version),
            replaced: target.map(|t| t.version),
            pending: true,
        })
    }

    /// Completes the app's pending swap with preview.
    pub async fn confirm_swap(&self, app: &str, actor: &str) -> Result<SwapOutcome, EngineError> {
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        let pending = self.pending_of(app).await?;
        let check = SwapCheck {
            pending_id: Some(pending.id),
            expected: None,
        };
        self.swap_locked(
            app,
            (&pending.from_slot, &pending.to_slot),
            actor,
            check,
            None,
        )
        .await
    }

    /// Cancels the app's pending swap with preview: the source slot runs
    /// with its own settings again.
    pub async fn cancel_swap(&self, app: &str, actor: &str) -> Result<(), EngineError> {
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        let pending = self.pending_of(app).await?;
        let (id, actor_name, subject) = (pending.id, actor.to_string(), format!("app:{app}"));
        let detail =
            serde_json::json!({ "from": pending.from_slot, "to": pending.to_slot }).to_string();
        let canceled = blocking(&self.inner.db, move |conn| {
            Ok(store::cancel_pending_swap(
                conn,
                id,
                &actor_name,
                &subject,
                &detail,
            )?)
        })
        .await?;
        if !canceled {
            return Err(EngineError::Conflict(
                "The swap no longer waits for confirmation.".into(),
            ));
        }
        // Back to the slot's own settings.
        let (app_name, from) = (app.to_string(), pending.from_slot.clone());
        let (app_row, from_row) = blocking(&self.inner.db, move |conn| {
            let (app_row, _) = store::find_app(conn, &app_name)?
                .ok_or_else(|| EngineError::NotFound(format!("no app `{app_name}`")))?;
            let row = store::find_slot(conn, app_row.id, &from)?
                .ok_or_else(|| EngineError::NotFound(format!("no slot `{from}`")))?;
            Ok((app_row, row))
        })
        .await?;
        let own = parse_settings(&from_row.settings);
        if let Some(current) = self.current(app, &pending.from_slot)
            && current.settings != own
        {
            let fresh = self
                .relaunch(&app_row, &current, &pending.from_slot, &own, None)
                .await?;
            if let Err(why) = self
                .warm(&fresh, self.inner.config.health_timeout, None)
                .await
            {
                fresh.process.stop().await;
                return Err(EngineError::Conflict(format!(
                    "The swap was canceled, but {} did not become healthy with its own settings again (it keeps the preview's): {why}",
                    pending.from_slot
                )));
            }
            if let Some(old) = self.install(app, &pending.from_slot, fresh) {
                self.retire(old, None).await;
            }
        }
        Ok(())
    }

    /// The app's swap with preview waiting for confirmation, as (from, to);
    /// `Conflict` when none waits.
    pub async fn pending_swap(&self, app: &str) -> Result<(String, String), EngineError> {
        let pending = self.pending_of(app).await?;
        Ok((pending.from_slot, pending.to_slot))
    }

    pub(super) async fn pending_of(&self, app: &str) -> Result<storage::SlotSwapRow, EngineError> {
        let app_name = app.to_string();
        blocking(&self.inner.db, move |conn| {
            let (app_row, _) = store::find_app(conn, &app_name)?.ok_or_else(|| {
                EngineError::NotFound(format!("There is no app named `{app_name}`."))
            })?;
            store::find_pending_swap(conn, app_row.id)?.ok_or_else(|| {
                EngineError::Conflict(format!("No swap of {app_name} waits for confirmation."))
            })
        })
        .await
    }
}

/// What a swap checks first: the pending swap (with preview) it
/// completes, and the release the source must run.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SwapCheck<'a> {
    pending_id: Option<i64>,
    expected: Option<&'a str>,
}

/// The record of a swap of `from` into `to` of `app`: what each slot holds
/// after it, the releases, who, and the audit detail (not completing a
/// pending swap: set `pending_id` for that).
fn swap_record(
    app: &str,
    app_row: &AppRow,
    (from, from_row): (&str, &SlotRow),
    (to, to_row): (&str, &SlotRow),
    actor: &str,
    detail: serde_json::Value,
) -> SwapRecord {
    SwapRecord {
        app_id: app_row.id,
        from_slot_id: from_row.id,
        to_slot_id: to_row.id,
        from_slot: from.to_string(),
        to_slot: to.to_string(),
        from_content: SlotContent::of(from_row),
        to_content: SlotContent::of(to_row),
        from_release_id: from_row.release_id,
        to_release_id: to_row.release_id,
        pending_id: None,
        actor: actor.to_string(),
        subject: format!("app:{app}"),
        detail: detail.to_string(),
    }
}

/// The audit detail of a swap: the slots, the release going live and the
/// one it replaces; `preview` when it waits for confirmation.
fn swap_detail(
    from: &str,
    to: &str,
    release: &str,
    replaced: Option<&Current>,
    preview: bool,
) -> serde_json::Value {
    let mut detail = serde_json::json!({
        "from": from,
        "to": to,
        "release": release,
        "replaced": replaced.map(|t| t.version.clone()),
    });
    if preview {
        detail["preview"] = serde_json::Value::Bool(true);
    }
    detail
}
