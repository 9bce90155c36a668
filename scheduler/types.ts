/** Moved to the pure core: `core/types.ts`. This path keeps existing imports working. */
export * from './core/types.js';
