/** Moved to the pure core: `core/state.ts`. This path keeps existing imports working. */
export * from './core/state.js';
