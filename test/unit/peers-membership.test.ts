/**
 * Where the members come from: host:port parsing and its normal form, a static list, and DNS
 * answered by a small server the test starts and changes while membership follows it. Waits are
 * on the onChange event or a log line, never on time.
 */
import { Resolver } from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import pino from 'pino';
import t from 'tap';
import { DnsMembership, PeerAddressError, StaticMembership, parseMember, type Membership } from '../../src/peers/membership.js';
import { ipv6Bytes, startDnsServer, type DnsServer } from '../harness/dns-server.js';

const NAME = 'berth-peers.berth.svc.cluster.local';
const SELF = '10.0.0.11:5051';
/** A bound on waiting for an event that should come within milliseconds: a failure, not a pace. */
const WAIT_MS = 10_000;

t.test('parseMember accepts host:port forms and normalises them', async (t) => {
  t.same(parseMember('10.0.0.11:5051'), { host: '10.0.0.11', port: 5051, id: '10.0.0.11:5051' });
  t.same(parseMember('[FD00:0:0::11]:5051'), { host: 'fd00::11', port: 5051, id: '[fd00::11]:5051' }, 'IPv6: lower case, compressed');
  t.equal(parseMember('[fd00:0000:0000:0000:0000:0000:0000:0011]:1').id, '[fd00::11]:1');
  t.equal(parseMember('[::ffff:10.0.0.1]:5051').id, '[::ffff:a00:1]:5051', 'an IPv4-mapped address in one form');
  t.same(parseMember('Node-1.Site.example.:65535'), { host: 'node-1.site.example', port: 65535, id: 'node-1.site.example:65535' }, 'names: lower case, no trailing dot');
  t.equal(parseMember('localhost:1').id, 'localhost:1');
});

t.test('parseMember refuses what is no host:port, and says why', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['10.0.0.11', /needs a port/],
    ['10.0.0.11:', /port must be a number/],
    ['10.0.0.11:0', /port must be a number from 1 to 65535/],
    ['10.0.0.11:65536', /port must be a number/],
    ['10.0.0.11:50 51', /port must be a number/],
    ['10.0.0.11:http', /port must be a number/],
    ['fd00::11:5051', /IPv6 address goes in brackets, e\.g\. \[fd00::11\]:5051/],
    ['[fd00::11]5051', /needs a port after the address/],
    ['[fd00::11:5051', /without its "\]"/],
    ['[10.0.0.11]:5051', /only an IPv6 address goes in brackets/],
    ['[fe80::1%eth0]:5051', /zone index/],
    [':5051', /needs a host/],
    ['0.0.0.0:5051', /any-address/],
    ['[::]:5051', /any-address/],
    ['[0:0::0]:5051', /any-address/],
    ['010.0.0.11:5051', /not a valid IPv4 address/],
    ['10.0.0.256:5051', /not a valid IPv4 address/],
    ['under_score.example:5051', /neither an IP address nor a DNS name/],
    ['-lead.example:5051', /neither an IP address nor a DNS name/],
    ['a..b:5051', /neither an IP address nor a DNS name/],
    [`${'a'.repeat(64)}.example:5051`, /neither an IP address nor a DNS name/],
    ['http://10.0.0.11:5051', /neither an IP address nor a DNS name|IPv6 address goes in brackets/],
  ];
  for (const [text, why] of cases) {
    const err = t.throws(() => parseMember(text), PeerAddressError, text) as PeerAddressError;
    t.equal(err.code, 'EPEERADDR');
    t.equal(err.value, text);
    t.match(err.message, why, `${text}: ${err.message}`);
    t.match(err.message, JSON.stringify(text), 'quotes the value');
  }
});

