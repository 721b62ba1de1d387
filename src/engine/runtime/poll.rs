//! Polling: pipelines with `source.poll` get `git ls-remote` of their
//! branch at that interval; a moved head queues a build (trigger `poll`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{Engine, lock};
use crate::engine::builds::{self, BuildRequest, git};
use crate::engine::{EngineError, blocking, pipelines};
use crate::storage;

impl Engine {
    pub(super) async fn poll_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        let mut specs: HashMap<i64, PollSpec> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.poll_tick) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.refresh_poll_specs(&mut specs).await {
                tracing::error!(error = %e, "cannot read the pipelines to poll");
                continue;
            }
            let now = Instant::now();
            for (id, spec) in specs.iter_mut() {
                let Some(interval) = spec.interval else {
                    continue;
                };
                if spec.next > now || !lock(&self.inner.polling).insert(*id) {
                    continue;
                }
                spec.next = now + interval;
                let me = self.clone();
                let (id, name, repo, branch) = (
                    *id,
                    spec.name.clone(),
                    spec.repo.clone(),
                    spec.branch.clone(),
                );
                self.inner.tracker.spawn(async move {
                    me.poll_once(id, &name, &repo, &branch).await;
                    lock(&me.inner.polling).remove(&id);
                });
            }
        }
    }

    /// Re-reads the definitions of pipelines whose revision changed.
    async fn refresh_poll_specs(
        &self,
        specs: &mut HashMap<i64, PollSpec>,
    ) -> Result<(), EngineError> {
        let known: HashMap<i64, i32> = specs.iter().map(|(id, s)| (*id, s.revision)).collect();
        let (changed, present) = blocking(&self.inner.db, move |conn| {
            let mut changed = Vec::new();
            let rows = storage::list_pipelines(conn)?;
            let present: HashSet<i64> = rows.iter().map(|r| r.id).collect();
            for row in rows {
                if known.get(&row.id) == Some(&row.current_revision) {
                    continue;
                }
                let loaded = pipelines::load(conn, &row.name)?;
                changed.push(PollSpec {
                    id: row.id,
                    name: row.name,
                    revision: row.current_revision,
                    repo: loaded.definition.source.repo.clone(),
                    branch: loaded.definition.source.branch.clone(),
                    interval: loaded.definition.source.poll.map(|d| d.to_std()),
                    next: Instant::now(),
                });
            }
            Ok((changed, present))
        })
        .await?;
        specs.retain(|id, _| present.contains(id));
        for spec in changed {
            specs.insert(spec.id, spec);
        }
        Ok(())
    }

    /// Looks at the branch head; queues a build (trigger `poll`) when it moved.
    async fn poll_once(&self, pipeline_id: i64, pipeline: &str, repo: &str, branch: &str) {
        let head = git::remote_head(repo, branch, &self.inner.shutdown).await;
        let (name, branch_owned) = (pipeline.to_string(), branch.to_string());
        let recorded = blocking(&self.inner.db, move |conn| {
            let branch = branch_owned;
            match head {
                Ok(Some(sha)) => storage::write_transaction(conn, |conn| {
                    let seen = storage::find_source_head(conn, pipeline_id, &branch)?;
                    let previous = seen.as_ref().and_then(|s| s.commit_sha.clone());
                    if previous.as_deref() == Some(sha.as_str()) {
                        storage::record_source_check(conn, pipeline_id, &branch, None)?;
                        return Ok(None);
                    }
                    if !storage::advance_source_head(
                        conn,
                        pipeline_id,
                        &branch,
                        seen.as_ref(),
                        &sha,
                    )? {
                        // Another instance saw it first.
                        return Ok(None);
                    }
                    // The first look only learns the head, unless nothing was ever built.
                    if previous.is_none() && storage::next_build_number(conn, pipeline_id)? > 1 {
                        return Ok(None);
                    }
                    let outcome = builds::queue_build(
                        conn,
                        &BuildRequest {
                            pipeline: name.clone(),
                            branch: Some(branch.clone()),
                            commit: Some(sha.clone()),
                            trigger: "poll".into(),
                            requested_by: "poll".into(),
                        },
                    )?;
                    Ok::<_, EngineError>(outcome.build().cloned())
                }),
                Ok(None) => {
                    storage::record_source_check(
                        conn,
                        pipeline_id,
                        &branch,
                        Some(&format!(
                            "branch `{branch}` does not exist in the repository"
                        )),
                    )?;
                    Ok(None)
                }
                Err(git::GitError::Canceled) => Ok(None),
                Err(git::GitError::Failed(message)) => {
                    storage::record_source_check(conn, pipeline_id, &branch, Some(&message))?;
                    Ok(None)
                }
            }
        })
        .await;
        match recorded {
            Ok(Some(build)) => {
                tracing::info!(
                    pipeline,
                    number = build.number,
                    "polling found a new commit; build queued"
                );
                self.notify();
            }
            Ok(None) => {}
            Err(e) => tracing::error!(pipeline, error = %e, "polling failed"),
        }
    }
}

/// What the poller knows of a pipeline.
#[derive(Debug, Clone)]
struct PollSpec {
    id: i64,
    name: String,
    /// The definition revision it was read from.
    revision: i32,
    repo: String,
    branch: String,
    interval: Option<Duration>,
    next: Instant,
}
