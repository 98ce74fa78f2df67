-- API tokens: each of one tenant and one role; the token itself is never
-- stored, only the sha256 of its secret part (inside the record).
CREATE TABLE tokens (
    id     text PRIMARY KEY,
    tenant text NOT NULL,
    record text NOT NULL
);
CREATE INDEX tokens_by_tenant ON tokens (tenant, id);

-- What each tenant may spend (as `cairn quota set` set it, over the manifest's).
CREATE TABLE quotas (
    tenant text PRIMARY KEY,
    record text NOT NULL
);

-- The budget ledger: per tenant and line (`cost:day:2026-11-29`,
-- `tokens:run:RUN`, ...), what calls spent and what calls under way hold.
CREATE TABLE ledger (
    tenant   text   NOT NULL,
    key      text   NOT NULL,
    spent    bigint NOT NULL DEFAULT 0,
    reserved bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, key)
);

-- A record per live LLM call, for `cairn usage`.
CREATE TABLE usage (
    tenant text   NOT NULL,
    at     bigint NOT NULL,
    id     bigserial,
    record text   NOT NULL,
    PRIMARY KEY (tenant, at, id)
);
