//! Usage records: one row per successful model call (run, user, tenant, model, tokens, cost),
//! aggregated by day for `GET /v1/me/usage` and `GET /v1/admin/usage`.

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
        .execute(&self.pool)
        .await?;
        Ok(())
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
        let rows = sqlx::query(
            "SELECT to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day, label, \
               SUM(input_tokens)::bigint AS input, SUM(output_tokens)::bigint AS output, \
               SUM(cached_input_tokens)::bigint AS cached, SUM(cost_micros)::bigint AS cost, COUNT(*)::bigint AS calls \
             FROM usage_records WHERE tenant_id = $1 AND ($2::text IS NULL OR user_id = $2) \
               AND (created_at AT TIME ZONE 'UTC')::date BETWEEN $3 AND $4 \
             GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
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
