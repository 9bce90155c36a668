/**
 * A minimal QMP client (QEMU Machine Protocol: JSON lines over the `-qmp unix:` socket): the greeting,
 * capability negotiation, then one command at a time matched by `id`; asynchronous events are ignored.
 */
import { LineSocket } from './lines.js';

export const qmpCommandTimeoutMs = 30_000;

export class QmpError extends Error {
  override readonly name = 'QmpError';
}

export class Qmp {
  readonly #lines: LineSocket;
  #nextId = 1;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(lines: LineSocket) {
    this.#lines = lines;
  }

  static async connect(path: string, timeoutMs: number, alive: () => boolean): Promise<Qmp> {
    const lines = await LineSocket.connect(path, timeoutMs, alive);
    const qmp = new Qmp(lines);
    await lines.waitFor((l) => l.includes('"QMP"'), timeoutMs, 'QMP greeting');
    await qmp.execute('qmp_capabilities');
    return qmp;
  }

  /** Runs one command and returns its `return` value; QmpError with QEMU's description on `error`. */
  execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = qmpCommandTimeoutMs,
  ): Promise<unknown> {
    const run = async (): Promise<unknown> => {
      const id = `t${this.#nextId++}`;
      const reply = this.#lines.waitFor(
        (l) => l.includes(`"id": "${id}"`) || l.includes(`"id":"${id}"`),
        timeoutMs,
        `QMP reply to ${command}`,
      );
      this.#lines.write(
        JSON.stringify(
          args === undefined ? { execute: command, id } : { execute: command, arguments: args, id },
        ),
      );
      const parsed = JSON.parse(await reply) as { return?: unknown; error?: { desc?: string } };
      if (parsed.error !== undefined) throw new QmpError(`${command}: ${parsed.error.desc ?? 'error'}`);
      return parsed.return;
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  close(): void {
    this.#lines.close();
  }
}
