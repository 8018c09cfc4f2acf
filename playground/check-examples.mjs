// Every example operation must be valid against the server's schema
// (../schema.graphql, which a Rust test keeps in step with the binary), and its
// variables, once filled, must be what the operation declares.
import { readFileSync } from 'node:fs';
import { buildSchema, parse, validate } from 'graphql';
import { getVariableValues } from 'graphql/execution/values.js';
import { EXAMPLES, fillVariables, placeholders } from './src/examples.js';

// The global-id prefixes the server issues (src/ids.rs, `Kind::prefix`).
const PREFIXES = new Set(
  [...readFileSync(new URL('../src/ids.rs', import.meta.url), 'utf8').matchAll(/=> "([a-z]{3})",/g)].map(
    (m) => m[1],
  ),
);
if (PREFIXES.size < 10) throw new Error(`read only ${PREFIXES.size} id prefixes from src/ids.rs`);

const schema = buildSchema(readFileSync(new URL('../schema.graphql', import.meta.url), 'utf8'));
let failed = 0;
const fail = (example, message) => {
  failed += 1;
  console.error(`${example.topic} / ${example.name}: ${message}`);
};
const names = new Set();
for (const example of EXAMPLES) {
  if (names.has(example.name)) fail(example, 'two examples have this name');
  names.add(example.name);
  const document = parse(example.query);
  for (const error of validate(schema, document)) fail(example, error.message);
  const operations = document.definitions.filter((d) => d.kind === 'OperationDefinition');
  if (operations.length !== 1 || !operations[0].name) {
    fail(example, 'an example is one named operation');
    continue;
  }
  for (const name of placeholders(example.variables)) {
    if (name !== 'key' && name !== 'in7days' && !PREFIXES.has(name)) {
      fail(example, `unknown placeholder {{${name}}}`);
    }
  }
  const ids = new Map([...PREFIXES].map((p) => [p, `${p}_${'0'.repeat(32)}`]));
  let inputs = {};
  try {
    inputs = JSON.parse(fillVariables(example.variables, ids) || '{}');
  } catch (e) {
    fail(example, `variables are not JSON once filled: ${e.message}`);
    continue;
  }
  const { errors } = getVariableValues(schema, operations[0].variableDefinitions ?? [], inputs);
  for (const error of errors ?? []) fail(example, error.message);
}
// A flow's steps are numbered 1, 2, … in the order they are listed.
for (const flow of new Set(EXAMPLES.filter((e) => e.flow).map((e) => e.flow))) {
  EXAMPLES.filter((e) => e.flow === flow).forEach((example, i) => {
    if (!example.name.startsWith(`${i + 1}. `)) fail(example, `step ${i + 1} of flow ${flow} is not numbered so`);
  });
}
if (failed) process.exit(1);
console.log(`playground examples: ${EXAMPLES.length} valid against schema.graphql, variables included`);
