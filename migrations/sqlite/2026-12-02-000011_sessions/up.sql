-- Browser sessions kept on the server (issue 12, item 5): the session
-- cookie carries a random id whose SHA-256 is `id_hash`; sign-out, disabling
-- the user and "sign out everywhere" set `revoked_at`, and the server checks
-- the row on every request.
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    id_hash TEXT NOT NULL UNIQUE,
    user_id BIGINT NOT NULL REFERENCES users (id),
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- Sign-in attempts per `user:NAME` and `addr:IP` (issue 12, item 4),
-- counted by one upsert before the password is checked.
CREATE TABLE sign_in_attempts (
    bucket TEXT PRIMARY KEY NOT NULL,
    window_start TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL
);
