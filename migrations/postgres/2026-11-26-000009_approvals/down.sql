DROP INDEX approval_decisions_user;
DROP INDEX approval_decisions_approval;
DROP INDEX approval_decisions_final;
DROP TABLE approval_decisions;
DROP INDEX approvals_state_deadline;
DROP INDEX approvals_deployment_phase;
DROP TABLE approvals;
CREATE TABLE approvals (
    id BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    phase TEXT NOT NULL,
    approver TEXT NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    comment TEXT,
    defer_until TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    decided_at TIMESTAMP
);
CREATE INDEX approvals_deployment_id ON approvals (deployment_id, phase);
CREATE INDEX approvals_state_approver ON approvals (state, approver);
