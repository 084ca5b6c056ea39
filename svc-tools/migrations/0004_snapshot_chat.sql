-- The chat a snapshot was assembled for: the memory tools (remember/recall/forget) act on the
-- run's chat, and ExecuteTool knows the run only by its snapshot. '' = assembled without a chat.
ALTER TABLE toolset_snapshots ADD COLUMN chat_id TEXT NOT NULL DEFAULT '';
