//! The report refiner, the seed's loop, end to end.

use cairn::model::CallKind;

use crate::support::project::{Project, output_json};

const TOPIC: &str = r#"{"topic": "The history of the printing press"}"#;

#[tokio::test]
async fn refiner_converges_on_the_embedded_mock() {
    let project = Project::new(
        r#"
        [tasks.report-refiner]
        component = "{refiner}"
        retries = 2
        "#,
    );
    let host = project.host();
    let run = host.run("report-refiner", TOPIC).await.unwrap();
    let out = output_json(&run);
    // Draft scores 6, the revision carries the marker and scores 9: two critiques, one revision.
    assert_eq!(out["rounds"], 2, "{out}");
    assert_eq!(out["final_score"], 9, "{out}");
    assert!(out["report"].as_str().unwrap().contains("[REVISED]"), "{out}");
    assert!(!out["summary"].as_str().unwrap().is_empty());
    assert_eq!(out["critiques"].as_array().unwrap().len(), 2);

    let journal = host.store().journal_of(&run.id).unwrap();
    let llm_calls = journal.iter().filter(|e| e.key.kind == CallKind::Llm).count();
    let traces = journal.iter().filter(|e| e.key.kind == CallKind::Trace).count();
    // draft + 2 critiques + 1 revision + summary
    assert_eq!(llm_calls, 5, "{journal:#?}");
    assert!(traces >= 5, "each step is traced: {journal:#?}");
    assert_eq!(run.attempts[0].llm_live, 5);
    assert!(run.usage.completion_tokens > 0);

    let logs = host.store().logs_of(&run.id).unwrap();
    assert!(!logs[0].1.stdout.is_empty(), "the guest's progress lines are kept");
    let report = host.store().get_report(&run.id).unwrap().expect("the refiner writes a report");
    assert!(!report.tabs.is_empty());
}
