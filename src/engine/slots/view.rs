//! What the pages read of the slots: every slot with what runs there now,
//! a process's log tail, port and status.

use std::collections::HashMap;

use super::router;
use super::supervisor::{self, Health};
use super::{LastSwap, SlotView, Slots};
use crate::domain::{SwapState, slot_ops};
use crate::engine::blocking;
use crate::engine::{EngineError, pipelines};
use crate::storage::slots as store;

impl Slots {
    /// Every app and slot, with what runs there now: for the environments page.
    pub async fn list_slots_view(&self) -> Result<Vec<SlotView>, EngineError> {
        let (listings, swaps, pending, order, owners) = blocking(&self.inner.db, |conn| {
            let listings = store::list_all_slots(conn)?;
            let mut app_ids: Vec<i64> = listings.iter().map(|l| l.app.id).collect();
            app_ids.dedup();
            let swaps = store::recent_swaps(conn, &app_ids, 200)?;
            let mut pending = Vec::new();
            for id in &app_ids {
                if let Some(p) = store::find_pending_swap(conn, *id)? {
                    pending.push(p);
                }
            }
            // Slots in the order the definition names them, and the stage
            // each belongs to.
            let mut order: HashMap<(String, String), usize> = HashMap::new();
            let mut owners: HashMap<(String, String), (String, Vec<String>)> = HashMap::new();
            let mut seen = std::collections::HashSet::new();
            for l in &listings {
                if !seen.insert(l.pipeline.clone()) {
                    continue;
                }
                if let Ok(loaded) = pipelines::load(conn, &l.pipeline) {
                    for app in &loaded.definition.apps {
                        for (i, s) in app.slots.iter().enumerate() {
                            let k = (app.name.as_str().to_string(), s.as_str().to_string());
                            if let Some(stage) =
                                slot_ops::slot_owner(&loaded.definition, &k.0, &k.1)
                            {
                                owners.insert(
                                    k.clone(),
                                    (
                                        stage.name.as_str().to_string(),
                                        slot_ops::guards_in_words(stage),
                                    ),
                                );
                            }
                            order.insert(k, i);
                        }
                    }
                }
            }
            Ok((listings, swaps, pending, order, owners))
        })
        .await?;
        let mut views: Vec<SlotView> = listings
            .into_iter()
            .map(|l| {
                let current = self.current(&l.app.name, &l.slot.name);
                let status = current.as_ref().map(|c| c.process.status());
                let last = swaps
                    .iter()
                    .find(|s| {
                        s.app_id == l.app.id
                            && s.state != SwapState::Pending
                            && (s.from_slot == l.slot.name || s.to_slot == l.slot.name)
                    })
                    .map(|s| LastSwap {
                        from: s.from_slot.clone(),
                        to: s.to_slot.clone(),
                        state: s.state,
                        by: s
                            .decided_by
                            .clone()
                            .unwrap_or_else(|| s.requested_by.clone()),
                        at: s.finished_at.unwrap_or(s.created_at),
                    });
                let pending_swap = pending
                    .iter()
                    .find(|p| {
                        p.app_id == l.app.id
                            && (p.from_slot == l.slot.name || p.to_slot == l.slot.name)
                    })
                    .map(|p| (p.from_slot.clone(), p.to_slot.clone()));
                SlotView {
                    stage: owners
                        .get(&(l.app.name.clone(), l.slot.name.clone()))
                        .cloned(),
                    release_id: l.slot.release_id,
                    previous_release_id: l.slot.previous_release_id,
                    labels: router::labels(&l.app.name, &l.slot.name),
                    process: status
                        .as_ref()
                        .map(|s| s.state.as_str().to_string())
                        .unwrap_or_else(|| match l.slot.release_id {
                            Some(_) => l.slot.process_state.as_str().to_string(),
                            None => "empty".to_string(),
                        }),
                    restarts: status.as_ref().map(|s| s.restarts).unwrap_or(0),
                    health: status.map(|s| s.health).unwrap_or(Health::Unknown),
                    port: current.as_ref().map(|c| c.process.port()),
                    pipeline: l.pipeline,
                    app: l.app.name,
                    slot: l.slot.name,
                    release: l.version,
                    previous_release: l.previous_version,
                    since: l.slot.since,
                    last_swap_at: l.slot.last_swap_at,
                    error: l.slot.error,
                    pending_swap,
                    last_swap: last,
                }
            })
            .collect();
        views.sort_by_key(|v| {
            (
                v.app.clone(),
                order
                    .get(&(v.app.clone(), v.slot.clone()))
                    .copied()
                    .unwrap_or(usize::MAX),
                v.slot.clone(),
            )
        });
        Ok(views)
    }

    /// The last lines of a slot's process log (memory), newest last.
    pub fn log_tail(&self, app: &str, slot: &str, lines: usize) -> Vec<String> {
        self.current(app, slot)
            .map(|c| c.process.log_tail(lines))
            .unwrap_or_default()
    }

    /// The port a slot's process listens on now, if it runs.
    pub fn port_of(&self, app: &str, slot: &str) -> Option<u16> {
        self.current(app, slot).map(|c| c.process.port())
    }

    /// The supervisor's view of a slot's process, if it runs.
    pub fn process_status(&self, app: &str, slot: &str) -> Option<supervisor::ProcessStatus> {
        self.current(app, slot).map(|c| c.process.status())
    }
}