t.test('a static list: sorted, deduplicated, self left out', async (t) => {
  const m: Membership = new StaticMembership(['10.0.0.13:5051', '10.0.0.11:5051', '[FD00::12]:5051', '10.0.0.13:5051', '[fd00:0::12]:5051', 'Node-9.site:5051'], SELF);
  await m.start();
  t.equal(m.self, SELF);
  t.same(m.members(), ['10.0.0.13:5051', '[fd00::12]:5051', 'node-9.site:5051'], 'sorted as strings');
  t.ok(Object.isFrozen(m.members()), 'callers cannot change the list');
  const unsubscribe = m.onChange(() => t.fail('a static list never changes'));
  unsubscribe();
  await m.stop();

  t.same(new StaticMembership(['[fd00::11]:5051', '[fd00::12]:5051'], '[FD00:0::11]:5051').members(), ['[fd00::12]:5051'], 'self matched in normal form');
  t.same(new StaticMembership(['10.0.0.12:5051'], '10.0.0.12:5052').members(), ['10.0.0.12:5051'], 'another port is another member');
  t.throws(() => new StaticMembership(['10.0.0.12:5051', 'nope'], SELF), { code: 'EPEERADDR', message: /"nope": needs a port/ });
  t.throws(() => new StaticMembership([], '0.0.0.0:5051'), { code: 'EPEERADDR', message: /any-address/ }, 'self must be reachable too');
});

/** A pino logger whose lines the test can wait for. */
function capturingLogger(): { log: pino.Logger; lines: Array<Record<string, unknown>>; waitFor(pred: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const events = new EventEmitter();
  const log = pino(
    { level: 'debug' },
    {
      write(s: string) {
        const line = JSON.parse(s) as Record<string, unknown>;
        lines.push(line);
        events.emit('line', line);
      },
    },
  );
  const waitFor = (pred: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const on = (line: Record<string, unknown>): void => {
        if (!pred(line)) return;
        clearTimeout(timer);
        events.off('line', on);
        resolve(line);
      };
      const timer = setTimeout(() => {
        events.off('line', on);
        reject(new Error(`the awaited log line did not come within ${WAIT_MS} ms`));
      }, WAIT_MS);
      events.on('line', on);
    });
  return { log, lines, waitFor };
}

function nextChange(m: Membership): Promise<readonly string[]> {
  return new Promise((resolve, reject) => {
    const off = m.onChange((list) => {
      clearTimeout(timer);
      off();
      resolve(list);
    });
    const timer = setTimeout(() => {
      off();
      reject(new Error(`membership did not change within ${WAIT_MS} ms`));
    }, WAIT_MS);
  });
}

function resolverFor(dns: DnsServer): Resolver {
  const r = new Resolver({ timeout: 1_000, tries: 1 });
  r.setServers([dns.address]);
  return r;
}

t.test('the test DNS server encodes IPv6 as the resolver reads it', async (t) => {
  t.same(ipv6Bytes('fd00::11'), Buffer.from('fd000000000000000000000000000011', 'hex'));
  t.same(ipv6Bytes('::1'), Buffer.from('00000000000000000000000000000001', 'hex'));
  t.same(ipv6Bytes('1:2:3:4:5:6:7:8'), Buffer.from('00010002000300040005000600070008', 'hex'));
  t.throws(() => ipv6Bytes('1:2:3'));
});

t.test('DNS membership follows the records', async (t) => {
  const dns = await startDnsServer(t);
  dns.set(NAME, { a: ['10.0.0.11', '10.0.0.13', '10.0.0.12'], aaaa: ['FD00::14'] });
  const { log, lines, waitFor } = capturingLogger();
  const m = new DnsMembership({ name: NAME, port: 5051, intervalMs: 20, self: SELF, log, resolver: resolverFor(dns) });
  t.teardown(() => m.stop());
  let changes = 0;
  m.onChange(() => changes++);

  await m.start();
  t.same(m.members(), ['10.0.0.12:5051', '10.0.0.13:5051', '[fd00::14]:5051'], 'A and AAAA, self left out, in normal form');
  t.equal(changes, 1, 'the first answer is a change from nothing');
  t.match(lines.find((l) => l.msg === 'peer members changed'), { added: ['10.0.0.12:5051', '10.0.0.13:5051', '[fd00::14]:5051'], removed: [] });

  let changed = nextChange(m);
  dns.set(NAME, { a: ['10.0.0.11', '10.0.0.13', '10.0.0.12', '10.0.0.15'], aaaa: ['fd00::14'] });
  t.same(await changed, ['10.0.0.12:5051', '10.0.0.13:5051', '10.0.0.15:5051', '[fd00::14]:5051'], 'a member joins');

  changed = nextChange(m);
  dns.set(NAME, { a: ['10.0.0.11', '10.0.0.13', '10.0.0.15'], aaaa: ['fd00::14'] });
  t.same(await changed, ['10.0.0.13:5051', '10.0.0.15:5051', '[fd00::14]:5051'], 'a member leaves');
  t.same(m.members(), ['10.0.0.13:5051', '10.0.0.15:5051', '[fd00::14]:5051']);
  t.match(lines.filter((l) => l.msg === 'peer members changed').at(-1), { added: [], removed: ['10.0.0.12:5051'] });

  changed = nextChange(m);
  dns.set(NAME, { a: ['10.0.0.11', '10.0.0.13', '10.0.0.15'] });
  t.same(await changed, ['10.0.0.13:5051', '10.0.0.15:5051'], 'no AAAA records (NODATA) is no IPv6 member, not a failure');
  t.equal(changes, 4);
});

