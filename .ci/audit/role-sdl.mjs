// Every committed per-role SDL (schema/roles/ROLE.graphql, what `sequestra schema
// --role ROLE` prints; a Rust test keeps them current) must be a valid schema
// (graphql-js builds it) and keep the full schema's descriptions. Argument: the folder.
import { readdirSync, readFileSync } from 'node:fs';
import { buildSchema } from 'graphql';

const [dir] = process.argv.slice(2);
const files = readdirSync(dir).filter((f) => f.endsWith('.graphql'));
let failed = files.length < 6 ? 1 : 0;
if (failed) console.error(`only ${files.length} role schemas in ${dir}`);
for (const file of files) {
  const role = file.replace(/\.graphql$/, '');
  try {
    const schema = buildSchema(readFileSync(`${dir}/${file}`, 'utf8'));
    const types = Object.values(schema.getTypeMap()).filter((t) => !t.name.startsWith('__'));
    // As in the Rust test: async-graphql gives the `…Connection` types it generates no
    // description and no way to set one (their fields have one).
    const undescribed = types.filter((t) => !t.description && !t.name.endsWith('Connection')).map((t) => t.name);
    const fields = Object.keys(schema.getQueryType()?.getFields() ?? {}).length;
    if (undescribed.length) {
      failed += 1;
      console.error(`${role}: types without a description: ${undescribed.join(', ')}`);
    } else {
      console.log(`${role}: valid, ${fields} query fields, ${types.length} types, descriptions kept`);
    }
  } catch (err) {
    failed += 1;
    console.error(`${role}: invalid SDL: ${err.message}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
