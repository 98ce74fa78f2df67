/**
 * js-summarize: writes an executive summary of a text.
 *
 * Input `{"text": "..."}`, output `{"summary": "..."}`. The LLM call is a traced
 * step, so a retried run gets the recorded summary back. The system prompt is
 * the Rust refiner's summary prompt, which the host's mock LLM answers with a
 * summary.
 */

import { InvalidInput, callLlm, exportTask, report, trace, v } from 'cairn-sdk';

const SUMMARY_SYSTEM_PROMPT =
  'Write an executive summary of the report you are given: ' +
  'two or three short paragraphs with its key points and conclusions, for busy readers who ' +
  'need the essentials quickly. Keep a professional tone.';

/** The traced step: one LLM call per distinct text. */
const summarize = trace('summarize', (text) => callLlm(`Report:\n\n---\n${text}\n---`, SUMMARY_SYSTEM_PROMPT));

/** The task: checks the text, summarises it and adds the summary to the run's report. */
function summarizeTask({ text }) {
  const trimmed = text.trim();
  if (!trimmed) throw new InvalidInput('`text` must not be empty');
  console.log(`summarising ${trimmed.length} characters`);
  const summary = summarize(trimmed);
  report.replace('Summary', `<h2>Executive summary</h2><p>${report.escape(summary)}</p>`);
  report.flush();
  return { summary };
}

export const run = exportTask(summarizeTask, { input: v.object({ text: v.string() }) });
