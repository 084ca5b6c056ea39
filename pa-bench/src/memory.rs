//! `pa-bench memory [--runs N] [--scenarios 100k,100kx1000,1mx1000]`: svc-memory's vector
//! search on synthetic 384-d memories (unit vectors around 2,000 topic centres): recall@10 of
//! the same top-10 query svc-memory runs against an exact scan, and its p50/p99, in three
//! scenarios: 100k memories of one user (the HNSW index's case), and 100k and 1M memories spread
//! over 1,000 users (every search is filtered to its user, which is how svc-memory searches);
//! then the offline embedder's throughput (all-MiniLM-L6-v2 in-process, batched).

use std::time::{Duration, Instant};

use sqlx::Connection;
use tests_e2e::Mesh;

use crate::BoxError;

const DIMS: usize = 384;
const TOPICS: usize = 2_000;

/// One table row: how many memories, spread over how many users.
#[derive(Clone, Copy)]
pub struct Scenario {
    pub memories: usize,
    pub users: usize,
}

impl Scenario {
    pub fn parse(name: &str) -> Option<Self> {
        let (memories, users) = match name.split_once('x') {
            Some((m, u)) => (m, u.parse().ok()?),
            None => (name, 1),
        };
        let memories = match memories.strip_suffix('k') {
            Some(k) => k.parse::<usize>().ok()? * 1_000,
            None => match memories.strip_suffix('m') {
                Some(m) => m.parse::<usize>().ok()? * 1_000_000,
                None => memories.parse().ok()?,
            },
        };
        (memories > 0 && users > 0 && users <= memories).then_some(Self { memories, users })
    }

    pub const DEFAULT: [Scenario; 3] = [
        Scenario {
            memories: 100_000,
            users: 1,
        },
        Scenario {
            memories: 100_000,
            users: 1_000,
        },
        Scenario {
            memories: 1_000_000,
            users: 1_000,
        },
    ];
}

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

/// svc-memory's search (store.rs `search`): the caller's own live memories of the query's
/// model, nearest first.
const TOP10: &str = "SELECT id FROM items WHERE tenant_id = 'bench' AND user_id = $2 \
    AND deleted_at IS NULL AND embedding_dims = 384 AND embedding_model = 'bench' \
    ORDER BY (embedding::vector(384)) <=> $1::vector(384) LIMIT 10";

const EXACT_TOP10: &str = "SELECT id FROM items WHERE tenant_id = 'bench' AND user_id = $2 \
    AND deleted_at IS NULL AND embedding_dims = 384 AND embedding_model = 'bench' \
    ORDER BY embedding <=> $1::vector LIMIT 10";

/// svc-memory's setting (store.rs), and pgvector's default next to it.
const EF_SEARCH: [u32; 2] = [100, 40];

async fn top10(
    db: &mut sqlx::PgConnection,
    q: &str,
    user: &str,
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
    let ids: Vec<String> = sqlx::query_scalar(sql)
        .bind(q)
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
    let took = t.elapsed();
    tx.rollback().await?;
    Ok((ids, took))
}

fn user_name(i: usize) -> String {
    format!("u{i:04}")
}

