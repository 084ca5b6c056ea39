//! Usage records: one row per successful model call (run, user, tenant, model, tokens, cost),
//! aggregated by day for `GET /v1/me/usage` and `GET /v1/admin/usage`. Finished days are rolled
//! up into `usage_daily` by the `rollup_usage` schedule; reads combine the rolled-up days with
//! the raw rows of the days after the watermark, so a reading is the same before and after.

use pa_proto::v1::{DailyUsage, Identity, Usage};
use sqlx::{PgPool, Row};

#[derive(Clone)]
pub struct UsageStore {
    pool: PgPool,
}

/// Cost in micros of the currency unit, from prices per 1M tokens (also in micros).
pub fn cost_micros(usage: &Usage, input_price_micros: u64, output_price_micros: u64) -> u64 {
    let input = u128::from(usage.input_tokens) * u128::from(input_price_micros);
    let output = u128::from(usage.output_tokens) * u128::from(output_price_micros);
    u64::try_from((input + output) / 1_000_000).unwrap_or(u64::MAX)
}

impl UsageStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn record(
        &self,
        identity: &Identity,
        run_id: &str,
        label: &str,
        key_source: &str,
        usage: &Usage,
    ) -> Result<(), sqlx::Error> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut tx = pa_kit::db::tenant_tx(&self.pool, &identity.tenant_id).await?;
        sqlx::query(
            "INSERT INTO usage_records (tenant_id, user_id, run_id, label, key_source, input_tokens, \
               output_tokens, cached_input_tokens, cost_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&identity.tenant_id)
        .bind(&identity.user_id)
        .bind(run_id)
        .bind(label)
        .bind(key_source)
        .bind(n(usage.input_tokens))
        .bind(n(usage.output_tokens))
        .bind(n(usage.cached_input_tokens))
        .bind(n(usage.cost_micros))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Per day (UTC) and model, between `from` and `to` inclusive (YYYY-MM-DD); `user` = None
    /// aggregates the whole tenant.
    pub async fn daily(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<DailyUsage>, sqlx::Error> {
        let mut tx = pa_kit::db::tenant_tx(&self.pool, tenant_id).await?;
        let rows = sqlx::query(
            "WITH mark AS ( \
               SELECT coalesce((SELECT rolled_through FROM usage_rollup_state), '-infinity'::date) AS day), \
             rolled AS ( \
               SELECT day, label, input_tokens, output_tokens, cached_input_tokens, cost_micros, calls \
               FROM usage_daily WHERE tenant_id = $1 AND ($2::text IS NULL OR user_id = $2) \
                 AND day BETWEEN $3 AND $4 AND day <= (SELECT day FROM mark)), \
             fresh AS ( \
               SELECT (created_at AT TIME ZONE 'UTC')::date AS day, label, input_tokens, output_tokens, \
                 cached_input_tokens, cost_micros, 1::bigint AS calls \
               FROM usage_records WHERE tenant_id = $1 AND ($2::text IS NULL OR user_id = $2) \
                 AND (created_at AT TIME ZONE 'UTC')::date BETWEEN $3 AND $4 \
                 AND (created_at AT TIME ZONE 'UTC')::date > (SELECT day FROM mark)) \
             SELECT to_char(day, 'YYYY-MM-DD') AS day, label, \
               SUM(input_tokens)::bigint AS input, SUM(output_tokens)::bigint AS output, \
               SUM(cached_input_tokens)::bigint AS cached, SUM(cost_micros)::bigint AS cost, \
               SUM(calls)::bigint AS calls \
             FROM (SELECT * FROM rolled UNION ALL SELECT * FROM fresh) u \
             GROUP BY u.day, label ORDER BY u.day, label",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let get = |name: &str| -> Result<u64, sqlx::Error> {
                    Ok(row.try_get::<i64, _>(name)?.max(0) as u64)
                };
                let (input, output) = (get("input")?, get("output")?);
                Ok(DailyUsage {
                    day: row.try_get("day")?,
                    label: row.try_get("label")?,
                    usage: Some(Usage {
                        input_tokens: input,
                        output_tokens: output,
                        total_tokens: input + output,
                        cached_input_tokens: get("cached")?,
                        cost_micros: get("cost")?,
                        model_requests: u32::try_from(get("calls")?).unwrap_or(u32::MAX),
                        tool_calls: 0,
                    }),
                })
            })
            .collect()
    }
}

/// The `rollup_usage` maintenance task, over every tenant: it runs on the schema owner's pool
/// (no tenant's request), like a migration.
#[derive(Clone)]
pub struct UsageRollup {
    pub owner: PgPool,
}

impl UsageRollup {
    /// Rolls up the finished days after the watermark, at most `max_days` of them, and moves
    /// the watermark. Recomputing a day replaces its rows, so a repeated call changes nothing.
    /// Returns the day rows written and whether finished days are left.
    pub async fn rollup(&self, max_days: u32) -> Result<(u64, bool), sqlx::Error> {
        let mut tx = self.owner.begin().await?;
        // One rollup at a time: the state row is the lock (created on first use).
        sqlx::query(
            "INSERT INTO usage_rollup_state (rolled_through) \
             SELECT coalesce(min((created_at AT TIME ZONE 'UTC')::date) - 1, \
                             (now() AT TIME ZONE 'UTC')::date - 1) FROM usage_records \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?;
        let (from, last_finished): (chrono::NaiveDate, chrono::NaiveDate) = sqlx::query_as(
            // A day counts as finished ten minutes after it ends: a call that began before
            // midnight is stamped with its start and may commit a little later.
            "SELECT rolled_through + 1, ((now() - interval '10 minutes') AT TIME ZONE 'UTC')::date - 1 \
             FROM usage_rollup_state FOR UPDATE",
        )
        .fetch_one(&mut *tx)
        .await?;
        if from > last_finished {
            tx.commit().await?;
            return Ok((0, false));
        }
        let span = chrono::Days::new(u64::from(max_days.max(1)) - 1);
        let through = (from + span).min(last_finished);
        let written = sqlx::query(
            "INSERT INTO usage_daily (tenant_id, day, user_id, label, input_tokens, output_tokens, \
               cached_input_tokens, cost_micros, calls) \
             SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, user_id, label, \
               SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), SUM(cost_micros), COUNT(*) \
             FROM usage_records WHERE (created_at AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2 \
             GROUP BY 1, 2, 3, 4 \
             ON CONFLICT (tenant_id, day, user_id, label) DO UPDATE SET \
               input_tokens = EXCLUDED.input_tokens, output_tokens = EXCLUDED.output_tokens, \
               cached_input_tokens = EXCLUDED.cached_input_tokens, \
               cost_micros = EXCLUDED.cost_micros, calls = EXCLUDED.calls",
        )
        .bind(from)
        .bind(through)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE usage_rollup_state SET rolled_through = $1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((written, through < last_finished))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cost_is_tokens_times_price_per_million() {
        let usage = pa_proto::v1::Usage {
            input_tokens: 2_000,
            output_tokens: 500,
            ..Default::default()
        };
        // $0.15 / 1M input, $0.60 / 1M output → 300 + 300 micros.
        assert_eq!(super::cost_micros(&usage, 150_000, 600_000), 600);
    }
}
