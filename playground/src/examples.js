// Example operations, grouped by topic; each works against `sequestra serve --demo`
// for a user whose role may run it. The pane shows an example only when it is valid
// against the schema the signed-in caller is shown (the server hides what a role may
// not use), so the list is the caller's own.
//
// `variables` is a JSON template. When an example is opened its placeholders are
// filled: `{{key}}` with a new idempotency key, `{{in7days}}` with a date a week
// ahead, and `{{usr}}`, `{{esc}}`, `{{mnd}}`, `{{mer}}`, … (a global id's prefix) with
// the last id of that kind seen in an answer. The flows are numbered in the order
// that leaves the right id behind for the next step, and a `flow` is offered whole
// or not at all (a role that can fund but not create an escrow is not shown step 3
// alone).
export const EXAMPLES = [
  {
    topic: 'You',
    name: 'Who am I',
    query: `query WhoAmI {
  viewer { id email roles }
  mySessions { id createdAt current }
}`,
  },
  {
    topic: 'You',
    name: 'Server clock (subscription)',
    query: `subscription Clock {
  serverTime(intervalSeconds: 1)
}`,
  },
  {
    topic: 'Escrow: create, fund, release',
    flow: 'escrow',
    name: '1. Providers you have paid',
    query: `query Providers {
  escrows(first: 10) {
    edges { node { provider { userId email } } }
  }
}`,
  },
  {
    topic: 'Escrow: create, fund, release',
    flow: 'escrow',
    name: '2. Create an escrow for the last one',
    query: `mutation CreateEscrow($input: CreateEscrowInput!) {
  createEscrow(input: $input) {
    escrow { id status amount { amount currency } provider { email } }
  }
}`,
    variables: `{
  "input": {
    "providerId": "{{usr}}",
    "amount": "25.00",
    "currency": "EUR",
    "description": "Logo design, from the playground",
    "deadline": "{{in7days}}",
    "idempotencyKey": "{{key}}"
  }
}`,
  },
  {
    topic: 'Escrow: create, fund, release',
    flow: 'escrow',
    name: '3. Fund it',
    query: `mutation FundEscrow($input: FundEscrowInput!) {
  fundEscrow(input: $input) {
    escrow { id status held { amount currency } }
    deposit { id amount { amount } }
  }
}`,
    variables: `{
  "input": { "escrowId": "{{esc}}", "amount": "25.00", "idempotencyKey": "{{key}}" }
}`,
  },
  {
    topic: 'Escrow: create, fund, release',
    flow: 'escrow',
    name: '4. Release it (asks for a step-up)',
    query: `mutation ReleaseEscrow($input: ReleaseEscrowInput!) {
  releaseEscrow(input: $input) {
    escrow { id status }
    payments { id status amount { amount currency } payee { email } }
  }
}`,
    variables: `{
  "input": { "escrowId": "{{esc}}", "idempotencyKey": "{{key}}" }
}`,
  },
  {
    topic: 'Escrow: create, fund, release',
    flow: 'escrow',
    name: '5. Follow your payments (subscription)',
    query: `subscription MyPayments {
  myPaymentUpdates { id status purpose amount { amount currency } pspReference }
}`,
  },
  {
    topic: 'Escrow: create, fund, release',
    name: 'My escrows',
    query: `query MyEscrows {
  escrows(first: 10) {
    edges {
      node {
        id status description
        amount { amount currency }
        held { amount }
        milestones { title status amount { amount } }
        paymentsConnection(first: 5) { edges { node { status amount { amount } pspReference } } }
      }
    }
  }
}`,
  },
  {
    topic: 'Mandates: grant, spend',
    name: 'Mandates I granted',
    query: `query Mandates {
  mandates(first: 10, filter: { role: SENDER }) {
    edges { node { id status total { amount currency } spent { amount } expiresAt } }
  }
}`,
  },
  {
    topic: 'Mandates: grant, spend',
    name: 'Grant a mandate to the last user seen',
    query: `mutation GrantMandate($input: GrantMandateInput!) {
  grantMandate(input: $input) {
    mandate { id status total { amount currency } beneficiary { email } }
  }
}`,
    variables: `{
  "input": {
    "beneficiaryId": "{{usr}}",
    "total": "100.00",
    "currency": "EUR",
    "expiresAt": "{{in7days}}",
    "idempotencyKey": "{{key}}"
  }
}`,
  },
  {
    topic: 'Mandates: grant, spend',
    flow: 'spend',
    name: '1. Mandates I may spend, and merchants',
    query: `query MyMandates {
  mandates(first: 10, filter: { role: BENEFICIARY }) {
    edges { node { id status total { amount currency } spent { amount } } }
  }
  merchants(first: 10) { edges { node { id name certified } } }
}`,
  },
  {
    topic: 'Mandates: grant, spend',
    flow: 'spend',
    name: '2. Buy at the last merchant',
    query: `mutation Buy($input: CreatePurchaseInput!) {
  createPurchase(input: $input) {
    purchase { id amount { amount currency } merchant { name } }
    mandate { id spent { amount } }
  }
}`,
    variables: `{
  "input": {
    "mandateId": "{{mnd}}",
    "merchantId": "{{mer}}",
    "amount": "5.00",
    "description": "Lunch, from the playground",
    "idempotencyKey": "{{key}}"
  }
}`,
  },
  {
    topic: 'Support',
    name: 'Users and their roles',
    query: `query Users {
  users(first: 20) {
    edges {
      node { id email roles isActive }
    }
  }
}`,
  },
  {
    topic: 'Support',
    name: 'Disputed escrows',
    query: `query Disputes {
  escrows(first: 20, filter: { status: DISPUTED }) {
    edges { node { id description disputeReason amount { amount currency } } }
  }
}`,
  },
  {
    topic: 'Administration',
    name: 'Audit log',
    query: `query Audit {
  auditLog(first: 20) { edges { node { action actor { email } subjectType createdAt } } }
}`,
  },
  {
    topic: 'Administration',
    name: 'Alerts',
    query: `query Alerts {
  alerts(first: 20) { edges { node { kind message createdAt } } }
}`,
  },
];

const GLOBAL_ID = /^([a-z]{3})_[0-9a-f]{32}$/;

/** The placeholders of a variables template (`usr`, `key`, …). */
export function placeholders(template) {
  return [...(template ?? '').matchAll(/\{\{(\w+)\}\}/g)].map((m) => m[1]);
}

/**
 * The variables of an example, its placeholders filled: `ids` maps a global id's
 * prefix to the last id of that kind seen; a kind not seen yet stays a readable
 * hole the server will refuse.
 */
export function fillVariables(template, ids, now = new Date(), newKey = () => crypto.randomUUID()) {
  if (!template) return '';
  return template.replace(/\{\{(\w+)\}\}/g, (_, name) => {
    if (name === 'key') return newKey();
    if (name === 'in7days') return new Date(now.getTime() + 7 * 86_400_000).toISOString();
    return ids.get(name) ?? `no ${name}_ id seen yet: run an example that lists one`;
  });
}

/** Every global id in an answer, in document order, as [prefix, id] pairs. */
export function globalIds(value, found = []) {
  if (typeof value === 'string') {
    const m = GLOBAL_ID.exec(value);
    if (m) found.push([m[1], value]);
  } else if (Array.isArray(value)) {
    for (const item of value) globalIds(item, found);
  } else if (value && typeof value === 'object') {
    for (const item of Object.values(value)) globalIds(item, found);
  }
  return found;
}