/// Replaces the bench tenant's memories with `scenario.memories` synthetic ones; the vector
/// index is built after the load, in one go (as after a restore: inserting into a live HNSW
/// index takes far longer and gives the same graph). Returns (load, index build) times.
async fn load(
    db: &mut sqlx::PgConnection,
    scenario: Scenario,
    centres: &[Vec<f32>],
    index_def: &str,
) -> Result<(Duration, Duration), BoxError> {
    sqlx::query("DROP INDEX IF EXISTS items_embedding_384")
        .execute(&mut *db)
        .await?;
    sqlx::query("DELETE FROM items WHERE tenant_id = 'bench'")
        .execute(&mut *db)
        .await?;
    sqlx::query("VACUUM items").execute(&mut *db).await?;
    let centre_literals: Vec<String> = centres.iter().map(|c| literal(c)).collect();
    let started = Instant::now();
    // Vectors are made by Postgres (a centre picked by a hash of the row number, plus seeded
    // noise): the load is a few statements, not a million literals through the wire. The
    // centre's expression must use the row number: a function scan whose arguments do not
    // change is evaluated once for all rows.
    sqlx::query("SELECT setseed(0.42)")
        .execute(&mut *db)
        .await?;
    const BATCH: usize = 50_000;
    let mut from = 0;
    while from < scenario.memories {
        let to = (from + BATCH).min(scenario.memories);
        sqlx::query(
            "INSERT INTO items (tenant_id, id, user_id, scope, content, embedding, embedding_model, embedding_dims) \
             SELECT 'bench', 'm' || lpad(n::text, 7, '0'), 'u' || lpad((n % $3)::text, 4, '0'), 1, \
                    'synthetic memory ' || n, \
                    l2_normalize((SELECT array_agg(x + 0.08 * (random()::real * 2 - 1)) \
                                  FROM unnest(($4::text[])[1 + abs(hashint4(n)) % $5]::vector::real[]) AS x)::vector), \
                    'bench', 384 \
             FROM generate_series($1::int, $2::int - 1) AS n",
        )
        .bind(from as i32)
        .bind(to as i32)
        .bind(scenario.users as i32)
        .bind(&centre_literals)
        .bind(TOPICS as i32)
        .execute(&mut *db)
        .await?;
        from = to;
    }
    let loaded = started.elapsed();
    let started = Instant::now();
    sqlx::raw_sql("SET maintenance_work_mem = '4GB'; SET max_parallel_maintenance_workers = 2")
        .execute(&mut *db)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(index_def.to_string()))
        .execute(&mut *db)
        .await?;
    let indexed = started.elapsed();
    sqlx::query("ANALYZE items").execute(&mut *db).await?;
    Ok((loaded, indexed))
}

/// The recall and latency rows of one scenario.
async fn measure(
    db: &mut sqlx::PgConnection,
    scenario: Scenario,
    centres: &[Vec<f32>],
    runs: usize,
) -> Result<(), BoxError> {
    let mut rng = Rng(0xD1B54A32D192ED03);
    let queries: Vec<(String, String)> = (0..runs)
        .map(|i| {
            let user = user_name((i * 7919) % scenario.users);
            let q = literal(&near(&mut rng, &centres[(i * 104_729) % TOPICS], 0.1));
            (q, user)
        })
        .collect();
    // Warm the index and the plan cache.
    for (q, user) in queries.iter().take(20) {
        top10(db, q, user, false, EF_SEARCH[0]).await?;
    }
    let mut times = vec![Vec::with_capacity(runs); EF_SEARCH.len()];
    let mut exact_times = Vec::with_capacity(runs);
    let mut hits = vec![0usize; EF_SEARCH.len()];
    let mut wanted = 0usize;
    for (q, user) in &queries {
        let (exact, te) = top10(db, q, user, true, EF_SEARCH[0]).await?;
        exact_times.push(te);
        wanted += exact.len();
        for (i, ef) in EF_SEARCH.iter().enumerate() {
            let (approx, t) = top10(db, q, user, false, *ef).await?;
            times[i].push(t);
            hits[i] += approx.iter().filter(|id| exact.contains(id)).count();
        }
    }
    let (q, user) = &queries[0];
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        TOP10
            .replace("$1", &format!("'{q}'"))
            .replace("$2", &format!("'{user}'"))
    )))
    .fetch_all(&mut *db)
    .await?;
    let path = if plan.iter().any(|l| l.contains("items_embedding_384")) {
        "HNSW index"
    } else if plan
        .iter()
        .any(|l| l.contains("Index Scan") || l.contains("Bitmap"))
    {
        "the user's rows (btree), exact"
    } else {
        "sequential scan"
    };
    let name = format!(
        "{}k memories, {} user{}",
        scenario.memories / 1000,
        scenario.users,
        if scenario.users == 1 { "" } else { "s" }
    );
    for (i, ef) in EF_SEARCH.iter().enumerate() {
        let used = if i == 0 { " (svc-memory)" } else { "" };
        times[i].sort();
        println!(
            "| {name} | ef_search {ef}{used} | {path} | {:.3} | {} | {} |",
            hits[i] as f64 / wanted.max(1) as f64,
            crate::ms(crate::percentile(&times[i], 0.5)),
            crate::ms(crate::percentile(&times[i], 0.99)),
        );
    }
    exact_times.sort();
    println!(
        "| {name} | exact scan | every distance | 1.000 | {} | {} |",
        crate::ms(crate::percentile(&exact_times, 0.5)),
        crate::ms(crate::percentile(&exact_times, 0.99)),
    );
    Ok(())
}

