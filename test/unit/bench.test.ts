/**
 * The bench's own arithmetic (bench/floor.ts, bench/uplink.ts, measure 1's turns): the CPU
 * bound measure 2 reports beside the 0.8x target, and the uplink's pacing,
 * which must hold its rate although timers fire late.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { hashBound, hashCpu, registryBlobFile } from '../../bench/floor.js';
import { turns } from '../../bench/measures/warm-blob.js';
import { finish, markdown, type Report } from '../../bench/report.js';
import { summarize } from '../../bench/stats.js';
import { pace } from '../../bench/uplink.js';

t.test('hashBound: the direct download\'s CPU over that plus the hash', async (t) => {
  t.equal(hashBound({ client: 1, upstream: 1, hash: 0 }), 1, 'no hash: the mirror could match the direct download');
  t.equal(hashBound({ client: 1.5, upstream: 0.5, hash: 0.5 }), 0.8, '2 / 2.5');
  t.ok(Math.abs(hashBound({ client: 1.2, upstream: 0.4, hash: 0.6 }) - 1.6 / 2.2) < 1e-12, '1.6 / 2.2');
  t.ok(hashBound({ client: 1, upstream: 1, hash: 0.6 }) > hashBound({ client: 1, upstream: 1, hash: 1.2 }), 'a dearer hash lowers the bound');
  t.throws(() => hashBound({ client: -1, upstream: 1, hash: 1 }), /client must be a CPU cost/);
  t.throws(() => hashBound({ client: Number.NaN, upstream: 1, hash: 1 }), /client/);
  t.throws(() => hashBound({ client: 0, upstream: 0, hash: 0 }), /no CPU measured/);
});

t.test('hashCpu hashes the whole file and says what it cost', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-floor-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const data = Buffer.alloc(3 * 1024 * 1024 + 123, 'berth');
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const file = registryBlobFile(dir, digest);
  t.equal(file, path.join(dir, 'docker/registry/v2/blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data'));
  writeFileSync(path.join(dir, 'f'), data);
  const r = hashCpu(path.join(dir, 'f'));
  t.equal(r.digest, digest);
  t.equal(r.bytes, data.length);
  t.ok(r.cpuS >= 0 && r.cpuS < 60, `a CPU time in seconds (${r.cpuS})`);
});

/** Hands `total` bytes over the link in `chunk`s, one at a time as a connection does, each timer `lateMs` late. */
function carry(rate: number, chunk: number, total: number, lateMs: number, slackMs?: number): number {
  let t = 0;
  let freeAt = 0;
  for (let sent = 0; sent < total; sent += chunk) {
    freeAt = pace(freeAt, t, chunk, rate, slackMs);
    // Due now: handed on at once; due later: a timer, which fires late.
    t = freeAt <= t ? t : freeAt + lateMs;
  }
  return (total / (t / 1000)) / rate;
}

t.test('pace: the link holds its rate with late timers, one chunk at a time', async (t) => {
  const MiB = 1024 * 1024;
  for (const late of [0, 1, 2.5]) {
    const got = carry(100 * MiB, 64 * 1024, 128 * MiB, late);
    t.ok(got > 0.97 && got <= 1.0001, `100 MiB/s, 64 KiB chunks, timers ${late} ms late: ${(got * 100).toFixed(1)}% of the rate`);
  }
  const slow = carry(25 * MiB, 64 * 1024, 32 * MiB, 1);
  t.ok(slow > 0.97 && slow <= 1.0001, `25 MiB/s: ${(slow * 100).toFixed(1)}% of the rate`);
  t.ok(carry(100 * MiB, 64 * 1024, 128 * MiB, 1, 0) < 0.7, 'without the slack late timers are lost for good (the old limiter)');
});

t.test('pace: an idle link earns at most the slack as a burst', async (t) => {
  const rate = 100 * 1024 * 1024;
  const chunkMs = ((64 * 1024) / rate) * 1000;
  t.equal(pace(0, 10_000, 64 * 1024, rate, 5), 10_000 - 5 + chunkMs, 'idle for 10 s: starts 5 ms back, no more');
  t.equal(pace(10_020, 10_000, 64 * 1024, rate, 5), 10_020 + chunkMs, 'a busy link queues the chunk after the others');
});

t.test('turns: measure 1 rotates the servers\' order from run to run', async (t) => {
  const s = ['nginx', 'node', 'berth', 'proxy', 'upstream'];
  t.same(turns(s, 0), s, 'run 1: the list as it is');
  t.same(turns(s, 1), ['node', 'berth', 'proxy', 'upstream', 'nginx']);
  t.same(turns(s, 5), s, 'wraps round');
  const places = new Map(s.map((x) => [x, new Set<number>()]));
  const after = new Map(s.map((x) => [x, new Set<string>()]));
  for (let run = 0; run < s.length; run++) {
    const o = turns(s, run);
    t.same([...o].sort(), [...s].sort(), `run ${run + 1} has every server once`);
    o.forEach((x, i) => {
      places.get(x)!.add(i);
      if (i > 0) after.get(x)!.add(o[i - 1]!);
    });
  }
  for (const x of s) t.equal(places.get(x)!.size, s.length, `${x} has every place once in ${s.length} runs`);
  t.ok(after.get('proxy')!.size > 0 && turns(s, 2)[0] === 'berth', 'in run 3 berth goes first, nothing before it');
});

t.test('markdown: a row whose first column is not berth names what it holds', async (t) => {
  const direct = { name: 'straight from the upstream', value: summarize([140, 131, 246]) };
  const report: Report = {
    date: '2026-12-04T00:00:00Z',
    mode: 'quick',
    durationS: 1,
    machine: { nproc: 2, cpu: 'x', memoryGiB: 1, node: 'v20', kernel: 'k', loadavg: [1, 1, 1] },
    rows: [
      finish({ measure: '2 cold fill', what: 'relay', unit: 'MiB/s', better: 'higher', subject: 'hashing relay', berth: summarize([70, 65, 120]), peer: direct }),
      finish({ measure: '2 cold fill', what: 'berth', unit: 'MiB/s', better: 'higher', berth: summarize([35, 19, 42]), peer: direct }),
    ],
    failures: [],
    notes: [],
  };
  const lines = markdown(report).split('\n');
  const relay = lines.find((l) => l.includes('| 2 cold fill | relay '));
  const berth = lines.find((l) => l.includes('| 2 cold fill | berth '));
  t.match(relay, /\| hashing relay: 70\.0 MiB\/s \(65\.0–120\) \| straight from the upstream: 140 MiB\/s/, 'the subject before the value');
  t.match(relay, /\| 0\.50x \|/, 'the ratio is the subject\'s median over the peer\'s');
  t.match(berth, /\| 35\.0 MiB\/s \(19\.0–42\.0\) \|/, 'berth\'s own rows carry no name');
});
