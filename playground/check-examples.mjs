// Every example operation must be valid against the server's schema
// (../schema.graphql, which a Rust test keeps in step with the binary).
import { readFileSync } from 'node:fs';
import { buildSchema, parse, validate } from 'graphql';
import { EXAMPLES } from './src/examples.js';

const schema = buildSchema(readFileSync(new URL('../schema.graphql', import.meta.url), 'utf8'));
let failed = 0;
for (const example of EXAMPLES) {
  const errors = validate(schema, parse(example.query));
  for (const error of errors) {
    failed += 1;
    console.error(`${example.role} / ${example.name}: ${error.message}`);
  }
}
if (failed) process.exit(1);
console.log(`playground examples: ${EXAMPLES.length} valid against schema.graphql`);
