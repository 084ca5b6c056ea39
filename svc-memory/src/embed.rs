//! Embeddings come from svc-models' Embed (the offline MiniLM or any OpenAI-compatible
//! endpoint), asked on behalf of the caller so their keys and limits apply.

use pa_kit::{InternalAuth, PaError};
use pa_proto::v1::model_service_client::ModelServiceClient;
use pa_proto::v1::{EmbedPurpose, EmbedRequest, Identity};
use tonic::transport::Channel;

/// Texts per Embed call (svc-models takes at most 256).
const BATCH: usize = 64;
/// pgvector stores up to 16000 dimensions; nothing real comes near.
const MAX_DIMS: usize = 16_000;

/// Vectors of one model.
#[derive(Clone, Debug)]
pub struct Embeddings {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
}

#[derive(Clone)]
pub struct Embedder {
    client: ModelServiceClient<Channel>,
    auth: InternalAuth,
    label: String,
}

impl Embedder {
    pub fn new(channel: Channel, auth: InternalAuth, label: String) -> Self {
        Self {
            client: ModelServiceClient::new(channel),
            auth,
            label,
        }
    }

    /// `purpose`: Query when someone waits for the vectors, Document for texts being stored.
    pub async fn embed(
        &self,
        identity: &Identity,
        texts: &[String],
        purpose: EmbedPurpose,
    ) -> Result<Embeddings, PaError> {
        let mut model = String::new();
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let request = EmbedRequest {
                inputs: batch.to_vec(),
                label: self.label.clone(),
                purpose: purpose as i32,
            };
            let response = self
                .client
                .clone()
                .embed(self.auth.request(identity, request))
                .await
                .map_err(|s| PaError::from_status(&s))?
                .into_inner();
            let id = if response.model_id.is_empty() {
                response.served_label
            } else {
                response.model_id
            };
            if !model.is_empty() && model != id {
                return Err(PaError::unavailable(
                    "the embedding model changed in the middle of a request; retry",
                ));
            }
            model = id;
            if response.embeddings.len() != batch.len() {
                return Err(PaError::internal(format!(
                    "asked {} embeddings, got {}",
                    batch.len(),
                    response.embeddings.len()
                )));
            }
            vectors.extend(response.embeddings.into_iter().map(|e| e.values));
        }
        let dims = vectors.first().map(Vec::len).unwrap_or(0);
        if dims == 0 || dims > MAX_DIMS || vectors.iter().any(|v| v.len() != dims) {
            return Err(PaError::internal(format!(
                "embedding model {model} returned vectors of unusable dimensions"
            )));
        }
        Ok(Embeddings { model, vectors })
    }
}
