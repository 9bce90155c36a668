/** Moved to the pure core: `core/verify.ts`. This path keeps existing imports working. */
export * from '../core/verify.js';
