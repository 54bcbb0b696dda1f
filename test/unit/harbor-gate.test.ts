/**
 * HarborGate.authorize with a Harbor that answers, but badly (5xx): that is no
 * verdict on the password, so it is treated like an unreachable Harbor. A pair
 * Harbor accepted before keeps pulling; a pair it never accepted is refused.
 * (docs/guarantees.md, "Found in review".)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import t from 'tap';
import { HarborGate } from '../../src/harbor/gate.js';
import { HarborError } from '../../src/harbor/errors.js';
import type { HarborClient } from '../../src/harbor/client.js';
import type { HarborConfig } from '../../src/config/types.js';

const HARBOR: HarborConfig = {
  url: 'https://harbor.example',
  skipVerify: false,
  projects: [],
  syncIntervalMs: 300_000,
  offlineGraceMs: 72 * 3_600_000,
  onExpired: 'deny',
  prefetchLabels: [],
  prefetchPreheat: false,
};

t.test('a Harbor answering 5xx to a credential check: a remembered pair still pulls, an unknown one is refused', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-gate-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const db = new Database(path.join(dir, 'index.db'));
  t.teardown(() => db.close());

  let answer: 'yes' | 'no' | '5xx' = 'yes';
  const asked: string[] = [];
  const broken = () => new HarborError('HARBOR_STATUS', 'harbor GET /service/token: 503', { status: 503 });
  const client = {
    listProjects: async () => {
      throw broken();
    },
    getProject: async (name: string) => ({ project_id: 1, name, metadata: { public: 'false' } }),
    checkPullCredentials: async (_p: string, _r: string, username: string) => {
      asked.push(username);
      if (answer === '5xx') throw broken();
      return answer === 'yes';
    },
  } as unknown as HarborClient;

  let now = 1_000_000_000_000;
  const gate = new HarborGate({
    harbor: HARBOR,
    upstreams: [{ registry: 'harbor.example', url: 'https://harbor.example', skipVerify: false, timeouts: { connectMs: 1000, headersMs: 1000, bodyIdleMs: 1000 } }],
    db,
    heldManifests: () => [],
    cachedManifest: () => undefined,
    logger: pino({ level: 'silent' }),
    now: () => now,
    client,
  });
  const pull = (username: string, password: string) =>
    gate.authorize({ registry: 'harbor.example', repository: 'secure/app', credentials: { username, password } });

  await pull('alice', 'alice-pw');
  t.same(asked, ['alice'], 'Harbor accepted alice once: berth remembers the pair');

  answer = '5xx';
  now += 10 * 60_000; // past the re-check age: berth asks Harbor again
  await t.resolves(pull('alice', 'alice-pw'), 'Harbor answers 503: the remembered pair still pulls');
  t.same(asked, ['alice', 'alice'], 'Harbor was asked (and failed)');

  await t.rejects(pull('bob', 'bob-pw'), { code: 'UNAUTHORIZED', status: 401 }, 'a pair Harbor never accepted is refused');
  await t.rejects(pull('alice', 'a-guess'), { code: 'UNAUTHORIZED', status: 401 }, "a wrong password for alice is refused");
  await t.resolves(pull('alice', 'alice-pw'), "and the guess did not erase alice's remembered pair");
});
