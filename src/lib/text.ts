/**
 * Free text a caller sends (label values, image names, GPU models, constraint labels) ends up in terminals: the
 * CLI's tables and event lines, the one-line errors, the logs. A control character (an ESC sequence that
 * recolours or rewrites an operator's screen, a carriage return that hides what precedes it, a NUL) or a
 * bidirectional override (text that reads differently than it sorts and compares) has no business in any
 * of them, so new requests carrying one are refused at admission, and whatever is printed for people is
 * escaped anyway (text that was committed before this check, and reasons that machines report).
 */

/** C0 and C1 controls, DEL, and the Unicode bidirectional marks, embeddings, overrides and isolates. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is this pattern's purpose.
const unsafeChar = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const unsafeChars = new RegExp(unsafeChar.source, 'g');

/** True when `text` holds a control character or a bidirectional mark (one string; see `unsafeTextPath`). */
export function hasUnsafeText(text: string): boolean {
  return unsafeChar.test(text);
}

/**
 * True when `text` has no lone surrogate, so UTF-8 (msgpack, the wire, the log) carries it unchanged: a lone
 * surrogate is written as U+FFFD and read back as another string.
 */
export function isWellFormedText(text: string): boolean {
  return (text as unknown as { isWellFormed(): boolean }).isWellFormed();
}

/**
 * The dotted path of the first string inside `value` (keys included) that holds an unsafe character, or
 * undefined when there is none. `root` prefixes the path, as `parseWith` does.
 */
export function unsafeTextPath(value: unknown, root = ''): string | undefined {
  if (typeof value === 'string') return unsafeChar.test(value) ? root : undefined;
  if (typeof value !== 'object' || value === null) return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unsafeTextPath(value[i], join(root, String(i)));
      if (found !== undefined) return found;
    }
    return undefined;
  }
  for (const [k, v] of Object.entries(value)) {
    if (unsafeChar.test(k)) return join(root, printable(k));
    const found = unsafeTextPath(v, join(root, k));
    if (found !== undefined) return found;
  }
  return undefined;
}

function join(root: string, key: string): string {
  return root === '' ? key : `${root}.${key}`;
}

/** `text` with each unsafe character written as a `\u{…}` escape, for printing to people. */
export function printable(text: string): string {
  if (!unsafeChar.test(text)) return text;
  return text.replace(unsafeChars, (c) => `\\u{${(c.codePointAt(0) as number).toString(16)}}`);
}
