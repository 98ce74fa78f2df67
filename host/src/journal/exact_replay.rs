//! Property: a run killed at any journal point and resumed makes exactly the
//! calls, and gets exactly the answers, of a run never interrupted.
//!
//! Random programs of nested traced steps and repeated prompts run on the
//! real [`Journal`] over a real redb file. Their LLM answers each live ask of
//! a prompt with a new answer (`p3#2`: the second live ask of prompt 3), so a
//! replay that hands one call another's recording shows in the answers. A
//! kill lands right after a record is durable, before the next live call: the
//! same points at which a host process can die with nothing half done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Journal, JournalMode};
use crate::model::CallKind;
use crate::store::JournalStore;
use crate::store::redb::RedbStore;

/// A statement of a generated program.
#[derive(Debug, Clone)]
enum Op {
    /// Ask prompt `n`.
    Ask(u8),
    /// A traced step named `s{name}` with input `{input}`, whose body runs `ops`.
    Step { name: u8, input: u8, body: Vec<Op> },
}

/// splitmix64: enough randomness for program shapes, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A block of 1..=4 statements; few prompt and step names, so calls repeat,
/// inside and around steps alike.
fn program(rng: &mut Rng, depth: u32) -> Vec<Op> {
    (0..1 + rng.below(4))
        .map(|_| {
            if depth < 3 && rng.below(3) == 0 {
                Op::Step { name: rng.below(2) as u8, input: rng.below(2) as u8, body: program(rng, depth + 1) }
            } else {
                Op::Ask(rng.below(2) as u8)
            }
        })
        .collect()
}

/// The LLM: every live ask of a prompt gets a new answer.
#[derive(Default)]
struct Llm {
    asked: HashMap<u8, u32>,
    live: u32,
}

impl Llm {
    fn ask(&mut self, prompt: u8) -> String {
        let n = self.asked.entry(prompt).or_default();
        *n += 1;
        self.live += 1;
        format!("p{prompt}#{n}")
    }
}

/// The process died: the attempt stops where it is.
struct Killed;

/// One attempt of a program, which dies before its record number `kill_at`.
struct Attempt<'a> {
    journal: Journal,
    llm: &'a mut Llm,
    kill_at: Option<u64>,
    records: u64,
}

impl Attempt<'_> {
    /// Counts a record about to be made; dies instead at the kill point.
    fn may_record(&mut self) -> Result<(), Killed> {
        if self.kill_at == Some(self.records) {
            return Err(Killed);
        }
        self.records += 1;
        Ok(())
    }

    /// Runs `ops`; returns what the program saw, in order.
    async fn run(&mut self, ops: &[Op]) -> Result<Vec<String>, Killed> {
        let mut seen = Vec::new();
        for op in ops {
            match op {
                Op::Ask(prompt) => {
                    let text = format!("prompt {prompt}");
                    let key = self.journal.next_answer_key("llm", &text).await.unwrap();
                    let answer = match self.journal.lookup(&key).await.unwrap() {
                        Some(entry) => entry.output,
                        None => {
                            self.may_record()?;
                            let answer = self.llm.ask(*prompt);
                            self.journal
                                .record(key, answer.clone(), String::new(), Duration::ZERO, None)
                                .await
                                .unwrap();
                            answer
                        }
                    };
                    seen.push(answer);
                }
                Op::Step { name, input, body } => {
                    let (name, input) = (format!("s{name}"), input.to_string());
                    let output = match self.journal.trace_recall(&name, &input).await.unwrap() {
                        Some(output) => output,
                        None => {
                            let inner = Box::pin(self.run(body)).await?;
                            let output = serde_json::to_string(&inner).unwrap();
                            self.may_record()?;
                            self.journal.trace_record(&name, &input, &output).await.unwrap();
                            output
                        }
                    };
                    seen.push(format!("{name}={output}"));
                }
            }
        }
        Ok(seen)
    }
}

