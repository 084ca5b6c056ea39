//! Chats, messages and runs in schema `runs`. Every query is scoped to the caller's tenant and
//! user; a row of someone else is indistinguishable from a missing one. Queries run as the
//! application role inside tenant transactions, so row-level security backs the `WHERE`s up.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use pa_kit::db::{tenant_read, tenant_tx};
use pa_proto::v1::{
    Chat, ChatMessage, DataClassification, Identity, ModelAttempt, ModelSelection, Run, RunMode,
    RunSpec, RunStatus, Usage,
};
use prost::Message;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::error::RunsError;
use crate::histories::{ChatHistories, ChatMark, ChatWrite};
use pa_turn_io::RunEnding;

pub const MAX_TITLE_CHARS: usize = 200;

#[derive(Clone)]
pub struct RunStore {
    pool: PgPool,
    /// Record successful turns for the Curator (ADR 0242): only when a worker is configured.
    curate_turns: bool,
    /// The latest messages of chats this instance started runs in (ADR 0252).
    histories: std::sync::Arc<ChatHistories>,
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn chat_from_row(row: &PgRow) -> Result<Chat, sqlx::Error> {
    Ok(Chat {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        created_at_ms: ms(row.try_get("created_at")?),
        updated_at_ms: ms(row.try_get("updated_at")?),
        classification: i32::from(row.try_get::<i16, _>("classification")?),
    })
}

fn message_from_row(row: &PgRow) -> Result<ChatMessage, sqlx::Error> {
    Ok(ChatMessage {
        id: row.try_get("id")?,
        chat_id: row.try_get("chat_id")?,
        role: row.try_get("role")?,
        content: row.try_get("content")?,
        run_id: row.try_get("run_id")?,
        created_at_ms: ms(row.try_get("created_at")?),
        untrusted: row.try_get("untrusted")?,
    })
}

const RUN_COLUMNS: &str = "id, chat_id, parent_run_id, mode, status, requested_model, \
    resolved_label, model_reason, provider_tags, fallback_labels, assistant_message_id, \
    input_tokens, output_tokens, total_tokens, model_requests, tool_calls, cost_micros, \
    error_code, error_message, created_at, finished_at, attempts, cached_input_tokens, tainted";

fn run_from_row(row: &PgRow) -> Result<Run, sqlx::Error> {
    let finished: Option<DateTime<Utc>> = row.try_get("finished_at")?;
    let u64_of =
        |name: &str| -> Result<u64, sqlx::Error> { Ok(row.try_get::<i64, _>(name)?.max(0) as u64) };
    let u32_of =
        |name: &str| -> Result<u32, sqlx::Error> { Ok(row.try_get::<i32, _>(name)?.max(0) as u32) };
    Ok(Run {
        id: row.try_get("id")?,
        chat_id: row.try_get("chat_id")?,
        parent_run_id: row.try_get("parent_run_id")?,
        mode: i32::from(row.try_get::<i16, _>("mode")?),
        status: i32::from(row.try_get::<i16, _>("status")?),
        model: Some(ModelSelection {
            requested: row.try_get("requested_model")?,
            resolved_label: row.try_get("resolved_label")?,
            provider_tags: row.try_get("provider_tags")?,
            reason: row.try_get("model_reason")?,
            fallback_labels: row.try_get("fallback_labels")?,
        }),
        usage: Some(Usage {
            input_tokens: u64_of("input_tokens")?,
            output_tokens: u64_of("output_tokens")?,
            total_tokens: u64_of("total_tokens")?,
            model_requests: u32_of("model_requests")?,
            tool_calls: u32_of("tool_calls")?,
            cost_micros: u64_of("cost_micros")?,
            cached_input_tokens: u64_of("cached_input_tokens")?,
        }),
        attempts: serde_json::from_value(row.try_get("attempts")?).unwrap_or_default(),
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
        created_at_ms: ms(row.try_get("created_at")?),
        finished_at_ms: finished.map(ms),
        assistant_message_id: row.try_get("assistant_message_id")?,
        usage_with_sub_runs: None,
        tainted: row.try_get("tainted")?,
    })
}

pub use pa_proto::run_status_is_terminal as is_terminal;

/// Queries fetch `limit + 1` rows: the page is the first `limit`, and when there was one more,
/// the page's last row is where the next page starts.
fn page(rows: &[PgRow], limit: i64) -> (&[PgRow], Option<&PgRow>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let page = &rows[..rows.len().min(limit)];
    let next = if rows.len() > limit {
        page.last()
    } else {
        None
    };
    (page, next)
}

fn encode_cursor(parts: &str) -> String {
    URL_SAFE_NO_PAD.encode(parts)
}

fn decode_cursor(token: &str) -> Result<String, RunsError> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| RunsError::Invalid("page_token is not valid".into()))
}

