/** wrk (Debian's, installed by install-deps.sh) as the manifest load generator. */
import { run } from '../test/harness/procs.js';

export interface WrkResult {
  rps: number;
  requests: number;
  non2xx: number;
  socketErrors: number;
}

export async function wrk(url: string, opts: { connections: number; seconds: number; threads?: number; headers?: Record<string, string> }): Promise<WrkResult> {
  const args = ['-t', String(opts.threads ?? 1), '-c', String(opts.connections), '-d', `${opts.seconds}s`, '--timeout', '10s'];
  for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const res = await run('wrk', args, { timeoutMs: (opts.seconds + 30) * 1000 });
  if (res.code !== 0) throw new Error(`wrk exited ${res.code}: ${res.stderr || res.stdout}`);
  const num = (re: RegExp): number => {
    const m = re.exec(res.stdout);
    return m ? Number(m[1]) : 0;
  };
  const rps = num(/Requests\/sec:\s+([\d.]+)/);
  if (rps === 0) throw new Error(`wrk: no Requests/sec in its output:\n${res.stdout}`);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(res.stdout);
  return {
    rps,
    requests: num(/(\d+) requests in/),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    socketErrors: socketErrors ? socketErrors.slice(1).reduce((s, x) => s + Number(x), 0) : 0,
  };
}
