/**
 * Schema validation at the boundary, on zod (well kept, precise error paths, types inferred from the
 * schema so the runtime check and the static type cannot drift). Errors become `ValidationError` with the
 * dotted path of the first offending field.
 */
import type { z } from 'zod';
import { ValidationError } from './errors.js';

/** Parses `input` with `schema`; throws ValidationError naming the first bad field. */
export function parseWith<S extends z.ZodType>(schema: S, input: unknown, root = ''): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = [root, ...(issue?.path ?? []).map(String)].filter((p) => p !== '').join('.');
  throw new ValidationError(path, issue?.message ?? 'invalid value', {
    details: { issues: result.error.issues.length },
  });
}

/** A codec decoder (see codec.ts) that validates a body with a zod schema. */
export function zodDecoder<S extends z.ZodType>(schema: S): (body: unknown) => z.output<S> {
  return (body) => parseWith(schema, body);
}
