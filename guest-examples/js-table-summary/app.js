/**
 * js-table-summary: summarises a CSV table it is given by reference.
 *
 * Input `{"table": {"$file": ...}}` (a `File`, checked by `v.file()`); reads
 * the staged file, totals its numeric columns, and asks the LLM (a traced
 * step) for a one-paragraph summary of the totals. Output `{"rows", "totals",
 * "summary"}`.
 */

import { callLlm, exportTask, trace, v } from 'cairn-sdk';

const describe = trace('describe', (totals) =>
  callLlm(`Summarise these column totals in one paragraph:\n${JSON.stringify(totals)}`, 'You are a data analyst.'),
);

function summarise({ table }) {
  const [header, ...rows] = table.readText().trim().split('\n');
  const columns = header.split(',');
  const totals = {};
  for (const row of rows) {
    row.split(',').forEach((cell, i) => {
      const n = Number(cell);
      if (cell !== '' && Number.isFinite(n)) totals[columns[i]] = (totals[columns[i]] ?? 0) + n;
    });
  }
  return { rows: rows.length, totals, summary: describe(totals) };
}

export const run = exportTask(summarise, { input: v.object({ table: v.file() }) });
