//! Start-up and watching: restore every slot from its stored directory,
//! keep idle routes in sync, restart what stops answering.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::router::{self, Route};
use super::supervisor::{self, Health, ProcessState};
use super::{Current, ENGINE_ACTOR, Key, ReleaseRef, Slots, key, lock, parse_settings};
use crate::domain::SlotProcessState;
use crate::engine::EngineError;
use crate::engine::blocking;
use crate::storage::slots as store;
use crate::storage::{AppRow, SlotRow};

impl Slots {
    /// Starts every slot that has a release again, from its stored
    /// directory, after killing what a killed Slipway left running; slots
    /// without one answer 503. Then watches them (health, new slots) until
    /// [`Slots::shutdown`]. Called by `Engine::start`.
    pub async fn restore(&self) -> Result<(), EngineError> {
        let listings = blocking(&self.inner.db, |conn| Ok(store::list_all_slots(conn)?)).await?;
        for listing in &listings {
            supervisor::kill_leftovers(&self.slot_dir(&listing.app.name, &listing.slot.name));
        }
        self.sync_idle_routes(&listings);
        for listing in listings {
            let (Some(release_id), Some(workdir)) =
                (listing.slot.release_id, listing.slot.workdir.clone())
            else {
                continue;
            };
            let (app, slot) = (listing.app.name.clone(), listing.slot.name.clone());
            if self.current(&app, &slot).is_some() {
                continue;
            }
            let started = self
                .start_stored(&listing.app, &listing.slot, release_id, &workdir)
                .await;
            match started {
                Ok(current) => {
                    tracing::info!(
                        app,
                        slot,
                        release = %current.version,
                        port = current.process.port(),
                        "slot started again from {workdir}"
                    );
                    self.install(&app, &slot, current);
                }
                Err(e) => {
                    tracing::error!(app, slot, error = %e, "cannot start a slot again");
                    let (slot_id, message) = (listing.slot.id, e.to_string());
                    let _ = blocking(&self.inner.db, move |conn| {
                        Ok(
                            store::set_slot_process(conn, slot_id, SlotProcessState::Failed, None)
                                .and_then(|()| {
                                    store::record_slot_failure(
                                        conn,
                                        slot_id,
                                        &message,
                                        ENGINE_ACTOR,
                                        "slot:restart",
                                        "{}",
                                    )
                                })?,
                        )
                    })
                    .await;
                }
            }
        }
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.monitor_loop().await });
        Ok(())
    }

    pub(super) async fn start_stored(
        &self,
        app_row: &AppRow,
        slot_row: &SlotRow,
        release_id: i64,
        workdir: &str,
    ) -> Result<Current, EngineError> {
        if !Path::new(workdir).is_dir() {
            return Err(EngineError::Invalid(format!(
                "its directory {workdir} is gone; deploy the release again"
            )));
        }
        let (app, slot) = (app_row.name.clone(), slot_row.name.clone());
        let (prepared, _) = blocking(&self.inner.db, move |conn| {
            Self::prepare(conn, &app, &slot, ReleaseRef::Id(release_id))
        })
        .await?;
        let settings = parse_settings(&slot_row.settings);
        let port = slot_row.port.and_then(|p| u16::try_from(p).ok());
        let current = self
            .launch(
                &prepared,
                &slot_row.name,
                Path::new(workdir),
                &settings,
                port,
            )
            .await?;
        if Some(current.process.port()) != port {
            let (slot_id, new_port) = (slot_row.id, i32::from(current.process.port()));
            blocking(&self.inner.db, move |conn| {
                Ok(store::set_slot_process(
                    conn,
                    slot_id,
                    SlotProcessState::Running,
                    Some(new_port),
                )?)
            })
            .await?;
        }
        Ok(current)
    }

    /// Slots without a process answer 503; slots that no longer exist, 404.
    pub(super) fn sync_idle_routes(&self, listings: &[store::SlotListing]) {
        let running: Vec<Key> = lock(&self.inner.running).keys().cloned().collect();
        self.inner.routes.update(|map| {
            let mut wanted: HashMap<String, Route> = HashMap::new();
            for l in listings {
                let k = key(&l.app.name, &l.slot.name);
                if running.contains(&k) {
                    continue;
                }
                for label in router::labels(&l.app.name, &l.slot.name) {
                    wanted.insert(
                        label,
                        Route::Idle {
                            app: l.app.name.clone(),
                            slot: l.slot.name.clone(),
                        },
                    );
                }
            }
            map.retain(|label, route| {
                matches!(route, Route::Backend(_)) || wanted.contains_key(label)
            });
            for (label, route) in wanted {
                map.entry(label).or_insert(route);
            }
        });
    }

    pub(super) async fn monitor_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.monitor_interval) => {}
                _ = shutdown.cancelled() => break,
            }
            match blocking(&self.inner.db, |conn| Ok(store::list_all_slots(conn)?)).await {
                Ok(listings) => self.sync_idle_routes(&listings),
                Err(e) => tracing::warn!(error = %e, "cannot read the slots"),
            }
            let current: Vec<Current> = lock(&self.inner.running).values().cloned().collect();
            for c in current {
                if c.process.status().state == ProcessState::Running {
                    c.process
                        .probe(&self.inner.client, &c.health_path, Duration::from_secs(2))
                        .await;
                } else {
                    c.process
                        .set_health(Health::Unhealthy("the process is not running".into()));
                }
            }
        }
    }
}
