-- Taint and classification follow the data (docs/adr/0120, 0121): a memory says whether it is
-- untrusted content (written from a run that had read untrusted content, curated from such a
-- run's turns, or a chunk of an uploaded file) and the classification of the chat it came from
-- (DataClassification numbers: 1 public, 2 internal, 3 confidential, 4 restricted). Recall brings
-- it only into runs of a chat classified at least as high, and taints the run when untrusted.
ALTER TABLE items
    ADD COLUMN untrusted BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN classification SMALLINT NOT NULL DEFAULT 2 CHECK (classification BETWEEN 1 AND 4);

-- Uploaded files come from outside: chunks stored before this migration are untrusted too.
-- Other memories written before it keep `internal` (the default classification of a chat).
UPDATE items SET untrusted = true WHERE kind = 4;