t.test('DNS membership keeps the last good list while look-ups fail', async (t) => {
  const dns = await startDnsServer(t);
  dns.set(NAME, { a: ['10.0.0.12', '10.0.0.13'], aaaa: ['fd00::14'] });
  const { log, waitFor } = capturingLogger();
  const m = new DnsMembership({ name: NAME, port: 5051, intervalMs: 20, self: SELF, log, resolver: resolverFor(dns) });
  t.teardown(() => m.stop());
  await m.start();
  const good = m.members();
  t.same(good, ['10.0.0.12:5051', '10.0.0.13:5051', '[fd00::14]:5051']);
  let changes = 0;
  m.onChange(() => changes++);

  const warned = waitFor((l) => l.msg === 'peer DNS look-up failed; keeping the last known members');
  dns.failWith('SERVFAIL');
  t.match(await warned, { level: 40, name: NAME, code: 'ESERVFAIL', members: good });
  // The failure is logged once, later failures quietly: wait for one of those too.
  t.match(await waitFor((l) => l.msg === 'peer DNS look-up still failing'), { level: 20, code: 'ESERVFAIL' });
  t.same(m.members(), good, 'the last good list is kept');
  t.equal(changes, 0, 'no change announced');

  // Half an answer is no answer: with AAAA failing, the A records alone must not drop fd00::14.
  const recovered = waitFor((l) => l.msg === 'peer DNS look-up works again');
  dns.failWith(undefined);
  await recovered;
  const halfWarned = waitFor((l) => l.msg === 'peer DNS look-up failed; keeping the last known members');
  dns.failWith('SERVFAIL', 'AAAA');
  await halfWarned;
  await waitFor((l) => l.msg === 'peer DNS look-up still failing');
  t.same(m.members(), good, 'a family that failed keeps its members');
  t.equal(changes, 0);

  const changed = nextChange(m);
  dns.failWith(undefined);
  dns.set(NAME, { a: ['10.0.0.12'], aaaa: ['fd00::14'] });
  t.same(await changed, ['10.0.0.12:5051', '[fd00::14]:5051'], 'changes are followed again once DNS answers');
});

t.test('an answer that names nobody empties the list', async (t) => {
  const dns = await startDnsServer(t);
  dns.set(NAME, { a: ['10.0.0.12'] });
  const { log } = capturingLogger();
  const m = new DnsMembership({ name: NAME, port: 5051, intervalMs: 20, self: SELF, log, resolver: resolverFor(dns) });
  t.teardown(() => m.stop());
  await m.start();
  t.same(m.members(), ['10.0.0.12:5051']);

  let changed = nextChange(m);
  dns.delete(NAME);
  t.same(await changed, [], 'NXDOMAIN: the name is gone, so are its members');

  changed = nextChange(m);
  dns.set(NAME, { a: ['10.0.0.12', '10.0.0.11'] });
  t.same(await changed, ['10.0.0.12:5051'], 'back again');

  changed = nextChange(m);
  dns.set(NAME, {});
  t.same(await changed, [], 'a name with no records (NODATA for both)');

  changed = nextChange(m);
  dns.set(NAME, { a: ['10.0.0.11'] });
  dns.set(NAME, { a: ['10.0.0.11', '10.0.0.12'] });
  t.same(await changed, ['10.0.0.12:5051']);
  changed = nextChange(m);
  dns.set(NAME, { a: ['10.0.0.11'] });
  t.same(await changed, [], 'only self left');
});

