//! `pa-bench memory [--runs N]`: svc-memory's vector index on 100k synthetic memories (384-d
//! unit vectors around 2,000 topic centres, one user): recall@10 of the HNSW search against an
//! exact scan, p50/p99 latency of the same top-10 query svc-memory runs, and the offline
//! embedder's throughput (all-MiniLM-L6-v2 in-process, batched).

use std::time::{Duration, Instant};

use sqlx::Connection;
use tests_e2e::Mesh;

use crate::BoxError;

const MEMORIES: usize = 100_000;
const DIMS: usize = 384;
const TOPICS: usize = 2_000;

/// A small deterministic generator (no rand dependency): xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545F4914F6CDD1D);
        (v >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn unit(&mut self) -> Vec<f32> {
        normalise((0..DIMS).map(|_| self.next()).collect())
    }
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn near(rng: &mut Rng, centre: &[f32], spread: f32) -> Vec<f32> {
    normalise(centre.iter().map(|c| c + spread * rng.next()).collect())
}

fn literal(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
    format!("[{}]", parts.join(","))
}

const TOP10: &str = "SELECT id FROM items WHERE tenant_id = 'bench' AND user_id = 'u' \
    AND deleted_at IS NULL AND embedding_dims = 384 AND embedding_model = 'bench' \
    ORDER BY (embedding::vector(384)) <=> $1::vector(384) LIMIT 10";

const EXACT_TOP10: &str = "SELECT id FROM items WHERE tenant_id = 'bench' AND user_id = 'u' \
    AND deleted_at IS NULL AND embedding_dims = 384 AND embedding_model = 'bench' \
    ORDER BY embedding <=> $1::vector LIMIT 10";

/// svc-memory's setting (store.rs), and pgvector's default next to it.
const EF_SEARCH: [u32; 2] = [100, 40];

async fn top10(
    db: &mut sqlx::PgConnection,
    q: String,
    exact: bool,
    ef_search: u32,
) -> Result<(Vec<String>, Duration), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {ef_search}"
    )))
    .execute(&mut *tx)
    .await?;
    // The exact baseline orders by an expression the index does not cover (no cast), so
    // Postgres computes every distance.
    let sql = if exact { EXACT_TOP10 } else { TOP10 };
    let t = Instant::now();
    let ids: Vec<String> = sqlx::query_scalar(sql).bind(q).fetch_all(&mut *tx).await?;
    let took = t.elapsed();
    tx.rollback().await?;
    Ok((ids, took))
}

