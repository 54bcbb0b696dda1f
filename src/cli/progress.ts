/** Progress lines for long commands: redrawn in place on a TTY, nothing otherwise (logs say it). */
import { formatDuration, formatSize } from '../config/units.js';

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

/** Where a transfer stands: bytes and blobs against their totals. */
export interface TransferState {
  bytes: number;
  blobs: number;
}

export interface TransferProgressOptions {
  /** "export", "import": starts every line. */
  label: string;
  totalBytes: number;
  totalBlobs: number;
  /** Default: process.stderr. */
  write?: (s: string) => void;
  /** Default: whether stderr is a terminal. */
  tty?: boolean;
  /** Nothing at all (--json, --quiet). */
  silent?: boolean;
  /** Default: Date.now. */
  now?: () => number;
  /** Plain mode: a line at least this often while it moves (default 5 s) … */
  intervalMs?: number;
  /** … and at each this fraction of the bytes (default 10%). */
  step?: number;
}

/**
 * Progress of an export or import: on a terminal a bar redrawn in place
 * (bytes and blobs, rate, ETA); otherwise plain lines on stderr, one every
 * `intervalMs` or every `step` of the bytes, whichever comes first, and one
 * at the end; nothing when silent.
 */
export class TransferProgress {
  private readonly write: (s: string) => void;
  private readonly tty: boolean;
  private readonly now: () => number;
  private readonly started: number;
  private lastDraw = -Infinity;
  private lastLine: number;
  private lastStep = 0;
  private state: TransferState = { bytes: 0, blobs: 0 };
  private ended = false;
  private total: number;

  constructor(private readonly o: TransferProgressOptions) {
    this.total = o.totalBytes;
    this.write = o.write ?? ((s) => process.stderr.write(s));
    this.tty = o.tty ?? process.stderr.isTTY === true;
    this.now = o.now ?? Date.now;
    this.started = this.now();
    this.lastLine = this.started;
  }

  update(s: Partial<TransferState>): void {
    if (this.o.silent || this.ended) return;
    this.state = { ...this.state, ...s };
    const now = this.now();
    if (this.tty) {
      if (now - this.lastDraw < 100) return;
      this.lastDraw = now;
      this.write(`\r\x1b[K${this.describe(now, true)}`);
      return;
    }
    const step = this.o.step ?? 0.1;
    const reached = this.total > 0 ? Math.floor(this.state.bytes / this.total / step) : 0;
    if (now - this.lastLine >= (this.o.intervalMs ?? 5000) || reached > this.lastStep) {
      this.lastLine = now;
      this.lastStep = reached;
      if (this.state.bytes < this.total) this.write(`${this.describe(now, false)}\n`);
    }
  }

  /**
   * The last line (plain mode), or clears the bar (terminal). `final`: the
   * real totals when the planned ones were an estimate (export's index.json).
   */
  end(ok = true, final?: TransferState): void {
    if (this.o.silent || this.ended) return;
    this.ended = true;
    if (final) {
      this.state = final;
      this.total = final.bytes;
    }
    if (this.tty) this.write('\r\x1b[K');
    else if (ok) this.write(`${this.describe(this.now(), false, true)}\n`);
  }

  /** One status line: "import  40%  16MiB/40MiB  3/10 blobs  2MiB/s  ETA 12s". */
  describe(now: number, bar: boolean, done = false): string {
    const { bytes, blobs } = this.state;
    const total = this.total;
    const frac = total > 0 ? Math.min(1, bytes / total) : 1;
    const secs = Math.max(0.001, (now - this.started) / 1000);
    const rate = bytes / secs;
    const parts = [this.o.label];
    if (bar) {
      const width = 24;
      const full = Math.round(frac * width);
      parts.push(`[${'#'.repeat(full)}${'-'.repeat(width - full)}]`);
    }
    parts.push(`${Math.floor(frac * 100)}%`, `${formatSize(bytes)}/${formatSize(total)}`, `${blobs}/${this.o.totalBlobs} blobs`);
    if (done) parts.push(`done in ${formatDuration(now - this.started, 2)}`);
    else if (now > this.started) {
      parts.push(`${formatSize(Math.round(rate))}/s`);
      if (rate > 0 && bytes > 0) parts.push(`ETA ${formatDuration(Math.max(0, Math.ceil((total - bytes) / rate)) * 1000, 2)}`);
    }
    return parts.join('  ');
  }
}
