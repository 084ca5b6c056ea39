//! A chat's latest messages as this replica last wrote or read them, so a chat's next run need
//! not read them again (ADR 0252). What is known is only ever used after the run row's insert
//! proved nobody else wrote to the chat since: every statement that writes a message into a
//! chat also counts it in `chats.messages_written` (under the chat row's lock), and the insert
//! returns the count, and the chat's latest message before its own (which also catches a
//! release that did not count yet, during a rolling upgrade).

use std::collections::VecDeque;
use std::sync::Arc;

use pa_proto::v1::{ChatMessage, Identity};

use crate::memo::Memo;

/// Where a chat's messages stood: how many writes `chats.messages_written` had counted, its
/// latest message's `seq` (0: none), and the chat row's creation (a chat purged and created
/// again under its id counts from 0 again).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ChatMark {
    pub created_us: i64,
    pub written: i64,
    pub last_seq: i64,
}

/// One message written into a chat: the chat's latest `seq` before it, and its mark after.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ChatWrite {
    pub seq_before: i64,
    pub after: ChatMark,
}

impl ChatMark {
    /// `write` was the chat's next write after this mark.
    pub(crate) fn is_followed_by(self, write: &ChatWrite) -> bool {
        write.after.created_us == self.created_us
            && write.after.written == self.written + 1
            && write.seq_before == self.last_seq
    }
}

/// The chat's latest `limit` messages (oldest first) at `mark`.
#[derive(Clone)]
pub(crate) struct KnownHistory {
    pub mark: ChatMark,
    limit: u32,
    /// Of the messages' contents.
    bytes: usize,
    pub messages: Arc<VecDeque<ChatMessage>>,
}

impl KnownHistory {
    /// `added` was written, which put the chat at `mark`: the oldest go past `limit`. False when
    /// the messages are too large to keep.
    fn push(&mut self, added: ChatMessage, mark: ChatMark) -> bool {
        // In place unless a run's start holds these very messages.
        let messages = Arc::make_mut(&mut self.messages);
        self.bytes += added.content.len();
        messages.push_back(added);
        while messages.len() > self.limit as usize {
            if let Some(gone) = messages.pop_front() {
                self.bytes -= gone.content.len();
            }
        }
        self.mark = mark;
        self.bytes <= MAX_KNOWN_BYTES
    }
}

/// A chat whose latest messages hold more than this is not remembered (they are read).
const MAX_KNOWN_BYTES: usize = 128 * 1024;

type ChatKey = (String, String, String);

/// `(tenant, user, chat) → its latest messages`, for at most 1,000 chats.
#[derive(Default)]
pub(crate) struct ChatHistories(Memo<ChatKey, KnownHistory, 1_000>);

fn chat_key(identity: &Identity, chat_id: &str) -> ChatKey {
    (
        identity.tenant_id.clone(),
        identity.user_id.clone(),
        chat_id.to_string(),
    )
}

impl ChatHistories {
    /// The chat's latest `limit` messages as last known here: to be used only if the run row's
    /// insert finds the chat at the next mark.
    pub(crate) fn known(
        &self,
        identity: &Identity,
        chat_id: &str,
        limit: u32,
    ) -> Option<KnownHistory> {
        self.0
            .get(&chat_key(identity, chat_id))
            .filter(|known| known.limit == limit)
    }

    /// `earlier` were the chat's latest `limit` messages, then `added` was written, which put
    /// the chat at `mark`.
    pub(crate) fn remember(
        &self,
        identity: &Identity,
        chat_id: &str,
        limit: u32,
        earlier: &[ChatMessage],
        added: ChatMessage,
        mark: ChatMark,
    ) {
        let key = chat_key(identity, chat_id);
        let mut known = KnownHistory {
            mark,
            limit,
            bytes: earlier.iter().map(|m| m.content.len()).sum(),
            messages: Arc::new(earlier.iter().cloned().collect()),
        };
        if limit > 0 && known.push(added, mark) {
            self.0.remember(key, known);
        } else {
            self.0.forget(&key);
        }
    }

