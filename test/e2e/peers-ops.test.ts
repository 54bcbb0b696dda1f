/**
 * Issue 12, the operator's side of site peers: `berth status` and `berth doctor` on a site of
 * real berths on 127.0.0.1-3 with a static member list, where one node was given another key
 * file, and a fourth member that runs nothing. Both commands run in their own process, apart
 * from the daemons, and ask each peer listener what the daemon would: a signed GET /v2/.
 */
import t from 'tap';
import path from 'node:path';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { startBerth, type Berth } from '../harness/berth.js';
import { freePort, tempDirFor } from '../harness/procs.js';

interface MemberReport {
  peer: string;
  reachable: boolean;
  signed: boolean;
  status?: number;
  skewMs?: number;
  error?: string;
}
interface PeersReport {
  self: string;
  source: string;
  error?: string;
  members: MemberReport[];
}
interface Finding {
  level: string;
  check: string;
  what: string;
  fix?: string;
}

t.test('status and doctor: the site as each node sees it; a node with another key file is refused with 401', async (t) => {
  const work = await tempDirFor(t, 'berth-peers-ops');
  const siteKey = path.join(work, 'site.key');
  const wrongKey = path.join(work, 'wrong.key');
  await writeFile(siteKey, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  await writeFile(wrongKey, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  const [a, b, c, gone] = [`127.0.0.1:${await freePort()}`, `127.0.0.2:${await freePort()}`, `127.0.0.3:${await freePort()}`, `127.0.0.4:${await freePort()}`];
  const members = [a, b, c, gone];
  const node = (listen: string, keyFile: string): Promise<Berth> =>
    startBerth(t, {
      // No upstream answers: status and doctor must not need one to judge the peers.
      upstreams: [{ registry: 'docker.io', url: 'http://127.0.0.1:1', connect_timeout: '1s' }],
      extra: { peers: { listen, key_file: keyFile, members } },
    });
  const [nodeA, , nodeC] = await Promise.all([node(a, siteKey), node(b, siteKey), node(c, wrongKey)]);

  await t.test('status --json on node A', async (t) => {
    const r = await nodeA!.cli(['status', '--json']);
    t.equal(r.code, 0, r.stderr);
    const peers = (JSON.parse(r.stdout) as { peers: PeersReport }).peers;
    t.equal(peers.self, a, 'this node, by its [peers] listen');
    t.equal(peers.source, 'the static list');
    t.same(peers.members.map((m) => m.peer), [b, c, gone], 'the others, this node left out');
    const [pb, pc, pgone] = peers.members as [MemberReport, MemberReport, MemberReport];
    t.match(pb, { reachable: true, signed: true, status: 200 }, 'B holds the same key: signature accepted');
    t.ok(pb.skewMs !== undefined && Math.abs(pb.skewMs) <= 2000, `B's clock is read from its Date header (${pb.skewMs} ms)`);
    t.notOk('error' in pb);
    t.match(pc, { reachable: true, signed: false, status: 401, error: /refuses this node's signature \(401\): it holds another site key/ }, 'C holds another key: 401');
    t.match(pgone, { reachable: false, signed: false, error: /unreachable \(ECONNREFUSED\)/ }, 'nothing runs at the fourth member');
    t.notOk('status' in pgone);
  });

  await t.test('status on node C, in words', async (t) => {
    const r = await nodeC!.cli(['status']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, new RegExp(`^peers\\s+${c.replace(/\./g, '\\.')} is this node; 3 other members from the static list$`, 'm'));
    for (const other of [a, b]) {
      t.match(r.stdout, new RegExp(`^  peer\\s+${other.replace(/\./g, '\\.')}: refuses this node's signature \\(401\\): it holds another site key; its clock is `, 'm'), `${other} refuses C`);
    }
    t.match(r.stdout, new RegExp(`^  peer\\s+${gone.replace(/\./g, '\\.')}: unreachable \\(ECONNREFUSED\\)$`, 'm'));
  });

  await t.test('doctor on node A: the real peer listeners judged, with fixes', async (t) => {
    const hostsDir = await mkdtemp(path.join(os.tmpdir(), 'berth-peers-ops-hosts-'));
    t.teardown(() => import('node:fs/promises').then((fs) => fs.rm(hostsDir, { recursive: true, force: true })));
    const r = await nodeA!.cli(['doctor', '--json', '--hosts-dir', hostsDir, '--timeout', '2s']);
    t.equal(r.code, 1, 'errors (C refuses, no hosts.toml): exit 1');
    const findings = (JSON.parse(r.stdout) as { findings: Finding[] }).findings;
    const by = (check: string) => findings.filter((f) => f.check === check);
    t.match(by('peers.key'), [{ level: 'ok' }]);
    t.match(by('peers.listen'), [{ level: 'ok', what: new RegExp(`peer listener ${a.replace(/\./g, '\\.')} is on this host`) }]);
    t.match(by('peers.self'), [{ level: 'ok', what: /this node's peer listener .* accepts this node's signature/ }], "the daemon's own listener takes the key");
    const member = (id: string) => by('peers.member').find((f) => f.what.startsWith(`peer ${id} `));
    t.match(member(b), { level: 'ok' });
    t.match(member(c), { level: 'error', what: /401.*another site key/, fix: /same key_file contents/ });
    t.match(member(gone), { level: 'warn', what: /unreachable/ });
    t.match(by('peers.clock'), [{ level: 'ok', what: /^clocks of 2 peers within \d s of this node's$/ }], "B's and C's clocks (C's answers carry a Date too)");
  });
});
