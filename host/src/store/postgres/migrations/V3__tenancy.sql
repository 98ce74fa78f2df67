-- API tokens: each of one tenant and one role; the token itself is never
-- stored, only the sha256 of its secret part (inside the record).
CREATE TABLE tokens (
    id     text PRIMARY KEY,
    tenant text NOT NULL,
    record text NOT NULL
);
CREATE INDEX tokens_by_tenant ON tokens (tenant, id);