    /// `added` was written into the chat (`write`): what is known follows it when it was the
    /// chat's state just before; otherwise it is forgotten.
    pub(crate) fn written(
        &self,
        identity: &Identity,
        chat_id: &str,
        added: ChatMessage,
        write: &ChatWrite,
    ) {
        self.0.update(&chat_key(identity, chat_id), |known| {
            known.mark.is_followed_by(write) && known.push(added, write.after)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(content: &str) -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: content.into(),
            ..Default::default()
        }
    }

    fn contents(known: &KnownHistory) -> Vec<&str> {
        known.messages.iter().map(|m| m.content.as_str()).collect()
    }

    const AT: ChatMark = ChatMark {
        created_us: 7,
        written: 4,
        last_seq: 40,
    };

    /// The write right after `mark`, as the store reports it.
    fn next(mark: ChatMark) -> ChatWrite {
        ChatWrite {
            seq_before: mark.last_seq,
            after: ChatMark {
                written: mark.written + 1,
                last_seq: mark.last_seq + 3,
                ..mark
            },
        }
    }

    #[test]
    fn a_mark_is_followed_only_by_the_next_write_in_the_same_chat() {
        assert!(AT.is_followed_by(&next(AT)));
        let mut counted_twice = next(AT);
        counted_twice.after.written += 1;
        assert!(!AT.is_followed_by(&counted_twice));
        // A message written by a release that does not count (a rolling upgrade).
        let uncounted = ChatWrite {
            seq_before: AT.last_seq + 1,
            ..next(AT)
        };
        assert!(!AT.is_followed_by(&uncounted));
        // The same count in a chat created again under the same id.
        let mut recreated = next(AT);
        recreated.after.created_us += 1;
        assert!(!AT.is_followed_by(&recreated));
    }

    #[test]
    fn the_latest_messages_are_kept_and_follow_only_the_next_write() {
        let histories = ChatHistories::default();
        let who = Identity {
            tenant_id: "t".into(),
            user_id: "u".into(),
            ..Default::default()
        };
        let earlier = [message("1"), message("2"), message("3")];
        histories.remember(&who, "c", 3, &earlier, message("4"), AT);
        let known = histories.known(&who, "c", 3).expect("known");
        assert_eq!(contents(&known), ["2", "3", "4"]);
        assert!(histories.known(&who, "c", 5).is_none(), "another limit");
        let other = Identity {
            tenant_id: "t2".into(),
            ..who.clone()
        };
        assert!(histories.known(&other, "c", 3).is_none(), "another tenant");
        let write = next(AT);
        histories.written(&who, "c", message("5"), &write);
        let known = histories.known(&who, "c", 3).expect("known");
        assert_eq!(contents(&known), ["3", "4", "5"]);
        assert_eq!(known.mark, write.after);
        // A write this replica did not see came between: forgotten.
        let mut skipped = next(write.after);
        skipped.after.written += 1;
        histories.written(&who, "c", message("7"), &skipped);
        assert!(histories.known(&who, "c", 3).is_none());
        // Too large to keep.
        let big = "x".repeat(MAX_KNOWN_BYTES + 1);
        histories.remember(&who, "c", 3, &[], message(&big), AT);
        assert!(histories.known(&who, "c", 3).is_none());
    }

    #[test]
    fn a_write_updates_what_is_known_in_place_unless_a_start_holds_it() {
        let histories = ChatHistories::default();
        let who = Identity::default();
        histories.remember(&who, "c", 3, &[message("1")], message("2"), AT);
        let at = |histories: &ChatHistories| {
            let known = histories.known(&who, "c", 3).expect("known");
            (Arc::as_ptr(&known.messages), known)
        };
        let (before, held) = at(&histories);
        // A run's start holds them: the write copies.
        histories.written(&who, "c", message("3"), &next(AT));
        let (copied, _) = at(&histories);
        assert_ne!(copied, before);
        assert_eq!(contents(&held), ["1", "2"]);
        drop(held);
        let mark = at(&histories).1.mark;
        histories.written(&who, "c", message("4"), &next(mark));
        let (after, known) = at(&histories);
        assert_eq!(after, copied, "updated in place");
        assert_eq!(contents(&known), ["2", "3", "4"]);
    }
}
