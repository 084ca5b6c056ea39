-- Inline runs have an owner with a lease (docs/adr/0150-inline-run-leases.md): the svc-runs
-- instance driving a run is its `owner_id`; each instance beats in `run_owners` (one write per
-- tick, whatever its number of runs); a replica that watches an owner's beat stand still for a
-- whole lease claims its runs (UPDATE … WHERE owner_id = the dead one: one winner) and ends them.
ALTER TABLE runs
    ADD COLUMN owner_id TEXT,
    ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX runs_unfinished_by_owner ON runs (owner_id) WHERE finished_at IS NULL;

-- Not tenant data: one row per svc-runs process, read and written on the owner's pool only.
CREATE TABLE run_owners (
    instance_id TEXT PRIMARY KEY,
    beat        BIGINT NOT NULL,
    beat_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
