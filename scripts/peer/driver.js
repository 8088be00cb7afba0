// Shopify's own PostgreSQL session storage, driven as scripts/bench_peer.py drives the vault: one phase
// per process. Run by bench_peer.py with NODE_PATH at the pinned install (npm ci of package-lock.json).
// argv[2]: JSON {dsn, phase: "store"|"load", callers, shops, version, round, lookups?, warm?}.
// Prints one JSON line: {ops, seconds, wrong}.
'use strict';

const crypto = require('node:crypto');
const {Session} = require('@shopify/shopify-api');
const {PostgreSQLSessionStorage} = require('@shopify/shopify-app-session-storage-postgresql');

// The same token bench_peer.py's value_for() makes: "shpat_" + 32 hex characters.
function valueFor(round, version, shop) {
  return 'shpat_' + crypto.createHash('md5').update(`${round}:${version}:${shop}`).digest('hex');
}

function shopDomain(shop) {
  return `bench-${shop}.myshopify.com`;
}

async function inParallel(callers, items, work) {
  let next = 0;
  async function caller() {
    while (next < items.length) {
      const item = items[next++];
      await work(item);
    }
  }
  await Promise.all(Array.from({length: callers}, caller));
}

async function main() {
  const job = JSON.parse(process.argv[2]);
  // Defaults, as an app gets them: a pg.Pool of 10 connections, its table created on first use.
  const storage = new PostgreSQLSessionStorage(job.dsn);
  await storage.ready;
  let wrong = 0;
  let items;
  let work;
  if (job.phase === 'store') {
    items = Array.from({length: job.shops}, (_, shop) => shop);
    work = async (shop) => {
      const session = new Session({
        id: `offline_${shopDomain(shop)}`,
        shop: shopDomain(shop),
        state: 'bench',
        isOnline: false,
        scope: 'read_products',
        accessToken: valueFor(job.round, job.version, shop),
      });
      await storage.storeSession(session);
    };
  } else {
    items = job.lookups;
    work = async (shop) => {
      const session = await storage.loadSession(`offline_${shopDomain(shop)}`);
      if (!session || session.accessToken !== valueFor(job.round, job.version, shop)) wrong += 1;
    };
    if (job.warm) {
      // What warms the vault's cache, untimed here too (the adapter keeps no cache: it warms the pool).
      await inParallel(job.callers, Array.from({length: job.shops}, (_, shop) => shop), work);
      wrong = 0;
    }
  }
  const began = process.hrtime.bigint();
  await inParallel(job.callers, items, work);
  const seconds = Number(process.hrtime.bigint() - began) / 1e9;
  await storage.disconnect();
  process.stdout.write(JSON.stringify({ops: items.length, seconds, wrong}) + '\n');
}

main().catch((error) => {
  process.stderr.write(`${error.name}: ${error.message}\n`);
  process.exit(1);
});
