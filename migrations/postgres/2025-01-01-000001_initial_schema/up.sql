-- Slipway's schema (PostgreSQL). migrations/sqlite has the same tables.
-- Ids are 64-bit; timestamps are UTC values written by the application
-- (never CURRENT_TIMESTAMP); states and kinds are text.

CREATE TABLE pipelines (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- the revision number (definition_revisions.revision) in force
    current_revision INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Every imported definition; never updated or deleted.
CREATE TABLE definition_revisions (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    revision INTEGER NOT NULL,
    yaml TEXT NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (pipeline_id, revision)
);

-- The stages of the current revision, with their scheduler state.
CREATE TABLE stages (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    trigger_kind TEXT NOT NULL,
    trigger_spec TEXT NOT NULL,
    next_fire_at TIMESTAMP,
    last_fired_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (pipeline_id, name)
);
CREATE INDEX stages_next_fire_at ON stages (next_fire_at);

CREATE TABLE builds (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    number BIGINT NOT NULL,
    state TEXT NOT NULL,
    -- what was asked for; the commit is known once the build checked it out
    branch TEXT,
    commit_sha TEXT,
    message TEXT,
    author TEXT,
    requested_by TEXT NOT NULL,
    "trigger" TEXT NOT NULL,
    error TEXT,
    -- the instance running it, and its last sign of life
    runner TEXT,
    heartbeat_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    UNIQUE (pipeline_id, number)
);
CREATE INDEX builds_state ON builds (state, id);

-- Immutable: there is no UPDATE of releases anywhere in the code.
CREATE TABLE releases (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    version TEXT NOT NULL,
    build_id BIGINT UNIQUE REFERENCES builds (id),
    revision_id BIGINT NOT NULL REFERENCES definition_revisions (id),
    commit_sha TEXT NOT NULL,
    branch TEXT NOT NULL,
    message TEXT NOT NULL,
    author TEXT NOT NULL,
    fixes_release_id BIGINT REFERENCES releases (id),
    created_at TIMESTAMP NOT NULL,
    UNIQUE (pipeline_id, version)
);
CREATE INDEX releases_pipeline_id ON releases (pipeline_id, id);
CREATE INDEX releases_pipeline_branch_id ON releases (pipeline_id, branch, id);

CREATE TABLE artifacts (
    id BIGSERIAL PRIMARY KEY,
    release_id BIGINT NOT NULL REFERENCES releases (id),
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (release_id, path)
);
CREATE INDEX artifacts_sha256 ON artifacts (sha256);

CREATE TABLE deployments (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    release_id BIGINT NOT NULL REFERENCES releases (id),
    stage TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    "trigger" TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    reason TEXT,
    -- the newer release that superseded this waiting deployment
    superseded_by BIGINT REFERENCES releases (id),
    runner TEXT,
    heartbeat_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    -- also serves lookups by release_id
    UNIQUE (release_id, stage, attempt)
);
CREATE INDEX deployments_pipeline_stage_state ON deployments (pipeline_id, stage, state, id);
CREATE INDEX deployments_pipeline_state_release ON deployments (pipeline_id, state, release_id);
CREATE INDEX deployments_state ON deployments (state, id);

-- A task of a build or of a deployment (exactly one of the two).
CREATE TABLE task_runs (
    id BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT REFERENCES deployments (id),
    build_id BIGINT REFERENCES builds (id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    CHECK ((deployment_id IS NULL) <> (build_id IS NULL))
);
CREATE INDEX task_runs_deployment_id ON task_runs (deployment_id, position);
CREATE INDEX task_runs_build_id ON task_runs (build_id, position);

CREATE TABLE log_chunks (
    id BIGSERIAL PRIMARY KEY,
    task_run_id BIGINT NOT NULL REFERENCES task_runs (id),
    seq BIGINT NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (task_run_id, seq)
);

-- One required sign-off (a user or a group) of a deployment.
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

-- Every sample of every gate check; `round` groups the checks sampled together.
CREATE TABLE gate_samples (
    id BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    phase TEXT NOT NULL,
    round INTEGER NOT NULL,
    check_name TEXT NOT NULL,
    sampled_at TIMESTAMP NOT NULL,
    duration_ms BIGINT NOT NULL,
    request TEXT NOT NULL,
    value TEXT NOT NULL,
    verdict TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX gate_samples_deployment ON gate_samples (deployment_id, phase, id);

-- App names are global: the slot router serves APP-SLOT.localhost.
CREATE TABLE apps (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    name TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX apps_pipeline_id ON apps (pipeline_id);

CREATE TABLE slots (
    id BIGSERIAL PRIMARY KEY,
    app_id BIGINT NOT NULL REFERENCES apps (id),
    name TEXT NOT NULL,
    release_id BIGINT REFERENCES releases (id),
    process_state TEXT NOT NULL,
    port INTEGER,
    workdir TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (app_id, name)
);

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    email TEXT,
    role TEXT NOT NULL,
    password_hash TEXT,
    sso_subject TEXT UNIQUE,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE "groups" (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- local or sso
    source TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE user_groups (
    user_id BIGINT NOT NULL REFERENCES users (id),
    group_id BIGINT NOT NULL REFERENCES "groups" (id),
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_group_id ON user_groups (group_id);

CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

CREATE TABLE secrets (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    name TEXT NOT NULL,
    ciphertext BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (pipeline_id, name)
);

-- Hash-chained: hash = sha256(prev_hash, at, actor, action, subject, detail).
CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMP NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at);

-- A webhook delivery id is accepted once.
CREATE TABLE webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    provider TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (pipeline_id, provider, delivery_id)
);

-- Deny windows (a cron start + duration, in a time zone) and one-off freezes;
-- pipeline_id/stage NULL means all.
CREATE TABLE freezes (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT REFERENCES pipelines (id),
    stage TEXT,
    kind TEXT NOT NULL,
    cron TEXT,
    duration_secs BIGINT,
    timezone TEXT,
    starts_at TIMESTAMP,
    ends_at TIMESTAMP,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    lifted_at TIMESTAMP,
    lifted_by TEXT
);

-- Server-wide switches such as "stop the line".
CREATE TABLE settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Remote agents (`slipway agent`) that pull work.
CREATE TABLE agents (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    last_seen_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
