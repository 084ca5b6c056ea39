//! What the Curator asks the model, and how it reads the answer.

use serde::Deserialize;

pub const INSTRUCTIONS: &str = "You maintain the long-term memory of a chat assistant. \
    Read the conversation and answer with JSON only: \
    {\"summary\": \"the conversation so far in at most three sentences\", \
     \"facts\": [\"durable facts or preferences about the user worth remembering across chats\"]}. \
    Leave facts empty when there are none.";

#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Curated {
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub facts: Vec<String>,
}

/// The model's answer as summary + facts. An answer that is not the JSON asked for becomes
/// the summary as it is (a model that ignores the format still leaves a useful summary).
pub fn parse(answer: &str) -> Curated {
    let json = answer
        .find('{')
        .zip(answer.rfind('}'))
        .filter(|(start, end)| start < end)
        .and_then(|(start, end)| serde_json::from_str::<Curated>(&answer[start..=end]).ok());
    let mut curated = json.unwrap_or_else(|| Curated {
        summary: answer.trim().to_string(),
        facts: Vec::new(),
    });
    curated.summary = curated.summary.trim().chars().take(2000).collect();
    curated.facts.retain(|f| !f.trim().is_empty());
    curated.facts.truncate(10);
    curated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_give_summary_and_facts() {
        let c = parse(
            "Sure! {\"summary\": \"Talked about Oslo.\", \"facts\": [\"lives in Oslo\", \" \"]} done",
        );
        assert_eq!(c.summary, "Talked about Oslo.");
        assert_eq!(c.facts, vec!["lives in Oslo".to_string()]);
    }

    #[test]
    fn other_answers_become_the_summary() {
        let c = parse("  just prose  ");
        assert_eq!(
            c,
            Curated {
                summary: "just prose".into(),
                facts: vec![]
            }
        );
    }
}
