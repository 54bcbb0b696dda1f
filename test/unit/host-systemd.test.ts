/**
 * The systemd side: the unit passes `systemd-analyze verify` (and its
 * offline security score stays low), and berth's readiness message reaches a
 * notify socket through the real systemd-notify. No systemd PID 1 is needed:
 * a Python datagram socket stands in for it (Node cannot bind AF_UNIX datagrams).
 */
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import type * as Tap from 'tap';
import { notifyReady } from '../../src/host/notify.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const UNIT = path.join(REPO, 'systemd/berth.service');

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-systemd-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The unit as installed, with ExecStart pointing at a binary that exists here. */
function unitCopy(t: Tap.Test, dir: string): string {
  const bin = path.join(dir, 'berth');
  fs.writeFileSync(bin, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  const text = fs.readFileSync(UNIT, 'utf8');
  t.match(text, /^ExecStart=\/usr\/local\/bin\/berth serve$/m, 'the unit runs the installed wrapper');
  const copy = path.join(dir, 'berth.service');
  fs.writeFileSync(copy, text.replace(/^ExecStart=\/usr\/local\/bin\/berth /m, `ExecStart=${bin} `));
  return copy;
}

t.test('systemd-analyze verify passes without a warning', async (t) => {
  const copy = unitCopy(t, tempDir(t));
  const res = await run('systemd-analyze', ['verify', copy]);
  t.equal(res.code, 0, res.stderr);
  t.equal(res.stderr.trim(), '', 'no warnings (an unknown key is only a warning)');
  const broken = copy.replace(/berth\.service$/, 'broken.service');
  fs.writeFileSync(broken, fs.readFileSync(copy, 'utf8').replace('NoNewPrivileges=yes', 'NoNewPrivilege=yes'));
  t.match((await run('systemd-analyze', ['verify', broken])).stderr, /Unknown key 'NoNewPrivilege'/, 'the check would see a typo');
});

t.test('the offline security score stays in the "OK" band', async (t) => {
  const copy = unitCopy(t, tempDir(t));
  const res = await run('systemd-analyze', ['security', '--offline=yes', '--threshold=30', copy]);
  t.equal(res.code, 0, res.stdout.split('\n').slice(-3).join('\n'));
  t.match(res.stdout, /Overall exposure level for berth\.service: [0-2]\.\d/);
});

t.test('the directives the design depends on', async (t) => {
  const text = fs.readFileSync(UNIT, 'utf8');
  const has = (re: RegExp, why: string) => t.match(text, re, why);
  has(/^Type=notify$/m, 'readiness from berth');
  has(/^NotifyAccess=all$/m, 'systemd-notify is a child, not the main pid');
  has(/^DynamicUser=yes$/m, 'no fixed account');
  has(/^CacheDirectory=berth$/m, '$CACHE_DIRECTORY, the default cache dir');
  has(/^StateDirectory=berth$/m, 'state survives cache cleaning');
  has(/^ProtectSystem=strict$/m, 'read-only system');
  has(/^NoNewPrivileges=yes$/m, 'no setuid');
  has(/^Restart=on-failure$/m, 'restart on failure');
  has(/^LimitNOFILE=\d+$/m, 'sockets and blob files');
  t.notMatch(text, /^MemoryDenyWriteExecute=/m, "V8's JIT needs W+X pages");
  const stop = /^TimeoutStopSec=(\d+)$/m.exec(text);
  t.ok(stop && Number(stop[1]) > 30, 'stop timeout above the default 30s drain');
});

t.test('notifyReady: nothing without $NOTIFY_SOCKET', async (t) => {
  const logger = pino({ level: 'silent' });
  t.equal(await notifyReady(logger, { env: {}, command: '/nonexistent/systemd-notify' }), false, 'not run at all (the binary does not exist)');
});

t.test('notifyReady: READY=1 and the status reach the notify socket', async (t) => {
  const dir = tempDir(t);
  const sock = path.join(dir, 'notify.sock');
  // Prints datagrams until READY=1 and then systemd-notify's BARRIER=1, whose passed fd it
  // closes: that is what PID 1 does, and what systemd-notify waits for before exiting 0.
  const receiver = spawn('python3', [
    '-c',
    `import socket, sys, os, array
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
s.settimeout(60)
while True:
    data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(64))
    for lvl, typ, d in anc:
        if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array("i"); fds.frombytes(d[: len(d) - len(d) % fds.itemsize])
            for fd in fds: os.close(fd)
    print(data.decode(), flush=True)
    if b"READY=1" in data: s.settimeout(10)
    if b"BARRIER=1" in data: break`,
    sock,
  ]);
  t.teardown(() => {
    if (receiver.exitCode === null) receiver.kill('SIGKILL');
  });
  let output = '';
  receiver.stdout.setEncoding('utf8');
  const bound = new Promise<void>((resolve, reject) => {
    receiver.stdout.on('data', (c: string) => {
      output += c;
      if (output.includes('bound')) resolve();
    });
    receiver.once('exit', () => reject(new Error(`receiver exited: ${output}`)));
  });
  const exited = new Promise<void>((resolve) => receiver.once('exit', () => resolve()));
  await bound;
  const sent = await notifyReady(pino({ level: 'silent' }), { env: { ...process.env, NOTIFY_SOCKET: sock }, status: 'serving on http://127.0.0.1:5050' });
  t.equal(sent, true);
  await exited;
  t.match(output, /READY=1\nSTATUS=serving on http:\/\/127\.0\.0\.1:5050/);
});

t.test('notifyReady: a failing systemd-notify is logged, not thrown', async (t) => {
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  t.equal(await notifyReady(logger, { env: { NOTIFY_SOCKET: '/nonexistent/sock' }, command: '/bin/false' }), false);
  t.match(lines.join(''), /could not tell systemd berth is ready/);
});
