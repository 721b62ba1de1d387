//! "Why is this waiting", computed once: the facts behind
//! [`crate::domain::waiting::Explainer`] gathered from stored rows, for the
//! release board (its rows are each pipeline's newest releases:
//! [`explainer_from_rows`]) and a pipeline's release history (whose rows
//! may be old ones: [`history_explainer`]). Also each stage's live release
//! as the tables mark it ([`live_marks`]).

use std::collections::{HashMap, HashSet};

use chrono::Utc;

pub use crate::domain::waiting::{DeploymentFacts, Explainer, StageFacts, queue_positions};

use crate::domain::DeploymentState;
use crate::engine::EngineError;
use crate::engine::pipelines::schedules::schedule_of_stage;
use crate::storage::schedules as store;
use crate::storage::{DbConn, DeploymentRow, PipelineRow, ReleaseRow, StageRow};

impl From<&DeploymentRow> for DeploymentFacts {
    fn from(d: &DeploymentRow) -> Self {
        DeploymentFacts {
            id: d.id,
            state: d.state,
            superseded_by: d.superseded_by,
        }
    }
}

/// Why `release` is not in `stage`, or why its deployment `d` waits.
pub fn why(
    explain: &Explainer,
    release: &ReleaseRow,
    stage: &str,
    d: Option<&DeploymentRow>,
) -> Option<String> {
    explain.why(release.id, stage, d.map(DeploymentFacts::from))
}

/// The newest deployment of each (release, stage): what a cell shows.
pub fn latest_by_release_and_stage(
    deployments: &[DeploymentRow],
) -> HashMap<(i64, &str), &DeploymentRow> {
    let mut latest: HashMap<(i64, &str), &DeploymentRow> = HashMap::new();
    for d in deployments {
        let key = (d.release_id, d.stage.as_str());
        match latest.get(&key) {
            Some(existing) if existing.id > d.id => {}
            _ => {
                latest.insert(key, d);
            }
        }
    }
    latest
}

/// (release id, stage) pairs with a succeeded deployment among `deployments`.
fn succeeded<'a>(
    deployments: impl IntoIterator<Item = &'a DeploymentRow>,
) -> HashSet<(i64, String)> {
    deployments
        .into_iter()
        .filter(|d| d.state == DeploymentState::Succeeded)
        .map(|d| (d.release_id, d.stage.clone()))
        .collect()
}

/// Facts of the shown rows alone. Right for the board, whose rows are a
/// pipeline's newest releases: every release newer than a shown one is
/// shown too, so "the newest ready" and "a newer one went in" need no
/// other rows. Who an approval still needs is left for the caller.
pub fn explainer_from_rows(
    stages: &[&StageRow],
    releases: &[ReleaseRow],
    deployments: &[&DeploymentRow],
    queue_position: &HashMap<i64, usize>,
    next_fires: &HashMap<i64, String>,
) -> Explainer {
    let succeeded = succeeded(deployments.iter().copied());
    let version = |id: i64| {
        releases
            .iter()
            .find(|r| r.id == id)
            .map(|r| (id, r.version.clone()))
    };
    let facts = stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let previous = i.checked_sub(1).map(|p| stages[p].name.clone());
            let newest_ready = match &previous {
                None => releases.iter().map(|r| r.id).max(),
                Some(p) => succeeded
                    .iter()
                    .filter(|(_, st)| st == p)
                    .map(|(id, _)| *id)
                    .max(),
            };
            let newest_deployed = deployments
                .iter()
                .filter(|d| d.stage == s.name)
                .map(|d| d.release_id)
                .max();
            StageFacts {
                name: s.name.clone(),
                kind: s.trigger_kind.clone(),
                previous,
                next_fire: next_fires.get(&s.id).cloned(),
                newest_ready: newest_ready.and_then(version),
                newest_deployed: newest_deployed.and_then(version),
            }
        })
        .collect();
    let versions = releases.iter().map(|r| (r.id, r.version.clone())).collect();
    Explainer {
        stages: facts,
        succeeded,
        queue_position: queue_position.clone(),
        versions,
        approval_needed: HashMap::new(),
    }
}

