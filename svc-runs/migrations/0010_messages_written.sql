-- Every statement that writes a message into a chat counts it here, under the chat row's lock,
-- so a run's start can tell from its own insert whether the chat's latest messages are still
-- the ones its replica last knew (docs/src/adr/0252-2026-12-06-a-chats-history-is-known-while-nobody-else-writes-to-it.md).
ALTER TABLE chats ADD COLUMN messages_written BIGINT NOT NULL DEFAULT 0;