impl RunStore {
    /// `pool` connects as the application role (see `pa_kit::db::connect_schema_rls`).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            curate_turns: false,
            histories: Default::default(),
        }
    }

    /// Queues every successful turn of a chat for the Curator, in the transaction that records
    /// the run's end (ADR 0242).
    pub fn curating_turns(mut self, on: bool) -> Self {
        self.curate_turns = on;
        self
    }

    pub async fn create_chat(
        &self,
        identity: &Identity,
        id: &str,
        title: &str,
        classification: DataClassification,
    ) -> Result<Chat, RunsError> {
        let mut tx = tenant_tx(&self.pool, &identity.tenant_id).await?;
        let row = sqlx::query(
            "INSERT INTO chats (tenant_id, id, user_id, title, classification) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, id) DO NOTHING \
             RETURNING id, title, classification, created_at, updated_at",
        )
        .bind(&identity.tenant_id)
        .bind(id)
        .bind(&identity.user_id)
        .bind(title)
        .bind(classification as i16)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(chat_from_row(&row)?),
            None => Err(RunsError::Conflict(format!("chat {id} already exists"))),
        }
    }

    pub async fn get_chat(&self, identity: &Identity, id: &str) -> Result<Chat, RunsError> {
        let mut tx = tenant_read(&self.pool, &identity.tenant_id).await?;
        let row = sqlx::query(
            "SELECT id, title, classification, created_at, updated_at FROM chats \
             WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or_else(|| RunsError::ChatNotFound(id.to_string()))?;
        Ok(chat_from_row(&row)?)
    }

    /// Newest first; the page token encodes the last row's (created_at, id).
    pub async fn list_chats(
        &self,
        identity: &Identity,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Chat>, String), RunsError> {
        let limit = if page_size == 0 {
            50
        } else {
            page_size.min(200)
        } as i64;
        let (after_us, after_id) = if page_token.is_empty() {
            (None, None)
        } else {
            let cursor = decode_cursor(page_token)?;
            let (us, id) = cursor
                .split_once('|')
                .and_then(|(us, id)| Some((us.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| RunsError::Invalid("page_token is not valid".into()))?;
            (Some(us), Some(id))
        };
        let mut tx = tenant_tx(&self.pool, &identity.tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, title, classification, created_at, updated_at, \
                    (extract(epoch from created_at) * 1000000)::bigint AS created_us \
             FROM chats WHERE tenant_id = $1 AND user_id = $2 AND deleted_at IS NULL \
               AND ($3::bigint IS NULL OR (created_at, id) < (to_timestamp($3::double precision / 1000000), $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(after_us)
        .bind(after_id)
        .bind(limit + 1)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let (rows, more) = page(&rows, limit);
        let next = match more {
            Some(last) => {
                let us: i64 = last.try_get("created_us")?;
                let id: String = last.try_get("id")?;
                encode_cursor(&format!("{us}|{id}"))
            }
            _ => String::new(),
        };
        let chats = rows.iter().map(chat_from_row).collect::<Result<_, _>>()?;
        Ok((chats, next))
    }

    /// Sets the title of one of the caller's chats (not a deleted one) and bumps `updated_at`.
    pub async fn rename_chat(
        &self,
        identity: &Identity,
        id: &str,
        title: &str,
    ) -> Result<Chat, RunsError> {
        let mut tx = tenant_tx(&self.pool, &identity.tenant_id).await?;
        let row = sqlx::query(
            "UPDATE chats SET title = $4, updated_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND deleted_at IS NULL \
             RETURNING id, title, classification, created_at, updated_at",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(id)
        .bind(title)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let row = row.ok_or_else(|| RunsError::ChatNotFound(id.to_string()))?;
        Ok(chat_from_row(&row)?)
    }

    /// Deletes the chat: from now on it is gone for every read (its messages and runs go with it
    /// when the `purge_deleted_chats` schedule removes it after the retention). Returns the ids
    /// of its runs.
    pub async fn delete_chat(
        &self,
        identity: &Identity,
        id: &str,
    ) -> Result<Vec<String>, RunsError> {
        let mut tx = tenant_tx(&self.pool, &identity.tenant_id).await?;
        let runs: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE tenant_id = $1 AND user_id = $2 AND chat_id = $3",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let deleted = sqlx::query(
            "UPDATE chats SET deleted_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(RunsError::ChatNotFound(id.to_string()));
        }
        tx.commit().await?;
        Ok(runs)
    }

    /// Oldest first; the page token encodes the last message's sequence number.
    pub async fn list_messages(
        &self,
        identity: &Identity,
        chat_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<ChatMessage>, String), RunsError> {
        self.get_chat(identity, chat_id).await?;
        let limit = if page_size == 0 {
            100
        } else {
            page_size.min(500)
        } as i64;
        let after: i64 = if page_token.is_empty() {
            0
        } else {
            decode_cursor(page_token)?
                .parse()
                .map_err(|_| RunsError::Invalid("page_token is not valid".into()))?
        };
        let mut tx = tenant_tx(&self.pool, &identity.tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, chat_id, role, content, run_id, created_at, seq, untrusted FROM messages \
             WHERE tenant_id = $1 AND chat_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(&identity.tenant_id)
        .bind(chat_id)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let (rows, more) = page(&rows, limit);
        let next = match more {
            Some(last) => encode_cursor(&last.try_get::<i64, _>("seq")?.to_string()),
            _ => String::new(),
        };
        let messages = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<_, _>>()?;
        Ok((messages, next))
    }

    /// The chat's latest `limit` messages, oldest first, without those of `except_run_id`
    /// (the run being started, whose message the caller appends), and the chat's mark when they
    /// were, in `tx`; `None` unless the chat is `user_id`'s and not deleted.
    async fn history_in(
        tx: &mut sqlx::PgConnection,
        identity: &Identity,
        chat_id: &str,
        limit: u32,
        except_run_id: &str,
    ) -> Result<Option<(Vec<ChatMessage>, ChatMark)>, RunsError> {
        // One statement, so the messages and the count are of one snapshot; a chat without
        // messages is one row of NULL messages. The latest message is always among those read
        // (at least one is), so its `seq` is the mark's.
        let rows = sqlx::query(
            "SELECT c.messages_written, c.chat_created_us, \
               m.id, m.chat_id, m.role, m.content, m.run_id, m.created_at, m.seq, m.untrusted \
             FROM (SELECT messages_written, \
                     (extract(epoch from created_at) * 1000000)::bigint AS chat_created_us \
                   FROM chats WHERE tenant_id = $1 AND id = $2 AND user_id = $5 \
                     AND deleted_at IS NULL) c \
             LEFT JOIN LATERAL ( \
               SELECT id, chat_id, role, content, run_id, created_at, seq, untrusted \
               FROM messages \
               WHERE tenant_id = $1 AND chat_id = $2 AND run_id IS DISTINCT FROM $4 \
               ORDER BY seq DESC LIMIT $3) m ON true \
             ORDER BY m.seq",
        )
        .bind(&identity.tenant_id)
        .bind(chat_id)
        .bind(i64::from(limit.max(1)))
        .bind(except_run_id)
        .bind(&identity.user_id)
        .fetch_all(tx)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut mark = ChatMark {
            created_us: first.try_get("chat_created_us")?,
            written: first.try_get("messages_written")?,
            last_seq: 0,
        };
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(seq) = row.try_get::<Option<i64>, _>("seq")? {
                mark.last_seq = mark.last_seq.max(seq);
                messages.push(message_from_row(row)?);
            }
        }
        Ok(Some((messages, mark)))
    }

    /// A run of this tenant, whoever in the tenant started it (tenant-level check; user-level
    /// visibility is checked by the caller through the chat).
    pub async fn get_run(&self, identity: &Identity, run_id: &str) -> Result<Run, RunsError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE tenant_id = $1 AND user_id = $2 AND id = $3 \
             AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.tenant_id = runs.tenant_id \
               AND c.id = runs.chat_id AND c.deleted_at IS NOT NULL)"
        );
        let mut tx = tenant_read(&self.pool, &identity.tenant_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&identity.tenant_id)
            .bind(&identity.user_id)
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
        let row = row.ok_or_else(|| RunsError::RunNotFound(run_id.to_string()))?;
        Ok(run_from_row(&row)?)
    }

    /// The usage of `run_id` and of all its sub-agent runs, however deep.
    pub async fn tree_usage(&self, identity: &Identity, run_id: &str) -> Result<Usage, RunsError> {
        let mut tx = tenant_tx(&self.pool, &identity.tenant_id).await?;
        let row = sqlx::query(
            "WITH RECURSIVE tree AS ( \
               SELECT id, input_tokens, output_tokens, total_tokens, model_requests, tool_calls, \
                 cost_micros, cached_input_tokens FROM runs \
               WHERE tenant_id = $1 AND user_id = $2 AND id = $3 \
               UNION ALL \
               SELECT r.id, r.input_tokens, r.output_tokens, r.total_tokens, r.model_requests, \
                 r.tool_calls, r.cost_micros, r.cached_input_tokens \
               FROM runs r JOIN tree t ON r.parent_run_id = t.id WHERE r.tenant_id = $1) \
             SELECT COALESCE(SUM(input_tokens), 0)::int8 AS input_tokens, \
               COALESCE(SUM(output_tokens), 0)::int8 AS output_tokens, \
               COALESCE(SUM(total_tokens), 0)::int8 AS total_tokens, \
               COALESCE(SUM(model_requests), 0)::int8 AS model_requests, \
               COALESCE(SUM(tool_calls), 0)::int8 AS tool_calls, \
               COALESCE(SUM(cost_micros), 0)::int8 AS cost_micros, \
               COALESCE(SUM(cached_input_tokens), 0)::int8 AS cached_input_tokens FROM tree",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let n = |name: &str| -> Result<u64, sqlx::Error> {
            Ok(row.try_get::<i64, _>(name)?.max(0) as u64)
        };
        Ok(Usage {
            input_tokens: n("input_tokens")?,
            output_tokens: n("output_tokens")?,
            total_tokens: n("total_tokens")?,
            model_requests: n("model_requests")? as u32,
            tool_calls: n("tool_calls")? as u32,
            cost_micros: n("cost_micros")?,
            cached_input_tokens: n("cached_input_tokens")?,
        })
    }

    /// The sub-agent runs of `run_id` still going (to cancel them with it).
    pub async fn running_sub_runs(
        &self,
        identity: &Identity,
        run_id: &str,
    ) -> Result<Vec<String>, RunsError> {
        let mut tx = tenant_tx(&self.pool, &identity.tenant_id).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE tenant_id = $1 AND user_id = $2 AND parent_run_id = $3 \
             AND status IN ($4, $5)",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(run_id)
        .bind(RunStatus::Queued as i16)
        .bind(RunStatus::Running as i16)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn run_status(
        &self,
        tenant_id: &str,
        run_id: &str,
    ) -> Result<Option<i32>, RunsError> {
        let mut tx = tenant_tx(&self.pool, tenant_id).await?;
        let status: Option<i16> = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(status.map(i32::from))
    }

    /// Begins writing a run of `identity` in `chat_id`: opens its tenant transaction and reads
    /// the chat's `history` latest messages before the run (none when 0; ADR 0218), so that only
    /// the insert and the COMMIT wait for what the run's start resolves meanwhile (ADR 0229).
    /// Messages this instance knows are not read again: the insert checks they still are the
    /// chat's latest (ADR 0252).
    pub async fn begin_run_write(
        &self,
        identity: &Identity,
        chat_id: &str,
        run_id: &str,
        history: u32,
    ) -> Result<RunWrite, RunsError> {
        let mut tx = tenant_tx(&self.pool, &identity.tenant_id).await?;
        let earlier = if history == 0 {
            Earlier::NotWanted
        } else if let Some(known) = self.histories.known(identity, chat_id, history) {
            Earlier::Known(known)
        } else {
            match Self::history_in(&mut tx, identity, chat_id, history, run_id).await? {
                Some((messages, mark)) => Earlier::Read(messages, mark),
                // Not the caller's chat: the insert finds it so too.
                None => Earlier::NotWanted,
            }
        };
        Ok(RunWrite {
            tx,
            earlier,
            limit: history,
            histories: self.histories.clone(),
        })
    }
    /// Records how a run ended and its assistant message, in one transaction. A run that already
    /// ended is left as it is (returns false).
    pub async fn finish_run(
        &self,
        spec: &RunSpec,
        end: &RunEnding,
        attempts: &[ModelAttempt],
    ) -> Result<bool, RunsError> {
        let tenant_id = spec
            .identity
            .as_ref()
            .map(|i| i.tenant_id.clone())
            .unwrap_or_default();
        let mut tx = tenant_tx(&self.pool, &tenant_id).await?;
        let updated: Option<f64> = sqlx::query_scalar(
            "UPDATE runs SET status = $2, input_tokens = $3, output_tokens = $4, total_tokens = $5, \
               model_requests = $6, tool_calls = $7, cost_micros = $8, error_code = $9, \
               error_message = $10, finished_at = now(), attempts = $13, cached_input_tokens = $14, \
               tainted = $15 \
             WHERE id = $1 AND status IN ($11, $12) \
             RETURNING EXTRACT(EPOCH FROM (now() - created_at))::float8",
        )
        .bind(&spec.run_id)
        .bind(end.status as i16)
        .bind(end.usage.input_tokens as i64)
        .bind(end.usage.output_tokens as i64)
        .bind(end.usage.total_tokens as i64)
        .bind(end.usage.model_requests as i32)
        .bind(end.usage.tool_calls as i32)
        .bind(end.usage.cost_micros as i64)
        .bind(end.error_code.as_deref())
        .bind(end.error_message.as_deref())
        .bind(RunStatus::Queued as i16)
        .bind(RunStatus::Running as i16)
        .bind(serde_json::to_value(attempts).map_err(|e| RunsError::Corrupt(e.to_string()))?)
        .bind(end.usage.cached_input_tokens as i64)
        .bind(end.tainted)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(wall_secs) = updated else {
            tx.rollback().await?;
            return Ok(false);
        };
        // A sub-agent's reply goes to its parent as a tool result, not into the chat.
        let mut reply = None;
        if !end.assistant_text.is_empty() && spec.parent_run_id.is_none() {
            // Counted in the chat's messages_written, under the chat row's lock (ADR 0252).
            let written = sqlx::query(
                "WITH message AS ( \
                   INSERT INTO messages (tenant_id, id, chat_id, role, content, run_id, untrusted) \
                   VALUES ($1, $2, $3, 'assistant', $4, $5, $6) \
                   ON CONFLICT (tenant_id, id) DO NOTHING RETURNING seq, created_at) \
                 UPDATE chats SET messages_written = messages_written + 1 \
                 WHERE tenant_id = $1 AND id = $3 AND EXISTS (SELECT 1 FROM message) \
                 RETURNING messages_written, \
                   (extract(epoch from created_at) * 1000000)::bigint AS chat_created_us, \
                   (SELECT seq FROM message) AS message_seq, \
                   (SELECT created_at FROM message) AS message_created_at, \
                   (SELECT COALESCE(max(seq), 0) FROM messages \
                    WHERE tenant_id = $1 AND chat_id = $3) AS seq_before",
            )
            .bind(&tenant_id)
            .bind(&spec.assistant_message_id)
            .bind(&spec.chat_id)
            .bind(&end.assistant_text)
            .bind(&spec.run_id)
            .bind(end.tainted)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = written {
                let write = ChatWrite {
                    seq_before: row.try_get("seq_before")?,
                    after: ChatMark {
                        created_us: row.try_get("chat_created_us")?,
                        written: row.try_get("messages_written")?,
                        last_seq: row.try_get("message_seq")?,
                    },
                };
                let message = ChatMessage {
                    id: spec.assistant_message_id.clone(),
                    chat_id: spec.chat_id.clone(),
                    role: "assistant".into(),
                    content: end.assistant_text.clone(),
                    run_id: Some(spec.run_id.clone()),
                    created_at_ms: ms(row.try_get("message_created_at")?),
                    untrusted: end.tainted,
                };
                reply = Some((message, write));
            }
        }
        // A chat's turn for the Curator, with the end that makes it one: a run whose end is
        // recorded is never left uncurated, whichever process or outbox recorded it. A sub-agent's
        // work is not a turn of the chat.
        if self.curate_turns
            && end.status == RunStatus::Succeeded
            && spec.parent_run_id.is_none()
            && !spec.chat_id.is_empty()
        {
            crate::curations::queue_turn(&mut tx, &tenant_id, spec).await?;
        }
        tx.commit().await?;
        if let (Some((message, write)), Some(identity)) = (reply, &spec.identity) {
            self.histories
                .written(identity, &spec.chat_id, message, &write);
        }
        record_finished(spec, end, attempts, wall_secs);
        Ok(true)
    }

    /// Records a mode chosen after the run row was written (the toolset made it durable).
    pub async fn set_mode(&self, spec: &RunSpec) -> Result<(), RunsError> {
        let tenant_id = spec
            .identity
            .as_ref()
            .map(|i| i.tenant_id.clone())
            .unwrap_or_default();
        let mut tx = tenant_tx(&self.pool, &tenant_id).await?;
        // A durable run stays this instance's until its workflow's start is confirmed
        // (`Leases::hand_to_workflow`): a replica ends it if this instance dies first (ADR 0243).
        sqlx::query(
            "UPDATE runs SET mode = $2, spec = $3, start_pending = ($2 = $4) WHERE id = $1",
        )
        .bind(&spec.run_id)
        .bind(spec.mode as i16)
        .bind(spec.encode_to_vec())
        .bind(RunMode::Durable as i16)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored spec of a run (for cancelling a run whose driver is gone).
    pub async fn spec(&self, tenant_id: &str, run_id: &str) -> Result<RunSpec, RunsError> {
        let mut tx = tenant_tx(&self.pool, tenant_id).await?;
        let bytes: Option<Vec<u8>> = sqlx::query_scalar("SELECT spec FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let bytes = bytes.ok_or_else(|| RunsError::RunNotFound(run_id.to_string()))?;
        RunSpec::decode(bytes.as_slice()).map_err(|e| RunsError::Corrupt(e.to_string()))
    }
}

pub fn mode_name(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Durable => "durable",
        _ => "inline",
    }
}

/// Counts a finished run and observes its wall time and the platform's overhead: the wall time
/// minus what svc-models spent on provider attempts (their latencies, fallbacks included).
fn record_finished(spec: &RunSpec, end: &RunEnding, attempts: &[ModelAttempt], wall_secs: f64) {
    let mode = mode_name(RunMode::try_from(spec.mode).unwrap_or(RunMode::Inline));
    let status = match end.status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Cancelled => "cancelled",
        _ => "failed",
    };
    let model_secs: f64 = attempts.iter().map(|a| a.latency_ms as f64 / 1000.0).sum();
    pa_kit::metrics::RUNS_FINISHED
        .with_label_values(&[mode, status])
        .inc();
    pa_kit::metrics::RUN_SECONDS
        .with_label_values(&[mode, status])
        .observe(wall_secs);
    pa_kit::metrics::PLATFORM_OVERHEAD_SECONDS
        .with_label_values(&[mode])
        .observe((wall_secs - model_secs).max(0.0));
}

#[allow(dead_code)]
fn _mode_is_stored_as_smallint(mode: RunMode) -> i16 {
    mode as i16
}

/// A run row's write begun by [`RunStore::begin_run_write`]: its transaction is open and the
/// chat's history read (or known). Dropped without [`RunWrite::insert`], it is rolled back.
pub struct RunWrite {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    earlier: Earlier,
    /// How many of the chat's latest messages the run starts from.
    limit: u32,
    histories: std::sync::Arc<ChatHistories>,
}

/// What a run's write learns of its chat's latest messages, for after its commit.
enum Learnt {
    Nothing,
    /// What this instance knew was current: it follows the run's message.
    Followed,
    /// Read, when the chat was at this mark.
    Read(ChatMark),
}

/// The chat's messages before a run, as its write began.
enum Earlier {
    /// A sub-agent's run (its task is its only message), or a chat that is not the caller's.
    NotWanted,
    /// Read in the write's transaction, when the chat was at the mark.
    Read(Vec<ChatMessage>, ChatMark),
    /// As this instance last knew them: used only if the insert finds the chat at the next mark.
    Known(crate::histories::KnownHistory),
}

impl RunWrite {
    /// Writes the run (in `status`), the user's message and the chat's new `updated_at` (a
    /// sub-agent run: only the run — its task and reply are not chat messages) in one
    /// statement, so a run is never half-written and launch costs one round trip. Returns `None`
    /// when the run id is taken (by a concurrent retry, or by another tenant: ids are global and
    /// the unique index sees rows that row-level security hides), or when the chat is not (or no
    /// longer) the caller's. Otherwise also the chat's messages before the run: those read when
    /// the write began, or those this instance knew if nobody wrote to the chat since (the
    /// insert's count of the chat's writes says so), or else read now (ADR 0252).
    pub async fn insert(
        self,
        spec: &RunSpec,
        user_message_id: &str,
        status: RunStatus,
        owner: Option<&str>,
    ) -> Result<Option<(Run, Vec<ChatMessage>)>, RunsError> {
        let identity = spec.identity.clone().unwrap_or_default();
        let selection = spec.model_selection.clone().unwrap_or_default();
        let input = spec.input.clone().unwrap_or_default();
        let mut tx = self.tx;
        let sql = format!(
            "WITH run AS ( \
               INSERT INTO runs (id, tenant_id, user_id, chat_id, parent_run_id, mode, status, \
                 requested_model, resolved_label, model_reason, provider_tags, fallback_labels, \
                 toolset_snapshot_id, assistant_message_id, spec, owner_id, start_pending) \
               SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $18, \
                 $6 = $19 \
               WHERE EXISTS (SELECT 1 FROM chats WHERE tenant_id = $2 AND user_id = $3 \
                 AND id = $4 AND deleted_at IS NULL) \
               ON CONFLICT (id) DO NOTHING RETURNING {RUN_COLUMNS}), \
             message AS ( \
               INSERT INTO messages (tenant_id, id, chat_id, role, content, run_id) \
               SELECT $2, $16, $4, 'user', $17, run.id FROM run WHERE $5::text IS NULL \
               RETURNING seq, created_at), \
             chat AS ( \
               UPDATE chats SET updated_at = now(), messages_written = messages_written + 1 \
               WHERE tenant_id = $2 AND id = $4 AND $5::text IS NULL \
                 AND EXISTS (SELECT 1 FROM run) \
               RETURNING messages_written, \
                 (extract(epoch from created_at) * 1000000)::bigint AS chat_created_us) \
             SELECT run.*, (SELECT messages_written FROM chat) AS chat_messages_written, \
               (SELECT chat_created_us FROM chat) AS chat_created_us, \
               (SELECT seq FROM message) AS message_seq, \
               (SELECT created_at FROM message) AS message_created_at, \
               (SELECT COALESCE(max(seq), 0) FROM messages \
                WHERE tenant_id = $2 AND chat_id = $4) AS chat_seq_before \
             FROM run"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&spec.run_id)
            .bind(&identity.tenant_id)
            .bind(&identity.user_id)
            .bind(&spec.chat_id)
            .bind(&spec.parent_run_id)
            .bind(spec.mode as i16)
            .bind(status as i16)
            .bind(&selection.requested)
            .bind(&selection.resolved_label)
            .bind(&selection.reason)
            .bind(&selection.provider_tags)
            .bind(&selection.fallback_labels)
            .bind(&spec.toolset_snapshot_id)
            .bind(&spec.assistant_message_id)
            .bind(spec.encode_to_vec())
            .bind(user_message_id)
            .bind(&input.message)
            .bind(owner)
            .bind(RunMode::Durable as i16)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let run = run_from_row(&row)?;
        // A user run's message was written (into the chat: `write`).
        let written = match (
            row.try_get::<Option<i64>, _>("chat_messages_written")?,
            row.try_get::<Option<i64>, _>("chat_created_us")?,
            row.try_get::<Option<i64>, _>("message_seq")?,
            row.try_get::<Option<DateTime<Utc>>, _>("message_created_at")?,
        ) {
            (Some(written), Some(created_us), Some(seq), Some(at)) => {
                let message = ChatMessage {
                    id: user_message_id.to_string(),
                    chat_id: spec.chat_id.clone(),
                    role: "user".into(),
                    content: input.message.clone(),
                    run_id: Some(spec.run_id.clone()),
                    created_at_ms: ms(at),
                    untrusted: false,
                };
                let write = ChatWrite {
                    seq_before: row.try_get("chat_seq_before")?,
                    after: ChatMark {
                        created_us,
                        written,
                        last_seq: seq,
                    },
                };
                Some((message, write))
            }
            _ => None,
        };
        let count_source = |source: &str| {
            pa_kit::metrics::RUN_HISTORIES
                .with_label_values(&[source])
                .inc()
        };
        // The messages before the run, and what this instance learns of the chat from them.
        let write = written.as_ref().map(|(_, write)| *write);
        let (earlier, learnt) = match (self.earlier, write) {
            (Earlier::NotWanted, _) | (_, None) => (Vec::new(), Learnt::Nothing),
            (Earlier::Read(messages, at), Some(_)) => {
                count_source("read");
                (messages, Learnt::Read(at))
            }
            (Earlier::Known(known), Some(write)) if known.mark.is_followed_by(&write) => {
                count_source("known");
                // Copied for the run; what is known is then updated in place (this copy of
                // its `Arc` goes with this arm).
                (known.messages.iter().cloned().collect(), Learnt::Followed)
            }
            (Earlier::Known(_), Some(_)) => {
                // Someone wrote to the chat since: read now, under the chat row's lock this
                // insert holds (nothing that counts can have been written since).
                count_source("stale");
                let (messages, at) = RunStore::history_in(
                    &mut tx,
                    &identity,
                    &spec.chat_id,
                    self.limit,
                    &spec.run_id,
                )
                .await?
                .ok_or_else(|| RunsError::ChatNotFound(spec.chat_id.clone()))?;
                // The read counts this run's own write, not its message.
                let before = ChatMark {
                    written: at.written - 1,
                    ..at
                };
                (messages, Learnt::Read(before))
            }
        };
        tx.commit().await?;
        if let Some((message, write)) = written {
            match learnt {
                Learnt::Followed => {
                    self.histories
                        .written(&identity, &spec.chat_id, message, &write)
                }
                // Remembered only when the messages were the chat's latest right before this
                // run's.
                Learnt::Read(before) if before.is_followed_by(&write) => self.histories.remember(
                    &identity,
                    &spec.chat_id,
                    self.limit,
                    &earlier,
                    message,
                    write.after,
                ),
                _ => {}
            }
        }
        Ok(Some((run, earlier)))
    }
}
