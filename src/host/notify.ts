/**
 * Readiness for systemd's Type=notify: "READY=1" once the listener is bound and
 * the index open. Node cannot send on an AF_UNIX datagram socket
 * (nodejs/node#31414), so berth runs `systemd-notify --ready`; the unit sets
 * NotifyAccess=all because the message then comes from that child, not from
 * berth's own pid. systemd-notify (246+) waits until PID 1 has taken the
 * message, so it is attributed to the unit before the child exits.
 *
 * Without $NOTIFY_SOCKET (a terminal, a container, Type=simple) nothing runs.
 */
import { execFile } from 'node:child_process';
import type { Logger } from 'pino';

export interface NotifyOptions {
  /** Shown by `systemctl status` (STATUS=). */
  status?: string;
  env?: NodeJS.ProcessEnv;
  /** The systemd-notify binary (default: from PATH). */
  command?: string;
  timeoutMs?: number;
}

/** Never rejects: a failed notification is logged (systemd then times the start out, which says enough). */
export function notifyReady(logger: Logger, opts: NotifyOptions = {}): Promise<boolean> {
  const env = opts.env ?? process.env;
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === '') return Promise.resolve(false);
  const args = ['--ready'];
  if (opts.status !== undefined) args.push(`--status=${opts.status}`);
  return new Promise((resolve) => {
    execFile(opts.command ?? 'systemd-notify', args, { env, timeout: opts.timeoutMs ?? 10_000 }, (err, _stdout, stderr) => {
      if (err) {
        logger.warn({ err: { message: err.message }, stderr: stderr.trim() }, 'could not tell systemd berth is ready (systemd-notify failed)');
        resolve(false);
        return;
      }
      logger.debug('told systemd berth is ready');
      resolve(true);
    });
  });
}
