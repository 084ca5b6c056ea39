//! The offline embedder (all-MiniLM-L6-v2 in candle) against reference vectors computed once
//! by an independent numpy implementation (tests/fixtures/minilm_reference.py says how).

use svc_models::embedder::{DIMS, MINILM_MODEL_ID, MiniLm, OfflineEmbedder};

#[derive(serde::Deserialize)]
struct Reference {
    sentences: Vec<Sentence>,
}

#[derive(serde::Deserialize)]
struct Sentence {
    text: String,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let text = include_str!("fixtures/minilm_reference.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_the_reference_vectors_in_one_batch() {
    let dir = pa_testkit::embed_model_dir().expect("model files");
    let model = MiniLm::load(&dir).expect("model loads");
    let reference = reference();
    let texts: Vec<String> = reference.sentences.iter().map(|s| s.text.clone()).collect();
    // One batch of very different lengths: padding must not leak into the mean.
    let vectors = model.embed(&texts).expect("embeds");
    assert_eq!(vectors.len(), texts.len());
    for (s, v) in reference.sentences.iter().zip(&vectors) {
        assert_eq!(v.len(), DIMS);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{:?} has norm {norm}", s.text);
        let c = cosine(v, &s.embedding);
        // The numpy reference and candle differ only in float rounding.
        assert!(c >= 0.9999, "{:?}: cosine {c} to the reference", s.text);
    }
    // Alone, a text gets the same vector as in the batch.
    let alone = model.embed(&texts[..1]).expect("embeds");
    assert!(cosine(&alone[0], &vectors[0]) > 0.9999);
}

#[test]
fn minilm_ranks_a_paraphrase_above_an_unrelated_text() {
    let dir = pa_testkit::embed_model_dir().expect("model files");
    let model = MiniLm::load(&dir).expect("model loads");
    let v = model
        .embed(&[
            "I own a dog".to_string(),
            "I have a puppy at home".to_string(),
            "Quarterly revenue grew by 12 percent".to_string(),
        ])
        .expect("embeds");
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.2);
}

#[tokio::test]
async fn missing_model_files_fall_back_to_the_hashed_embedder_and_say_so() {
    let missing = std::env::temp_dir().join(format!("no-model-{}", std::process::id()));
    let embedder = OfflineEmbedder::new(Some(missing));
    let (id, vectors) = embedder
        .embed(
            vec!["hello world".into()],
            svc_models::embedder::Lane::Interactive,
        )
        .await
        .expect("falls back");
    assert_eq!(id, svc_models::embedder::HASHED_MODEL_ID);
    assert_eq!(vectors[0].len(), DIMS);

    let dir = pa_testkit::embed_model_dir().expect("model files");
    let (id, _) = OfflineEmbedder::new(Some(dir))
        .embed(
            vec!["hello world".into()],
            svc_models::embedder::Lane::Interactive,
        )
        .await
        .expect("embeds");
    assert_eq!(id, MINILM_MODEL_ID);
}

#[tokio::test]
async fn both_lanes_give_the_same_vectors() {
    use svc_models::embedder::Lane;
    let dir = pa_testkit::embed_model_dir().expect("model files");
    let embedder = OfflineEmbedder::new(Some(dir));
    let texts = vec!["a fact to store".to_string(), "another one".to_string()];
    let (_, interactive) = embedder
        .embed(texts.clone(), Lane::Interactive)
        .await
        .expect("embeds");
    let (_, background) = embedder
        .embed(texts, Lane::Background)
        .await
        .expect("embeds");
    for (a, b) in interactive.iter().zip(&background) {
        assert!(cosine(a, b) > 0.99999, "{}", cosine(a, b));
    }
}
