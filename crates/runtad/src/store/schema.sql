-- Runta store, schema version 1. Applied idempotently at every start.
CREATE TABLE IF NOT EXISTS tenants (
    name        TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS tokens (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants(name),
    hash        TEXT NOT NULL UNIQUE,
    admin       INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS runtimes (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    tenant            TEXT NOT NULL,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,
    desired_status    TEXT NOT NULL,
    image             TEXT NOT NULL,
    vcpus             REAL NOT NULL,
    memory_mib        INTEGER NOT NULL,
    memory_limit_mib  INTEGER NOT NULL,
    disk_gib          INTEGER,
    env               TEXT NOT NULL,
    labels            TEXT NOT NULL,
    publish           TEXT NOT NULL,
    idle_timeout_secs INTEGER,
    ip                TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    started_at        TEXT,
    revision          INTEGER NOT NULL,
    error             TEXT,
    layers            TEXT NOT NULL DEFAULT '[]',
    -- 0: a runtime suspended for idleness wakes only on start/resume (suspend_only).
    idle_wakeup       INTEGER NOT NULL DEFAULT 1,
    -- JSON runta_api::EgressPolicy; '' = open (nothing filtered).
    egress_policy     TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant, name)
);

CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    runtime_id  TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message     TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_runtime ON events(runtime_id, id);

CREATE TABLE IF NOT EXISTS idempotency (
    tenant        TEXT NOT NULL,
    key           TEXT NOT NULL,
    runtime_id    TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE IF NOT EXISTS checkpoints (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    source_name  TEXT NOT NULL,
    image        TEXT NOT NULL,
    layers       TEXT NOT NULL,
    size_bytes   INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (tenant, name)
);

-- Per-tenant quota overrides set by the admin; NULL keeps the daemon's default.
CREATE TABLE IF NOT EXISTS quotas (
    tenant            TEXT PRIMARY KEY REFERENCES tenants(name),
    runtimes          INTEGER,
    vcpus             REAL,
    memory_mib        INTEGER,
    disk_gib          INTEGER,
    checkpoints       INTEGER,
    checkpoint_bytes  INTEGER,
    pids              INTEGER,
    updated_at        TEXT NOT NULL
);
