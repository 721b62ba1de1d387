-- Gates (issue 6): one row per gate run (a deployment's gates before or
-- after its stage), holding what a restarted server needs to resume
-- sampling where it was; its samples reference it.
CREATE TABLE gate_runs (
    id BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    pipeline TEXT NOT NULL,
    release_version TEXT NOT NULL,
    stage TEXT NOT NULL,
    phase TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    deadline_at TIMESTAMP NOT NULL,
    next_at TIMESTAMP,
    round INTEGER NOT NULL,
    green_since TIMESTAMP,
    progress TEXT NOT NULL,
    last_results TEXT NOT NULL,
    reason TEXT,
    question TEXT,
    finished_by TEXT,
    finished_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX gate_runs_state ON gate_runs (state, id);
CREATE INDEX gate_runs_deployment ON gate_runs (deployment_id, phase);

ALTER TABLE gate_samples ADD COLUMN gate_run_id BIGINT REFERENCES gate_runs (id);
ALTER TABLE gate_samples ADD COLUMN body TEXT;
ALTER TABLE gate_samples ADD COLUMN scheduled_at TIMESTAMP;
CREATE INDEX gate_samples_run ON gate_samples (gate_run_id, id);
