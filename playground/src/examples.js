// Example operations per role; each works against `sequestra serve --demo`.
export const EXAMPLES = [
  {
    role: 'Anyone signed in',
    name: 'Who am I',
    query: `query WhoAmI {
  viewer { id email roles }
  mySessions { id createdAt current }
}`,
  },
  {
    role: 'Anyone signed in',
    name: 'Server clock (subscription)',
    query: `subscription Clock {
  serverTime(intervalSeconds: 1)
}`,
  },
  {
    role: 'SENDER',
    name: 'My escrows',
    query: `query MyEscrows {
  escrows(first: 10) {
    edges {
      node {
        id status description
        amount { amount currency }
        held { amount }
        milestones { title status amount { amount } }
        payments { status amount { amount } pspReference }
      }
    }
  }
}`,
  },
  {
    role: 'SENDER',
    name: 'Mandates I granted',
    query: `query Mandates {
  mandates(first: 10, filter: { role: SENDER }) {
    edges { node { id status total { amount currency } spent { amount } expiresAt } }
  }
}`,
  },
  {
    role: 'BENEFICIARY',
    name: 'Mandates I may spend',
    query: `query MyMandates {
  mandates(first: 10, filter: { role: BENEFICIARY }) {
    edges { node { id status total { amount currency } spent { amount } } }
  }
  merchants(first: 10) { edges { node { id name certified } } }
}`,
  },
  {
    role: 'BENEFICIARY',
    name: 'My payments, live (subscription)',
    query: `subscription MyPayments {
  myPaymentUpdates { id status purpose amount { amount currency } }
}`,
  },
  {
    role: 'SUPPORT',
    name: 'Users and their roles',
    query: `query Users {
  users(first: 20) {
    edges {
      node { email roles isActive }
    }
  }
}`,
  },
  {
    role: 'SUPPORT',
    name: 'Disputed escrows',
    query: `query Disputes {
  escrows(first: 20, filter: { status: DISPUTED }) {
    edges { node { id description disputeReason amount { amount currency } } }
  }
}`,
  },
  {
    role: 'ADMIN',
    name: 'Audit log',
    query: `query Audit {
  auditLog(first: 20) { edges { node { action actorId createdAt } } }
}`,
  },
  {
    role: 'ADMIN',
    name: 'Alerts',
    query: `query Alerts {
  alerts(first: 20) { edges { node { kind message createdAt } } }
}`,
  },
];