/// Facts for a page of a pipeline's release history, whose rows may be old
/// ones: the newest ready and deployed release of each stage come from the
/// database (two index seeks per stage, whatever the page), the rest from
/// the shown rows.
pub fn history_explainer(
    conn: &mut DbConn,
    pipeline_id: i64,
    stages: &[&StageRow],
    deployments: &[DeploymentRow],
) -> Result<Explainer, EngineError> {
    let now = Utc::now();
    let mut wanted = Vec::new();
    let mut facts = Vec::with_capacity(stages.len());
    for (i, s) in stages.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| stages[p].name.clone());
        let ready = match &previous {
            None => store::newest_release_id(conn, pipeline_id)?,
            Some(p) => store::newest_succeeded_release_id(conn, pipeline_id, p)?,
        };
        let deployed = store::newest_deployed_release_id(conn, pipeline_id, &s.name)?;
        wanted.extend(ready);
        wanted.extend(deployed);
        facts.push((s, previous, ready, deployed));
    }
    wanted.extend(deployments.iter().filter_map(|d| d.superseded_by));
    wanted.sort_unstable();
    wanted.dedup();
    let versions: HashMap<i64, String> = store::release_versions(conn, &wanted)?
        .into_iter()
        .collect();
    let named = |id: Option<i64>| id.and_then(|id| versions.get(&id).map(|v| (id, v.clone())));
    Ok(Explainer {
        stages: facts
            .into_iter()
            .map(|(s, previous, ready, deployed)| StageFacts {
                name: s.name.clone(),
                kind: s.trigger_kind.clone(),
                previous,
                next_fire: next_fire_words(s, now),
                newest_ready: named(ready),
                newest_deployed: named(deployed),
            })
            .collect(),
        succeeded: succeeded(deployments),
        queue_position: queue_positions(&store::queued_deployments(conn)?),
        versions,
        approval_needed: super::approvals::needed_by_deployment(conn)?,
    })
}

/// "Fri 03:00 PST": a schedule stage's next fire on its own wall clock —
/// the stored `next_fire_at` (only the zone is read from the stored spec),
/// or computed when the scheduler has not yet.
pub fn next_fire_words(stage: &StageRow, now: chrono::DateTime<Utc>) -> Option<String> {
    if stage.trigger_kind != store::SCHEDULE_KIND {
        return None;
    }
    let stored_zone = stage
        .trigger_spec
        .rsplit_once(' ')
        .and_then(|(_, zone)| zone.parse::<chrono_tz::Tz>().ok());
    let (next, zone) = match (stage.next_fire_at, stored_zone) {
        (Some(t), Some(zone)) => (t.and_utc(), zone),
        _ => {
            let schedule = schedule_of_stage(stage)?;
            (schedule.next_fire(now)?, schedule.timezone)
        }
    };
    Some(next.with_timezone(&zone).format("%a %H:%M %Z").to_string())
}

/// [`next_fire_words`] of every schedule stage, by stage id. A schedule the
/// scheduler has not stored yet is computed once per distinct spec.
pub fn next_fires_of(stages: &[StageRow], now: chrono::DateTime<Utc>) -> HashMap<i64, String> {
    let mut computed: HashMap<&str, Option<String>> = HashMap::new();
    stages
        .iter()
        .filter_map(|s| {
            let words = if s.next_fire_at.is_some() {
                next_fire_words(s, now)
            } else {
                computed
                    .entry(s.trigger_spec.as_str())
                    .or_insert_with(|| next_fire_words(s, now))
                    .clone()
            };
            words.map(|w| (s.id, w))
        })
        .collect()
}