pub async fn run(runs: usize, scenarios: &[Scenario]) -> Result<(), BoxError> {
    let model_dir = pa_testkit::embed_model_dir()?;
    let mesh = Mesh::builder().start().await?;
    let mut db = sqlx::PgConnection::connect(&mesh.database_url).await?;
    sqlx::query("SET search_path = memory, public")
        .execute(&mut db)
        .await?;
    let index_def: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'memory' AND indexname = 'items_embedding_384'",
    )
    .fetch_one(&mut db)
    .await?;
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let centres: Vec<Vec<f32>> = (0..TOPICS).map(|_| rng.unit()).collect();
    let mut loads = Vec::new();
    println!(
        "memory search: synthetic 384-d memories around {TOPICS} topics, {runs} top-10 queries per scenario, each for one user; recall@10 against the exact answer; ms"
    );
    println!("| memories | search | path | recall@10 | p50 | p99 |");
    println!("|---|---|---|---:|---:|---:|");
    for scenario in scenarios {
        let (loaded, indexed) = load(&mut db, *scenario, &centres, &index_def).await?;
        loads.push((*scenario, loaded, indexed));
        measure(&mut db, *scenario, &centres, runs).await?;
    }
    println!("goal: recall@10 >= 0.95 at <= 10 ms p99 (svc-memory's row)");
    for (scenario, loaded, indexed) in loads {
        println!(
            "{} memories over {} users: loaded in {:.1} s, HNSW index built in {:.1} s",
            scenario.memories,
            scenario.users,
            loaded.as_secs_f64(),
            indexed.as_secs_f64()
        );
    }
    // Leave the schema as svc-memory made it, with no bench rows.
    sqlx::query("DELETE FROM items WHERE tenant_id = 'bench'")
        .execute(&mut db)
        .await?;

    // The offline embedder, in the lane that stores memories (its own threads, niced).
    let embedder = svc_models::embedder::OfflineEmbedder::new(Some(model_dir));
    let background = svc_models::embedder::Lane::Background;
    let sentences: Vec<String> = (0..512)
        .map(|i| format!("Memory number {i}: the user mentioned that they enjoy hiking in the mountains on weekend number {}.", i % 52))
        .collect();
    embedder.embed(sentences[..32].to_vec(), background).await?;
    let t = Instant::now();
    embedder.embed(sentences.clone(), background).await?;
    let per_sec = sentences.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "offline embedder (all-MiniLM-L6-v2, the background lane, batches of up to 32, 512 sentences): {per_sec:.0} embeddings/s"
    );
    drop(db);
    mesh.stop().await
}

/// `pa-bench embed`: how long the offline embedder takes for one short query (what recall puts
/// on a run's path), as svc-models serves it (the interactive lane: a blocking thread in a
/// one-thread pool) and, for comparison with older releases' figure, called on the bench's own
/// thread with the global pool.
pub async fn query_latency(runs: usize) -> Result<(), BoxError> {
    let dir = pa_testkit::embed_model_dir()?;
    let model = svc_models::embedder::MiniLm::load(&dir)?;
    let queries: Vec<String> = (0..runs.max(20))
        .map(|i| format!("what did I say about the trip number {i} last week"))
        .collect();
    let mut direct = Vec::with_capacity(queries.len());
    for (i, q) in queries.iter().enumerate() {
        let t = Instant::now();
        model.embed(std::slice::from_ref(q))?;
        if i >= 10 {
            direct.push(t.elapsed());
        }
    }
    let served = svc_models::embedder::OfflineEmbedder::new(Some(dir));
    let mut lane = Vec::with_capacity(queries.len());
    for (i, q) in queries.iter().enumerate() {
        let t = Instant::now();
        let (model_id, _) = served
            .embed(vec![q.clone()], svc_models::embedder::Lane::Interactive)
            .await?;
        if model_id != svc_models::embedder::MINILM_MODEL_ID {
            return Err(format!("the served embedder is {model_id}, not MiniLM").into());
        }
        if i >= 10 {
            lane.push(t.elapsed());
        }
    }
    let kernel_threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".to_string());
    println!(
        "offline embedder, one short query (all-MiniLM-L6-v2), RAYON_NUM_THREADS={kernel_threads}"
    );
    println!("| path | queries | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (name, times) in [
        ("interactive lane (as svc-models serves it)", &mut lane),
        ("the bench's thread, global pool", &mut direct),
    ] {
        times.sort();
        println!(
            "| {name} | {} | {} | {} |",
            times.len(),
            crate::ms(crate::percentile(times, 0.5)),
            crate::ms(crate::percentile(times, 0.99))
        );
    }
    Ok(())
}
