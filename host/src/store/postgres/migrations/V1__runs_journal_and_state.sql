-- Runs: the record is a JSON document; the columns beside it are what
-- claims, fences and listings select on. Status, lease, epoch and
-- not-before are kept in the columns (authoritative) and merged into the
-- document when it is read.
CREATE TABLE runs (
    tenant      text   NOT NULL,
    id          text   NOT NULL,
    task        text   NOT NULL,
    parent      text,
    status      text   NOT NULL,
    lease_owner text,
    lease_until bigint,
    epoch       bigint NOT NULL DEFAULT 0,
    not_before  bigint NOT NULL DEFAULT 0,
    record      text   NOT NULL,
    PRIMARY KEY (tenant, id)
);
-- Listings, newest first (ids are UUIDv7: they sort by creation).
CREATE INDEX runs_by_status ON runs (tenant, status, id);
CREATE INDEX runs_by_task ON runs (tenant, task, id);
CREATE INDEX runs_by_parent ON runs (tenant, parent, id);
CREATE INDEX runs_top_by_status ON runs (tenant, status, id) WHERE parent IS NULL;
-- The runnable set: unfinished runs nobody holds.
CREATE INDEX runs_runnable ON runs (tenant, not_before, id)
    WHERE status IN ('pending', 'running') AND lease_owner IS NULL;
-- The leased set, by expiry: where expired leases are found.
CREATE INDEX runs_leased ON runs (tenant, lease_until)
    WHERE status IN ('pending', 'running') AND lease_owner IS NOT NULL;

-- Each task's counts, adjusted in the transaction of every run write that changes them.
CREATE TABLE task_stats (
    tenant    text   NOT NULL,
    task      text   NOT NULL,
    runs      bigint NOT NULL DEFAULT 0,
    succeeded bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    retries   bigint NOT NULL DEFAULT 0,
    degraded  bigint NOT NULL DEFAULT 0,
    cached    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, task)
);

-- Journals, keyed by the replay key (whose encoding starts with the run id).
CREATE TABLE journal (
    run_id text   NOT NULL,
    key    text   NOT NULL,
    seq    bigint NOT NULL,
    entry  text   NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE logs (
    run_id  text    NOT NULL,
    attempt integer NOT NULL,
    log     text    NOT NULL,
    PRIMARY KEY (run_id, attempt)
);

CREATE TABLE reports (
    run_id text PRIMARY KEY,
    report text NOT NULL
);

CREATE TABLE cache (
    tenant text NOT NULL,
    key    text NOT NULL,
    task   text NOT NULL,
    entry  text NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE dlq (
    tenant    text   NOT NULL,
    run_id    text   NOT NULL,
    letter    text   NOT NULL,
    PRIMARY KEY (tenant, run_id)
);

-- Circuit breakers: one row each, written whole in one statement.
CREATE TABLE breakers (
    tenant text  NOT NULL,
    name   text  NOT NULL,
    state  bytea NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE counters (
    tenant text   NOT NULL,
    name   text   NOT NULL,
    value  bigint NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE secrets (
    tenant text NOT NULL,
    key    text NOT NULL,
    value  text NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- Executors: the hosts working on the runs.
CREATE TABLE executors (
    id      text    PRIMARY KEY,
    seen_at bigint  NOT NULL,
    stopped boolean NOT NULL DEFAULT false,
    record  text    NOT NULL
);
