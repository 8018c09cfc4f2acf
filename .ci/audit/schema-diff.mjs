// Classifies the change of schema.graphql since a base commit (SEQUESTRA_SCHEMA_BASE,
// default HEAD~1: the previous commit) as breaking, dangerous or safe, with
// @graphql-inspector/core, and prints every change. A breaking change fails (exit 1)
// unless the commits since the base say so: each line they ADD to
// .ci/schema-breaking.txt names an accepted change by its path (`Query.users`,
// `Escrow.senderId`) or `*` for all; lines already there before do not count, so an
// old acknowledgement never lets a new break through.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { buildSchema } from 'graphql';
import { CriticalityLevel, diff } from '@graphql-inspector/core';

const root = execFileSync('git', ['rev-parse', '--show-toplevel'], { encoding: 'utf8' }).trim();
const git = (...args) => execFileSync('git', args, { cwd: root, encoding: 'utf8' });
const base = process.env.SEQUESTRA_SCHEMA_BASE ?? 'HEAD~1';
const ACK = '.ci/schema-breaking.txt';

let baseSdl;
try {
  git('rev-parse', '--verify', '--quiet', `${base}^{commit}`);
  baseSdl = git('show', `${base}:schema.graphql`);
} catch {
  console.log(`schema-diff: no schema.graphql at ${base}: nothing to compare`);
  process.exit(0);
}
const current = readFileSync(`${root}/schema.graphql`, 'utf8');
const changes = await diff(buildSchema(baseSdl), buildSchema(current));

const acknowledged = new Set(
  git('diff', '--unified=0', base, '--', ACK)
    .split('\n')
    .filter((line) => line.startsWith('+') && !line.startsWith('+++'))
    .map((line) => line.slice(1).trim())
    .filter((line) => line && !line.startsWith('#')),
);

const levels = [
  [CriticalityLevel.Breaking, 'breaking'],
  [CriticalityLevel.Dangerous, 'dangerous'],
  [CriticalityLevel.NonBreaking, 'safe'],
];
let refused = 0;
for (const [level, name] of levels) {
  const these = changes.filter((c) => c.criticality.level === level);
  for (const change of these) {
    let mark = '';
    if (level === CriticalityLevel.Breaking) {
      const accepted = acknowledged.has('*') || acknowledged.has(change.path);
      mark = accepted ? ' (accepted in ' + ACK + ')' : ' (NOT accepted)';
      if (!accepted) refused += 1;
    }
    console.log(`[${name}] ${change.path ?? ''}: ${change.message}${mark}`);
  }
}
const count = (level) => changes.filter((c) => c.criticality.level === level).length;
console.log(
  `schema-diff against ${base}: ${count(CriticalityLevel.Breaking)} breaking, ` +
    `${count(CriticalityLevel.Dangerous)} dangerous, ${count(CriticalityLevel.NonBreaking)} safe`,
);
if (refused > 0) {
  console.error(
    `schema-diff: ${refused} breaking change(s) not accepted: add their paths to ${ACK} ` +
      'in the same commit if clients have been told, or keep the old field (@deprecated)',
  );
  process.exit(1);
}