/// Each stage's live release ([`super::live`]) as a table marks it:
/// (release id, the version a rollback replaced) by stage name. A
/// pipeline whose definition cannot be read shows none (logged).
pub fn live_marks(
    conn: &mut DbConn,
    pipeline: &PipelineRow,
) -> HashMap<String, (i64, Option<String>)> {
    let live = crate::engine::pipelines::load(conn, &pipeline.name)
        .and_then(|loaded| super::live::live_of(conn, loaded.id, &loaded.name, &loaded.definition));
    match live {
        Ok(live) => live
            .into_iter()
            .map(|(stage, l)| (stage, (l.release_id, l.replaced)))
            .collect(),
        Err(e) => {
            tracing::warn!(pipeline = %pipeline.name, error = %e, "cannot tell what is live");
            HashMap::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn at() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc()
    }

    fn stage(id: i64, name: &str, position: i32, kind: &str, spec: &str) -> StageRow {
        StageRow {
            id,
            pipeline_id: 1,
            name: name.into(),
            position,
            trigger_kind: kind.into(),
            trigger_spec: spec.into(),
            next_fire_at: None,
            last_fired_at: None,
            created_at: at(),
            updated_at: at(),
        }
    }

    fn release(id: i64) -> ReleaseRow {
        ReleaseRow {
            id,
            pipeline_id: 1,
            version: format!("1.0.{id}"),
            build_id: None,
            revision_id: 1,
            commit_sha: "0".repeat(40),
            branch: "main".into(),
            message: String::new(),
            author: String::new(),
            fixes_release_id: None,
            created_at: at(),
        }
    }

    fn deployment(id: i64, release_id: i64, stage: &str, state: DeploymentState) -> DeploymentRow {
        DeploymentRow {
            id,
            pipeline_id: 1,
            release_id,
            stage: stage.into(),
            attempt: 1,
            state,
            trigger: "manual".into(),
            requested_by: "mara".into(),
            reason: None,
            superseded_by: None,
            runner: None,
            heartbeat_at: None,
            created_at: at(),
            started_at: None,
            finished_at: None,
            error: None,
            operation: None,
            override_by: None,
            override_reason: None,
        }
    }

    #[test]
    fn cells_explain_themselves() {
        use DeploymentState::*;
        let stages = [
            stage(1, "dev", 0, "after", "after build include=[] exclude=[]"),
            stage(
                2,
                "test",
                1,
                "schedule",
                "schedule 0 0 3 * * * America/Los_Angeles",
            ),
            stage(3, "preprod", 2, "manual", "manual"),
        ];
        let stage_refs: Vec<&StageRow> = stages.iter().collect();
        let releases: Vec<ReleaseRow> = (1..=5).rev().map(release).collect();
        let mut superseded = deployment(9, 2, "preprod", Superseded);
        superseded.superseded_by = Some(3);
        let deployments = [
            deployment(1, 1, "dev", Succeeded),
            deployment(2, 2, "dev", Succeeded),
            deployment(3, 3, "dev", Succeeded),
            deployment(4, 3, "test", Succeeded),
            deployment(5, 4, "dev", Running),
            deployment(6, 5, "dev", Queued),
            deployment(7, 2, "test", Succeeded),
            deployment(8, 3, "preprod", Queued),
            superseded,
        ];
        let refs: Vec<&DeploymentRow> = deployments.iter().collect();
        let queued = vec![
            (100, 1, "preprod".to_string()),
            (6, 1, "dev".to_string()),
            (8, 1, "preprod".to_string()),
        ];
        let positions = queue_positions(&queued);
        assert_eq!(positions[&8], 2);
        assert_eq!(positions[&6], 1);
        let next = next_fires_of(&stages, Utc::now());
        let explain = explainer_from_rows(&stage_refs, &releases, &refs, &positions, &next);
        let latest = latest_by_release_and_stage(&deployments);
        let cell = |r: i64, s: &str| why(&explain, &release(r), s, latest.get(&(r, s)).copied());
        assert_eq!(cell(5, "dev").unwrap(), "queued (position 1)");
        assert_eq!(cell(3, "preprod").unwrap(), "queued (position 2)");
        assert_eq!(cell(2, "preprod").unwrap(), "superseded by 1.0.3");
        assert_eq!(
            cell(4, "test").unwrap(),
            "scheduled: once it succeeds in dev"
        );
        assert_eq!(
            cell(4, "preprod").unwrap(),
            "manual: once it succeeds in test"
        );
        assert_eq!(cell(1, "test").unwrap(), "superseded by 1.0.3");
        assert_eq!(cell(4, "dev"), None, "running says it all");
        assert_eq!(cell(2, "test"), None);
        // 1.0.3 is the newest in dev and went to test: preprod is manual.
        let three = why(&explain, &release(3), "preprod", None).unwrap();
        assert_eq!(three, "manual: deploy from the stage page");

        // 1.0.3 succeeded in dev but is not in test yet: the schedule takes it.
        let fewer: Vec<&DeploymentRow> = refs
            .iter()
            .copied()
            .filter(|d| d.id != 4 && d.id != 8 && d.id != 7)
            .collect();
        let explain = explainer_from_rows(&stage_refs, &releases, &fewer, &positions, &next);
        let text = why(&explain, &release(3), "test", None).unwrap();
        assert!(text.starts_with("scheduled: next fire "), "{text}");
        assert!(
            text.ends_with("03:00 PST") || text.ends_with("03:00 PDT"),
            "{text}"
        );
        assert_eq!(
            why(&explain, &release(2), "test", None).unwrap(),
            "superseded by 1.0.3"
        );
    }
}
