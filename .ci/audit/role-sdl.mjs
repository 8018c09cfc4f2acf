// Every per-role SDL `sequestra schema --role ROLE` prints must be a valid schema
// (graphql-js builds it) and keep the full schema's descriptions. Arguments: the
// binary and a folder to write ROLE.graphql files into (what a frontend team pulls).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { buildSchema } from 'graphql';

const [bin, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
let failed = 0;
for (const role of ['ADMIN', 'SUPPORT', 'SENDER', 'BENEFICIARY', 'PLATFORM_ADMIN', 'ANONYMOUS']) {
  const sdl = execFileSync(bin, ['schema', '--role', role], { encoding: 'utf8' });
  writeFileSync(`${out}/${role}.graphql`, sdl);
  try {
    const schema = buildSchema(sdl);
    const described = Object.values(schema.getTypeMap()).filter((t) => t.description).length;
    const fields = Object.keys(schema.getQueryType()?.getFields() ?? {}).length;
    console.log(`${role}: valid, ${fields} query fields, ${described} described types`);
  } catch (err) {
    failed += 1;
    console.error(`${role}: invalid SDL: ${err.message}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