pub async fn run(runs: usize) -> Result<(), BoxError> {
    let model_dir = pa_testkit::embed_model_dir()?;
    let mesh = Mesh::builder().start().await?;
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    sqlx::query("SET search_path = memory, public")
        .execute(&mut db)
        .await?;

    let mut rng = Rng(0x9E3779B97F4A7C15);
    let centres: Vec<Vec<f32>> = (0..TOPICS).map(|_| rng.unit()).collect();
    // Loaded without the vector index, which is then built in one go (as after a restore):
    // inserting 100k rows into a live HNSW index takes minutes and gives the same graph quality.
    let index_def: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'memory' AND indexname = 'items_embedding_384'",
    )
    .fetch_one(&mut db)
    .await?;
    sqlx::query("DROP INDEX items_embedding_384")
        .execute(&mut db)
        .await?;
    let started = Instant::now();
    for batch in 0..MEMORIES / 1000 {
        let mut ids = Vec::with_capacity(1000);
        let mut vectors = Vec::with_capacity(1000);
        for i in 0..1000 {
            let n = batch * 1000 + i;
            ids.push(format!("m{n:06}"));
            vectors.push(literal(&near(&mut rng, &centres[n % TOPICS], 0.08)));
        }
        sqlx::query(
            "INSERT INTO items (tenant_id, id, user_id, scope, content, embedding, embedding_model, embedding_dims) \
             SELECT 'bench', id, 'u', 1, 'synthetic memory ' || id, v::vector, 'bench', 384 \
             FROM unnest($1::text[], $2::text[]) AS t(id, v)",
        )
        .bind(&ids)
        .bind(&vectors)
        .execute(&mut db)
        .await?;
    }
    let load = started.elapsed();
    let started = Instant::now();
    sqlx::raw_sql("SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 2")
        .execute(&mut db)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(index_def))
        .execute(&mut db)
        .await?;
    let indexed = started.elapsed();
    sqlx::query("ANALYZE items").execute(&mut db).await?;

    let queries: Vec<String> = (0..runs)
        .map(|i| literal(&near(&mut rng, &centres[(i * 7919) % TOPICS], 0.1)))
        .collect();
    // Warm the index and the plan cache.
    for q in queries.iter().take(20) {
        top10(&mut db, q.clone(), false, EF_SEARCH[0]).await?;
    }
    let mut hnsw_times = vec![Vec::with_capacity(runs); EF_SEARCH.len()];
    let mut exact_times = Vec::with_capacity(runs);
    let mut hits = vec![0usize; EF_SEARCH.len()];
    for q in &queries {
        let (exact, te) = top10(&mut db, q.clone(), true, EF_SEARCH[0]).await?;
        exact_times.push(te);
        for (i, ef) in EF_SEARCH.iter().enumerate() {
            let (approx, t) = top10(&mut db, q.clone(), false, *ef).await?;
            hnsw_times[i].push(t);
            hits[i] += approx.iter().filter(|id| exact.contains(id)).count();
        }
    }
    let recall: Vec<f64> = hits
        .iter()
        .map(|h| *h as f64 / (runs * 10) as f64)
        .collect();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        TOP10.replace("$1", &format!("'{}'", queries[0]))
    )))
    .fetch_all(&mut db)
    .await?;
    let uses_index = plan.iter().any(|l| l.contains("items_embedding_384"));

    // The offline embedder.
    let model = svc_models::embedder::MiniLm::load(&model_dir)?;
    let sentences: Vec<String> = (0..512)
        .map(|i| format!("Memory number {i}: the user mentioned that they enjoy hiking in the mountains on weekend number {}.", i % 52))
        .collect();
    model.embed(&sentences[..32])?;
    let t = Instant::now();
    model.embed(&sentences)?;
    let per_sec = sentences.len() as f64 / t.elapsed().as_secs_f64();

    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i].as_secs_f64() * 1000.0
    };
    println!(
        "memory: {MEMORIES} synthetic 384-d memories of one user ({TOPICS} topics), {runs} queries; loaded in {:.1} s, HNSW index built in {:.1} s",
        load.as_secs_f64(),
        indexed.as_secs_f64()
    );
    println!("| measure | value | goal |");
    println!("|---|---|---|");
    for (i, ef) in EF_SEARCH.iter().enumerate() {
        let used = if i == 0 { " (svc-memory)" } else { "" };
        println!(
            "| ef_search {ef}{used}: recall@10, HNSW vs exact | {:.3} | >= 0.95 |",
            recall[i]
        );
        println!(
            "| ef_search {ef}{used}: HNSW top-10 p50 | {:.2} ms | |",
            pct(&mut hnsw_times[i], 0.5)
        );
        println!(
            "| ef_search {ef}{used}: HNSW top-10 p99 | {:.2} ms | <= 10 ms |",
            pct(&mut hnsw_times[i], 0.99)
        );
    }
    println!(
        "| exact top-10 p50 | {:.2} ms | |",
        pct(&mut exact_times, 0.5)
    );
    println!("| planner uses the HNSW index | {uses_index} | true |");
    println!(
        "| offline embedder (all-MiniLM-L6-v2, batch 32, 512 sentences) | {per_sec:.0} embeddings/s | |"
    );
    drop(db);
    mesh.stop().await
}

/// `pa-bench embed`: how long the offline embedder takes for one short query (what recall puts
/// on a run's critical path when memories are in reach), p50/p99 over `runs` distinct queries.
pub fn query_latency(runs: usize) -> Result<(), BoxError> {
    let model = svc_models::embedder::MiniLm::load(&pa_testkit::embed_model_dir()?)?;
    let queries: Vec<String> = (0..runs.max(20))
        .map(|i| format!("what did I say about the trip number {i} last week"))
        .collect();
    for q in &queries[..10] {
        model.embed(std::slice::from_ref(q))?;
    }
    let mut times = Vec::with_capacity(queries.len());
    for q in &queries {
        let t = Instant::now();
        model.embed(std::slice::from_ref(q))?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "offline embedder, one short query (all-MiniLM-L6-v2), {} queries: p50 {} ms, p99 {} ms",
        times.len(),
        crate::ms(crate::percentile(&times, 0.5)),
        crate::ms(crate::percentile(&times, 0.99))
    );
    Ok(())
}
