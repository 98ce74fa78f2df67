/**
 * `@task@`, a Cairn task: `{"name": "Ada"}` in, `{"greeting": "..."}` out.
 *
 * Build and run it from the project's folder:
 *
 *     cairn build @task@ && cairn run @task@ --input '{"name": "Ada"}'
 */

import { callLlm, exportTask, trace, v } from 'cairn-sdk';

// A durable step: a retried or resumed run gets the recorded greeting back.
const greet = trace('greet', (name) =>
  callLlm(`Write a one-line greeting for ${name}.`, 'You are a friendly assistant.'),
);

// The task: takes the parsed and checked input, returns the output.
function @function@({ name }) {
  const greeting = greet(name);
  console.log(`greeted ${name}`); // stdout goes to the run's log (`cairn runs logs RUN`)
  return { greeting };
}

// A bad input is a non-retryable invalid-input naming the field.
export const run = exportTask(@function@, {
  input: v.object({ name: v.string({ minLength: 1 }) }),
  output: v.object({ greeting: v.string() }),
});
