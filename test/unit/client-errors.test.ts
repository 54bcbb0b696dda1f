/**
 * A malformed request right behind an answer still in flight (a blob sent
 * with sendfile(2) is in flight until its completion reaches the main
 * thread) gets its 400 after that answer, not a silently closed connection;
 * and with nothing in flight, the same answers Node gives.
 */
import t, { type Test } from 'tap';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { answerClientErrors } from '../../src/http/client-errors.js';

/** A server whose /slow answer writes its whole body on the socket itself, then ends the response later, as the sendfile path does. */
async function server(t: Test, withHandler: boolean): Promise<{ port: number; release: () => void }> {
  let release = () => {};
  const released = new Promise<void>((r) => (release = r));
  const s = http.createServer((req, res) => {
    if (req.url === '/slow') {
      res.writeHead(200, { 'content-length': '5' });
      res.flushHeaders();
      res.socket!.write('hello');
      void released.then(() => res.end());
    } else {
      res.writeHead(204);
      res.end();
    }
  });
  if (withHandler) answerClientErrors(s);
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  t.teardown(() => {
    s.closeAllConnections();
    s.close();
  });
  return { port: (s.address() as AddressInfo).port, release };
}

/** Sends `raw` on one connection; resolves with everything received until the server closes it. */
async function exchange(port: number, raw: string, onData?: (all: string) => void): Promise<string> {
  const c = net.connect(port, '127.0.0.1');
  let all = '';
  c.on('data', (d: Buffer) => {
    all += d.toString('latin1');
    onData?.(all);
  });
  c.on('error', () => undefined);
  c.write(raw);
  await once(c, 'close');
  return all;
}

const PIPELINED = 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGeT /next HTTP/1.1\r\nHost: x\r\n\r\n';

t.test('without it, Node closes the connection after an answer in flight without a word', async (t) => {
  const s = await server(t, false);
  const got = await exchange(s.port, PIPELINED, (all) => {
    if (all.endsWith('hello')) s.release();
  });
  t.notMatch(got, /400 Bad Request/, 'the malformed request got no answer (the behaviour worked around)');
});

t.test('a malformed request behind an answer in flight: that answer whole, then 400, then close', async (t) => {
  const s = await server(t, true);
  const got = await exchange(s.port, PIPELINED, (all) => {
    if (all.endsWith('hello')) s.release();
  });
  t.match(got, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nhello/, 'the first answer, whole');
  t.ok(got.endsWith('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'), `then a 400: ${JSON.stringify(got.slice(-80))}`);
});

t.test('with nothing in flight: the answers Node gives', async (t) => {
  const s = await server(t, true);
  t.equal(await exchange(s.port, 'GeT / HTTP/1.1\r\nHost: x\r\n\r\n'), 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  const huge = `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`;
  t.equal(await exchange(s.port, huge), 'HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n');
  const ok = await exchange(s.port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.match(ok, /^HTTP\/1\.1 204/, 'a good request is untouched');
});
