//! Deploying a release into a slot: unpack, start, health check, switch
//! the route, drain and stop the old process.

use super::router::{Route, RouteTable};
use super::{
    Current, ReleaseRef, SlotDeploy, SlotDeployed, Slots, first_line, key, lock, say,
    settings_json, settings_of, unpack,
};
use crate::domain::SlotProcessState;
use crate::engine::EngineError;
use crate::engine::blocking;
use crate::engine::jobs::runner::LogSender;
use crate::storage;
use crate::storage::slots::{self as store, SlotContent};

impl Slots {
    /// Deploys a release into a slot (see the module docs): unpack, start,
    /// health check, switch the route, drain and stop the old process.
    /// A failed health check leaves the old process serving and fails with
    /// the new one's log. Lines go to `log` (a task's log) as it goes.
    pub async fn deploy_to_slot(
        &self,
        request: SlotDeploy,
        log: Option<&LogSender>,
    ) -> Result<SlotDeployed, EngineError> {
        let app_lock = self.app_lock(&request.app);
        let _held = app_lock.lock().await;
        let (app, slot, version) = (
            request.app.clone(),
            request.slot.clone(),
            request.release.clone(),
        );
        let data_dir = self.inner.data_dir.clone();
        let from_dir = request.artifacts_dir.clone();
        let (prepared, source) = blocking(&self.inner.db, move |conn| {
            let (prepared, release) =
                Self::prepare(conn, &app, &slot, ReleaseRef::Version(&version))?;
            let source = match from_dir {
                Some(dir) => unpack::Source::Dir(dir),
                None => unpack::Source::Store {
                    data_dir,
                    artifacts: storage::list_artifacts(conn, release.id)?,
                },
            };
            Ok((prepared, source))
        })
        .await?;
        let (app, slot) = (request.app.as_str(), request.slot.as_str());
        let workdir = unpack::fresh_dir(&self.slot_dir(app, slot), &prepared.version);
        let (dest, start) = (workdir.clone(), prepared.app.start.clone());
        let files = tokio::task::spawn_blocking(move || unpack::unpack(&source, &dest, &start))
            .await
            .map_err(|e| EngineError::Io {
                context: "unpacking stopped".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
        say(
            log,
            format!(
                "unpacked {} {} ({files} files) into {}",
                app,
                prepared.version,
                workdir.display()
            ),
        )
        .await;
        let settings = settings_of(&prepared.app);
        let new = match self
            .launch(&prepared, slot, &workdir, &settings, None)
            .await
        {
            Ok(new) => new,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&workdir);
                return Err(e);
            }
        };
        say(
            log,
            format!(
                "started `{}` for {app}/{slot} on port {}",
                prepared.app.start,
                new.process.port()
            ),
        )
        .await;
        let timeout = request
            .health_timeout
            .unwrap_or(self.inner.config.health_timeout);
        let subject = format!("slot:{app}/{slot}");
        if let Err(why) = self.warm(&new, timeout, log).await {
            new.process.stop().await;
            let _ = std::fs::remove_dir_all(&workdir);
            let message = format!(
                "{app} {} did not become healthy in slot {slot}; the slot keeps serving what it served: {why}",
                prepared.version
            );
            let (slot_id, actor, detail) = (
                prepared.slot.id,
                request.actor.clone(),
                serde_json::json!({ "release": prepared.version, "error": why }).to_string(),
            );
            let short = first_line(&why);
            let recorded = blocking(&self.inner.db, move |conn| {
                Ok(store::record_slot_failure(
                    conn, slot_id, &short, &actor, &subject, &detail,
                )?)
            })
            .await;
            if let Err(e) = recorded {
                tracing::error!(error = %e, "cannot record a failed slot deployment");
            }
            return Err(EngineError::Conflict(message));
        }
        // Recorded first: if Slipway dies now, it restarts what is recorded.
        let content = SlotContent {
            release_id: Some(prepared.release_id),
            workdir: Some(workdir.display().to_string()),
            port: Some(i32::from(new.process.port())),
            settings: settings_json(&settings),
            since: Some(storage::now()),
            process_state: SlotProcessState::Running,
        };
        let (slot_id, actor) = (prepared.slot.id, request.actor.clone());
        let detail = serde_json::json!({
            "release": prepared.version,
            "port": new.process.port(),
            "workdir": workdir.display().to_string(),
        })
        .to_string();
        let recorded = blocking(&self.inner.db, move |conn| {
            Ok(store::record_slot_deploy(
                conn, slot_id, &content, &actor, &subject, &detail,
            )?)
        })
        .await;
        if let Err(e) = recorded {
            new.process.stop().await;
            let _ = std::fs::remove_dir_all(&workdir);
            return Err(e);
        }
        let old = self.install(app, slot, new.clone());
        say(
            log,
            format!(
                "{app}/{slot} now serves {} on port {}",
                prepared.version,
                new.process.port()
            ),
        )
        .await;
        let replaced = old.as_ref().map(|o| o.version.clone());
        if let Some(old) = old {
            self.retire(old, log).await;
        }
        Ok(SlotDeployed {
            app: app.to_string(),
            slot: slot.to_string(),
            release: prepared.version,
            port: new.process.port(),
            workdir,
            replaced,
        })
    }

    /// Makes `new` the slot's process and moves the route to it; returns
    /// the one it replaces.
    pub(super) fn install(&self, app: &str, slot: &str, new: Current) -> Option<Current> {
        let backend = new.process.backend();
        let old = lock(&self.inner.running).insert(key(app, slot), new);
        self.inner
            .routes
            .update(|map| RouteTable::set(map, app, slot, Route::Backend(backend)));
        old
    }

    /// Lets a replaced process finish its requests, stops it, and removes
    /// its directory when no slot uses it any more.
    pub(super) async fn retire(&self, old: Current, log: Option<&LogSender>) {
        let backend = old.process.backend();
        let drained = backend.drain(self.inner.config.drain_timeout).await;
        if !drained {
            say(
                log,
                format!(
                    "{} still had {} requests after {} s; stopping it anyway",
                    backend.label(),
                    backend.in_flight(),
                    self.inner.config.drain_timeout.as_secs()
                ),
            )
            .await;
        }
        old.process.stop().await;
        say(
            log,
            format!("stopped the old process ({})", backend.label()),
        )
        .await;
        let in_use = lock(&self.inner.running)
            .values()
            .any(|c| c.workdir == old.workdir);
        if !in_use {
            let dir = old.workdir.display().to_string();
            let still_recorded = blocking(&self.inner.db, move |conn| {
                Ok(store::list_all_slots(conn)?
                    .iter()
                    .any(|s| s.slot.workdir.as_deref() == Some(dir.as_str())))
            })
            .await
            .unwrap_or(true);
            if !still_recorded && let Err(e) = std::fs::remove_dir_all(&old.workdir) {
                tracing::warn!(dir = %old.workdir.display(), error = %e, "cannot remove a slot's old directory");
            }
        }
    }
}
