/** Moved to the pure core: `core/commands.ts`. This path keeps existing imports working. */
export * from './core/commands.js';
