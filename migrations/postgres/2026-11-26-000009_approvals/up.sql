-- Approvals (issue 5). The initial schema's placeholder table is replaced:
-- one row per sign-off a deployment waits for (before or after its stage),
-- holding a snapshot of the stage's approval terms; each person's decision
-- is an immutable row of approval_decisions.
DROP INDEX approvals_state_approver;
DROP INDEX approvals_deployment_id;
DROP TABLE approvals;

CREATE TABLE approvals (
    id BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    phase TEXT NOT NULL,
    state TEXT NOT NULL,
    approvers TEXT NOT NULL,
    policy TEXT NOT NULL,
    requester_can_approve BOOLEAN NOT NULL,
    exclude_authors BOOLEAN NOT NULL,
    fresh_sign_in_secs BIGINT,
    requested_by TEXT NOT NULL,
    base_release TEXT,
    commits TEXT NOT NULL,
    deadline TIMESTAMP NOT NULL,
    warned_at TIMESTAMP,
    reason TEXT,
    closed_by TEXT,
    created_at TIMESTAMP NOT NULL,
    closed_at TIMESTAMP
);
CREATE UNIQUE INDEX approvals_deployment_phase ON approvals (deployment_id, phase);
CREATE INDEX approvals_state_deadline ON approvals (state, deadline);

CREATE TABLE approval_decisions (
    id BIGSERIAL PRIMARY KEY,
    approval_id BIGINT NOT NULL REFERENCES approvals (id),
    user_name TEXT NOT NULL,
    groups TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT,
    defer_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
-- Each person approves or rejects an approval at most once.
CREATE UNIQUE INDEX approval_decisions_final ON approval_decisions (approval_id, user_name) WHERE decision <> 'defer';
CREATE INDEX approval_decisions_approval ON approval_decisions (approval_id, id);
CREATE INDEX approval_decisions_user ON approval_decisions (user_name, id);
