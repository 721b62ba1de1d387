//! Why a release is not (yet) in a stage, or why its deployment there
//! waits — "queued (position 2)", "after dev succeeds", "scheduled: next
//! fire Fri 03:00 PST", "superseded by 1.0.9", "waits for" whoever must
//! still approve. One decision, read by the board and the release history
//! (`engine::deploy::waiting` gathers the facts from the database).

use std::collections::{HashMap, HashSet};

use super::DeploymentState;

/// What a stage column knows for explaining its cells.
#[derive(Debug, Clone, Default)]
pub struct StageFacts {
    pub name: String,
    /// `manual`, `after` or `schedule`.
    pub kind: String,
    /// The stage before it (`None`: the first stage, fed by the build).
    pub previous: Option<String>,
    /// "Fri 03:00 PST" for a schedule.
    pub next_fire: Option<String>,
    /// The newest release that may go in: it succeeded in `previous` (for
    /// the first stage: the newest release). (id, version)
    pub newest_ready: Option<(i64, String)>,
    /// The newest release with any deployment in the stage. (id, version)
    pub newest_deployed: Option<(i64, String)>,
}

/// The newest deployment of a release in a stage, as far as its "why"
/// needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentFacts {
    pub id: i64,
    pub state: DeploymentState,
    /// The deployment that replaced it (for `Superseded`).
    pub superseded_by: Option<i64>,
}

/// Everything the cells of one table need to explain themselves.
#[derive(Debug, Clone, Default)]
pub struct Explainer {
    pub stages: Vec<StageFacts>,
    /// (release id, stage) pairs with a succeeded deployment.
    pub succeeded: HashSet<(i64, String)>,
    /// A queued deployment's place in its stage's queue (1 = next).
    pub queue_position: HashMap<i64, usize>,
    /// Versions of releases named by `superseded_by`.
    pub versions: HashMap<i64, String>,
    /// Who a deployment waiting for approval still needs, by deployment id.
    pub approval_needed: HashMap<i64, String>,
}

impl Explainer {
    fn stage(&self, name: &str) -> Option<&StageFacts> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Why release `release_id` is not in `stage`, or why its deployment
    /// `d` there waits; `None` when the state says it all.
    pub fn why(&self, release_id: i64, stage: &str, d: Option<DeploymentFacts>) -> Option<String> {
        if let Some(d) = d {
            return self.why_deployment(d);
        }
        let facts = self.stage(stage)?;
        if let Some(previous) = &facts.previous
            && !self.succeeded.contains(&(release_id, previous.clone()))
        {
            // Only a continuous stage takes it by itself once it succeeds in
            // the stage before; a manual or scheduled one says what it is.
            return Some(match facts.kind.as_str() {
                "manual" => format!("manual: once it succeeds in {previous}"),
                "schedule" => format!("scheduled: once it succeeds in {previous}"),
                _ => format!("after {previous} succeeds"),
            });
        }
        if let Some((id, version)) = &facts.newest_deployed
            && *id > release_id
        {
            return Some(format!("superseded by {version}"));
        }
        let newer_ready = facts
            .newest_ready
            .as_ref()
            .filter(|(id, _)| *id > release_id);
        Some(match facts.kind.as_str() {
            "manual" => "manual: deploy from the stage page".into(),
            "schedule" => match (newer_ready, &facts.next_fire) {
                (Some((_, version)), _) => format!("superseded by {version}"),
                (None, Some(next)) => format!("scheduled: next fire {next}"),
                (None, None) => "scheduled: the schedule never fires again".into(),
            },
            _ => "not deployed automatically: deploy from the stage page".into(),
        })
    }

    /// Why deployment `d` waits (queued, for approval or gates) or what
    /// replaced it; `None` for the other states.
    fn why_deployment(&self, d: DeploymentFacts) -> Option<String> {
        match d.state {
            DeploymentState::Queued => Some(match self.queue_position.get(&d.id) {
                Some(n) => format!("queued (position {n})"),
                None => "queued".into(),
            }),
            DeploymentState::WaitingForApproval => Some(match self.approval_needed.get(&d.id) {
                Some(needed) => format!("waits for {needed}"),
                None => "waits for approval".into(),
            }),
            DeploymentState::EvaluatingGates => Some("evaluating gates".into()),
            DeploymentState::Superseded => Some(
                match d.superseded_by.and_then(|id| self.versions.get(&id)) {
                    Some(v) => format!("superseded by {v}"),
                    None => "superseded by a newer release".into(),
                },
            ),
            _ => None,
        }
    }
}

/// Each queued deployment's place in the queue of its pipeline's stage,
/// from `(deployment id, pipeline id, stage)` in queue order.
pub fn queue_positions(queued: &[(i64, i64, String)]) -> HashMap<i64, usize> {
    let mut seen: HashMap<(i64, &str), usize> = HashMap::new();
    let mut positions = HashMap::new();
    for (id, pipeline_id, stage) in queued {
        let n = seen.entry((*pipeline_id, stage.as_str())).or_insert(0);
        *n += 1;
        positions.insert(*id, *n);
    }
    positions
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn queue_positions_count_per_pipeline_and_stage() {
        let queued = vec![
            (100, 1, "preprod".to_string()),
            (6, 1, "dev".to_string()),
            (8, 1, "preprod".to_string()),
            (9, 2, "preprod".to_string()),
        ];
        let positions = queue_positions(&queued);
        assert_eq!(positions[&100], 1);
        assert_eq!(positions[&6], 1);
        assert_eq!(positions[&8], 2);
        assert_eq!(positions[&9], 1);
    }

    #[test]
    fn a_waiting_deployment_says_what_it_waits_for() {
        let mut explain = Explainer::default();
        explain
            .approval_needed
            .insert(3, "1 approval from group:ops".into());
        let d = |id, state| {
            Some(DeploymentFacts {
                id,
                state,
                superseded_by: None,
            })
        };
        assert_eq!(
            explain.why(1, "prod", d(3, DeploymentState::WaitingForApproval)),
            Some("waits for 1 approval from group:ops".into())
        );
        assert_eq!(
            explain.why(1, "prod", d(4, DeploymentState::WaitingForApproval)),
            Some("waits for approval".into())
        );
        assert_eq!(
            explain.why(1, "prod", d(4, DeploymentState::EvaluatingGates)),
            Some("evaluating gates".into())
        );
        assert_eq!(
            explain.why(1, "prod", d(4, DeploymentState::Superseded)),
            Some("superseded by a newer release".into())
        );
        assert_eq!(explain.why(1, "prod", d(4, DeploymentState::Running)), None);
        assert_eq!(explain.why(1, "nowhere", None), None);
    }
}
