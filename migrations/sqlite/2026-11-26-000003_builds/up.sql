-- Builds from git (issue 3): what polling last saw of a branch, and an
-- index for the build dispatcher's per-pipeline count of running builds.

-- The head commit of a polled branch, as last seen by `source.poll`;
-- `error` says why the last look failed (the repository is unreachable…).
CREATE TABLE source_heads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    branch TEXT NOT NULL,
    commit_sha TEXT,
    error TEXT,
    checked_at TIMESTAMP NOT NULL,
    changed_at TIMESTAMP NOT NULL,
    UNIQUE (pipeline_id, branch)
);

CREATE INDEX builds_pipeline_state ON builds (pipeline_id, state, id);
