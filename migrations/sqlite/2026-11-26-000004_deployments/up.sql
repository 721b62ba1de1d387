-- The deployment engine (issue 4): why a deployment failed, was canceled or
-- interrupted, and at most one active deployment of a release per stage.

ALTER TABLE deployments ADD COLUMN error TEXT;

-- A release waits or runs at most once per stage at a time: a second request
-- while one is queued, waiting or running is answered with the one there.
CREATE UNIQUE INDEX deployments_one_active ON deployments (release_id, stage)
    WHERE state IN ('queued', 'waiting_for_approval', 'evaluating_gates', 'running');

-- The heartbeat and restart recovery look for the running deployments of an instance.
CREATE INDEX deployments_runner_state ON deployments (runner, state);
