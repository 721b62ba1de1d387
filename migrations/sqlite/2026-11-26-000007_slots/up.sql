-- Deployment slots (issue 7): what each slot runs with, since when, the
-- release it ran before, and every swap between two slots of an app.

-- The slot's settings as JSON (`{"NAME": {"value": "…", "sticky": true}}`),
-- values as written in the definition (secret references, never values).
ALTER TABLE slots ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
-- When the running release started serving in this slot.
ALTER TABLE slots ADD COLUMN since TIMESTAMP;
ALTER TABLE slots ADD COLUMN last_swap_at TIMESTAMP;
-- What the slot served before its current release (shown as "roll back to").
ALTER TABLE slots ADD COLUMN previous_release_id BIGINT REFERENCES releases (id);
-- Why the slot's last start or deployment failed.
ALTER TABLE slots ADD COLUMN error TEXT;

-- A swap of two slots of an app; a swap with preview waits (`pending`)
-- for a person to confirm or cancel it.
CREATE TABLE slot_swaps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id BIGINT NOT NULL REFERENCES apps (id),
    from_slot TEXT NOT NULL,
    to_slot TEXT NOT NULL,
    -- pending, succeeded, failed, canceled
    state TEXT NOT NULL,
    preview BOOLEAN NOT NULL,
    -- the release that goes live in to_slot, and the one it replaces
    from_release_id BIGINT REFERENCES releases (id),
    to_release_id BIGINT REFERENCES releases (id),
    requested_by TEXT NOT NULL,
    decided_by TEXT,
    error TEXT,
    created_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX slot_swaps_app_id ON slot_swaps (app_id, id);
