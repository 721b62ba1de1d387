-- Notifications (issue 5): the outbox of outgoing webhooks about approvals.
-- One row per notification target and event, inserted in the transaction
-- that records the event; the delivery worker claims due rows with a
-- conditional update of next_attempt_at and retries with backoff.
-- Secret values are never stored: secret_name refers to the pipeline's
-- secret store and is resolved at each attempt.
CREATE TABLE notification_deliveries (
    id BIGSERIAL PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines (id),
    pipeline TEXT NOT NULL,
    notification TEXT NOT NULL,
    url TEXT NOT NULL,
    format TEXT NOT NULL,
    secret_name TEXT,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    last_attempt_at TIMESTAMP,
    last_status INTEGER,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (state, next_attempt_at);
