-- A cancel asked for by anyone (`cairn runs cancel`), whoever holds the run:
-- set without the holder's fence, read by its heartbeat, never cleared.
ALTER TABLE runs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
