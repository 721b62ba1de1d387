//! The jobs this instance holds a lease on, each with the token that stops
//! its process. A job is entered *before* its claim is written, so a
//! cancel arriving right after the claim finds its token; a claim that
//! fails takes it out again.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use super::JobId;

/// The jobs held here; cheap to share behind the engine's handle.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<JobId, CancellationToken>>,
}

impl Leases {
    /// Claims `job` with `claim` (a conditional update of its row):
    /// `Ok(Some((claimed, token)))` when this instance got it, the token a
    /// child of `parent` (the engine's shutdown); `Ok(None)` when another
    /// instance (or a rule) was first.
    pub fn claim<T, E>(
        &self,
        job: JobId,
        parent: &CancellationToken,
        claim: impl FnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<(T, CancellationToken)>, E> {
        let token = parent.child_token();
        self.lock().insert(job, token.clone());
        match claim() {
            Ok(Some(claimed)) => Ok(Some((claimed, token))),
            Ok(None) => {
                self.release(job);
                Ok(None)
            }
            Err(e) => {
                self.release(job);
                Err(e)
            }
        }
    }

    /// The job ended here: its lease is no longer renewed.
    pub fn release(&self, job: JobId) {
        self.lock().remove(&job);
    }

    /// Stops a job's process if it runs here; whether it does.
    pub fn cancel(&self, job: JobId) -> bool {
        match self.lock().get(&job) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Every job held here, in order.
    pub fn held(&self) -> Vec<JobId> {
        let mut jobs: Vec<JobId> = self.lock().keys().copied().collect();
        jobs.sort_unstable();
        jobs
    }

    /// The ids of the builds (`build: true`) or deployments held here.
    pub fn ids(&self, build: bool) -> Vec<i64> {
        self.held()
            .into_iter()
            .filter(|job| matches!(job, JobId::Build(_)) == build)
            .map(JobId::id)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        // A panic while holding this short lock leaves valid data.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_the_job_until_released_and_a_lost_claim_holds_nothing() {
        let leases = Leases::default();
        let shutdown = CancellationToken::new();
        let got = leases
            .claim(JobId::Build(1), &shutdown, || Ok::<_, ()>(Some("row")))
            .unwrap();
        let (row, token) = got.unwrap();
        assert_eq!(row, "row");
        assert_eq!(leases.held(), vec![JobId::Build(1)]);
        let lost = leases
            .claim(JobId::Deployment(1), &shutdown, || {
                Ok::<Option<()>, ()>(None)
            })
            .unwrap();
        assert!(lost.is_none());
        assert!(
            leases
                .claim(JobId::Deployment(2), &shutdown, || Err::<Option<()>, _>(
                    "db"
                ))
                .is_err()
        );
        assert_eq!(leases.ids(true), vec![1]);
        assert!(leases.ids(false).is_empty());
        assert!(leases.cancel(JobId::Build(1)));
        assert!(token.is_cancelled());
        leases.release(JobId::Build(1));
        assert!(!leases.cancel(JobId::Build(1)));
        assert!(leases.held().is_empty());
    }

    #[test]
    fn the_engine_stopping_stops_every_job() {
        let leases = Leases::default();
        let shutdown = CancellationToken::new();
        let (_, token) = leases
            .claim(JobId::Deployment(7), &shutdown, || Ok::<_, ()>(Some(())))
            .unwrap()
            .unwrap();
        shutdown.cancel();
        assert!(token.is_cancelled());
    }
}
