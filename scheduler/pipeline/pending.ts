/** Moved to the pure core: `core/pending.ts`. This path keeps existing imports working. */
export * from '../core/pending.js';
