//! The API layer's boundary (README.md, "Architecture"): handlers parse, call one
//! manager method and map the result. They never speak the agent protocol and
//! never read the store; this test fails the build's tests when one does.

use std::path::Path;

/// What a file under `src/api/` must not mention.
const FORBIDDEN: &[&str] = &[
    "runta_agent",
    "agent_client",
    "AgentClient",
    "crate::store",
    "store()",
    "StoreError",
];

#[test]
fn handlers_do_not_reach_the_agent_or_the_store() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut seen = 0;
    let mut offences = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/api is readable") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("layering.rs") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    offences.push(format!("{}:{}: {word}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(seen >= 5, "found only {seen} files under {}", dir.display());
    assert!(
        offences.is_empty(),
        "the API layer reaches below the manager:\n{}",
        offences.join("\n")
    );
}
