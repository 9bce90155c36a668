/** Moved to the pure core: `core/lifecycle.ts`. This path keeps existing imports working. */
export * from './core/lifecycle.js';