t.test('a DNS outage at start-up: start resolves, empty, and the list fills once DNS answers', async (t) => {
  const dns = await startDnsServer(t);
  dns.set(NAME, { a: ['10.0.0.12'] });
  dns.failWith('REFUSED');
  const { log, lines } = capturingLogger();
  const m = new DnsMembership({ name: NAME, port: 5051, intervalMs: 20, self: SELF, log, resolver: resolverFor(dns) });
  t.teardown(() => m.stop());
  await m.start();
  t.same(m.members(), []);
  t.match(lines.find((l) => l.level === 40), { msg: 'peer DNS look-up failed; keeping the last known members', code: 'EREFUSED', members: [] });
  const changed = nextChange(m);
  dns.failWith(undefined);
  t.same(await changed, ['10.0.0.12:5051']);
});

t.test('DNS membership: stop, listener errors, odd answers, options', async (t) => {
  const dns = await startDnsServer(t);
  dns.set(NAME, { a: ['10.0.0.12', '0.0.0.0'] });
  const { log, lines } = capturingLogger();
  const m = new DnsMembership({ name: NAME, port: 5051, intervalMs: 20, self: '[FD00::11]:5051', log, resolver: resolverFor(dns) });
  t.equal(m.self, '[fd00::11]:5051');
  const seen: Array<readonly string[]> = [];
  m.onChange(() => {
    throw new Error('listener bug');
  });
  m.onChange((list) => seen.push(list));
  await m.start();
  await m.start();
  t.same(m.members(), ['10.0.0.12:5051'], 'the any-address in an answer is left out');
  t.same(seen, [['10.0.0.12:5051']], 'a throwing listener does not stop the others');
  t.match(lines.find((l) => l.level === 40), { msg: 'peer DNS answer holds an unusable address; left out', address: '0.0.0.0' });
  t.match(lines.find((l) => l.level === 50), { msg: 'a peer membership listener failed', err: { message: 'listener bug' } });

  await m.stop();
  await m.stop();
  t.same(m.members(), ['10.0.0.12:5051'], 'the last list stays readable after stop, which may be called twice');

  t.throws(() => new DnsMembership({ name: NAME, port: 5051, intervalMs: 0, self: SELF, log }), RangeError);
  t.throws(() => new DnsMembership({ name: NAME, port: 0, intervalMs: 1000, self: SELF, log }), RangeError);
  t.throws(() => new DnsMembership({ name: NAME, port: 5051, intervalMs: 1000, self: 'nope', log }), PeerAddressError);
  const sys = new DnsMembership({ name: NAME, port: 5051, intervalMs: 1000, self: SELF, log });
  await sys.stop();
  t.pass('a default resolver is created and stopped without a look-up');
});

t.test('stop() during a look-up cancels it, quietly, and waits for it', async (t) => {
  // A resolver the test answers by hand, cancelled as c-ares cancels: pending queries reject ECANCELLED.
  const pending: Array<{ reject: (err: Error) => void }> = [];
  const asked = new EventEmitter();
  let cancels = 0;
  let answerAtOnce = true;
  const ask = (): Promise<string[]> =>
    answerAtOnce
      ? Promise.resolve(['10.0.0.12'])
      : new Promise<string[]>((_resolve, reject) => {
          pending.push({ reject });
          asked.emit('ask');
        });
  const resolver = {
    resolve4: ask,
    resolve6: () => Promise.resolve([] as string[]),
    cancel: () => {
      cancels++;
      for (const p of pending.splice(0)) p.reject(Object.assign(new Error('cancelled'), { code: 'ECANCELLED' }));
    },
  };
  const { log, lines } = capturingLogger();
  // Membership's timer is unref'd and a hand-answered query holds no handle: without a ref'd
  // handle of the test's own, the process would end while the test waits.
  const keepAlive = setInterval(() => {}, 60_000);
  t.teardown(() => clearInterval(keepAlive));
  const m = new DnsMembership({ name: NAME, port: 5051, intervalMs: 1, self: SELF, log, resolver });
  await m.start();
  t.same(m.members(), ['10.0.0.12:5051']);
  // Runs before the 1 ms timer can fire: the next look-up will hang until cancelled.
  answerAtOnce = false;
  await new Promise((resolve) => asked.once('ask', resolve));
  t.equal(pending.length, 1, 'the next look-up is waiting for its answer');
  await m.stop();
  t.equal(cancels, 1, 'stop() cancelled it');
  t.equal(pending.length, 0);
  t.same(m.members(), ['10.0.0.12:5051'], 'a cancelled look-up changes nothing');
  t.notOk(lines.some((l) => l.level === 40), 'and is no failure worth a warning');
});
