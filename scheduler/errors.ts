/** Moved to the pure core: `core/errors.ts`. This path keeps existing imports working. */
export * from './core/errors.js';
