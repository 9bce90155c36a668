/**
 * A line-oriented client over a unix socket that QEMU serves (`server=on,wait=off`): connects with bounded
 * retries (the socket appears a moment after QEMU starts), splits input into lines, and lets callers wait
 * for a line matching a predicate with a deadline (a line that came just before its waiter is kept). A line longer than `lineBytesMax` is dropped, so a
 * confused guest cannot make the worker buffer without limit.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export const lineBytesMax = 8 << 20;
/** Recent lines no waiter took yet, kept so a line that arrives just before its waiter is not lost. */
export const backlogLinesMax = 64;
const connectRetryMs = 10;

interface Waiter {
  readonly match: (line: string) => boolean;
  readonly resolve: (line: string) => void;
  readonly reject: (err: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

export class LineSocket {
  readonly #socket: Socket;
  #buffer = '';
  #dropping = false;
  readonly #waiters = new Set<Waiter>();
  readonly #backlog: string[] = [];
  #closedError: Error | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#data(chunk));
    socket.on('error', (err) => this.#fail(err));
    socket.on('close', () => this.#fail(new Error('socket closed')));
  }

  /** Connects to `path`, retrying while it does not exist yet or refuses, until `timeoutMs`. */
  static async connect(path: string, timeoutMs: number, alive: () => boolean): Promise<LineSocket> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        return new LineSocket(socket);
      } catch (err) {
        if (Date.now() > deadline || !alive()) throw err;
        await sleep(connectRetryMs);
      }
    }
  }

  write(line: string): void {
    this.#socket.write(`${line}\n`);
  }

  /** Resolves with the first line (from now on) that `match` accepts; rejects after `timeoutMs`. */
  waitFor(match: (line: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const early = this.#backlog.findIndex(match);
    if (early >= 0) return Promise.resolve(this.#backlog.splice(early, 1)[0] as string);
    if (this.#closedError !== undefined) return Promise.reject(this.#closedError);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        match,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          reject(new Error(`no ${what} within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.#waiters.add(waiter);
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #data(chunk: string): void {
    this.#buffer += chunk;
    for (;;) {
      const nl = this.#buffer.indexOf('\n');
      if (nl < 0) break;
      const line = this.#buffer.slice(0, nl).replace(/\r$/, '');
      this.#buffer = this.#buffer.slice(nl + 1);
      if (this.#dropping) this.#dropping = false;
      else this.#line(line);
    }
    if (this.#buffer.length > lineBytesMax) {
      this.#buffer = '';
      this.#dropping = true;
    }
  }

  #line(line: string): void {
    for (const w of this.#waiters) {
      if (w.match(line)) {
        this.#waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(line);
        return;
      }
    }
    this.#backlog.push(line);
    if (this.#backlog.length > backlogLinesMax) this.#backlog.shift();
  }

  #fail(err: Error): void {
    this.#closedError ??= err;
    for (const w of this.#waiters) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.#waiters.clear();
  }
}
