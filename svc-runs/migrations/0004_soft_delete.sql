-- Deleting a chat hides it at once (deleted_at); the `purge_deleted_chats` schedule removes it,
-- with its runs and messages, once the retention (PA_DELETED_CHAT_RETENTION_HOURS) has passed.
ALTER TABLE chats ADD COLUMN deleted_at TIMESTAMPTZ;
CREATE INDEX chats_deleted ON chats (deleted_at) WHERE deleted_at IS NOT NULL;
