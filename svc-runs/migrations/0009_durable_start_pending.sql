-- A durable run is svc-runs' own until svc-worker has started its workflow
-- (docs/src/adr/0243-2026-12-05-durable-runs-start-after-their-202.md): svc-runs answers the
-- client once the row is written and starts the workflow in the background. Until the start is
-- confirmed the row keeps its owner (the svc-runs instance that wrote it), so a replica that sees
-- that owner's beat stand still ends the run (`owner_lost`) rather than leaving it running with
-- no workflow behind it. Rows written by earlier releases keep `false`: their workflows started
-- before their 202.
ALTER TABLE runs ADD COLUMN start_pending BOOLEAN NOT NULL DEFAULT false;