/// Runs `ops` as run `run_id`, dying at each of `kills` in turn (a record
/// number within that attempt) and resuming, then to the end. Returns what
/// the last attempt saw and how many live asks the whole run made.
async fn run_program(store: &Arc<dyn JournalStore>, run_id: &str, ops: &[Op], kills: &[u64]) -> (Vec<String>, u32) {
    let mut llm = Llm::default();
    for (at, kill) in kills.iter().enumerate() {
        let journal = Journal::new(store.clone(), run_id, at as u32 + 1, JournalMode::Live);
        let mut attempt = Attempt { journal, llm: &mut llm, kill_at: Some(*kill), records: 0 };
        if let Ok(seen) = attempt.run(ops).await {
            // It finished before its kill point: nothing more to resume.
            return (seen, llm.live);
        }
    }
    let journal = Journal::new(store.clone(), run_id, kills.len() as u32 + 1, JournalMode::Live);
    let mut last = Attempt { journal, llm: &mut llm, kill_at: None, records: 0 };
    let seen = last.run(ops).await.unwrap_or_else(|Killed| unreachable!("the last attempt has no kill point"));
    (seen, llm.live)
}

#[tokio::test]
async fn a_resumed_run_gets_the_answers_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("journal.redb")).unwrap());
    let mut rng = Rng(0x00ca_1217);
    let mut runs = 0;
    for case in 0..120 {
        let ops = program(&mut rng, 0);
        let (expected, live) = run_program(&store, &format!("whole-{case}"), &ops, &[]).await;
        let records = store.journal_of(&format!("whole-{case}")).unwrap().len() as u64;
        let mut resumes: Vec<Vec<u64>> = (0..records).map(|k| vec![k]).collect();
        // And runs that die more than once, each attempt getting a little further.
        for _ in 0..3 {
            let first = rng.below(records.max(1));
            resumes.push(vec![first, rng.below(records - first + 1), rng.below(2)]);
        }
        for kills in resumes {
            runs += 1;
            let run_id = format!("case-{case}-{runs}");
            let (seen, resumed_live) = run_program(&store, &run_id, &ops, &kills).await;
            assert_eq!(seen, expected, "program {ops:?} killed at records {kills:?} (per attempt)");
            assert_eq!(
                resumed_live, live,
                "program {ops:?} killed at {kills:?}: a call that succeeded was asked again"
            );
            let kinds = |id: &str| {
                let mut keys: Vec<_> = store.journal_of(id).unwrap().into_iter().map(|e| e.key.encode()).collect();
                keys.sort();
                keys.into_iter().map(|k| k.split_once('\u{1}').unwrap().1.to_owned()).collect::<Vec<_>>()
            };
            assert_eq!(kinds(&run_id), kinds(&format!("whole-{case}")), "the same calls under the same keys");
        }
    }
    assert!(runs > 500, "only {runs} resumed runs were tried");
}

#[tokio::test]
async fn a_call_after_a_recalled_step_does_not_take_the_answer_of_the_call_inside_it() {
    // The case that used to go wrong: the same prompt inside a step and after it.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("journal.redb")).unwrap());
    let ops = [Op::Step { name: 0, input: 0, body: vec![Op::Ask(1)] }, Op::Ask(1)];
    let (whole, _) = run_program(&store, "whole", &ops, &[]).await;
    assert_eq!(whole, ["s0=[\"p1#1\"]", "p1#2"]);
    // Dies once the step is recorded, before the ask after it: the resumed run
    // recalls the step and must ask that one live, not replay the inner answer.
    let (resumed, live) = run_program(&store, "resumed", &ops, &[2]).await;
    assert_eq!((resumed, live), (whole, 2));
    let entries = store.journal_of("resumed").unwrap();
    assert_eq!(entries.iter().filter(|e| e.key.kind == CallKind::Llm).count(), 2);
}

#[tokio::test]
async fn a_step_whose_body_failed_closes_with_the_step_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("journal.redb")).unwrap());
    let mut journal = Journal::new(store.clone(), "run", 1, JournalMode::Live);
    assert_eq!(journal.trace_recall("outer", "1").await.unwrap(), None);
    assert_eq!(journal.trace_recall("inner", "2").await.unwrap(), None);
    // inner's body failed and the guest went on: outer's record closes both.
    journal.trace_record("outer", "1", "\"done\"").await.unwrap();
    assert!(journal.open_steps.is_empty());
    let after = journal.next_key(CallKind::Llm, "llm", "q");
    assert_eq!(after.input_hash, super::sha256_hex("q"), "a call after the steps counts at the top again");
    let mut resumed = Journal::new(store, "run", 2, JournalMode::Live);
    assert_eq!(resumed.trace_recall("outer", "1").await.unwrap().as_deref(), Some("\"done\""));
}
