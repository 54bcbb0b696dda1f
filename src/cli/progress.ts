/** Progress lines for long commands: redrawn in place on a TTY, nothing otherwise (logs say it). */
import { formatSize } from '../config/units.js';

export class Progress {
  private readonly tty = process.stderr.isTTY === true;
  private readonly started = Date.now();
  private last = 0;

  line(label: string, done: number, total: number, bytesDone?: number, bytesTotal?: number): void {
    if (!this.tty) return;
    const now = Date.now();
    if (now - this.last < 100 && done < total) return;
    this.last = now;
    const secs = Math.max(0.001, (now - this.started) / 1000);
    const bytes = bytesDone === undefined ? '' : `  ${formatSize(bytesDone)}/${formatSize(bytesTotal ?? 0)}  ${formatSize(Math.round(bytesDone / secs))}/s`;
    process.stderr.write(`\r\x1b[K${label}  ${done}/${total}${bytes}`);
  }

  end(): void {
    if (this.tty) process.stderr.write('\r\x1b[K');
  }
}
